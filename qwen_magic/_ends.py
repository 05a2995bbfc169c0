"""Where the finished blocks at the start of an answer's open text end, at a cost linear in the answer.

``NotebookView`` publishes finished markdown blocks whole, once, and shows only the open
one as a window; at each repaint it asks ``BlockEnds.find`` where the finished blocks end.
Only whole lines can finish a block, so nothing is parsed until a line ends. An open fence
ends only at its closing line: only new lines are searched for one. Most other lines need
no parse at all (``_markdown._lines``): a line of text after a paragraph's, a row after a
table's, an item after a list's cannot end the block, and a heading, or a paragraph, table
or quote followed by a blank line, visibly has. Other open text longer than ``REPARSE`` is
parsed whole only when its last lines show a block boundary, and an open table not while
only rows arrive. Each character is thus parsed whole a bounded number of times.
"""

from __future__ import annotations

import re

from ._markdown._lines import TABLE_HEAD

_ROWS = re.compile(r"(?: {0,3}\|[^\n\r]*(?:\r\n|\n|\r))*")  # lines no block but a table's row can be
# The opening line of a fence at the start of open text.
FENCE_OPEN = re.compile(r"(?:[ \t]*\n)*(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n")


class BlockEnds:
    """The block ends of one open tail, as it grows (a new tail, after a commit, gets a new one)."""

    REPARSE = 4096  # open text longer than this is re-parsed for block ends only as it grows by a quarter

    def __init__(self) -> None:
        self.stable = 0  # length of the finished blocks at the start of the tail
        self.parsed = 0  # complete-line length of the tail when block ends were last looked for
        self.fence: re.Pattern[str] | None = None  # closing line of the open fence the tail starts with
        self.whole = 0  # complete-line length of the tail when it was last parsed whole
        self.doubt = False  # the last lines showed a boundary the whole text did not confirm

    def find(self, tail: str) -> int:
        """Where the finished blocks at the start of ``tail`` end, at a cost linear in the answer.

        Only whole lines can finish a block, so nothing is parsed until a line ends. An open
        fence ends only at its closing line: only new lines are searched for one, and the
        fence is finished as soon as it is found. Other open text longer than ``REPARSE`` is
        parsed whole only when its last lines, parsed alone (after the table's header, if it
        is a table), hold a block boundary, or when it has doubled since it was; a boundary
        there that the whole text does not confirm (a lazy list line, an open ``<details>``)
        makes the next whole parse wait until the text has doubled. Each character is thus
        parsed whole a bounded number of times.
        """
        from ._markdown import simple_block, simple_ends, stable_prefix

        end = max(tail.rfind("\n"), tail.rfind("\r")) + 1
        if end <= self.parsed:
            return self.stable
        if not self.parsed and self.fence is None and (opened := open_fence(tail)) is not None:
            # The text starts with a fence: only its closing line, after its opening one, can end it.
            self.fence, self.parsed = opened[0], opened[1].end()
        if self.fence is not None:
            # A closing line may begin just before the old end (a line cut by a "\r\n").
            closing = self.fence.search(tail, max(0, self.parsed - 1), end)
            self.parsed = end
            if closing is None:
                return 0
            # A closed fence is a finished block: nothing after its closing line changes it.
            self.fence = None
            self.stable = _beyond(tail, closing.end() + 1, end)
            return self.stable
        elif end > self.REPARSE:
            found = self._boundary_near_end(tail, end)
            if found is None:
                self.parsed = end
                return self.stable
            if found:  # a table's rows do not depend on what came before: its end is where it shows
                self.parsed, self.stable = end, found
                return found
        elif simple_block(tail, 0, end):
            self.parsed = end  # no line of it can end the block it starts with: nothing to parse for
            return self.stable
        elif cut := simple_ends(tail, end):
            self.parsed = end  # blocks that end where their lines show it: no parse for them
            self.stable = _beyond(tail, cut, end)
            return self.stable
        probed = end > self.REPARSE and not (self.doubt and end >= 2 * self.whole)
        self.parsed = self.whole = end
        self.stable = stable_prefix(tail)
        # A boundary the last lines showed but the whole text does not have (a lazy list
        # line, an open <details>): trust the last lines no more until the text doubles.
        self.doubt = probed and self.stable == 0
        if self.stable == 0 and self.fence is None and (opened := open_fence(tail)) is not None:
            self.fence = opened[0]
        return self.stable

    def _boundary_near_end(self, tail: str, end: int) -> int | None:
        """Whether the lines since the last look (and a few before) may hold a block boundary.

        ``None``: they do not; ``0``: they may, parse the whole text; a positive offset:
        where the open table ends (its last lines, after its header, tell that exactly).
        """
        from ._markdown import stable_prefix

        if self.doubt:
            return 0 if end >= 2 * self.whole else None
        start = tail.rfind("\n", 0, max(0, min(self.parsed, end - 1024) - 256)) + 1
        for _ in range(64):  # start at a line that begins a block of its own, not a continuation
            if start == 0 or tail[start : start + 1] not in (" ", "\t", "\n", "\r"):
                break
            start = tail.rfind("\n", 0, start - 1) + 1
        context = ""
        if start and (head := TABLE_HEAD.match(tail)) is not None and start >= head.end():
            context = head.group()
        if context and _ROWS.fullmatch(tail, start, end):  # only rows since: the table is still open
            return None
        found = stable_prefix(context + tail[start:end]) - len(context)
        if found <= 0:
            return None
        if context and tail[start : start + 1] == "|" and "\n\n" in tail[start : start + found]:
            return start + found
        return 0


def open_fence(tail: str) -> tuple[re.Pattern[str], re.Match[str]] | None:
    """The closing line of the fence ``tail`` starts with, and its opening line's match; None
    if it starts with none."""
    if (opener := FENCE_OPEN.match(tail)) is None:
        return None
    fence = opener.group("fence")
    if fence[0] == "`" and "`" in opener.group("info"):
        return None  # not a fence: an info string of a backtick fence has no backtick
    return re.compile(f"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \\t]*\\r?$", re.M), opener


def _beyond(tail: str, cut: int, end: int) -> int:
    """``cut``, the end of finished blocks in ``tail``, moved past the finished blocks after it
    (among its whole lines, ``tail[:end]``): parsed only when they are not simple (``_markdown._lines``)."""
    from ._markdown import simple_block, simple_ends, stable_prefix

    if cut >= end or simple_block(tail, cut, end):
        return cut
    rest = tail[cut:]
    more = simple_ends(rest, end - cut)
    if more and (more >= end - cut or simple_block(rest, more, end - cut)):
        return cut + more
    return cut + max(more, stable_prefix(rest))
