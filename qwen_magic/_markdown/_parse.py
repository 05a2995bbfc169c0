"""markdown-it-py set up as the one parser of model markdown, with math found while parsing.

Models markdown-it-py 4.3 (as installed: a port of markdown-it 14.1, CommonMark 0.31.2)
with GFM tables and strikethrough, and bare URLs made links only where GFM makes them
(linkify-it-py, trimmed to ``http(s)://``, ``www.`` and e-mail addresses), so that an
answer reads as JupyterLab's GFM marked would read it. Raw HTML is on, so that it reaches
the sanitizer (``_safe``) instead of showing as text; every link and image becomes a
token, so that nh3 judges its URL. ``_parser("blocks")`` is the same grammar without
inline parsing, for finding where top-level blocks end (``_stable``, ``_marked``).

Math and dollars. Math is found while parsing, the way pandoc does: ``$…$`` when the
opening ``$`` has a non-space character after it and the next ``$`` has a non-space
character before it and no digit after it; ``$$…$$``, ``\\(…\\)``, ``\\[…\\]`` and
``\\begin{…}…\\end{…}`` always, unless MathJax would end them elsewhere (unbalanced
braces) or the TeX makes links or loads code (``\\href``, ``\\require``): those stay
text. The end is checked against MathJax 3.2's own search for it (``FindTeX.findEnd`` in
the mathjax-full that JupyterLab 4.6 bundles). Code wins over math where it starts first,
and emphasis never reaches inside math. Each math span is written HTML-escaped in an
element of its own (``<span class="qm-math">``), which ``_safe`` keeps whole.

Pathological text. markdown-it has slow paths (``[[[[…``, ``*_*_…``, ten thousand
unclosed ``\\(``); the guards here (``_when_links_possible``, ``_when_emphasis_sane``,
``_find``) keep parsing linear, and ``benchmarks/bench_adversarial.py`` measures it.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._highlight import _highlight

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.parser_inline import RuleFuncInlineType
    from markdown_it.renderer import RendererHTML
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_core import StateCore
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token
    from markdown_it.utils import EnvType, OptionsDict


# Deep enough for any real answer; deeper content is dropped by markdown-it (never shown raw).
_MAX_NESTING = 50
_MATH_CLASS = "qm-math"  # the element each math span is written in (``_safe`` keeps it whole)

_DISPLAY_OPENERS = (("$$", "$$"), ("\\[", "\\]"))
_BEGIN = re.compile(r"\\begin\{([A-Za-z]{1,30}\*?)\}")


@functools.cache
def _parser(kind: str = "render") -> MarkdownIt:
    """markdown-it for rendering answers (``render``), or for finding block ends (``blocks``)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "maxNesting": _MAX_NESTING})
    md.enable(["table", "strikethrough"])  # GFM-like, as marked is
    md.block.ruler.before("fence", "math_block", _math_block, {"alt": ["paragraph", "reference", "blockquote", "list"]})
    if kind == "blocks":
        md.disable("inline")  # block boundaries need no inline parsing
        return md
    # Bare URLs become links, as GFM (and so JupyterLab's marked) makes them; markdown-it
    # has a linkifier when its `linkify` extra is installed, else bare URLs stay text.
    if md.linkify is not None:
        md.options["linkify"] = True
        md.enable("linkify")
        md.core.ruler.after("linkify", "gfm_autolinks", _gfm_autolinks_only)
    # Every link and image becomes a token, so that nh3 judges its URL and a refused one
    # keeps its text (markdown-it's own check would leave `[x](javascript:…)` as text).
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.inline.ruler.before("escape", "math_inline", _math_inline)
    for name in ("link", "image"):
        rule = md.inline.ruler.__rules__[md.inline.ruler.__find__(name)].fn
        md.inline.ruler.at(name, functools.partial(_when_links_possible, rule))
    for name in ("emphasis", "strikethrough"):
        if md.inline.ruler.__find__(name) >= 0:
            rule = md.inline.ruler.__rules__[md.inline.ruler.__find__(name)].fn
            md.inline.ruler.at(name, functools.partial(_when_emphasis_sane, rule))
    md.add_render_rule("math_inline", _render_math)
    md.add_render_rule("math_block", _render_math_block)
    md.options["highlight"] = _highlight
    return md


_GFM_AUTOLINK = re.compile(r"(?:https?://|www\.)|[^\s@/:]+@", re.I)


def _gfm_autolinks_only(state: StateCore) -> None:
    """Undo linkify's links that GFM would not make (``example.com`` without a scheme or ``www.``)."""
    for block in state.tokens:
        children = block.children
        if block.type != "inline" or not children or not any(t.markup == "linkify" for t in children):
            continue
        kept: list[Token] = []
        i = 0
        while i < len(children):
            token = children[i]
            if (
                token.type == "link_open"
                and token.markup == "linkify"
                and i + 2 < len(children)
                and not _GFM_AUTOLINK.match(children[i + 1].content)
            ):
                kept.append(children[i + 1])  # the text, without the link around it
                i += 3
                continue
            kept.append(token)
            i += 1
        block.children = kept


