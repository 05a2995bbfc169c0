"""Where a cell's text is code, which stays as typed: fenced, indented and inline code.

The rules are markdown's (CommonMark), so what renders as code in the cell is code here:
a fence of 3+ backticks or tildes indented at most 3 spaces, until its closing fence or
the end; lines indented 4 spaces after a blank line, outside a list; a backtick span.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

_FENCE = re.compile(r"^ {0,3}(`{3,}(?=[^`\n]*$)|~{3,})", re.MULTILINE)
_INDENTED = re.compile(r" {4}| {0,3}\t")
_LIST_ITEM = re.compile(r" {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)


def chunks(text: str) -> Iterator[tuple[str, bool]]:
    """The text cut into ``(piece, is_code)``: fenced and indented code blocks and inline code spans are code."""
    position = 0
    while (opening := _FENCE.search(text, position)) is not None:
        fence = opening.group(1)
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        line_end = text.find("\n", opening.end())
        end_match = closing.search(text, line_end + 1) if line_end != -1 else None
        end = len(text) if end_match is None else end_match.end()  # unclosed: code to the end
        yield from _indented_chunks(text[position : opening.start()])
        yield text[opening.start() : end], True
        position = end
    yield from _indented_chunks(text[position:])


def _indented_chunks(text: str) -> Iterator[tuple[str, bool]]:
    return _split(text, _indented_blocks(text), _inline_chunks)


def _inline_chunks(text: str) -> Iterator[tuple[str, bool]]:
    return _split(text, (span.span() for span in _INLINE_CODE.finditer(text)), lambda prose: iter([(prose, False)]))


def _split(
    text: str, spans: Iterable[tuple[int, int]], prose: Callable[[str], Iterator[tuple[str, bool]]]
) -> Iterator[tuple[str, bool]]:
    """``text`` as ``(piece, is_code)``: the ``spans`` are code, the pieces between them go through ``prose``."""
    position = 0
    for start, end in spans:
        yield from prose(text[position:start])
        yield text[start:end], True
        position = end
    yield from prose(text[position:])


def _indented_blocks(text: str) -> Iterator[tuple[int, int]]:
    """Markdown's indented code blocks: lines indented 4 spaces that start after a blank line
    (or the start), outside a list (there they continue an item), up to the next line that
    is not indented."""
    offset = 0
    code: tuple[int, int] | None = None
    blank, in_list = True, False
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        if not line.strip():
            blank = True
            continue
        indented = _INDENTED.match(line) is not None
        if code is not None and indented:
            code = (code[0], offset)
        else:
            if code is not None:
                yield code
                code = None
            if indented and blank and not in_list:
                code = (start, offset)
            elif _LIST_ITEM.match(line):
                in_list = True
            elif blank and not indented:
                in_list = False
        blank = False
    if code is not None:
        yield code
