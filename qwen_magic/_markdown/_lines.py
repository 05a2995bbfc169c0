"""Lines that cannot end the block they follow: finding block ends in streamed text without a parse.

While an answer streams, ``_ends`` looks for finished blocks at each repaint that brings
a new line (four and a half a second), and a parse of the open text (``stable_prefix``) costs a markdown-it run
each time. Most lines of prose cannot end the block they follow: a line of text after a
paragraph's line, a row after a table's, an item after a list's. ``simple_block`` says
when the whole open text is such lines (no parse needed: nothing finished), and
``simple_ends`` finds the blocks that end where a blank line shows it (a paragraph, a
table, a quote) or with their own line (an ATX heading). Both are regular expressions
over whole lines; anything else is left to the parser, so they only ever save a parse,
never decide a cut the parser would not. They model markdown-it's block rules as
``_stable`` does; ``tests/test_markdown.py`` checks them against ``stable_prefix`` on random
runs of lines of every kind, and ``tests/test_view.py`` whole random answers streamed.
"""

from __future__ import annotations

import functools
import re

# A table's header and delimiter rows (after blank lines), as a loose pattern: ``_is_table_head`` confirms it.
TABLE_HEAD = re.compile(r"(?:[ \t]*\n)*[^\n]*\|[^\n]*\n[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*\n")
# How a line of text may start without beginning a block of its own: a letter, a digit not
# an ordered list's marker, an inline code span, emphasis (not a link: "[x]: …" is a definition).
_TEXT = r"(?:[^\W\d_]|\d(?!\d{0,8}[.)](?:[ \t\r\n]|$))|[(\"'“‘]|`(?!``)|\*\*?(?=[^\s*])|_(?=[^\s_]))"
_TEXT_START = re.compile(_TEXT)
_PARAGRAPH_LINES = re.compile(f"(?:{_TEXT}[^\\n\\r]*\\n)+")
_TABLE_LINES = re.compile(f"(?:(?:{_TEXT}|\\|)[^\\n\\r]*\\n)+")
_QUOTE_LINES = re.compile(r"(?:>[^\n\r]*\n)+")  # no lazy lines: a quote may end in something else than a paragraph
_BLANKS = re.compile(r"(?:[ \t]*\n)*")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ITEM = re.compile(f"([-*+]|\\d{{1,9}}[.)])( +){_TEXT}")  # a list item that starts with text
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t][^\n\r]*)?\n")  # an ATX heading's whole line


def simple_block(text: str, start: int, end: int) -> str | None:
    """The kind of block the whole lines ``text[start:end]`` can only be, still open; None if not one of these:

    - ``"paragraph"``: lines of text (``_TEXT``: none could begin a block or a definition);
    - ``"table"``: a header markdown-it takes for one, then rows and lines of text (rows
      without pipes, as GFM reads them);
    - ``"quote"``: lines that start with ``>``;
    - ``"list"``: items that start with text (the same marker, their text in the same
      column), lines indented that far that start with text or with a nested item, and
      lines of text (lazy lines of the last item's paragraph).

    No line of these can end the block it follows: that needs a blank line or a line of
    another kind. ``start`` is the start of a block (blank lines may come first).
    """
    start = _BLANKS.match(text, start).end()  # type: ignore[union-attr]  # (it matches the empty string)
    if start >= end:
        return None
    if (head := TABLE_HEAD.match(text, start)) is not None:
        if not _is_table_head(head.group()):
            return None
        return "table" if head.end() >= end or _TABLE_LINES.fullmatch(text, head.end(), end) else None
    if text.startswith(">", start):
        kind, lines = "quote", _QUOTE_LINES
    elif (item := _ITEM.match(text, start)) is not None:
        marker, spaces = item.group(1), item.group(2)
        if len(spaces) > 4:
            return None  # its text is an indented code block
        digits = len(marker) - 1
        # Items whose text starts in the same column as the first one's: as many digits, as many spaces.
        same = (f"\\d{{{digits}}}" + re.escape(marker[-1]) if digits else re.escape(marker)) + spaces
        kind, lines = "list", _items(same, len(marker) + len(spaces))
    else:
        kind, lines = "paragraph", _PARAGRAPH_LINES
    return kind if lines.fullmatch(text, start, end) else None


def simple_ends(text: str, end: int) -> int:
    """Where the blocks at the start of ``text`` that have visibly ended do end (with the blank lines
    after them), 0 if none: an ATX heading's whole line, and a paragraph, table or quote
    (``simple_block``) followed by a blank line. Only the whole lines ``text[:end]`` count."""
    cut = 0
    pos = _BLANKS.match(text).end()  # type: ignore[union-attr]
    while pos < end:
        if (heading := _HEADING.match(text, pos, end)) is not None:
            block_end = heading.end()
        elif (blank := _BLANK_LINE.search(text, pos, end)) is not None and simple_block(
            text, pos, blank.start() + 1
        ) in ("paragraph", "table", "quote"):
            block_end = blank.start() + 1
        else:
            break
        pos = cut = _BLANKS.match(text, block_end).end()  # type: ignore[union-attr]
    return cut


@functools.lru_cache(maxsize=64)
def _is_table_head(head: str) -> bool:
    """Whether markdown-it reads these header and delimiter rows as a table (their cells must agree)."""
    from ._parse import _parser

    tokens = _parser("blocks").parse(head)
    return bool(tokens) and tokens[0].type == "table_open" and tokens[0].map == [0, head.count("\n")]


@functools.cache
def _items(marker: str, width: int) -> re.Pattern[str]:
    """Lines that continue a list (``simple_block``) whose items start with ``marker`` (with the
    spaces after it), so that their text starts ``width`` columns in."""
    nested = r"(?:[-*+]|\d{1,9}[.)]) +"
    return re.compile(f"(?:(?:{_TEXT}|{marker}{_TEXT}| {{{width},}}(?:{nested})?{_TEXT})[^\\n\\r]*\\n)+")