def _math_inline(state: StateInline, silent: bool) -> bool:
    """Inline math at ``state.pos``, decided the pandoc way for single dollars."""
    src, pos, end = state.src, state.pos, state.posMax
    ch = src[pos]
    if ch == "$":
        if src.startswith("$$", pos):
            close = _find(state, "$$", pos + 2)
            if close < 0 or close == pos + 2:
                return False
            stop = close + 2
        else:
            if pos + 1 >= end or src[pos + 1].isspace():
                return False
            close = _next_dollar(src, pos + 1, end)
            if close < 0 or src[close - 1].isspace() or (close + 1 < end and src[close + 1].isdigit()):
                return False
            stop = close + 1
    elif ch == "\\":
        if src.startswith("\\(", pos) or src.startswith("\\[", pos):
            closer = "\\)" if src[pos + 1] == "(" else "\\]"
            close = _find(state, closer, pos + 2)
        else:
            m = _BEGIN.match(src, pos, end)
            if m is None:
                return False
            closer = f"\\end{{{m.group(1)}}}"
            close = _find(state, closer, m.end())
        if close < 0:
            return False
        stop = close + len(closer)
    else:
        return False
    if stop > end or not _math_allowed(src[pos:stop]) or not _mathjax_agrees(src, pos, stop, _opener_length(src, pos)):
        return False
    if not silent:
        token = state.push("math_inline", "", 0)
        token.content = src[pos:stop]
    state.pos = stop
    return True


_EMPHASIS_MARKS = 4000  # most `*`, `_` and `~` in one inline run (a paragraph, a cell) taken as emphasis


def _when_emphasis_sane(rule: RuleFuncInlineType, state: StateInline, silent: bool) -> bool:
    """markdown-it's emphasis or strikethrough rule, skipped in delimiter soup.

    Each ``*``/``_``/``~`` becomes a token that the pairing pass then walks: a paragraph of
    tens of thousands of them (``*_*_*_…``) costs seconds of CPU to turn into nothing a reader
    wants. Past ``_EMPHASIS_MARKS`` such characters in one inline run they stay literal text.
    """
    cache: dict[int, bool] = state.env.setdefault("_qwen_soup", {})
    soup = cache.get(id(state.src))
    if soup is None:
        src = state.src
        soup = cache[id(src)] = src.count("*") + src.count("_") + src.count("~") > _EMPHASIS_MARKS
    return False if soup else rule(state, silent)


def _when_links_possible(rule: RuleFuncInlineType, state: StateInline, silent: bool) -> bool:
    """markdown-it's link or image rule, skipped where no link can start.

    Each ``[`` makes markdown-it scan the text after it for the label's end, trying every
    inline rule at every character: ``[[[[…`` costs a dozen microseconds a character. An
    inline link needs a ``](`` after its ``[``; unless the text has reference definitions,
    a ``[`` with no ``](`` in the next ``_LINK_TEXT_LIMIT`` characters starts none (link
    text longer than that is not a link here).
    """
    if state.env.get("references"):
        return rule(state, silent)
    cache: dict[int, tuple[list[int], list[int]]] = state.env.setdefault("_qwen_links", {})
    found = cache.get(id(state.src))
    if found is None:
        src = state.src
        found = cache[id(src)] = ([m.start() for m in re.finditer(r"\]\(", src)], [m.start() for m in re.finditer(r"\[", src)])
    ends, opens = found
    k = bisect.bisect_left(ends, state.pos)
    if k == len(ends) or ends[k] - state.pos > _LINK_TEXT_LIMIT:
        return False
    # Bracket soup (``[[[[…](](](…``) makes every ``[`` rescan its nested labels: link text
    # holding more than ``_LINK_BRACKETS`` other ``[`` is not taken as a link here.
    if bisect.bisect_left(opens, ends[k]) - bisect.bisect_left(opens, state.pos) > _LINK_BRACKETS:
        return False
    return rule(state, silent)


_LINK_BRACKETS = 32  # most `[` inside one link's text (nested images, footnote marks)
_LINK_TEXT_LIMIT = 2000


def _opener_length(src: str, pos: int) -> int:
    """How long the opener at ``pos`` is (``$``, ``$$``, ``\\(``, ``\\begin{x}``)."""
    if src.startswith("$$", pos):
        return 2
    if src[pos] == "$":
        return 1
    m = _BEGIN.match(src, pos)
    return m.end() - pos if m else 2


# MathJax's search for the end of math (FindTeX.findEnd): escapes pair up, braces nest.
_TEX_TOKEN = re.compile(r"\\(?:[a-zA-Z]|.)|[{}]|\$\$|\$", re.S)


