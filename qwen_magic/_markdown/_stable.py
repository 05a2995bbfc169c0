"""Where streamed text can be cut: the finished top-level blocks before an offset.

``stable_prefix(text)`` returns an offset before which every top-level block is finished
and cannot change however the text goes on, so the view publishes it once and re-renders
only the open tail after it. The last block counts as finished only when no line can
continue it: an ATX heading, or a paragraph, table, quote or setext heading followed by a
blank line (a list, a code block or an HTML block may go on after one). Display math whose
closer has not come yet (``$$`` on a line, then lines, no blank one) may still take in every
line after its opener, so nothing after the block holding the opener is cut off. It models
the block grammar of ``_parse`` (markdown-it-py 4.3,
CommonMark 0.31.2 with GFM tables), which is what renders the answer: a cut is safe when
that parser, given more text, would end the same blocks at the same lines. It stays
linear in the answer however long one block stays open.
"""

from __future__ import annotations

from ._parse import _container_change, _display_closer, _line_starts, _parser

# Blocks that a blank line ends for good (a list, a code block or an HTML block may go on after one).
_ENDED_BY_BLANK = frozenset({"paragraph_open", "heading_open", "table_open", "blockquote_open", "hr"})
_REPARSE_BELOW = 4096  # an open tail shorter than this is parsed at every call
_REPARSE_GROWTH = 1.5  # a longer one again only once it has grown by half

# The last text parsed and its answer: a prefix found stable stays stable as the text grows.
_last: tuple[str, int] = ("", 0)


def stable_prefix(text: str) -> int:
    """Offset ``k`` such that ``text[:k]`` is whole top-level blocks that later text cannot change.

    Linear in total while the text grows: a tail longer than ``_REPARSE_BELOW`` that extends
    the text of the previous call is parsed again only once it has grown by half since
    then; in between the previous answer stands (it is still right, perhaps short).
    """
    global _last
    previous, answer = _last
    if (
        len(text) >= _REPARSE_BELOW
        and len(text) < len(previous) * _REPARSE_GROWTH
        and len(text) >= len(previous)
        and text.startswith(previous)
    ):
        return answer
    answer = _stable_prefix(text)
    _last = (text, answer)
    return answer


def _stable_prefix(text: str) -> int:
    # A line still being written may yet turn into something else ("```a" is a fence,
    # "```a`" is not; "#" is a heading, "#x" is not), so only whole lines count.
    cut = max(text.rfind("\n"), text.rfind("\r")) + 1
    if cut == 0:
        return 0
    complete = text[:cut]
    starts = _line_starts(complete)
    blocks: list[list[int]] = []
    open_at: int | None = None  # the block where a still-open <details>/<div> began
    depth = 0
    ended = False  # the last block is one that no later line can continue
    for tok in _parser("blocks").parse(complete):
        if tok.level == 0 and tok.nesting >= 0 and tok.map is not None:
            blocks.append(tok.map)
            after = complete[starts[min(tok.map[1], len(starts) - 1)] :]
            ended = (tok.type == "heading_open" and tok.markup.startswith("#")) or (
                tok.type in _ENDED_BY_BLANK and after != "" and not after.strip(" \t\r\n")
            )
            if tok.type == "html_block":
                before = depth
                depth = max(0, depth + _container_change(tok.content))
                if depth and not before:
                    open_at = len(blocks) - 1
    if not blocks:
        return 0
    # Display math not closed yet may still take in the lines after its opening one.
    math = _open_display_math(complete, starts)
    if ended and not depth and math is None:
        # An ATX heading ends with its line; a paragraph, table, quote or rule with a blank line.
        return len(complete)
    # Such an element is rendered whole, so it must not be cut before it closes.
    last = open_at if depth and open_at is not None else len(blocks) - 1
    if math is not None:
        last = min(last, max((i for i, block in enumerate(blocks) if block[0] <= math), default=0))
    line = blocks[last][0]
    floor = blocks[last - 1][1] if last > 0 else 0
    # A link reference definition right before the last block may still take the next
    # line as its title, so it stays with that block.
    while line > floor and complete[starts[line - 1] : starts[line]].strip():
        line -= 1
    k = starts[line]
    return k if complete[:k].strip() else 0


def _open_display_math(text: str, starts: list[int]) -> int | None:
    """The line of a display-math opener (``$$``, ``\\[``, ``\\begin{…}`` starting a line, its closer
    not on it) that no later line has closed yet, with no blank line since: ``_parse``'s
    math block would take in the lines up to its closer once that arrives, whatever they
    look like now. Openers are taken at any indentation (a cut only moves earlier)."""
    lines = [text[starts[i] : starts[i + 1]] for i in range(len(starts) - 1)]
    blank = max((i for i, line in enumerate(lines) if not line.strip()), default=-1)
    pending, closer = None, ""
    for i in range(blank + 1, len(lines)):
        body = lines[i].strip()
        if pending is None:
            if (found := _display_closer(body)) is not None:
                pending, closer = i, found
        elif body.endswith(closer):
            pending = None
    return pending
