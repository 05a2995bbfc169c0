"""The terminal painters: control characters never reach a terminal, escape codes only on one."""

from __future__ import annotations

import io
import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_magic._answer import Answer, Usage
from qwen_magic._errors import ServiceError
from qwen_magic._terminal import RichTerminalView, TerminalView, Untrusted, terminal_view
from qwen_magic._text import visible_controls

CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\n\t"]
SEQUENCES = [
    "\x1b]0;PWNED\x07",  # window title
    "\x1b]52;c;aGVsbG8=\x07",  # clipboard
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",  # hyperlink
    "\x1b[2J\x1b[H",  # clear screen, home
    "\x1b[31;1m",  # colour
    "\x1b[1A\x1b[2K",  # cursor up, erase line
    "\x9b2J",  # 8-bit CSI
    "\x9d0;title\x9c",  # 8-bit OSC
    "\x1bP+q544e\x1b\\",  # DCS
    "line\roverwritten",
]
BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control but newline and tab
texts = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(CONTROLS), st.sampled_from(SEQUENCES)), max_size=25
).map("".join)


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def answer_for(text: str = "", thinking: str = "", model: str = "qwen3.6-plus") -> Answer:
    answer = Answer(model=model, text=text, thinking=thinking)
    answer.usage, answer.stop_reason, answer.finished_at = Usage(10, 5), "end_turn", time.monotonic()
    return answer


def paint(view: TerminalView, pieces: list[tuple[str, str]], answer: Answer) -> None:
    view.start(answer)
    for kind, delta in pieces:
        getattr(view, kind)(delta)
    view.finish(answer)
    view.show({"text/plain": answer.text[:40]})


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=150, deadline=None)
@given(texts, texts, st.lists(st.integers(0, 400), max_size=8))
def test_no_control_reaches_a_pipe(text, thinking, cuts):
    out = io.StringIO()
    pieces = [("thinking", d) for d in split(thinking, cuts)] + [("text", d) for d in split(text, cuts)]
    paint(terminal_view(out), pieces, answer_for(text, thinking, model="qwen\x1b]0;x\x07"))
    written = out.getvalue()
    assert not BAD.search(written), repr(written)  # no ESC, no C1, no CR: not even a colour code
    # The text is all there, its controls shown as ^X / <U+XX>, however the deltas split it.
    assert visible_controls(text.replace("\r\n", "\n")) in written


@settings(max_examples=150, deadline=None)
@given(texts, texts, st.lists(st.integers(0, 400), max_size=8))
def test_on_a_terminal_only_our_own_codes(text, thinking, cuts):
    out = Tty()
    pieces = [("thinking", d) for d in split(thinking, cuts)] + [("text", d) for d in split(text, cuts)]
    paint(TerminalView(out), pieces, answer_for(text, thinking))
    written = out.getvalue()
    for ours in ("\r\x1b[2K", "\x1b[2m", "\x1b[0m"):
        written = written.replace(ours, "")
    assert not BAD.search(written), repr(written)


def test_text_survives_whole_with_controls_visible():
    out = io.StringIO()
    text = "a\x1b]52;c;aGVsbG8=\x07b\r\nc\rd\x9b2Je\tf"
    view = TerminalView(out)
    paint(view, [("text", text[:9]), ("text", text[9:13]), ("text", text[13:])], answer_for(text))
    assert out.getvalue().startswith("a^[]52;c;aGVsbG8=^Gb\nc^Md<U+9B>2Je\tf\n")


def test_a_carriage_return_split_from_its_newline_is_a_line_end():
    clean = Untrusted()
    assert clean.feed("one\r") + clean.feed("\ntwo\r") + clean.feed("x") + clean.feed("\r") + clean.flush() == (
        "one\ntwo^Mx^M"
    )


def test_unencodable_text_does_not_break_the_stream():
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    paint(TerminalView(out), [("text", "caf\u00e9 \ud800 ok")], answer_for("caf\u00e9 \ud800 ok"))
    out.flush()
    assert raw.getvalue().startswith(b"caf? ? ok\n")


def test_no_escape_codes_into_a_pipe_and_dim_on_a_terminal():
    answer = answer_for("The answer.", "pondering")
    piped, tty = io.StringIO(), Tty()
    for out in (piped, tty):
        paint(TerminalView(out), [("thinking", "pondering"), ("text", "The answer.")], answer)
    assert piped.getvalue().startswith("Thinking: pondering\n\nThe answer.\n")
    assert "\x1b" not in piped.getvalue()
    assert tty.getvalue().startswith("\x1b[2mThinking: pondering\x1b[0m\n\nThe answer.\n")
    assert "\x1b[2mqwen3.6-plus · 10 in" in tty.getvalue()


