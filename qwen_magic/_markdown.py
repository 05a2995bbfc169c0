"""Markdown for the live view: publish model text safely, and find where it can be cut.

Two jobs, both on the answer's markdown as it streams in:

``sanitize(md)``
    Model text is untrusted, yet JupyterLab renders the ``text/markdown`` outputs of a
    running session as *trusted*: through ``marked`` with raw HTML allowed, and with no
    sanitizer. ``sanitize`` returns markdown that cannot run anything there while
    ordinary markdown comes back byte for byte. It parses once with markdown-it-py and
    looks at each top-level block: a block with raw HTML, a link or image whose URL
    scheme is not http(s)/mailto, or anything else that marked might read differently
    is replaced by safe HTML (the block rendered alone, then cleaned by ``nh3``);
    every other block keeps its exact source.

    JupyterLab first cuts ``$…$``/``$$…$$`` math out of the text (``removeMath`` in
    ``@jupyterlab/rendermime``), hands the rest to marked and then pastes the math back
    in *unescaped* except for ``&<>``. So the blocks are judged on the text marked will
    really see (``_math_spans`` mirrors that function), and a block whose math holds a
    ``"`` is replaced, since pasted into an attribute (a link's URL, a fence's language
    class) such math would open an event handler.

``stable_prefix(text)``
    Where the streamed text can be cut: every top-level block before the offset is
    finished and cannot change however the text goes on, so the view publishes it once
    and re-renders only the open tail after it.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from markdown_it import MarkdownIt
    from markdown_it.token import Token

# markdown-it's own default; content nested deeper is dropped without a token, so a
# block that gets near it is treated as unsafe rather than trusted unseen.
_MAX_NESTING = 20
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

_ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "b", "i", "em", "strong",
        "code", "pre", "kbd", "sub", "sup", "mark", "s", "del", "ins", "u", "small",
        "span", "div", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr",
        "th", "td", "a", "img", "details", "summary",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}}
# Dropped with everything inside them: their text is code or markup, not prose.
_DROPPED_WITH_CONTENT = frozenset(
    {
        "script", "style", "template", "noscript", "iframe", "object", "embed", "svg",
        "math", "textarea", "title", "xmp", "noembed", "noframes", "plaintext", "select",
    }
)  # fmt: skip

# Browsers ignore these inside a URL's scheme (tab/newline anywhere, controls and spaces
# at the ends); dropping them all before looking at the scheme is the cautious superset.
_IGNORABLE = re.compile("[\x00-\x20\x7f-\xa0\xad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# What a browser (or marked, whose tag names are looser than CommonMark's) may take as
# the start of a tag, comment or declaration.
_TAG_START = re.compile(r"<[A-Za-z/!?]")
# Link or reference-definition syntax left over as text, in case marked makes it a link.
_LINKISH = re.compile(r"\][ \t\n]*[(:][ \t\n]*<?")
_LINE_END = re.compile(r"\r\n?|\n")
_URL_INVISIBLE = re.compile(r"[\t\n\r]+")
_LINE_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)")
_HTML_LINE_ESCAPES = str.maketrans({"\n": "&#10;", "$": "&#36;", "\\": "&#92;", ":": "&#58;"})
_RISKY_CHARS = re.compile(r"[<:&$\\]")
_CONTAINER_TAG = re.compile(
    r"<(/?)(?:details|div|table|blockquote|ul|ol|dl|section|article|aside|center|figure)(?=[\s/>])", re.I
)
_BLOCK_TAG = re.compile(r"<(?:p|h[1-6]|ul|ol|table|blockquote|hr|div|details|pre)[\s/>]")

# JupyterLab's removeMath, transcribed from JavaScript: its `^`/`$` (multiline) and `\s`
# are spelled out because Python's differ.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_BOL = "(?:\\A|(?<=[\n\r\u2028\u2029]))"
_EOL = "(?=[\n\r\u2028\u2029]|\\Z)"
_JS_FENCE = re.compile(_BOL + r"(?P<f>`{3,}|~{3,})[^`\n]*\n[\s\S]*?" + _BOL + r"(?P=f)`*" + _EOL)
_JS_CODE_SPAN = re.compile("(" + _BOL + r"|[^\\])(`+)([^\n]*?[^`\n])\2(?!`)")
_MATH_SPLIT = re.compile(
    r"(\$\$?|\\(?:begin|end)\{[a-z]*\*?\}|\\[{}$]|[{}]|(?:\n[" + _JS_SPACE + r"]*)+|@@\d+@@|\\\\(?:\(|\)|\[|\]))",
    re.I | re.A,
)
_JS_PARAGRAPH_BREAK = re.compile("\n[^\n\r\u2028\u2029]*\n")


@functools.cache
def _parser(kind: str) -> MarkdownIt:
    """A configured markdown-it: ``scan`` and ``blocks`` to judge text, ``render`` to render it."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "maxNesting": _MAX_NESTING})
    md.enable(["table", "strikethrough"])  # GFM-like, as marked is
    # Every link becomes a token: to judge its raw URL here, and when rendering so that
    # nh3 drops a bad URL but keeps the link's text (markdown-it's own check would leave
    # `[x](javascript:…)` as literal text and let `data:image/…` through).
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    if kind != "render":
        md.normalizeLink = lambda url: url  # type: ignore[method-assign]
        md.normalizeLinkText = lambda text: text  # type: ignore[method-assign]
        # Escaped and entity characters stay separate tokens: `\<b>` is not a tag.
        md.disable("text_join")
    if kind == "blocks":
        md.disable("inline")  # block boundaries need no inline parsing
    return md


