"""Assertions and small builders that several test modules share, kept once so their copies cannot drift."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_harness import Execution


def ok(run: Execution) -> None:
    """A cell that ran cleanly: status ok, no traceback, no usage error."""
    assert run.status == "ok", run.error_text + run.stderr
    assert "Traceback" not in run.error_text + run.stderr, run.error_text + run.stderr
    assert "UsageError" not in run.stderr, run.stderr


def assert_short_error(run: Execution, *needles: str) -> str:
    """A failed cell: status error, one short message naming the problem, no traceback; returns the message."""
    assert run.status == "error"
    text = run.error_text
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text) < 600, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def assert_usage_error(run: Execution, *needles: str) -> str:
    """One short UsageError on stderr, no traceback, naming what it should; returns what was shown."""
    text = run.stderr + run.error_text
    assert "UsageError" in run.stderr, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text) < 700, text
    for needle in needles:
        assert needle in run.stderr, (needle, text)
    return text


def assert_valid_history(messages: list[dict[str, Any]]) -> None:
    """Roles alternate and each tool_use is answered, by id, at the start of the next message."""
    roles = [m["role"] for m in messages]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    for message, following in itertools.pairwise(messages):
        asked = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
        answered = [b["tool_use_id"] for b in following["content"] if b.get("type") == "tool_result"]
        assert answered == asked
        assert [b["type"] for b in following["content"][: len(asked)]] == ["tool_result"] * len(asked)


def notes(run: Execution) -> list[str]:
    """The plain text of a cell's notes (the ``qwen-note`` outputs)."""
    return [data["text/plain"] for data in run.marked("qwen-note")]


TERMINAL_PRELUDE = f"""\
import json, os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from fake_dashscope import FakeDashScope, Stream, ToolCall
from IPython.terminal.interactiveshell import TerminalInteractiveShell
with FakeDashScope() as server:
    os.environ['DASHSCOPE_BASE_URL'] = server.url
    os.environ['DASHSCOPE_API_KEY'] = server.api_key
    shell = TerminalInteractiveShell.instance()
    shell.run_line_magic('load_ext', 'qwen_magic')
"""


def run_terminal(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh terminal IPython (``shell``, extension loaded) against a fake ``server``; it must exit 0."""
    script = tmp_path / "term.py"
    script.write_text(TERMINAL_PRELUDE + textwrap.indent(body, "    "))
    return run_python(str(script))


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a fresh Python (``-c CODE`` or a script) and capture its text; it must exit 0."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def text(t: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": t}


def shape(blocks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Content blocks (as built, or as the server received them) in a compact, comparable form."""
    out: list[tuple[Any, ...]] = []
    for b in blocks:
        if b["type"] == "text":
            out.append(("text", b["text"]))
        elif b["source"]["type"] == "url":
            out.append((b["type"], "url", b["source"]["url"]))
        else:
            out.append((b["type"], b["source"]["media_type"], base64.b64decode(b["source"]["data"])))
    return out


def strip(value: Any) -> Any:
    """A request body, or part of one, without its cache markers."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


# Lines of every kind a block can start with or be continued by, for random open blocks.
LINE_KINDS = [
    "word here", "Ünïcode text", "中文", "2024 was", "1. one", "2) two", "10. ten", "1.", "- item", "* star", "+ plus", "-",
    "  - nested", "   - three", "    - deep", "  1. n", "    indented", "      code", " lazy", "  text", "   text",
    "| a | b |", "| a | b | c |", "|---|---|", "|---|", "a | b", "a|b", "--|--", "---", "***", "* * *", "- - -", "===",
    "> quote", ">", "   > q", "# head", "#5 t", "```", "```py", "  ```", "~~~", "- ```", "- # h", "- > q", "-    spaced",
    "<div>", "</div>", "<pre>", "x </pre>", "<details>", "</details>", "<!-- c", "c -->", "x <script>", "</script>",
    "[x]: /u", "[link](u) t", "$$", "$$ x $$", "\\[", "\\begin{x}", "**bold** text", "*em* t", "_u_ t", "__x__",
    "`code` t", "(paren)", '"q"', "<b>x</b> t", "&amp; t", "!img", "@user", "~tilde", "+ x", "= x", "x\\", "a  ",
    "\t- tab item", "- [ ] task", "", "", "  ", "\\]", "\\end{x}", "y $$", "x \\end{x}",
]
