"""Markdown for the live view: publish model text safely, and find where it can be cut.

Two jobs, both on the answer's markdown as it streams in:

``sanitize(md)``
    Model text is untrusted, yet JupyterLab renders the ``text/markdown`` outputs of a
    running session as *trusted*: through ``marked`` with raw HTML allowed and no
    sanitizer. ``sanitize`` returns markdown that cannot run anything there, while
    ordinary markdown comes back byte for byte. It parses once with markdown-it-py and
    judges each top-level block: one with raw HTML, a link or image whose URL scheme is
    not http(s)/mailto, or anything that marked may read differently from markdown-it
    is replaced by safe HTML (that block rendered alone, then cleaned by ``nh3``);
    every other block keeps its exact source.

    Two JupyterLab details shape the judging. It first cuts ``$…$``/``$$…$$`` math out
    of the text (``removeMath``), hands the rest to marked and pastes the math back
    into marked's HTML escaping only ``&<>``; so blocks are judged on the text marked
    really sees (``_math_spans`` transcribes ``removeMath``), and math holding a ``"``
    is refused, since pasted into an attribute it would open an event handler. And it
    writes a fence's info string into ``class="language-…"`` unescaped, so a ``"``
    there is refused too. Where marked's parsing is known to stray from CommonMark
    (GFM autolinks, tables, task items, lazy list lines, fence pairing) HTML-like text
    that markdown-it calls code is trusted only in plain surroundings.

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
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

# markdown-it's own default; content nested deeper is dropped without a token, so a
# block that gets near it is treated as unsafe rather than trusted unseen.
_MAX_NESTING = 20

# --- What replacement HTML may hold (nh3) ---------------------------------------------

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
# A replacement is one line (no blank line lets marked fall back to markdown inside
# it) with no `$` or `\` (nothing for JupyterLab's math pass to cut and paste) and no
# `:` (not even a shown `javascript:` URL reads like one); the browser decodes the
# character references back, in text and attributes alike.
_HTML_LINE_ESCAPES = str.maketrans({"\n": "&#10;", "$": "&#36;", "\\": "&#92;", ":": "&#58;"})
# What marked passes through as one HTML block when a line starts with it.
_BLOCK_TAG = re.compile(r"<(?:p|h[1-6]|ul|ol|table|blockquote|hr|div|details|pre)[\s/>]")
# Containers whose content should stay inside them when their HTML block is replaced.
_CONTAINER_TAG = re.compile(
    r"<(/?)(?:details|div|table|blockquote|ul|ol|dl|section|article|aside|center|figure)(?=[\s/>])", re.I
)

# --- What counts as dangerous ---------------------------------------------------------

# Without one of these, or a `"` in a fence's info, marked has nothing to make script
# of: no tag, no link or reference definition (a scheme only matters in a link's URL,
# which needs a `]`, or in an autolink, which needs a `<`; marked's bare autolinks are
# http(s), ftp and www only), no entity (`&colon;`), no math to paste.
_RISKY_CHARS = re.compile(r"[<\]&$\\]")
# Browsers drop tabs and line breaks anywhere in a URL and controls and spaces at its
# ends; dropping all of these (and invisible format characters) before reading the
# scheme is the cautious superset.
_IGNORABLE = re.compile("[\x00-\x20\x7f-\xa0\xad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+")
_URL_INVISIBLE = re.compile(r"[\t\n\r]+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# What a browser, or marked (whose tag names are looser than CommonMark's), may take as
# the start of a tag, comment or declaration.
_TAG_START = re.compile(r"<[A-Za-z/!?]")
# Link or reference-definition syntax left as text, in case marked makes it a link.
_LINKISH = re.compile(r"\][ \t\n]*[(:][ \t\n]*<?")
# A code span that opens and closes on one line.
_LINE_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)")
# A line marked may open a fence on, inside any quote or list markers.
_FENCE_LIKE = re.compile(r"[ \t>]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)*(?:`{3,}|~{3,})")
_ITEM_WITH_TEXT = re.compile(r"[ ]*(?:[-*+]|\d{1,9}[.)])[ ]+\S")
_TASK_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+\[[ xX]\]")
# marked strips a task item's box and reads the rest as a fresh line: a block may start there.
_TASK_THEN_BLOCK = re.compile(
    r"\[[ xX]\][ ]+(?:[`~]{3}|#{1,6}(?:[ \t]|$)|[>|<\t]|[-*+](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|[-*_](?:[ \t]*[-*_]){2,}[ \t]*$)"
)
_LINE_END = re.compile(r"\r\n?|\n")
# Quote and list markers at a line's start, roughly what marked strips from their content.
_CONTAINER_PREFIX = re.compile(r"[ \t>]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)*")

# --- JupyterLab's removeMath and marked's definitions, transcribed from JavaScript ----
# Their `^`/`$` (multiline), `.` and `\s` are spelled out because Python's differ.
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
# marked's link reference definition (from its block grammar), whose label and title may
# run over lines that CommonMark would have started a fence on.
_MARKED_DEF = re.compile(
    r" {0,3}\[(?![" + _JS_SPACE + r"]*\])(?:\\.|[^\[\]\\])+\]: *(?:\n[ \t]*)?"
    r"(?:[^<" + _JS_SPACE + r"][^" + _JS_SPACE + r"]*|<[^\n\r\u2028\u2029]*?>)"
    r"(?:(?: +(?:\n[ \t]*)?| *\n[ \t]*)(?:\"(?:\\\"?|[^\"\\])*\"|'[^'\n]*(?:\n[^'\n]+)*\n?'|\([^()]*\)))? *(?:\n|\Z)"
)


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
    if kind == "scan":
        md.core.ruler.at("inline", _inline_where_risky)
    return md


# What inline content needs before it can hold a tag, a link, an autolink, an escape or
# an entity that turns into one: content without any of these cannot be unsafe inline.
_INLINE_RISK = re.compile(r"[<\]&\\]")


def _inline_where_risky(state: Any) -> None:
    """markdown-it's core ``inline`` rule, skipping content that cannot be unsafe (it is most)."""
    for token in state.tokens:
        if token.type == "inline" and _INLINE_RISK.search(token.content):
            if token.children is None:
                token.children = []
            state.md.inline.parse(token.content, state.md, state.env, token.children)


