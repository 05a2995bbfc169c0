"""Terminal IPython through a real pseudo-terminal: what reaches the screen, cell by cell.

Each test starts ``ipython`` (prompt_toolkit, as a person runs it) in a pty against the
local fake server and types into it; assertions read the raw bytes the terminal received.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_dashscope import FakeDashScope, Status, Stream, ToolCall

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).parent.parent
HOSTILE = (
    "title\x1b]0;PWNED\x07 clip\x1b]52;c;aGVsbG8=\x07 link\x1b]8;;https://evil.example\x1b\\here\x1b]8;;\x1b\\ "
    "clear\x1b[2J\x1b[3;7H csi\x9b5;5H osc\x9d0;EIGHT\x9c bell\x07 back\x08\x08 over\rwrite end"
)
RAW = [b"\x1b]0;PWNED", b"\x1b]52", b"\x1b]8;;https://evil", b"\x1b[2J", b"\x1b[3;7H", "\x9b".encode(), "\x9d".encode()]
SHOWN = ["^[]0;PWNED^G", "^[]52;c;aGVsbG8=^G", "^[]8;;https://evil.example^[\\here", "^[[2J^[[3;7H", "<U+9B>5;5H"]
WITHOUT_RICH = "--InteractiveShellApp.exec_lines=['import sys; sys.modules[\"rich\"] = None']"


class Terminal:
    """``ipython`` in a pseudo-terminal of 24×100, with the extension loaded."""

    def __init__(self, server: FakeDashScope, tmp: Path, *, rich: bool = True) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DASHSCOPE_BASE_URL": server.url,
            "DASHSCOPE_API_KEY": server.api_key,
            "TERM": "xterm-256color",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # no cursor-position queries left unanswered
            "PAGER": "cat",
            "IPYTHONDIR": str(tmp / "ipython"),
        }
        env.pop("NO_COLOR", None)
        args = ["-m", "IPython", "--no-banner", "--colors=NoColor", "--HistoryManager.hist_file=:memory:"]
        if not rich:
            args.append(WITHOUT_RICH)
        self.child = pexpect.spawn(sys.executable, args, env=env, dimensions=(24, 100), timeout=60)
        self.prompt = 1
        self.wait_prompt()
        self.output = b""
        self.run("%load_ext qwen_magic")

    def wait_prompt(self) -> bytes:
        """Everything the terminal received up to the next ``In [N]`` prompt."""
        self.child.expect(rf"In \[{self.prompt}\]".encode())
        self.prompt += 1
        return self.child.before

    def run(self, *lines: str, end: str = "blank") -> str:
        """Type a cell and end it with two empty lines (``blank``) or Esc-Enter (``esc``); return its output."""
        for line in lines[:-1]:
            self.child.send(line + "\r")
        self.child.send(lines[-1] + ("\r\r\r" if end == "blank" and len(lines) > 1 else "\x1b\r" if end == "esc" else "\r"))
        return self.received(self.wait_prompt())

    def recall_and_rerun(self) -> str:
        """Up (the last cell comes back whole), then Esc-Enter."""
        self.child.send("\x1b[A")
        self.child.expect(b"\\.\\.\\.:")  # the recalled cell is on screen
        self.child.send("\x1b\r")
        return self.received(self.wait_prompt())

    def received(self, raw: bytes) -> str:
        self.output += raw
        return raw.decode("utf-8", "replace")

    def close(self) -> None:
        self.child.send("exit\r")
        self.child.expect(pexpect.EOF)
        self.child.close()


@pytest.fixture(params=[True, False], ids=["rich", "plain"])
def terminal(request: pytest.FixtureRequest, server: FakeDashScope, tmp_path: Path) -> Iterator[Terminal]:
    if request.param:
        pytest.importorskip("rich")
    term = Terminal(server, tmp_path, rich=request.param)
    term.rich = request.param
    yield term
    term.close()


def test_hostile_text_reaches_the_terminal_only_as_visible_text(terminal, server):
    server.queue(Stream(thinking=HOSTILE, text=HOSTILE, chunk=5))
    shown = terminal.run("%%qwen --thinking", "Hello")
    server.queue(Status(400, "invalid_request_error", "upstream said " + HOSTILE))
    failed = terminal.run("%%qwen", "Again")
    history = terminal.run("%qwen history")
    for raw in RAW:
        assert raw not in terminal.output, raw
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    for visible in SHOWN:
        assert visible in plain, (visible, plain)
    assert "write end" in plain and "^M" in plain
    assert "qwen: " in failed and "^[]0;PWNED^G" in failed
    assert "^[]52;c;aGVsbG8=^G" in history


def test_tool_results_reach_the_terminal_only_as_visible_text(terminal, server):
    terminal.run(
        "exec(\"def shout(word: str) -> str:\\n    'Shout.'\\n    return word + chr(27) + ']0;TOOL' + chr(7)\")"
    )
    server.queue(Stream(text="Calling.", tool_calls=[ToolCall("shout", {"word": "hey\x1b[2J"}, id="t1")]))
    server.queue(Stream(text="Done shouting."))
    out = terminal.run("%%qwen --tools shout", "Shout hey")
    assert b"\x1b]0;TOOL" not in terminal.output and b"hey\x1b[2J" not in terminal.output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "shout(" in plain and "hey^[[2J" in plain and "^[]0;TOOL^G" in plain
    assert "Done shouting." in plain


def test_a_recalled_cell_run_again_replaces_its_turn(terminal, server):
    terminal.run("%%qwen", "First question")
    assert len(server.requests[-1].body["messages"]) == 1
    rerun = terminal.recall_and_rerun()
    assert "Echo: First question" in rerun
    assert len(server.requests[-1].body["messages"]) == 1  # replaced, not stacked
    terminal.run("%%qwen", "Second question", end="esc")
    assert len(server.requests[-1].body["messages"]) == 3
    terminal.recall_and_rerun()
    assert [m["content"][0]["text"] for m in server.requests[-1].body["messages"]] == [
        "First question",
        "Echo: First question",
        "Second question",
    ]


def test_waiting_line_until_the_first_token(terminal, server):
    server.queue(Stream(text="Worth the wait.", first_delay=1.0))
    out = terminal.run("%%qwen", "Slow one")
    seconds = [float(s) for s in re.findall(r"⏳ qwen3\.6-plus · waiting (\d+\.\d) s", out)]
    assert seconds and max(seconds) >= 0.5 and seconds == sorted(seconds)
    after = out[out.rindex("⏳") :]
    assert "\r\x1b[2K" in after and after.index("\r\x1b[2K") < after.index("Worth the wait.")
    lines = screen_lines(terminal.output)
    assert not any("⏳" in line or "waiting" in line for line in lines)  # erased, not scrolled away
    assert any("Worth the wait." in line for line in lines)


def screen_lines(raw: bytes) -> list[str]:
    """What a 24×100 terminal shows after ``raw``, scrollback first (a real VT emulator: pyte)."""
    pyte = pytest.importorskip("pyte")
    screen = pyte.HistoryScreen(100, 24, history=5000)
    pyte.ByteStream(screen).feed(raw)
    scrolled = ["".join(line[x].data for x in range(100)).rstrip() for line in screen.history.top]
    return scrolled + [line.rstrip() for line in screen.display]


def test_a_long_answer_streams_its_latest_lines_and_ends_on_screen_once(terminal, server):
    text = "Here is the list:\n\n" + "\n".join(f"- item {i}" for i in range(60)) + "\n"
    server.queue(Stream(text=text, chunk=16, delay=0.06))
    terminal.child.send("%%qwen\rList please\r\r\r")
    terminal.child.expect(b"item 45")  # shown while streaming: the live region follows the end
    streamed = terminal.child.before
    assert b"tok/s" not in streamed and b"item 59" not in streamed  # the answer was not over yet
    terminal.received(streamed + terminal.child.after)
    if terminal.rich:  # a live region of the lines that fit: the first items were redrawn away, not scrolled up
        live = [int(n) for line in screen_lines(terminal.output) for n in re.findall(r"item (\d+)\b", line)]
        assert 45 in live and 0 not in live and len(live) < 24, live
    terminal.received(terminal.wait_prompt())
    lines = screen_lines(terminal.output)
    items = [int(n) for line in lines for n in re.findall(r"item (\d+)\b", line)]
    assert items == list(range(60))  # every line once, in order: live frames left nothing behind
    assert not any("⏳" in line for line in lines)
    if terminal.rich:
        assert any(line.strip().startswith("• item 0") for line in lines)  # rendered as a list


def test_ctrl_c_keeps_the_partial_answer_and_the_terminal_usable(terminal, server):
    text = "".join(f"Sentence {i}. " for i in range(400))
    server.queue(Stream(text=text, chunk=10, delay=0.05))
    terminal.child.send("%%qwen\rLong one\r\r\r")
    terminal.child.expect(b"Sentence 20\\.")
    terminal.child.sendintr()
    out = terminal.received(terminal.child.before + terminal.child.after + terminal.wait_prompt())
    assert "Interrupted: the request was cancelled" in out
    lines = screen_lines(terminal.output)
    assert any("Sentence 0. Sentence 1." in line for line in lines)  # the partial answer stays
    assert not any("Sentence 399" in line for line in lines)
    server.queue(Stream(text="Slow to start.", first_delay=5))
    terminal.child.send("%%qwen\rAnother\r\r\r")
    terminal.child.expect(rb"waiting (0\.[3-9]|[1-9]\.\d)")
    terminal.child.sendintr()
    terminal.received(terminal.child.before + terminal.child.after + terminal.wait_prompt())
    assert not any("⏳" in line for line in screen_lines(terminal.output))
    assert "Echo: Third" in terminal.run("%%qwen", "Third")


def test_markdown_rendered_with_rich_plain_without(terminal, server):
    text = "# Prices\n\n| fruit | price |\n|---|---|\n| apple | 3 |\n\n```python\nprint('hi')\n```\n"
    server.queue(Stream(text=text, chunk=6))
    out = terminal.run("%%qwen", "Table please")
    if terminal.rich:
        assert "|---|" not in out and "─" in out  # the table is drawn
        assert re.search(r"\x1b\[[0-9;]*38;[25];[0-9;]*m", out)  # the code is highlighted
    else:
        assert "| fruit | price |\r\n|---|---|" in out and "```python" in out


def test_cell_magic_help_names_the_cell_form(terminal):
    out = terminal.run("%%qwen?", end="esc")
    assert "%%qwen [-m MODEL]" in out


def test_piped_ipython_gets_no_escape_codes(server, tmp_path):
    server.queue(Stream(thinking=HOSTILE, text=HOSTILE, first_delay=0.5))
    server.queue(Status(400, "invalid_request_error", "upstream said " + HOSTILE))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DASHSCOPE_BASE_URL": server.url,
        "DASHSCOPE_API_KEY": server.api_key,
        "TERM": "xterm-256color",
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    cells = "%load_ext qwen_magic\n%%qwen --thinking\nHello\n\n\n%%qwen\nAgain\n\n\n"
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--HistoryManager.hist_file=:memory:"],
        input=cells,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Thinking: title^[]0;PWNED^G" in done.stdout, done.stdout + done.stderr
    assert re.search(r"qwen: 400\b.*upstream said title\^\[\]0;PWNED\^G", done.stdout)
    assert "waiting" not in done.stdout
    ours = done.stdout[done.stdout.index("Thinking") :]
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", ours), ours