def test_no_colour_keeps_a_terminal_plain(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    paint(TerminalView(out), [("thinking", "hm"), ("text", "Yes.")], answer_for("Yes.", "hm"))
    assert "\x1b[2m" not in out.getvalue()


def test_a_dumb_terminal_is_a_pipe(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    out = Tty()
    view = terminal_view(out)
    assert type(view) is TerminalView
    view.start(answer_for())
    time.sleep(0.3)
    view.text("Hi")
    view.finish(answer_for("Hi"))
    assert "\x1b" not in out.getvalue() and "waiting" not in out.getvalue()


# -- the waiting line -------------------------------------------------------------------------


def test_waiting_line_shows_model_and_seconds_then_is_erased():
    out = Tty()
    view = TerminalView(out)
    answer = answer_for("Late.", model="qwen3.7-max")
    view.start(answer)
    time.sleep(0.6)
    view.text("Late.")
    view.finish(answer)
    written = out.getvalue()
    lines = re.findall(r"\r\x1b\[2K⏳ qwen3\.7-max · waiting (\d+\.\d) s", written)
    assert len(lines) >= 2 and float(lines[-1]) >= 0.3, written
    after = written.rsplit("⏳", 1)[1]
    assert after.split("\r\x1b[2K", 1)[1].startswith("Late.\n")  # erased before the text
    waited = written.count("⏳")
    time.sleep(0.3)
    assert out.getvalue().count("⏳") == waited  # stopped for good


def test_waiting_line_is_erased_when_the_request_fails_and_never_written_to_a_pipe():
    tty, piped = Tty(), io.StringIO()
    for out in (tty, piped):
        view = TerminalView(out)
        failed = Answer(model="qwen3.6-plus", error="boom")
        view.start(failed)
        time.sleep(0.25)
        view.finish(failed)
    assert tty.getvalue().endswith("\r\x1b[2K") and "waiting" in tty.getvalue()
    assert piped.getvalue() == ""


def test_waiting_line_fits_the_screen():
    out = Tty()
    view = TerminalView(out)
    view.start(answer_for(model="m" * 300))
    time.sleep(0.25)
    view.finish(Answer(model="m" * 300, error="x"))
    shown = out.getvalue().split("\r\x1b[2K")[1]
    assert 20 < len(shown) < 80


# -- rich ------------------------------------------------------------------------------------

def rich_view(out: io.StringIO, height: int = 12) -> RichTerminalView:
    pytest.importorskip("rich")
    return RichTerminalView(out, width=60, height=height)


def test_terminal_view_is_rich_on_a_terminal_only():
    pytest.importorskip("rich")
    assert type(terminal_view(Tty())) is RichTerminalView
    assert type(terminal_view(io.StringIO())) is TerminalView


ALLOWED_CSI = re.compile(r"\x1b\[(?:[0-9;]*m|\d*[ABCDGK]|\?25[lh]|\?2026[hl])|\r")


@settings(max_examples=40, deadline=None)
@given(texts, texts, st.lists(st.integers(0, 400), max_size=6))
def test_rich_writes_no_control_of_the_model(text, thinking, cuts):
    out = Tty()
    view = rich_view(out)
    view.REFRESH = 50
    pieces = [("thinking", d) for d in split(thinking, cuts)] + [("text", d) for d in split(text, cuts)]
    view.start(answer_for(text, thinking))
    for kind, delta in pieces:
        getattr(view, kind)(delta)
        view._region.lines(view.console, view.console.options, 11)
    view.finish(answer_for(text, thinking))
    rest = ALLOWED_CSI.sub("", out.getvalue())
    assert not BAD.search(rest), repr(rest)
    assert "\x1b]" not in out.getvalue() and "\x9b" not in out.getvalue()


def test_rich_prints_the_whole_answer_once_rendered():
    out = Tty()
    view = rich_view(out, height=10)
    table = "| fruit | price |\n|---|---|\n| apple | 3 |\n"
    code = "```python\ndef f(x):\n    return x + 1\n```\n"
    lines = "\n".join(f"- item {i}" for i in range(40))
    text = f"# Title\n\n{table}\n{code}\n{lines}\n\n[a link](https://example.com)\n"
    view.start(answer_for(text))
    for i in range(0, len(text), 7):
        view.text(text[i : i + 7])
        time.sleep(0.002)
    view.finish(answer_for(text))
    written = out.getvalue()
    final = written[written.rindex("Title") :]
    assert all(f"item {i}" in final for i in range(40))
    assert "─" in final or "━" in final  # the table is drawn
    assert "| apple |" not in final
    assert "def" in final and re.search(r"\x1b\[[0-9;]*38;[25];", final)  # highlighted code
    assert "https://example.com" in final and "\x1b]8;" not in written  # a link as text, no OSC 8
    assert final.count("item 39") == 1


def test_rich_live_region_is_bounded_by_the_screen():
    out = Tty()
    view = rich_view(out, height=12)
    view.start(answer_for())
    text = "".join(f"Paragraph {i} " + "word " * 30 + "\n\n" for i in range(200))
    region = view._region
    for i in range(0, len(text), 500):
        view.text(text[i : i + 500])
        lines = region.lines(view.console, view.console.options, 11)
        assert len(lines) <= 11
    # Repaints render a few screens of text, not the whole answer.
    assert region._marks[-1] > len(text) - 8 * 11 * 60
    assert any("Paragraph 199" in "".join(s.text for s in line) for line in lines)
    view.finish(answer_for(text))


def test_rich_thinking_is_bounded_then_printed_dim_once():
    out = Tty()
    view = rich_view(out, height=8)
    thinking = "".join(f"step {i}\n" for i in range(50))
    view.start(answer_for("Done.", thinking))
    view.thinking(thinking)
    lines = view._region.lines(view.console, view.console.options, 7)
    assert len(lines) == 7 and "step 49" in "".join(s.text for s in lines[-1])
    assert "Thinking… (" in "".join(s.text for s in lines[0])
    view.text("Done.")
    view.finish(answer_for("Done.", thinking))
    written = out.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", written)
    assert plain.count("step 0\n") == 1 and "\x1b[2mThinking: step 0" in written
    assert plain.rindex("step 49") < plain.rindex("Done.")


def test_rich_without_streaming_prints_the_answer_once():
    out = Tty()
    view = rich_view(out)
    answer = answer_for("**bold** answer", "thought")
    view.start(answer)
    view.finish(answer)
    written = out.getvalue()
    assert written.count("thought") == 1 and written.count("answer") == 1 and "**bold**" not in written


# -- errors ---------------------------------------------------------------------------------


def test_error_message_controls_are_visible_and_uncoloured_into_a_pipe(monkeypatch, capsys):
    error = ServiceError("HTTP 500: \x1b]0;EVIL\x07 broke \x9b2J", status=500)
    rendered = error._render_traceback_()
    assert rendered == ["qwen: HTTP 500: ^[]0;EVIL^G broke <U+9B>2J"]  # pytest's stdout is no terminal
    monkeypatch.setattr("sys.stdout", Tty())
    assert error._render_traceback_()[0].startswith("\x1b[1;31mqwen:\x1b[0m HTTP 500: ^[]0;EVIL^G")


# -- the same cell, recalled ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "again", "same"),
    [
        ("%%qwen\nFirst question\n\n\n", "%%qwen\nFirst question", True),
        ("%%qwen \nFirst question  \n", "%%qwen\nFirst question\n", True),
        ("%%qwen\r\nFirst question\r\n", "%%qwen\nFirst question", True),
        ("%%qwen\nFirst question", "%%qwen\nFirst  question", False),
        ("%%qwen\nFirst question", "%%qwen\n  First question", False),
        ("%%qwen\nFirst question", "%%qwen --thinking\nFirst question", False),
        ("%%qwen\nA\n\nB", "%%qwen\nA\nB", False),
    ],
)
def test_a_cell_is_the_same_whatever_blank_lines_end_it(first, again, same):
    from qwen_magic._conversation import Conversation, Turn

    chat = Conversation()
    chat.record(Turn([{"type": "text", "text": "q"}], answer_for("a"), None, first))
    assert chat.is_rerun(None, again) is same
    assert chat.is_rerun("some-id", again) is same  # the latest turn had no id: its source decides


def test_rich_live_pieces_look_like_the_whole():
    from rich.markdown import Markdown

    out = Tty()
    view = rich_view(out, height=201)
    text = (
        "# Title\n\nA paragraph with **bold** and `code`.\n\n## Part\n\n- one\n- two\n\n  still two\n- three\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\nprint(x)\n```\n\n> quoted\n> more\n\n1. first\n2. second\n\n"
        "Closing words that run on for a while so that the line wraps at sixty columns wide.\n"
    )
    view.start(answer_for())
    for i in range(0, len(text), 37):
        view.text(text[i : i + 37])
        view._region.lines(view.console, view.console.options, 200)
    console, options = view.console, view.console.options

    def plain(lines):  # the text of each line, runs of blank lines as one
        shown = ["".join(s.text for s in line).rstrip() for line in lines]
        return [t for i, t in enumerate(shown) if t or (i and shown[i - 1])]

    assert len(view._region._marks) > 4  # it was rendered in pieces
    whole = plain(console.render_lines(Markdown(text, hyperlinks=False), options, pad=False))
    assert plain(view._region.lines(console, options, 200)) == whole
    view.finish(answer_for(text))


@pytest.mark.parametrize(
    "math",
    [r"\(\pi r^2\)", "$a*b*c$", r"$\{x\}$", r"$x_1 + y_2$", r"\[a \\ b\]", "$$\\begin{matrix} a \\\\ b \\end{matrix}$$"],
)
def test_the_rich_view_shows_math_as_written(math: str) -> None:
    """rich's parser knows no math: TeX's backslashes, ``*`` and ``_`` were read as markdown."""
    pytest.importorskip("rich")
    from rich.console import Console

    from qwen_magic._terminal import rich_markdown

    console = Console(width=100, force_terminal=False, file=io.StringIO())
    with console.capture() as captured:
        console.print(rich_markdown(f"The value {math} is shown, at $5 a line.\n\n$$\n{math}\n$$\n"))
    shown = captured.get()
    assert f"The value {math} is shown, at $5 a line." in shown
    assert math in shown.split("\n\n", 1)[1]