def warm_up() -> None:
    """Import markdown-it and nh3 and build the parsers ahead of the first answer."""
    import nh3  # noqa: F401

    for kind in ("scan", "blocks", "render"):
        _parser(kind)


# --- Job 1: sanitize -----------------------------------------------------------------


def sanitize(md: str) -> str:
    """Markdown that renders like ``md`` but cannot run script in a trusting renderer."""
    if not _RISKY_CHARS.search(md) and not ('"' in md and ("```" in md or "~~~" in md)):
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
    scan = _Scan(md)
    if not any(unsafe for _, _, unsafe in scan.segments):
        return md
    out: list[str] = []
    replacements: set[str] = set()
    after_replacement = False
    for start, end, unsafe in scan.segments:
        chunk = md[start:end]
        if not unsafe:
            if after_replacement and not _starts_blank(chunk):
                out.append("\n")
            out.append(chunk)
            after_replacement = False
            continue
        if out and not _ends_blank("".join(out)):
            out.append("\n" if out[-1].endswith("\n") else "\n\n")
        line = _html_line(chunk, scan.refs)
        if line:
            replacements.add(line)
            out.append(line + "\n")
        after_replacement = True
    result = "".join(out)
    # Cutting blocks out can change how the rest pairs its `$` or its fences (both
    # passes run over the whole text), so the result is judged again: what is still
    # unsafe must be one of the replacement lines, or everything goes through nh3.
    for start, end, unsafe in _Scan(result).segments:
        if unsafe and result[start:end].strip() not in replacements:
            return _html_line(md, scan.refs) + "\n"
    return result


def _starts_blank(text: str) -> bool:
    """Whether ``text`` begins with a blank line."""
    m = _LINE_END.search(text)
    return not (text if m is None else text[: m.start()]).strip()


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
        attribute_filter=_remote_images_only,
    ).strip()
    if not cleaned:
        return ""
    cleaned = cleaned.translate(_HTML_LINE_ESCAPES)
    if not _BLOCK_TAG.match(cleaned):
        cleaned = f"<div>{cleaned}</div>"
    return cleaned