def warm_up() -> None:
    """Import markdown-it and nh3 and build the parsers ahead of the first answer."""
    import nh3  # noqa: F401

    for kind in ("scan", "blocks", "render"):
        _parser(kind)


# --- Job 1: sanitize -----------------------------------------------------------------


def sanitize(md: str) -> str:
    """Markdown that renders like ``md`` but cannot run script in a trusting renderer."""
    if not _RISKY_CHARS.search(md) and not ('"' in md and ("```" in md or "~~~" in md)):
        # No tag, no scheme (not even as `&colon;`), no math and no quote in a fence's
        # info: nothing marked could turn into script.
        return md
    try:
        return _sanitize(md)
    except Exception:  # never let a parser bug publish the raw text
        try:
            return _html_line(md, {}) + "\n"
        except Exception:
            return _escaped_line(md) + "\n"


def _sanitize(md: str) -> str:
    """``sanitize`` without the fast path and the last-resort fallbacks."""
    segments, refs = _scan(md)
    if not any(unsafe for _, _, unsafe in segments):
        return md
    out: list[str] = []
    replacements: set[str] = set()
    after_replacement = False
    for start, end, unsafe in segments:
        chunk = md[start:end]
        if not unsafe:
            if after_replacement and not _starts_blank(chunk):
                out.append("\n")
            out.append(chunk)
            after_replacement = False
            continue
        if out and not _ends_blank("".join(out)):
            out.append("\n" if out[-1].endswith("\n") else "\n\n")
        line = _html_line(chunk, refs)
        if line:
            replacements.add(line)
            out.append(line + "\n")
        after_replacement = True
    result = "".join(out)
    # Cutting blocks out can change how the rest pairs its `$` (JupyterLab's math pass
    # runs over the whole text), so the result is judged again; what is still unsafe
    # must be one of the replacement lines, or everything goes through nh3.
    for start, end, unsafe in _scan(result)[0]:
        if unsafe and result[start:end].strip() not in replacements:
            return _html_line(md, refs) + "\n"
    return result


def _starts_blank(text: str) -> bool:
    """Whether ``text`` begins with a blank line."""
    m = _LINE_END.search(text)
    return not text.strip() if m is None else not text[: m.start()].strip()


def _ends_blank(text: str) -> bool:
    """Whether ``text`` ends with a blank line, so that what follows starts afresh."""
    lines = _LINE_END.split(text)
    return len(lines) > 1 and lines[-1] == "" and not lines[-2].strip()