def _mathjax_agrees(src: str, start: int, stop: int, opener: int) -> bool:
    """Whether MathJax, given exactly ``src[start:stop]``, ends the math at ``stop`` too.

    It ends math at the first closer outside braces; a span where that is not the end
    (a closer inside, unbalanced braces) stays text, so what MathJax typesets is always
    exactly what was found here.
    """
    closer = src[start:stop][-_closer_size(src, start, stop, opener) :]
    depth = 0
    for m in _TEX_TOKEN.finditer(src, start + opener, stop):
        token = m.group(0)
        if token == "{":
            depth += 1
        elif token == "}":
            depth = max(0, depth - 1)
        elif depth == 0 and (token == closer or (token.startswith("\\") and src.startswith(closer, m.start()))):
            return m.start() + len(closer) == stop
        elif depth == 0 and closer == "$$" and token == "$" and src.startswith("$$", m.start()):
            return m.start() + 2 == stop
    return False


def _closer_size(src: str, start: int, stop: int, opener: int) -> int:
    if src[start] == "$":
        return opener
    if src.startswith("\\begin", start):
        return len("\\end{" + src[start + 7 : start + opener].split("{", 1)[-1])
    return 2


def _next_dollar(src: str, start: int, end: int) -> int:
    """The next ``$`` from ``start`` that no backslash escapes, or -1."""
    pos = start
    while True:
        pos = src.find("$", pos, end)
        if pos < 0:
            return -1
        backslashes = 0
        while pos - 1 - backslashes >= start and src[pos - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return pos
        pos += 1


def _find(state: StateInline, closer: str, start: int) -> int:
    """``closer``'s first position from ``start`` in the inline content, remembering misses.

    Once a closer is missing after some position it is missing after every later one, so a
    line of ten thousand openers costs one search, not ten thousand.
    """
    missing: dict[str, int] = state.env.setdefault("_qwen_missing", {}).setdefault(id(state.src), {})
    if start >= missing.get(closer, len(state.src) + 1):
        return -1
    found = state.src.find(closer, start, state.posMax)
    if found < 0:
        missing[closer] = min(start, missing.get(closer, start))
    return found


# TeX commands that make links, set classes or styles, or load code: such "math" stays text.
_UNSAFE_TEX = re.compile(r"\\(?:href|url|class|style|cssId|data|html|require|unicode|mmlToken|bbox)\b")


def _math_allowed(math: str) -> bool:
    return _UNSAFE_TEX.search(math) is None


def _display_closer(first: str) -> str | None:
    """The closer of the display math the line ``first`` (without its indentation) opens: ``$$``,
    ``\\]`` or ``\\end{…}``; None if it opens none, or closes it itself (a paragraph's inline math)."""
    for opener, closer in _DISPLAY_OPENERS:  # noqa: B007 (the pair found is used below)
        if first.startswith(opener):
            break
    else:
        m = _BEGIN.match(first)
        if m is None:
            return None
        opener, closer = m.group(0), f"\\end{{{m.group(1)}}}"
    return None if closer in first[len(opener) :] else closer


def _math_block(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """Display math that starts a line (``$$``, ``\\[``, ``\\begin{…}``) and runs until its closer."""
    pos = state.bMarks[start_line] + state.tShift[start_line]
    maximum = state.eMarks[start_line]
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    closer = _display_closer(state.src[pos:maximum])
    if closer is None:
        return False
    line = start_line + 1
    while line < end_line:
        text = state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]]
        if not text.strip() or state.sCount[line] < state.blkIndent:
            return False  # a blank or outdented line first: no math here
        if text.rstrip().endswith(closer):
            break
        line += 1
    else:
        return False
    # Each line's own text: inside a quote or a list item, not the markers and indent before it.
    content = "\n".join(state.src[state.bMarks[n] + state.tShift[n] : state.eMarks[n]] for n in range(start_line, line + 1)).strip()
    if not _math_allowed(content) or not _mathjax_agrees(content, 0, len(content), _opener_length(content, 0)):
        return False
    if not silent:
        token = state.push("math_block", "", 0)
        token.content = content
        token.map = [start_line, line + 1]
    state.line = line + 1
    return True


def _render_math(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    return f'<span class="{_MATH_CLASS}">{html.escape(tokens[idx].content, quote=False)}</span>'


def _render_math_block(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    return f'<p><span class="{_MATH_CLASS}">{html.escape(tokens[idx].content, quote=False)}</span></p>\n'


# --- How top-level blocks are counted (``_render`` groups them, ``_stable`` and ``_marked`` cut) ---

_LINE_END = re.compile(r"\r\n?|\n")
_CONTAINER_TAG = re.compile(
    r"<(/?)(?:details|div|table|blockquote|ul|ol|dl|section|article|aside|center|figure)(?=[\s/>])", re.I
)


def _container_change(html_source: str) -> int:
    """How many block containers (``<details>``, ``<div>``, …) an HTML block leaves open."""
    return sum(-1 if m.group(1) else 1 for m in _CONTAINER_TAG.finditer(html_source))


def _line_starts(text: str) -> list[int]:
    """Offsets where each line of ``text`` begins, as markdown-it counts lines."""
    return [0, *(m.end() for m in _LINE_END.finditer(text))]
