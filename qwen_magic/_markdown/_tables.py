"""A finished table as markdown written here, which marked and JupyterLab's math pass can only read as that table.

Why: an answer's table rendered to HTML costs 2.7 times its markdown (a tag and an
alignment style per cell, ``<code>`` and ``<strong>`` for backticks and stars), so one
long table could not stream within three times its bytes while both its HTML and its
plain text are kept. Published as ``text/markdown`` it costs about its own size, and
JupyterLab styles it as any markdown table (``answer_bundles`` does the same for code).

Why it is safe, although JupyterLab renders the markdown of a running session trusted
(marked 17 with raw HTML on, then MathJax): the markdown is never the model's. The table
is parsed here (markdown-it, the renderer ``_markdown`` uses) and written again from its
tokens, and only when every cell holds nothing but

- text, with each character marked could read as markup backslash-escaped
  (`` \\ ` * _ [ ] < > ! & | ~ ``), so that it is text to marked;
- code spans (one backtick, code without a backtick, ``|`` or edge spaces);
- strong, emphasis and strikethrough around these (``**``, ``*``, ``~~``);

and nowhere a ``$``, a ``\\``, an ``@``, ``://`` or ``www.`` (math for JupyterLab's
``removeMath`` and MathJax, placeholders, e-mail and URL autolinks), nor a control or
line-separator character. ``removeMath`` then finds no math (it needs a ``$``, two
backslashes or ``\\begin``; the only backslashes are single ones before punctuation),
marked makes no tag but the table's, ``<code>``, ``<strong>``, ``<em>`` and ``<del>``,
and the page's text holds no ``$`` or ``\\`` for MathJax. A cell with emphasis is parsed
again as written and must pair its marks as the model's text did (once per shape of marks
and the characters beside them, ``_pairs_alike``), so the table also means what the model
wrote. Any other table (a link, an image, math, raw HTML, a dollar), one inside an HTML
container such as ``<details>``, and every table of text that defines link references,
is rendered to HTML as before. ``tests/test_merged_outputs.py`` checks this against
marked 17.0.6 and JupyterLab's ``removeMath`` in node on thousands of tables of hostile
cells, and with hypothesis against markdown-it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._parse import _container_change, _line_starts, _parser
from ._render import MARKDOWN_CLASS, markdown_bundle

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

    from .._publish import Bundle

# Anything that could make math, a placeholder, an autolink or a line break: not written as markdown.
_REFUSED = re.compile(r"[$\\@\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]|://|www\.", re.I)
_ESCAPED = re.compile(r"[\\`*_\[\]<>!&|~]")
_ALIGN = {"text-align:left": ":--", "text-align:right": "--:", "text-align:center": ":-:"}
_MARKS = {"strong_open": "**", "strong_close": "**", "em_open": "*", "em_close": "*", "s_open": "~~", "s_close": "~~"}
_MARK_SET = frozenset(_MARKS.values())


BLOCK = 64  # body rows read together, and remembered: a streamed table's rows are read as they come


def table_markdown(md: str, note: str = "") -> str | None:
    """``md``, which is one GFM table and blank lines, as markdown written here; None if it cannot be.

    ``note``: a line of this package's own markdown above the table (a live window's).
    """
    if _REFUSED.search(md):
        return None
    found = _blockwise(md)
    if found is None:
        return None
    aligns, rows = found
    lines = [_row(rows[0]), "|" + "|".join(_ALIGN.get(a, "---") for a in aligns) + "|", *map(_row, rows[1:])]
    table = "\n".join(lines) + "\n"
    return f'<div class="{MARKDOWN_CLASS}">\n\n{note}{table}\n</div>'


Cells = tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]  # a table's alignments, and its rows' cells


def _blockwise(md: str) -> Cells | None:
    """The alignments and rows of the table ``md``, its body read ``BLOCK`` lines at a time.

    A GFM table's rows do not depend on one another: each is its own line, split into the
    header's number of cells, and a line that is no row ends the table wherever it is (then
    the whole is no single table: the block holding that line is none either, or, for a
    blank line, is a table with fewer rows than lines, which only the last may be). So the header,
    its delimiter row and each block of body lines are parsed as a table of their own, and
    each block is remembered (``_rows``): ``prepare_table`` reads a streamed table's finished
    blocks as they come, and the whole is then read at the cost of its last block. One
    exception is kept whole: markdown-it stops a table after 65,536 cells filled in for
    short rows, counted over the whole body, so a table that could reach that many
    (rows × columns) is parsed at once.
    """
    head, body = _head_and_body(md)
    while body and not body[-1].strip():
        body.pop()  # blank lines after the table
    if len(body) <= BLOCK or len(body) * (head.count("|") + 1) > 65_536:
        return _rows(md)
    aligns: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = []
    for at in range(0, len(body), BLOCK):
        found = _rows(head + "".join(body[at : at + BLOCK]))
        if found is None or (at + BLOCK < len(body) and len(found[1]) != 1 + BLOCK):
            return None  # not a table, or (a blank line) one that ends before the block does
        aligns = found[0]
        rows += found[1][1:] if rows else found[1]
    return aligns, tuple(rows)


def prepare_table(md: str) -> None:
    """Read the finished blocks of rows of the open table ``md`` (``_blockwise``) ahead of its end."""
    if _REFUSED.search(md):
        return
    head, body = _head_and_body(md)
    if body and not body[-1].endswith(("\n", "\r")):
        body.pop()  # a row still arriving
    for at in range(0, len(body) - BLOCK + 1, BLOCK):
        if _rows(head + "".join(body[at : at + BLOCK])) is None:
            return


def _head_and_body(md: str) -> tuple[str, list[str]]:
    """A table's header and delimiter rows (after any blank lines), and its other lines."""
    lines = md.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    return "".join(lines[start : start + 2]), lines[start + 2 :]