def _html_line(source: str, refs: dict[str, Any]) -> str:
    """``source`` rendered alone and cleaned, as one line that marked passes through as HTML."""
    import nh3

    rendered = _parser("render").render(source, {"references": dict(refs)})
    cleaned = nh3.clean(
        rendered,
        tags=set(_ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(_SAFE_SCHEMES),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        link_rel="noopener noreferrer",
    ).strip()
    if not cleaned:
        return ""
    # One line, so no blank line lets marked fall back to markdown inside it; no `$`
    # or `\`, so JupyterLab's math pass finds nothing to paste; the browser decodes
    # the references back in text and attributes alike.
    # `:` too, so not even inert text such as a shown `javascript:` URL reads like one.
    cleaned = cleaned.translate(_HTML_LINE_ESCAPES)
    if not _BLOCK_TAG.match(cleaned):
        cleaned = f"<div>{cleaned}</div>"  # an HTML block must open with a block tag
    return cleaned


def _escaped_line(text: str) -> str:
    """``text`` as inert escaped HTML, with no parser involved."""
    return "<div>" + _LINE_END.sub("<br>", html.escape(text)).translate(_HTML_LINE_ESCAPES) + "</div>"


def _unsafe_url(url: str) -> bool:
    """Whether a link target has a scheme other than http, https or mailto."""
    m = _SCHEME.match(_IGNORABLE.sub("", url))
    return m is not None and m.group(1).lower() not in _SAFE_SCHEMES


def _tag_like(text: str) -> bool:
    """Whether text that markdown-it left as text holds something a browser may take as a tag."""
    return _TAG_START.search(text) is not None


def _link_like(text: str) -> bool:
    """Whether text holds link syntax with a bad scheme that marked might yet read as a link."""
    for m in _LINKISH.finditer(text):
        # Tabs and line breaks (say from `&#9;`) vanish inside a URL, so they split nothing.
        target = _URL_INVISIBLE.sub("", text[m.end() : m.end() + 200]).split(None, 1)
        if target and _unsafe_url(target[0]):
            return True
    return False


def _code_span_risky(source: str) -> bool:
    """Whether marked might not see the code spans markdown-it saw in this inline source.

    marked lets a GFM autolink (``www.``, ``https://``) or a failed ``~`` strikethrough
    swallow a backtick, and ends a
    paragraph before any line followed by a table-like delimiter row even when the
    table then fails; either can undo a code span, turning its text into live HTML.
    """
    if "://" in source or "www." in source.lower() or "~`" in source:
        return True
    if "\n" not in source:
        return False
    # A code span spanning lines could be cut in two: each line's HTML-like text must sit
    # in a code span that opens and closes on that line.
    return any(_tag_like(_LINE_CODE_SPAN.sub("", line)) for line in source.split("\n"))


def _inline_unsafe(children: Sequence[Token], source: str) -> bool:
    """Whether inline tokens hold raw HTML, a bad link, or text marked could make either of."""
    prose: list[str] = []
    risky_code = False
    for tok in children:
        kind = tok.type
        if kind == "html_inline":
            return True
        if kind == "link_open":
            if _unsafe_url(str(tok.attrGet("href") or "")):
                return True
        elif kind == "image":
            if _unsafe_url(str(tok.attrGet("src") or "")):
                return True
            if tok.children and _inline_unsafe(tok.children, tok.content):
                return True
        elif kind == "text":
            if _tag_like(tok.content):
                return True
            prose.append(tok.content)
        elif kind == "text_special":
            prose.append(tok.content)  # escaped `\<` or `&lt;`: not a tag, but part of a URL
        elif kind in ("softbreak", "hardbreak"):
            prose.append("\n")
        else:
            if kind == "code_inline" and (_tag_like(tok.content) or _link_like(tok.content)):
                risky_code = True
            prose.append("\x00")
    if risky_code and _code_span_risky(source):
        return True
    joined = "".join(prose)
    return "]" in joined and _link_like(joined)


def _fence_unsafe(tok: Token) -> bool:
    """Whether a fenced block could escape: a quote in its info, or an early end in marked."""
    if '"' in tok.info:
        # JupyterLab writes the info into `class="language-…"` without escaping it.
        return True
    if _tag_like(tok.info) or _link_like(tok.info):
        # An opening line with no line break after it does not interrupt a paragraph in
        # marked, which then reads it, info and all, as paragraph text.
        return True
    # marked also ends a fence on a line like "```~" (opening run, then any of ` and ~);
    # CommonMark does not, and what markdown-it calls code would be live HTML there.
    closing = re.compile(r" {0,3}" + re.escape(tok.markup) + r"[~`]* *\Z")
    return any(closing.match(line) for line in tok.content.split("\n"))


def _token_unsafe(tok: Token) -> bool:
    """Whether one block-level token makes its top-level block unsafe."""
    if tok.level >= _MAX_NESTING - 2:
        return True
    kind = tok.type
    if kind == "html_block":
        return True
    if kind == "inline":
        return bool(tok.children) and _inline_unsafe(tok.children, tok.content)
    if kind == "fence":
        return _fence_unsafe(tok)
    if kind == "code_block":
        # Indentation is where parsers disagree most; such code keeps no HTML-looking text.
        return _tag_like(tok.content) or _link_like(tok.content)
    return False


def _after_label(fence: Token, text: str, starts: list[int]) -> bool:
    """Whether a fence follows a ``[label]:`` line, which marked would complete with it."""
    # marked takes the opening line as the definition's URL (CommonMark lets the fence
    # interrupt first), and then reads the fenced lines as live markdown.
    first = fence.map[0] if fence.map else 0
    return first > 0 and text[starts[first - 1] : starts[first]].rstrip().endswith("]:")


def _math_spans(text: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of ``text`` that JupyterLab's ``removeMath`` takes out as math."""
    masked = text
    if "`" in text or "~~~" in text:
        # removeMath first hides `$` inside what its regexes take for code.
        protected: list[int] = []
        for pattern in (_JS_FENCE, _JS_CODE_SPAN):
            for m in pattern.finditer(text):
                pos = text.find("$", m.start(), m.end())
                while pos != -1:
                    protected.append(pos)
                    pos = text.find("$", pos + 1, m.end())
        if protected:
            chars = list(text)
            for pos in protected:
                chars[pos] = "\x00"  # like its `~D`: no delimiter, nothing else either
            masked = "".join(chars)
    if "\r" in text:
        index = [i for i, ch in enumerate(text) if ch != "\r" or text[i + 1 : i + 2] != "\n"]
        masked = _LINE_END.sub("\n", masked)
    else:
        index = None
    parts = _MATH_SPLIT.split(masked)
    offsets = [0]
    for part in parts:
        offsets.append(offsets[-1] + len(part))

    found: list[tuple[int, int]] = []
    start: int | None = None
    end = ""
    last: int | None = None
    braces = 0
    i = 1
    while i < len(parts):
        block = parts[i]
        if block[0] == "@":
            found.append((offsets[i], offsets[i + 1]))  # a look-alike marker is stored too
        elif start is not None:
            if block == end:
                if braces:
                    last = i
                else:
                    found.append((offsets[start], offsets[i + 1]))
                    start, end, last = None, "", None
            elif _JS_PARAGRAPH_BREAK.search(block):
                if last is not None:
                    i = last
                    found.append((offsets[start], offsets[i + 1]))
                start, end, last, braces = None, "", None, 0
            elif block == "{":
                braces += 1
            elif block == "}" and braces:
                braces -= 1
        elif block in ("$", "$$"):
            start, end, braces = i, block, 0
        elif block in ("\\\\(", "\\\\["):
            start, end, braces = i, "\\\\)" if block[-1] == "(" else "\\\\]", 0
        elif block[1:6] == "begin":
            start, end, braces = i, "\\end" + block[6:], 0
        i += 2
    if start is not None and last is not None:
        found.append((offsets[start], offsets[last + 1]))

    spans: list[tuple[int, int]] = []
    for a, b in sorted(found, key=lambda span: (span[0], -span[1])):
        if not spans or a >= spans[-1][1]:  # markers inside math go with it
            spans.append((a, b))
    if index is not None:
        spans = [(index[a], index[b - 1] + 1) for a, b in spans]
    return spans


class _View:
    """The text as marked sees it in JupyterLab (math cut out), mapped back to the source."""

    def __init__(self, text: str) -> None:
        spans = _math_spans(text) if "$" in text or "\\" in text else []
        pieces: list[str] = []
        # (start in view, end in view, start in source, end in source) per placeholder
        self.marks: list[tuple[int, int, int, int]] = []
        self.quoted: list[int] = []
        pos = view_pos = 0
        for n, (a, b) in enumerate(spans):
            pieces.append(text[pos:a])
            view_pos += a - pos
            placeholder = f"@@{n}@@"
            pieces.append(placeholder)
            self.marks.append((view_pos, view_pos + len(placeholder), a, b))
            if '"' in text[a:b]:
                self.quoted.append(view_pos)
            view_pos += len(placeholder)
            pos = b
        pieces.append(text[pos:])
        self.text = "".join(pieces)
        self._starts = [mark[0] for mark in self.marks]
        self._source_len = len(text)

    def source_offset(self, offset: int) -> int:
        """The source offset of a view offset outside any placeholder."""
        if offset >= len(self.text):
            return self._source_len
        k = bisect.bisect_right(self._starts, offset) - 1
        if k < 0:
            return offset
        _start, end, source_start, source_end = self.marks[k]
        return source_start if offset < end else offset - end + source_end


def _container_change(html_source: str) -> int:
    """How many block containers (``<details>``, ``<div>``, …) an HTML block leaves open."""
    return sum(-1 if m.group(1) else 1 for m in _CONTAINER_TAG.finditer(html_source))


def _line_starts(text: str) -> list[int]:
    """Offsets where each line of ``text`` begins, as markdown-it counts lines."""
    return [0, *(m.end() for m in _LINE_END.finditer(text))]


def _scan(text: str) -> tuple[list[tuple[int, int, bool]], dict[str, Any]]:
    """Cut ``text`` into ``(start, end, unsafe)`` segments; also its safe link references."""
    view = _View(text)
    env: dict[str, Any] = {}
    tokens = _parser("scan").parse(view.text, env)
    starts = _line_starts(view.text)
    n_lines = len(starts) - (1 if starts[-1] == len(view.text) else 0)

    def line_end(line: int) -> int:
        return starts[line] if line < len(starts) else len(view.text)

    # [first line, end line, unsafe, kind, joined to the unit before]: markdown-it's
    # top-level blocks ("block", "html") and, between them, runs of "blank" lines and of
    # link reference definitions ("gap": they get no token).
    units: list[list[Any]] = []
    line = 0

    def fill(upto: int) -> None:
        nonlocal line
        while line < upto:
            kind = "gap" if view.text[starts[line] : line_end(line + 1)].strip() else "blank"
            if units and units[-1][3] == kind and units[-1][1] == line:
                units[-1][1] = line + 1
            else:
                units.append([line, line + 1, False, kind, False])
            line += 1

    for tok in tokens:
        if tok.level == 0 and tok.nesting >= 0 and tok.map is not None:
            fill(tok.map[0])
            kind = "html" if tok.type == "html_block" else "block"
            units.append([tok.map[0], max(tok.map[1], tok.map[0] + 1), False, kind, False])
            line = units[-1][1]
        if units and units[-1][3] in ("block", "html") and not units[-1][2]:
            units[-1][2] = _token_unsafe(tok) or (tok.type == "fence" and _after_label(tok, view.text, starts))
    fill(n_lines)
    depth = 0
    for unit in units:
        chunk = view.text[starts[unit[0]] : line_end(unit[1])]
        if unit[3] == "gap":
            unit[2] = _tag_like(chunk) or _link_like(chunk)
        if depth:
            # Inside a `<details>` or `<div>` opened by an earlier HTML block: render the
            # whole element as one, so its markdown content stays inside it.
            unit[2] = unit[4] = True
        if unit[3] == "html":
            depth = max(0, depth + _container_change(chunk))
    firsts = [unit[0] for unit in units]

    def unit_at(line_no: int) -> list[Any] | None:
        k = bisect.bisect_right(firsts, line_no) - 1
        return units[k] if k >= 0 and line_no < units[k][1] else None

    safe_refs: dict[str, Any] = {}
    definitions = [*env.get("references", {}).items()]
    definitions += [(ref.get("label", ""), ref) for ref in env.get("duplicate_refs", [])]
    for label, ref in definitions:
        href, title = str(ref.get("href", "")), str(ref.get("title", ""))
        if _unsafe_url(href) or (view.marks and "@@" in href + title):
            unit = unit_at(ref["map"][0]) if ref.get("map") else None
            if unit is not None:
                unit[2] = True
        elif label not in safe_refs:
            safe_refs[label] = {"href": href, "title": title}
    for offset in view.quoted:
        unit = unit_at(bisect.bisect_right(starts, offset) - 1)
        if unit is not None:
            unit[2] = True

    segments: list[tuple[int, int, bool]] = []
    for first, end, unsafe, _kind, joined in units:
        a = view.source_offset(starts[first])
        b = view.source_offset(line_end(end))
        if segments and segments[-1][2] == unsafe and (joined or not unsafe):
            segments[-1] = (segments[-1][0], b, unsafe)
        elif b > a:
            segments.append((a, b, unsafe))
    if not segments:
        segments.append((0, len(text), False))
    elif segments[-1][1] < len(text):
        segments.append((segments[-1][1], len(text), False))
    return segments, safe_refs


# --- Job 2: stable_prefix ------------------------------------------------------------


def stable_prefix(text: str) -> int:
    """Offset ``k`` such that ``text[:k]`` is whole top-level blocks that later text cannot change."""
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
    for tok in _parser("blocks").parse(complete):
        if tok.level == 0 and tok.nesting >= 0 and tok.map is not None:
            blocks.append(tok.map)
            if tok.type == "html_block":
                before = depth
                depth = max(0, depth + _container_change(tok.content))
                if depth and not before:
                    open_at = len(blocks) - 1
    if not blocks:
        return 0
    # sanitize() renders such an element whole, so it must not be cut before it closes.
    last = open_at if depth and open_at is not None else len(blocks) - 1
    line = blocks[last][0]
    floor = blocks[last - 1][1] if last > 0 else 0
    # A link reference definition right before the last block may still take the next
    # line as its title, so it stays with that block.
    while line > floor and complete[starts[line - 1] : starts[line]].strip():
        line -= 1
    k = starts[line]
    return k if complete[:k].strip() else 0
