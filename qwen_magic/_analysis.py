"""Data-analysis helpers: describe variables for the model, explain errors, pull code out.

pandas and numpy are optional: a value is recognised by the module its type comes from,
so nothing here imports them.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from typing import Any

from ._context_build import _plural

SUMMARY_LIMIT = 4000  # characters of a DataFrame/Series/array summary
REPR_LIMIT = 2000  # characters of any other object's repr
TRACEBACK_LIMIT = 6000  # characters of a traceback sent by %qwen explain


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters with a note of how long it was."""
    return text if len(text) <= limit else text[: limit - 40].rstrip() + f"\n… (cut: {len(text):,} characters in all)"


def _kind(value: Any) -> str | None:
    module = type(value).__module__ or ""
    name = type(value).__name__
    if module.startswith("pandas") and name in ("DataFrame", "Series"):
        return name
    if module.startswith("numpy") and name == "ndarray":
        return "ndarray"
    return None


def describe(value: Any, name: str) -> str | None:
    """A compact markdown summary of a DataFrame, Series or array; None for anything else."""
    kind = _kind(value)
    if kind == "DataFrame":
        return cut(_frame(value, name), SUMMARY_LIMIT)
    if kind == "Series":
        return cut(_series(value, name), SUMMARY_LIMIT)
    if kind == "ndarray":
        return cut(_array(value, name), SUMMARY_LIMIT)
    return None


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to ``REPR_LIMIT`` characters; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the prompt
        text = f"<{type(value).__name__} object; repr failed: {exc}>"
    return cut(text, REPR_LIMIT)


def _frame(df: Any, name: str) -> str:
    rows, cols = df.shape
    lines = [f"DataFrame `{name}`: {_plural(rows, 'row')} × {_plural(cols, 'column')}", "", "| column | dtype | non-null |", "|---|---|--:|"]
    counts = df.notna().sum()
    for column in list(df.columns)[:40]:
        lines.append(f"| {column} | {df[column].dtype} | {int(counts[column]):,} |")
    if cols > 40:
        lines.append(f"| … {cols - 40} more columns | | |")
    lines += ["", "First rows:", "```text", df.head(5).to_string(max_cols=12, max_colwidth=40), "```"]
    if rows > 5:
        lines += ["Last rows:", "```text", df.tail(3).to_string(max_cols=12, max_colwidth=40), "```"]
    return "\n".join(lines)


def _series(series: Any, name: str) -> str:
    own_name = "" if series.name is None else f" ({series.name!r})"  # an unnamed Series: no "(None)"
    lines = [
        f"Series `{name}`{own_name}: {_plural(len(series), 'value')}, dtype {series.dtype}, "
        f"{int(series.isna().sum()):,} missing",
        "```text",
        series.head(8).to_string(max_rows=8),
        "```",
    ]
    return "\n".join(lines)


def _array(array: Any, name: str) -> str:
    import numpy as np  # already imported: the value is an ndarray

    preview = np.array2string(array, threshold=60, edgeitems=3, max_line_width=100)
    return f"Array `{name}`: shape {array.shape}, dtype {array.dtype}\n```text\n{preview}\n```"


def last_error(shell: Any) -> tuple[str, str] | None:
    """The last exception's traceback and the source of the cell that raised it."""
    etype, value, tb = getattr(sys, "last_type", None), getattr(sys, "last_value", None), getattr(sys, "last_traceback", None)
    if etype is None or value is None:
        return None
    frames = traceback.extract_tb(tb) if tb is not None else []
    # The cell is the outermost frame whose code IPython compiled from a cell.
    source = ""
    for frame in frames:
        lines = linecache.getlines(frame.filename)
        if lines and _is_cell(shell, frame.filename):
            source = "".join(lines)
            break
    if not source and frames:
        source = "".join(linecache.getlines(frames[0].filename))
    kept = [f for f in frames if "site-packages/IPython/" not in f.filename]
    text = "".join(traceback.format_list(kept)) + "".join(traceback.format_exception_only(etype, value))
    return cut("Traceback (most recent call last):\n" + text, TRACEBACK_LIMIT), source.rstrip()


def _is_cell(shell: Any, filename: str) -> bool:
    compiler = getattr(shell, "compile", None)
    known = getattr(compiler, "_filename_map", {}) or {}
    return filename in known or filename.startswith("<ipython-input-")


def explain_prompt(traceback_text: str, source: str, printed: str = "") -> str:
    """The question ``%qwen explain`` asks (``printed``: what the cell wrote to stdout/stderr, if captured)."""
    cell = f"The cell that raised it:\n\n```python\n{source}\n```\n\n" if source else ""
    output = f"What it printed before it failed:\n\n```text\n{printed}\n```\n\n" if printed else ""
    return (
        "My notebook cell raised an exception. Explain in plain words what went wrong and why, "
        "then give a corrected version of the cell in one ```python code block.\n\n"
        f"{cell}{output}The traceback:\n\n```text\n{traceback_text}\n```"
    )


def main_code_block(markdown: str) -> str | None:
    """The answer's main code block: the longest Python one, else the longest of any language."""
    from markdown_it import MarkdownIt

    fences = [t for t in MarkdownIt("commonmark").parse(markdown) if t.type == "fence"]
    if not fences:
        return None
    python = [t for t in fences if t.info.strip().split(" ")[0].lower() in ("python", "py", "python3", "ipython")]
    best = max(python or fences, key=lambda t: len(t.content))
    return best.content.rstrip("\n")