@functools.lru_cache(maxsize=256)
def _rows(md: str) -> Cells | None:
    parser = _parser()
    return _cells(parser.parse(md), parser)


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cells(tokens: list[Token], parser: MarkdownIt) -> Cells | None:
    """The column alignments and every row's cells as markdown, when ``tokens`` are one table in the subset."""
    if not tokens or tokens[0].type != "table_open" or tokens[-1].type != "table_close":
        return None
    aligns: list[str] = []
    rows: list[list[str]] = []
    for token in tokens[1:-1]:
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "th_open":
            aligns.append(str(token.attrs.get("style", "")))
        elif token.type == "inline":
            cell = _inline(token.children or [], parser)
            if cell is None or not rows:
                return None
            rows[-1].append(cell)
        elif token.type not in ("thead_open", "thead_close", "tbody_open", "tbody_close", "tr_close",
                                "th_close", "td_open", "td_close"):  # fmt: skip
            return None
    if not rows or any(len(row) != len(aligns) for row in rows):
        return None
    return tuple(aligns), tuple(tuple(row) for row in rows)


def _inline(children: list[Token], parser: MarkdownIt) -> str | None:
    """One cell's inline tokens as markdown, or None if one is outside the subset or would read otherwise."""
    out: list[str] = []
    kinds: list[str] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline") and _REFUSED.search(child.content):  # a reference such as `&#36;`
            return None
        if kind == "text":
            out.append(_ESCAPED.sub(r"\\\g<0>", child.content))
        elif kind == "code_inline":
            code = child.content
            if not code or "`" in code or "|" in code or code[0] == " " or code[-1] == " ":
                return None
            out.append(f"`{code}`")
        elif kind in _MARKS:
            out.append(_MARKS[kind])
        else:
            return None
        kinds.append(kind)
    if any(kind in _MARKS for kind in kinds):
        shape = tuple(piece if kind in _MARKS else _ends(piece) for piece, kind in zip(out, kinds, strict=True))
        if not _pairs_alike(shape, tuple(kinds), parser):
            return None
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _pairs_alike(pieces: tuple[str, ...], kinds: tuple[str, ...], parser: MarkdownIt) -> bool:
    """Whether ``pieces`` (a cell as written, its text cut by ``_ends``) parse as the tokens ``kinds`` again.

    Emphasis pairs by its delimiter runs and the characters just beside them, so each text
    or code piece may stand in as its first and last character: a table's cells then share
    a few shapes, and each shape is parsed once.
    """
    written = [t.type for t in parser.parseInline("".join(pieces))[0].children or []]
    return _joined(written) == _joined(list(kinds))