def _remote_images_only(tag: str, attribute: str, value: str) -> str | None:
    """Drop an image source that is not http(s): in JupyterLab a relative one is fetched from
    the Jupyter server (a broken image, and a request the answer should not make)."""
    if tag == "img" and attribute == "src" and not value.strip().lower().startswith(("http://", "https://")):
        return None
    return value


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


def _autolink_like(text: str) -> bool:
    """Whether marked may find a GFM autolink (``www.``, ``https://``) in this text."""
    return "://" in text or "www." in text.lower()


def _fence_info_unsafe(fence: Token) -> bool:
    """Whether a fence's info string or content could break out in marked by itself."""
    if '"' in fence.info:
        return True  # JupyterLab writes it into `class="language-…"` unescaped
    if _tag_like(fence.info) or _link_like(fence.info):
        # An opening line with no line break after it does not interrupt a paragraph in
        # marked, which then reads it, info and all, as paragraph text.
        return True
    # marked also ends a fence on a line like "```~" (the opening run, then any mix of `
    # and ~); CommonMark does not, and what markdown-it calls code would be live there.
    closing = re.compile(r" {0,3}" + re.escape(fence.markup) + r"[~`]* *\Z")
    return any(closing.match(line) for line in fence.content.split("\n"))


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
                chars[pos] = "\x00"  # like its `~D`: no delimiter, and nothing else either
            masked = "".join(chars)
    index = None
    if "\r" in text:
        index = [i for i, ch in enumerate(text) if ch != "\r" or text[i + 1 : i + 2] != "\n"]
        masked = _LINE_END.sub("\n", masked)
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
                    i = last  # it rescans what followed the last balanced end
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
        self.quoted: list[int] = []  # view offsets of math that holds a `"`
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
        self._mark_starts = [mark[0] for mark in self.marks]
        self._source_len = len(text)

    def source_offset(self, offset: int) -> int:
        """The source offset of a view offset that is not inside a placeholder."""
        if offset >= len(self.text):
            return self._source_len
        k = bisect.bisect_right(self._mark_starts, offset) - 1
        if k < 0:
            return offset
        _start, end, source_start, source_end = self.marks[k]
        return source_start if offset < end else offset - end + source_end


class _Unit:
    """A run of lines: a top-level block, or blank lines, or definitions between blocks."""

    __slots__ = ("end", "first", "fresh", "joined", "kind", "token", "unsafe")

    def __init__(self, first: int, end: int, kind: str, token: str = "", fresh: bool = False) -> None:
        self.first, self.end, self.kind, self.token, self.fresh = first, end, kind, token, fresh
        self.unsafe = False
        self.joined = False  # rendered together with the unit before it


