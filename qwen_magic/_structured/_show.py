"""Showing a value: the tool input streaming as JSON, then the value stored and shown compactly."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.display import display

from .._answer import Answer
from ._target import Target, a_or_an

if TYPE_CHECKING:
    from .._publish import Bundle
    from .._view import View


TABLE_ROWS = 20  # rows of a records table shown in the cell
REPR_CHARS = 2_000  # characters of a value's repr shown in the cell


# -- showing ------------------------------------------------------------------------------


class JsonIndenter:
    """Re-indents JSON as it streams, two levels deep: one record or item per line."""

    DEPTH = 2

    def __init__(self) -> None:
        self._depth = 0
        self._string = self._escape = False

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for ch in chunk:
            if self._string:
                out.append(ch)
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._string = False
                continue
            if ch in " \t\r\n":
                continue
            if ch in "}]":
                self._depth -= 1
                if self._depth < self.DEPTH:
                    out.append("\n" + "  " * max(self._depth, 0))
                out.append(ch)
                continue
            if ch == '"':
                self._string = True
            out.append(ch)
            if ch in "{[":
                self._depth += 1
                if self._depth <= self.DEPTH:
                    out.append("\n" + "  " * self._depth)
            elif ch == ",":
                out.append("\n" + "  " * self._depth if self._depth <= self.DEPTH else " ")
            elif ch == ":":
                out.append(" ")
        return "".join(out)


class ValueView:
    """A view whose answer tool's input streams into the answer as a growing ```json block.

    Everything else goes to the wrapped view unchanged. The block is fed to the wrapped
    view as answer text, so it is painted (and bounded) like any streamed markdown; the
    answer's own text and blocks are untouched.
    """

    def __init__(self, inner: View, tool_name: str) -> None:
        self._inner = inner
        self._name = tool_name
        self._open: JsonIndenter | None = None
        self._wrote = False

    def start(self, answer: Answer) -> None:
        self._inner.start(answer)

    def thinking(self, delta: str) -> None:
        self._inner.thinking(delta)

    def text(self, delta: str) -> None:
        self._wrote = True
        self._inner.text(delta)

    def pause(self) -> float:
        """The wrapped view's rest between reads (``NotebookView.pause``), if it has one."""
        pause: Callable[[], float] | None = getattr(self._inner, "pause", None)
        return pause() if pause is not None else 0.0

    def show(self, bundle: Bundle) -> Callable[[Bundle], None]:
        """Tool calls as usual, except the answer tool's: shown only when its value was refused.

        An accepted value is already on screen (the ```json block, then its rendering).
        """
        if not bundle.get("text/plain", "").startswith(f"🔧 {self._name}("):
            return self._inner.show(bundle)
        shown: list[Callable[[Bundle], None]] = []

        def paint(repainted: Bundle) -> None:
            if shown:
                shown[0](repainted)
            elif "⚠" in repainted.get("text/plain", ""):
                shown.append(self._inner.show(repainted))

        return paint

    def event(self, event: dict[str, Any]) -> None:
        """Other stream events (their JSON): a ``tool_use`` block of the answer tool opens, grows and closes.

        Its input arrives in raw ``content_block_delta`` events holding an ``input_json_delta``.
        """
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") == self._name:
                self._open = JsonIndenter()
                self.text(("\n\n" if self._wrote else "") + "```json\n")
        elif kind == "content_block_stop" and self._open is not None:
            self._close()
        elif self._open is not None:
            partial = None
            delta = event.get("delta") or {}
            if kind == "content_block_delta" and delta.get("type") == "input_json_delta":
                partial = delta.get("partial_json")
            piece = self._open.feed(partial) if partial else ""
            if piece:
                self._inner.text(piece)

    def _close(self) -> None:
        self._open = None
        self._inner.text("\n```\n")

    def finish(self, answer: Answer) -> None:
        if self._open is not None:
            self._close()
        self._inner.finish(answer)


def describe_value(target: Target, value: Any) -> str:
    """``a list[City] of 12 items``, ``a DataFrame[Row] of 12 rows × 3 columns``, ``JSON (a dict of 2 items)``."""
    if target.frame:
        rows, columns = value.shape
        return f"a {target.spelling} of {rows:,} row{'s' if rows != 1 else ''} × {columns} columns"
    size = ""
    if isinstance(value, str) and target.type in (str, Any):  # not for a Literal or an Enum
        size = f" of {len(value):,} characters"
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        size = f" of {len(value):,} item{'s' if len(value) != 1 else ''}"
    if target.spelling == "JSON":
        return f"JSON ({a_or_an(type(value).__name__)}{size})"
    return a_or_an(target.spelling) + size


def deliver(namespace: dict[str, Any], output: str, target: Target, value: Any) -> None:
    """Assign ``value`` to ``output``; show it compactly and say what was stored."""
    namespace[output] = value
    display(rendering(target, value), raw=True)
    note(f"Stored {describe_value(target, value)} in {output}")


def rendering(target: Target, value: Any) -> Bundle:
    """The value compactly: a table for a DataFrame or a list of records, else its repr."""
    text = _cut(_safe_repr(value))
    if target.frame:
        return {"text/html": _frame_html(value), "text/plain": text}
    records = _records(target, value)
    if records is not None:
        return {"text/html": _table_html(records), "text/plain": text}
    return {"text/html": f'<pre class="qwen-value">{html.escape(text)}</pre>', "text/plain": text}


def _records(target: Target, value: Any) -> list[dict[str, Any]] | None:
    """A list of records whose fields are all scalars, as JSON-ready dicts; else None."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    try:
        rows = target.adapter.dump_python(value, mode="json")
    except Exception:
        return None
    if not all(isinstance(row, dict) and row for row in rows):
        return None
    if any(isinstance(v, (dict, list)) for row in rows for v in row.values()):
        return None
    records: list[dict[str, Any]] = rows  # checked above: dicts of JSON scalars
    return records


def _table_html(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    from .._markdown import text_html  # each $ and \\ alone: MathJax pairs none of a value's dollars

    head = "".join(f"<th>{text_html(str(c))}</th>" for c in columns)
    body = []
    for row in rows[:TABLE_ROWS]:
        cells = "".join(f"<td>{text_html(_cell(row.get(c)))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    more = len(rows) - TABLE_ROWS
    tail = f'<div style="color:#888">… {more:,} more rows</div>' if more > 0 else ""
    return f'<table class="qwen-value"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{tail}'


def _frame_html(frame: Any) -> str:
    shown = frame.head(TABLE_ROWS)
    more = len(frame) - len(shown)
    tail = f'<div style="color:#888">… {more:,} more rows</div>' if more > 0 else ""
    from .._markdown._safe import lone_dollars

    return lone_dollars(str(shown.to_html(escape=True, classes="qwen-value", border=0))) + tail


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} object: repr failed: {type(exc).__name__}>"


def short_errors(errors: list[str]) -> str:
    first = errors[0] if errors else "no value came"
    return first + (f"; {len(errors) - 1} more" if len(errors) > 1 else "")


def _cut(text: str) -> str:
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS] + f"… [{len(text) - REPR_CHARS:,} more characters]"


def note(text: str) -> None:
    """A short line under the cell (``_tables.note``: its dollars stay dollars)."""
    from .._tables import note as shown_note

    shown_note(text)