def _joined(kinds: list[str]) -> list[str]:
    """Token kinds with code spans as text and touching texts as one (the parser joins them)."""
    plain = ["text" if k == "code_inline" else k for k in kinds]
    return [k for i, k in enumerate(plain) if k != "text" or i == 0 or plain[i - 1] != "text"]


def _ends(piece: str) -> str:
    """A text or code piece cut to what emphasis looks at: its first and last character (escapes whole)."""
    if piece.startswith("`"):
        return "`x`"
    first = piece[:2] if piece.startswith("\\") else piece[:1]
    last = piece[-2:] if len(piece) >= 2 and piece[-2] == "\\" else piece[-1:]
    return piece if len(piece) <= len(first) + len(last) + 1 else first + "x" + last


# A line markdown-it could take for a table's delimiter row (its own test is ``^[-:|][-:|\s]*$``
# after the indent); ``\s`` may run on over line ends, which only lets more text through.
_DELIMITER_ROW = re.compile(r"^[ \t]*[-:|][-:|\s]*$", re.M)


def table_parts(md: str) -> Iterator[tuple[str, bool]]:
    """``md`` cut around its top-level tables (outside HTML containers): ``(text, is_table)`` in order.

    Blank lines stay with the part before them; the parts' texts join to ``md``.
    """
    if "|" not in md or not _DELIMITER_ROW.search(md):  # no table without both: no parse
        yield md, False
        return
    env: dict[str, Any] = {}
    tokens = _parser("blocks").parse(md, env)
    if env.get("references"):  # a cell's `[x]` may be a link to one: parsed alone, it would not be
        yield md, False
        return
    starts = [*_line_starts(md), len(md)]
    done = depth = 0
    for token in tokens:
        if token.type == "html_block" and token.level == 0:  # inside an open <details> or <div>, a table stays
            depth = max(0, depth + _container_change(token.content))
        if token.type != "table_open" or token.level != 0 or token.map is None or depth:
            continue
        begin, end = starts[min(token.map[0], len(starts) - 1)], starts[min(token.map[1], len(starts) - 1)]
        if begin > done:
            yield md[done:begin], False
        yield md[begin:end], True
        done = end
    if done < len(md):
        yield md[done:], False


def table_bundles(md: str) -> list[Bundle]:
    """The bundles of finished text: each table that can be as markdown written here, HTML for the rest."""
    if md.lstrip(" \t\r\n").startswith("|") and (whole := table_markdown(md)) is not None:
        return [{"text/markdown": whole, "text/plain": md}]  # one table: parsed once
    bundles: list[Bundle] = []
    pending = ""
    for part, is_table in table_parts(md):
        written = table_markdown(part) if is_table else None
        if written is None:
            pending += part
            continue
        if pending.strip():
            bundles.append(markdown_bundle(pending))
        elif pending and bundles:  # blank lines stay with the part before them
            bundles[-1]["text/plain"] += pending
        elif pending:
            part = pending + part
        pending = ""
        bundles.append({"text/markdown": written, "text/plain": part})
    if pending.strip() or not bundles:
        bundles.append(markdown_bundle(pending))
    elif pending:
        bundles[-1]["text/plain"] += pending
    return bundles