class _Scan:
    """One judgement of a text: its top-level blocks in order, which are unsafe, and why."""

    def __init__(self, text: str) -> None:
        view = self.view = _View(text)
        env: dict[str, Any] = {}
        tokens = _parser("scan").parse(view.text, env)
        self.starts = starts = _line_starts(view.text)
        self.lines = [view.text[a:b].rstrip("\r\n") for a, b in zip(starts, [*starts[1:], len(view.text)], strict=True)]
        n_lines = len(starts) - (1 if starts[-1] == len(view.text) else 0)
        self._chunk_firsts: list[int] | None = None
        self._plain_lines: dict[int, bool] = {}
        # Fence lines in document order: HTML-like code is trusted while they are plain.
        self.fence_lines = [n for n, line in enumerate(self.lines) if _FENCE_LIKE.match(line)]
        self.fence_spans: list[tuple[int, int]] = []
        self._next_fence_line = 0
        self._fences_plain = True
        self._code_lines: set[int] = set()  # lines of fences both parsers see alike
        self._swallowed = _marked_definition_lines(self.lines) if "]:" in view.text else set()

        self.units: list[_Unit] = []
        for tok in tokens:
            if tok.level == 0 and tok.nesting >= 0 and tok.map is not None:
                self._fill(tok.map[0])
                # marked ends a paragraph only at an empty or all-space line, not a tab
                fresh = tok.map[0] == 0 or (
                    self.units[-1].kind == "blank" and _marked_blank(self.lines[tok.map[0] - 1])
                )
                kind = "html" if tok.type == "html_block" else "block"
                self.units.append(_Unit(tok.map[0], max(tok.map[1], tok.map[0] + 1), kind, tok.type, fresh))
            if self.units and self.units[-1].kind != "gap" and not self.units[-1].unsafe:
                self.units[-1].unsafe = self._token_unsafe(tok)
        self._fill(n_lines)
        self._join_containers()
        self.refs = self._judge_definitions(env)
        for line in [bisect.bisect_right(starts, offset) - 1 for offset in view.quoted] + self._stray_quotes():
            unit = self._unit_at(line)
            if unit is not None:
                unit.unsafe = True
        self.segments = self._segments(len(text))

    def _line_end(self, line: int) -> int:
        """The view offset where line ``line`` ends (the next one starts)."""
        return self.starts[line] if line < len(self.starts) else len(self.view.text)

    def _fill(self, upto: int) -> None:
        """Add units for the lines between the last block and line ``upto``."""
        line = self.units[-1].end if self.units else 0
        while line < upto:
            kind = "gap" if self.lines[line].strip() else "blank"
            if self.units and self.units[-1].kind == kind and self.units[-1].end == line:
                self.units[-1].end = line + 1
            else:
                self.units.append(_Unit(line, line + 1, kind))
            line += 1

    def _unit_at(self, line: int) -> _Unit | None:
        """The unit holding line ``line``."""
        k = bisect.bisect_right([unit.first for unit in self.units], line) - 1
        return self.units[k] if k >= 0 and line < self.units[k].end else None

    def _token_unsafe(self, tok: Token) -> bool:
        """Whether one token makes its top-level block unsafe."""
        if tok.level >= _MAX_NESTING - 2:
            return True
        kind = tok.type
        if kind == "html_block":
            return True
        if kind == "inline":
            return _TASK_THEN_BLOCK.match(tok.content) is not None or self._inline_unsafe(tok)
        if kind == "fence":
            return self._fence_unsafe(tok)
        if kind == "code_block":
            # Indentation is where parsers disagree most; such code keeps no HTML-like text.
            return _tag_like(tok.content) or _link_like(tok.content)
        return False

    def _inline_unsafe(self, inline: Token) -> bool:
        """Whether inline content holds raw HTML, a bad link, or text marked could make either of."""
        prose: list[str] = []
        risky_code = risky_escape = tilde_code = False
        stack: list[Token] = list(reversed(inline.children or []))
        while stack:
            tok = stack.pop()
            kind = tok.type
            if kind == "html_inline":
                return True
            if kind in ("link_open", "image"):
                url = str(tok.attrGet("href" if kind == "link_open" else "src") or "")
                # A URL or title holding HTML-like text is live HTML should marked not
                # see this link (say, a `~` strikethrough it opens earlier swallows it).
                if _unsafe_url(url) or _tag_like(url + str(tok.attrGet("title") or "")):
                    return True
                stack.extend(reversed(tok.children or []))  # an image's alt text
            elif kind == "text":
                if _tag_like(tok.content):
                    return True
                prose.append(tok.content)
            elif kind == "text_special":
                # An escaped `\<` or `&lt;` is no tag, but it may be part of a URL.
                risky_escape = risky_escape or (tok.content == "<" and tok.info == "escape")
                prose.append(tok.content)
            elif kind in ("softbreak", "hardbreak"):
                prose.append("\n")
            else:
                if kind == "code_inline":
                    risky_code = risky_code or _tag_like(tok.content) or _link_like(tok.content)
                    tilde_code = tilde_code or "~" in tok.content
                prose.append("\x00")
        joined = "".join(prose)
        if risky_escape and _autolink_like(inline.content):
            # A GFM autolink in marked swallows the `\`, unescaping the `<` (the link may
            # sit in what markdown-it calls code, if marked cuts that code span short).
            return True
        if risky_code and self._code_spans_misread(inline, joined, tilde_code):
            return True
        return "]" in joined and _link_like(joined)

    def _code_spans_misread(self, inline: Token, prose: str, tilde_code: bool) -> bool:
        """Whether marked might not see the code spans markdown-it saw in this inline content.

        marked lets a GFM autolink or a ``~`` strikethrough (which ignores code spans, so
        ``tilde_code``: some code span holds a ``~``) swallow a backtick, and draws
        paragraph lines differently (lazy list lines, table-like rows, headings without a
        space), so a backtick from an earlier line can pair with a later one: HTML-like
        code is trusted only if every line up to it, back to the last blank line, keeps
        its backticks paired within itself.
        """
        if _autolink_like(prose) or "~`" in inline.content or tilde_code:
            return True
        first, end = inline.map or (0, len(self.lines))
        return not all(n in self._code_lines or self._line_plain(n) for n in range(self._chunk_first(first), end))

    def _line_plain(self, n: int) -> bool:
        """Whether line ``n`` keeps its backticks paired and its HTML-like text in code spans."""
        plain = self._plain_lines.get(n)
        if plain is None:
            line = self.lines[n]
            outside = _LINE_CODE_SPAN.sub("", line)
            link = line.find("](")
            plain = self._plain_lines[n] = not (
                "`" in outside
                or _tag_like(outside)
                or _link_like(outside)
                # marked's link URLs may end at any `)`, taking a code span's backticks
                or (link >= 0 and "`" in line[link:])
            )
        return plain

    def _chunk_first(self, line: int) -> int:
        """The first line of the run of non-blank lines holding line ``line``."""
        if self._chunk_firsts is None:
            self._chunk_firsts = []
            first = 0
            for n, text in enumerate(self.lines):
                if _marked_blank(text):
                    first = n + 1
                self._chunk_firsts.append(first)
        return self._chunk_firsts[min(line, len(self._chunk_firsts) - 1)]

    def _fence_unsafe(self, fence: Token) -> bool:
        """Whether a fence must go: a bad info string, or HTML-like code marked may misplace.

        Code is literal only if both parsers agree where it starts and ends. Lists,
        quotes, lazy lines and definitions are where they part ways, and once they
        disagree about one fence they may pair every later fence line differently; so
        HTML-like code is trusted only in fences in plain surroundings, with no doubtful
        fence line before them.
        """
        first, end = fence.map or (0, 0)
        self.fence_spans.append((first, end))
        while self._next_fence_line < len(self.fence_lines) and self.fence_lines[self._next_fence_line] < end:
            line = self.fence_lines[self._next_fence_line]
            if line < first or line in self._swallowed:
                # a fence-like line that markdown-it took for no fence, or that marked
                # may take for part of a definition
                self._fences_plain = False
            self._next_fence_line += 1
        plain = self._fence_plain(fence)
        trusted = plain and self._fences_plain
        self._fences_plain = trusted
        if trusted:
            self._code_lines.update(range(first, end))
        if _fence_info_unsafe(fence):
            return True
        content = fence.content
        return not trusted and (
            _tag_like(content)
            or _link_like(content)
            # a line that would open a fence with a quote in its info, were pairing off
            or any('"' in line and _FENCE_LIKE.match(line) for line in content.split("\n"))
        )

    def _fence_plain(self, fence: Token) -> bool:
        """Whether both parsers surely open this fence where markdown-it did."""
        lines = self.lines
        first, end = fence.map or (0, 0)
        previous = lines[first - 1] if first > 0 else ""
        if previous.rstrip().endswith("]:"):
            # marked takes the opening line as this definition's URL (CommonMark lets
            # the fence interrupt first) and reads the fenced lines as markdown.
            return False
        top = self.units[-1]
        # The block must start after a blank line, or right after a paragraph or heading
        # that does, so that marked cannot have taken it for lazy lines of a list before.
        before = self.units[-2] if len(self.units) > 1 else None
        if not (
            top.fresh or (before is not None and before.token in ("paragraph_open", "heading_open") and before.fresh)
        ):
            return False
        if lines[top.first][:1] in (" ", "\t"):
            return False  # an indented block may still be inside a list item for marked
        if fence.level == 0:
            return True
        if top.token not in ("bullet_list_open", "ordered_list_open"):
            return False
        for line in lines[top.first : first]:
            if not line.strip():
                continue
            indent = line[: len(line) - len(line.lstrip())]
            if "\t" in indent or _TASK_ITEM.match(line) or line.lstrip()[:1] in (">", "|"):
                return False
            if not (_ITEM_WITH_TEXT.match(line) or indent.startswith("  ")):
                return False  # a lazy line, or an item whose text starts on the next line
        indent = " " * (len(lines[first]) - len(lines[first].lstrip(" ")))
        return all(line.startswith(indent) or not line.strip() for line in lines[first:end])

    def _stray_quotes(self) -> list[int]:
        """Lines outside every fence that marked may open as a fence with a ``"`` in its info."""
        return [
            n
            for n in self.fence_lines
            if '"' in self.lines[n] and not any(first <= n < end for first, end in self.fence_spans)
        ]

    def _join_containers(self) -> None:
        """Judge definition gaps, and keep what a replaced ``<details>``/``<div>`` holds inside it."""
        depth = 0
        for unit in self.units:
            source = "\n".join(self.lines[unit.first : unit.end])
            if unit.kind == "gap":
                unit.unsafe = _tag_like(source) or _link_like(source)
            if depth:
                unit.unsafe = unit.joined = True
            if unit.kind == "html":
                depth = max(0, depth + _container_change(source))

    def _judge_definitions(self, env: dict[str, Any]) -> dict[str, Any]:
        """Flag units with bad link reference definitions; return the good ones for rendering."""
        safe: dict[str, Any] = {}
        definitions = [*env.get("references", {}).items()]
        definitions += [(ref.get("label", ""), ref) for ref in env.get("duplicate_refs", [])]
        for label, ref in definitions:
            href, title = str(ref.get("href", "")), str(ref.get("title", ""))
            # A definition shows nothing, but one marked does not take for a definition
            # is live text: HTML in it counts as in the open.
            if _unsafe_url(href) or _tag_like(f"{label} {href} {title}") or (self.view.marks and "@@" in href + title):
                unit = self._unit_at(ref["map"][0]) if ref.get("map") else None
                if unit is not None:
                    unit.unsafe = True
            elif label not in safe:
                safe[label] = {"href": href, "title": title}
        return safe

    def _segments(self, source_len: int) -> list[tuple[int, int, bool]]:
        """``(start, end, unsafe)`` source ranges covering the text, unsafe ones one block each."""
        segments: list[tuple[int, int, bool]] = []
        for unit in self.units:
            a = self.view.source_offset(self.starts[unit.first])
            b = self.view.source_offset(self._line_end(unit.end))
            if segments and segments[-1][2] == unit.unsafe and (unit.joined or not unit.unsafe):
                segments[-1] = (segments[-1][0], b, unit.unsafe)
            elif b > a:
                segments.append((a, b, unit.unsafe))
        if not segments:
            segments.append((0, source_len, False))
        elif segments[-1][1] < source_len:
            segments.append((segments[-1][1], source_len, False))
        return segments


def _marked_blank(line: str) -> bool:
    """Whether marked takes ``line`` for a blank line (one with a tab it does not)."""
    return not line.strip(" ")


def _marked_definition_lines(lines: list[str]) -> set[int]:
    """Lines that marked may swallow into a link reference definition begun on a line before."""
    bare = [line[_CONTAINER_PREFIX.match(line).end() :] for line in lines]  # type: ignore[union-attr]
    text = "\n".join(bare)
    swallowed: set[int] = set()
    offset = 0
    for n, line in enumerate(bare):
        if line.lstrip(" ").startswith("[") and "]:" in text[offset:]:
            m = _MARKED_DEF.match(text, offset)
            if m:
                swallowed.update(range(n + 1, n + 1 + text.count("\n", offset, m.end() - 1)))
        offset += len(line) + 1
    return swallowed


def _container_change(html_source: str) -> int:
    """How many block containers (``<details>``, ``<div>``, …) an HTML block leaves open."""
    return sum(-1 if m.group(1) else 1 for m in _CONTAINER_TAG.finditer(html_source))


def _line_starts(text: str) -> list[int]:
    """Offsets where each line of ``text`` begins, as markdown-it counts lines."""
    return [0, *(m.end() for m in _LINE_END.finditer(text))]


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
