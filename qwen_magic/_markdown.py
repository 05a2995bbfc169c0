"""Model markdown as safe HTML, rendered in the kernel; and where streamed text can be cut.

Why the kernel renders: JupyterLab renders the ``text/markdown`` outputs of a running
session as *trusted*, through marked with raw HTML allowed and no sanitizer. Keeping the
model's markdown and cleaning it meant predicting how marked would read every byte, and
each disagreement between marked and our parser (quotes in reference definitions, titles,
attributes, fence info strings, math pasted back) was a live event handler. So no
frontend markdown parser ever sees model text: ``render_html`` parses it here with
markdown-it-py (CommonMark, tables, strikethrough; raw HTML on, so that it reaches the
sanitizer instead of showing as text), cleans the HTML with nh3 (an allow-list of tags
and attributes; link URLs http(s)/mailto or relative, image URLs http(s) only) and
publishes ``text/html``, with the model's markdown unchanged in ``text/plain`` for
saving, copying and terminals. What the browser gets is exactly what nh3 let through.
The alternative, escaping every ``<``/``&`` construct the sanitizer does not allow in the
markdown, still hands model text to marked and to JupyterLab's math pass: two more
parsers to agree with. Code is coloured here too (Pygments' short classes, which
JupyterLab styles in its editor colours), since JupyterLab highlights only markdown.

Math and dollars. Math is found while parsing, the way pandoc does: ``$…$`` when the
opening ``$`` has a non-space character after it and the next ``$`` has a non-space
character before it and no digit after it; ``$$…$$``, ``\\(…\\)``, ``\\[…\\]`` and
``\\begin{…}…\\end{…}`` always, unless MathJax would end them elsewhere (unbalanced
braces) or the TeX makes links or loads code (``\\href``, ``\\require``): those stay
text. Code wins over math where it starts first, and emphasis never reaches inside math.
Each math span is written HTML-escaped in an element of its own (``<span class="qm-math">``). MathJax (which JupyterLab runs over HTML outputs too)
looks for delimiters only within runs of text that no element interrupts, so every other
``$`` and ``\\`` of the text is also put in an element of its own: alone it pairs with
nothing, in JupyterLab live or reopened, in Notebook 7, or anywhere MathJax does not run
(where a ``\\$`` escape would show its backslash). ``&#36;`` and ``\\$`` do not survive:
the first is a plain ``$`` to MathJax, the second needs MathJax to run.

Images (``answer_images``). A markdown image is fetched as soon as it renders, so a
prompt-injected answer could send data to any host without a click. While a cell runs,
``image_policy`` holds the hosts the user's own prompt named; an image from another host
becomes a link (``🖼 image from HOST — open``), and an image with no usable http(s)
source keeps only its alt text, so nothing shows as a broken image when reopened.

Bytes. An answer's HTML is sent once whole, and a few hundred characters of it five times
a second while it streams; both are kept small without changing the page. ``compact``
drops what a browser does not keep (line breaks between block tags, end tags the HTML
standard lets a document leave out, quotes around simple attribute values): a table's
HTML shrinks by a third, and a parse5 test checks the tree is the same. Live windows
leave code uncoloured. A finished top-level fenced code block is published as markdown
written here (``answer_bundles``): marked escapes fenced code, and the fence is chosen so
that neither marked nor JupyterLab's math pass can end it early; code holding what that
math pass would still cut out (``\\begin{``, ``@@1@@``) is rendered here as before.

``stable_prefix(text)`` says where streamed text can be cut: every top-level block before
the offset is finished and cannot change however the text goes on, so the view publishes
it once and re-renders only the open tail after it. Both it and the live tail's rendering
stay linear in the answer however long one block stays open (see ``_live_html``), and
the parser is kept from its slow paths on pathological text (``_find``,
``_when_links_possible``): ``benchmarks/bench_adversarial.py`` measures it.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import functools
import html
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_inline import StateInline

Bundle = dict[str, str]
MARKDOWN_CLASS = "qwen-markdown"  # the element holding rendered model markdown in an output

# Deep enough for any real answer; deeper content is dropped by markdown-it (never shown raw).
_MAX_NESTING = 50

# --- What the HTML may hold (nh3) -----------------------------------------------------

_ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "b", "i", "em", "strong", "code",
        "pre", "kbd", "samp", "var", "sub", "sup", "mark", "s", "del", "ins", "u", "small", "abbr",
        "q", "cite", "span", "div", "blockquote", "ul", "ol", "li", "dl", "dt", "dd", "table",
        "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "a", "img", "details", "summary",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style", "colspan", "rowspan"},
    "td": {"style", "colspan", "rowspan"},
    "code": {"class"},
    "pre": {"class"},
    "span": {"class"},
    "abbr": {"title"},
    "details": {"open"},
}
# Dropped with everything inside them: their text is code or markup, not prose.
_DROPPED_WITH_CONTENT = frozenset(
    {
        "script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math",
        "textarea", "title", "xmp", "noembed", "noframes", "plaintext", "select", "head",
    }
)  # fmt: skip
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_CODE_CLASS = re.compile(r"language-[\w.+#-]{1,40}")
_ALIGN_STYLE = re.compile(r"text-align:(?:left|right|center)")
_MATH_CLASS = "qm-math"

# Code is coloured with Pygments' short class names, which JupyterLab styles in its editor
# colours (jupyterlab_pygments, installed with nbconvert); plain names, text and punctuation
# get no element, to keep the bytes down.
_PLAIN_TOKENS = frozenset({"", "n", "w", "p", "nx", "err"})
_TOKEN_CLASS = re.compile(r"[a-z]{1,3}[0-9]?")
_HIGHLIGHT_LIMIT = 20_000  # characters of one code block worth colouring; longer ones stay plain


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    """Keep only attribute values this module writes itself: classes, alignments, colours."""
    if attribute == "class":
        if tag == "code":
            m = _CODE_CLASS.match(value)
            return m.group(0) if m else None
        if tag == "pre":
            return value if value == "highlight" else None
        return value if tag == "span" and (value == _MATH_CLASS or _TOKEN_CLASS.fullmatch(value)) else None
    if attribute == "style":
        value = value.replace(" ", "")
        return value if tag in ("th", "td") and _ALIGN_STYLE.fullmatch(value) else None
    return value


@functools.cache
def _cleaner() -> Any:
    import nh3

    return nh3.Cleaner(
        tags=set(_ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(_SAFE_SCHEMES),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        link_rel="noopener noreferrer",
        attribute_filter=_attribute_filter,
    )


# --- Which image hosts the answer may load ---------------------------------------------

# None: load every http(s) image ("show"); a set: only these hosts, the rest become links.
# Outside an answering cell (history, export) no host is known to be the user's: links.
_IMAGE_HOSTS: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "qwen_image_hosts", default=frozenset()
)
_URL = re.compile(r"https?://[^\s<>()\[\]\"'`]+", re.I)


def hosts_in(blocks: Iterable[Any]) -> frozenset[str]:
    """The hosts of every http(s) URL in a prompt's content blocks (text and media sources)."""
    found: set[str] = set()
    for block in blocks:
        if isinstance(block, str):
            texts = [block]
        elif isinstance(block, dict):
            source = block.get("source")
            texts = [str(block.get("text", "")), str(source.get("url", "")) if isinstance(source, dict) else ""]
        else:
            continue
        for text in texts:
            for m in _URL.finditer(text):
                host = _host(m.group(0))
                if host:
                    found.add(host)
    return frozenset(found)


@contextlib.contextmanager
def image_policy(policy: str, prompt: Iterable[Any] = ()) -> Iterator[None]:
    """While a cell answers: ``"show"`` loads every image, ``"link"`` only those from the prompt's hosts."""
    token = _IMAGE_HOSTS.set(None if policy == "show" else hosts_in(prompt))
    try:
        yield
    finally:
        _IMAGE_HOSTS.reset(token)


def _host(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


# --- The parser ------------------------------------------------------------------------

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
    try:  # bare URLs become links, as GFM (and so JupyterLab's marked) makes them
        import linkify_it  # noqa: F401

        md.options["linkify"] = True
        md.enable("linkify")
        md.core.ruler.after("linkify", "gfm_autolinks", _gfm_autolinks_only)
    except ImportError:  # the `linkify` extra of markdown-it-py is missing: bare URLs stay text
        pass
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


def _gfm_autolinks_only(state: Any) -> None:
    """Undo linkify's links that GFM would not make (``example.com`` without a scheme or ``www.``)."""
    for block in state.tokens:
        children = block.children
        if block.type != "inline" or not children or not any(t.markup == "linkify" for t in children):
            continue
        kept: list[Any] = []
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


def _when_emphasis_sane(rule: Any, state: StateInline, silent: bool) -> bool:
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


def _when_links_possible(rule: Any, state: StateInline, silent: bool) -> bool:
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


def _math_block(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """Display math that starts a line (``$$``, ``\\[``, ``\\begin{…}``) and runs until its closer."""
    pos = state.bMarks[start_line] + state.tShift[start_line]
    maximum = state.eMarks[start_line]
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    first = state.src[pos:maximum]
    for opener, closer in _DISPLAY_OPENERS:  # noqa: B007 (the pair found is used below)
        if first.startswith(opener):
            break
    else:
        m = _BEGIN.match(first)
        if m is None:
            return False
        opener, closer = m.group(0), f"\\end{{{m.group(1)}}}"
    if closer in first[len(opener) :]:
        return False  # one line: inline math in a paragraph does it
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
    content = state.src[pos : state.eMarks[line]].strip()
    if not _math_allowed(content) or not _mathjax_agrees(content, 0, len(content), _opener_length(content, 0)):
        return False
    if not silent:
        token = state.push("math_block", "", 0)
        token.content = content
        token.map = [start_line, line + 1]
    state.line = line + 1
    return True


def _render_math(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return f'<span class="{_MATH_CLASS}">{html.escape(tokens[idx].content, quote=False)}</span>'


def _render_math_block(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return f'<p><span class="{_MATH_CLASS}">{html.escape(tokens[idx].content, quote=False)}</span></p>\n'


def _highlight(code: str, lang: str, attrs: str) -> str:
    """Code coloured by Pygments (a whole ``<pre class="highlight">``), or "" to leave it plain."""
    if not lang or len(code) > _HIGHLIGHT_LIMIT:
        return ""
    lexer = _lexer(lang.lower())
    if lexer is None:
        return ""
    out: list[str] = []
    css, run = "", []
    for kind, value in lexer.get_tokens(code):
        this = _css_class(kind)
        if this != css and run:
            out.append(_span(css, "".join(run)))
            run = []
        css = this
        run.append(value)
    if run:
        out.append(_span(css, "".join(run)))
    highlighted = "".join(out)
    # Pygments ends the text with a newline of its own; keep the code's own ending.
    if highlighted.endswith("\n") and not code.endswith("\n"):
        highlighted = highlighted[:-1]
    language = html.escape(lang, quote=True)
    return f'<pre class="highlight"><code class="language-{language}">{highlighted}</code></pre>'


def _plain_code(code: str, lang: str, attrs: str) -> str:
    """Code in the same element ``_highlight`` writes, uncoloured (for live windows)."""
    if not lang or len(code) > _HIGHLIGHT_LIMIT or _lexer(lang.lower()) is None:
        return ""
    language = html.escape(lang, quote=True)
    return f'<pre class="highlight"><code class="language-{language}">{html.escape(code, quote=False)}</code></pre>'


@functools.cache
def _plain_options() -> Any:
    from markdown_it.utils import OptionsDict

    return OptionsDict({**_parser().options, "highlight": _plain_code})


def _span(css: str, text: str) -> str:
    text = html.escape(text, quote=False)
    return f'<span class="{css}">{text}</span>' if css else text


@functools.cache
def _css_class(kind: Any) -> str:
    from pygments.token import STANDARD_TYPES

    while kind not in STANDARD_TYPES and kind.parent is not None:
        kind = kind.parent
    css = STANDARD_TYPES.get(kind, "")
    return "" if css in _PLAIN_TOKENS else css


@functools.cache
def _lexer(lang: str) -> Any:
    try:
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:  # pygments comes with IPython; without it code is plain
        return None
    try:
        return get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def warm_up() -> None:
    """Import markdown-it, nh3 and Pygments and build the parsers ahead of the first answer."""
    _cleaner()
    for kind in ("render", "blocks"):
        _parser(kind)
    _lexer("python")


# --- Rendering -------------------------------------------------------------------------


def render_html(md: str, *, colour: bool = True) -> str:
    """``md`` as HTML that cannot run script and shows every non-math ``$`` as a dollar.

    Each top-level block is cleaned on its own (an HTML container such as ``<details>``
    together with the blocks it holds), so that an element left open in one, say a
    ``<textarea>`` or ``<math>`` whose content is dropped, cannot swallow the rest.
    ``colour=False`` leaves code uncoloured (in the same ``<pre class="highlight">``):
    live windows are repainted five times a second, and Pygments' spans triple their size.
    """
    try:
        parser, env = _parser(), {}
        tokens = parser.parse(md, env)
        clean = _cleaner().clean
        options = parser.options if colour else _plain_options()
        return _finish("".join(clean(parser.renderer.render(group, options, env)) for group in _groups(tokens)))
    except Exception:  # never let a parser bug publish the raw text
        return _finish('<div style="white-space:pre-wrap">' + html.escape(md, quote=False) + "</div>")


def _groups(tokens: list[Any]) -> Iterator[list[Any]]:
    """The tokens of each top-level block, blocks inside an open HTML container joined."""
    group: list[Any] = []
    depth = 0
    for token in tokens:
        if token.level == 0 and token.nesting >= 0 and group and not depth:
            yield group
            group = []
        group.append(token)
        if token.level == 0 and token.type == "html_block":
            depth = max(0, depth + _container_change(token.content))
    if group:
        yield group


def markdown_bundle(md: str, *, live: bool = False) -> Bundle:
    """The display bundle of model markdown: safe ``text/html``, and the markdown as ``text/plain``.

    ``live``: a repaint of the open tail while the answer streams. Its plain text is left
    out (the finished output carries it), and a long tail is rendered by ``_live_html``.
    """
    html_text = compact(_live_html(md) if live else render_html(md))
    bundle = {"text/html": f'<div class="{MARKDOWN_CLASS}">{html_text}</div>'}
    if not live:
        bundle["text/plain"] = md
    return bundle


def answer_bundles(md: str) -> list[Bundle]:
    """The bundles of finished markdown: one for each fenced code block and table, one for the text between.

    A top-level fenced code block is published as ``text/markdown`` that this module
    writes itself (``_code_markdown``), not as HTML: JupyterLab highlights it as it
    highlights any markdown code, and it costs the code's own bytes, where Pygments'
    spans cost three and a half times as many. Each ``text/plain`` is the model's own
    text, so the parts together are the answer.
    """
    bundles = []
    for part, fence in _code_parts(md):
        if fence is None:
            from ._table_markdown import table_bundles

            bundles += table_bundles(part, markdown_bundle, _parser, _container_change)  # tables: markdown written there
        elif _MATH_MARKERS.search(fence.content):
            bundles.append(markdown_bundle(part))
        else:
            bundles.append({"text/markdown": _code_markdown(fence.content, fence.info), "text/plain": part})
    return bundles


def _code_parts(md: str) -> list[tuple[str, Any]]:
    """``md`` cut around each top-level fenced code block: ``(text, fence token or None)`` in order.

    Blank lines stay with the part before them; the parts' texts join to ``md``.
    """
    if "```" not in md and "~~~" not in md:
        return [(md, None)]
    starts = [*_line_starts(md), len(md)]
    parts: list[tuple[str, Any]] = []
    done = 0
    for token in _parser("blocks").parse(md):
        if token.type != "fence" or token.level != 0 or token.map is None:
            continue
        begin, end = starts[min(token.map[0], len(starts) - 1)], starts[min(token.map[1], len(starts) - 1)]
        if md[done:begin].strip():
            parts.append((md[done:begin], None))
        elif parts:
            parts[-1] = (parts[-1][0] + md[done:begin], parts[-1][1])
        else:
            begin = done  # leading blank lines go with the code
        parts.append((md[begin:end], token))
        done = end
    if md[done:].strip() or not parts:
        parts.append((md[done:], None))
    elif done < len(md):
        parts[-1] = (parts[-1][0] + md[done:], parts[-1][1])
    return parts


_LANGUAGE_CHARACTERS = re.compile(r"[^A-Za-z0-9_+.-]")
# What JupyterLab's removeMath takes for math, or for its own markers, even inside a fence
# (it protects only the dollars there): code holding one is rendered here, as HTML.
_MATH_MARKERS = re.compile(r"\\(?:begin|end)\{|@@\d|\\\\[()\[\]]", re.I)


def _code_markdown(code: str, info: str) -> str:
    """One fenced code block that marked and JupyterLab's math pass can only read as code.

    The fence is backticks longer than any backtick run in the code, at the start of
    lines of its own, so no line of the code can close it (nor end it early for
    JupyterLab's ``removeMath``, which then leaves every ``$`` in it alone); the info
    string is a language name of ``[A-Za-z0-9_+.-]`` only; marked escapes the code. Code
    that removeMath would still cut out (``\\begin{…}``, ``\\\\(``, ``@@1@@``; it shows
    its placeholders in the code) is never published this way (``_MATH_MARKERS``).
    The ``<div>`` around it is ours: it carries the class every answer output has.
    """
    words = info.split()
    language = _LANGUAGE_CHARACTERS.sub("", words[0])[:40] if words else ""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    if code and not code.endswith("\n"):
        code += "\n"
    return f'<div class="{MARKDOWN_CLASS}">\n\n{fence}{language}\n{code}{fence}\n\n</div>'


_LIVE_WHOLE_BELOW = 4096  # an open tail shorter than this is rendered whole at every repaint
_LIVE_GROWTH = 2.0  # a longer one whole again once it has doubled
_live: tuple[str, str] = ("", "")  # the tail last rendered whole, and its HTML
_CODE_END = "</code></pre>\n"
# Text in a <pre> (which MathJax skips, so its dollars need no care) that looks like prose.
_PLAIN_PRE = '<pre style="white-space:pre-wrap;font:inherit;background:none;border:0;padding:0;margin:0">'


def _live_html(tail: str) -> str:
    """The open tail's HTML at a cost linear in the answer, however long one block stays open.

    Rendering the whole tail at every repaint costs the square of a block that stays open
    (a long code block, a huge paragraph). Past ``_LIVE_WHOLE_BELOW`` the tail is rendered
    whole only when it has doubled since the last time; in between, that HTML is
    shown with the text that arrived since as plain escaped text (inside the code block, if
    the tail ended in one), which costs a C-speed escape, not a parse. The finished output is always rendered whole.
    """
    global _live
    previous, previous_html = _live
    if len(tail) >= _LIVE_WHOLE_BELOW and len(previous) <= len(tail) < len(previous) * _LIVE_GROWTH and tail.startswith(previous):
        rest = tail[len(previous) :]
        if previous_html.endswith(_CODE_END):
            return previous_html[: -len(_CODE_END)] + html.escape(rest, quote=False) + _CODE_END
        return previous_html + _PLAIN_PRE + html.escape(rest, quote=False) + "</pre>"
    rendered = render_html(tail, colour=False)
    _live = (tail, rendered)
    return rendered


# Block elements: a line break between two of their tags shows nothing.
_BLOCK_TAGS = r"(?:p|ul|ol|li|table|thead|tbody|tfoot|tr|td|th|caption|blockquote|h[1-6]|hr|div|details|summary|dl|dt|dd)"
_PRE = re.compile(r"(<pre[\s>].*?</pre>)", re.S)
_BETWEEN_BLOCKS = re.compile(rf'(</?{_BLOCK_TAGS}(?:\s(?:[^>"]|"[^"]*")*)?>)\n+(?=</?{_BLOCK_TAGS}[\s/>])')
# End tags HTML lets a document leave out, where it does (HTML Living Standard, "Optional tags").
_OPTIONAL_END = re.compile(
    r"</(?:td|th)>(?=<t[dh][\s>]|</tr>)"
    r"|</tr>(?=<tr[\s>]|</tbody>|</thead>|</tfoot>)"
    r"|</thead>(?=<tbody[\s>])|</tbody>(?=</table>)"
    r"|</li>(?=<li[\s>]|</ul>|</ol>)"
    r"|</p>(?=<(?:p|ul|ol|pre|blockquote|h[1-6]|hr|div|details|dl)[\s/>]|</(?:li|blockquote|td|th|div|details)>)"
)


def compact(cleaned: str) -> str:
    """Cleaned HTML without what the browser would not keep: the same page, in fewer bytes.

    markdown-it puts a line break between block tags, and writes every end tag; tables
    and lists are a third end tags and line breaks. Both go, outside ``<pre>``: a line
    break between two block tags renders nothing, and an end tag is left out only where
    the HTML standard says the element ends there anyway (``</td>`` before the next
    cell, ``</li>`` before the next item or the list's end, ``</p>`` before a block).
    Simple attribute values lose their quotes. Only line breaks, end tags and quotes around
    values of ``[A-Za-z0-9_:.+#-]`` are removed, after nh3: no tag or attribute can appear.
    """
    parts = _PRE.split(cleaned)
    for i in range(0, len(parts), 2):
        parts[i] = _BETWEEN_BLOCKS.sub(r"\1", parts[i])
    return _UNQUOTE.sub(r"\1=\2", _OPTIONAL_END.sub("", "".join(parts)))


# The first attribute of a tag, when its value needs no quotes (each quote costs two bytes
# more once in JSON). In nh3's output ``<`` starts a tag and an attribute value holds no
# bare ``"``, so this text is always a tag's own beginning.
_UNQUOTE = re.compile(r'(<(?:span|td|th|code|pre|ol) (?:class|style|start))="([A-Za-z0-9_:.+#-]+)"')


# nh3 writes attribute values in double quotes, with `"` and `&` escaped but `>` not.
_TAG_OR_TEXT = re.compile(r'<(/?)([a-zA-Z0-9]+)((?:[^>"]|"[^"]*")*)>|[^<]+')
_ATTRIBUTE = re.compile(r'([a-zA-Z-]+)="([^"]*)"')
_LONE = re.compile(r"[$\\]")


def _finish(cleaned: str) -> str:
    """Put each non-math ``$`` and ``\\`` in an element of its own; apply the image policy."""
    if "$" not in cleaned and "\\" not in cleaned and "<img" not in cleaned:
        return cleaned
    hosts = _IMAGE_HOSTS.get()
    out: list[str] = []
    math_depth = 0  # >0: inside a math span (counting the spans in it)
    code_depth = 0  # >0: inside <code>/<pre>, which MathJax skips
    link_depth = 0
    for m in _TAG_OR_TEXT.finditer(cleaned):
        closing, name = m.group(1), m.group(2)
        if name is None:
            text = m.group(0)
            out.append(text if math_depth or code_depth else _LONE.sub(_isolate, text))
            continue
        name = name.lower()
        if name == "span" and math_depth:
            math_depth += -1 if closing else 1
        elif name == "span" and not closing and f'class="{_MATH_CLASS}"' in m.group(3):
            math_depth = 1
        elif name in ("code", "pre"):
            code_depth = max(0, code_depth + (-1 if closing else 1))
        elif name == "a":
            link_depth = max(0, link_depth + (-1 if closing else 1))
        elif name == "img":
            out.append(_image(m.group(3), hosts, inside_link=link_depth > 0))
            continue
        out.append(m.group(0))
    return "".join(out)


def text_html(text: str) -> str:
    """Plain text (thinking, tool output, service messages) as HTML: escaped, each ``$`` and ``\\`` alone."""
    return _LONE.sub(_isolate, html.escape(text))


def _isolate(m: re.Match[str]) -> str:
    return f"<span>{m.group(0)}</span>"


def _image(attributes: str, hosts: frozenset[str] | None, *, inside_link: bool) -> str:
    """An ``<img>`` kept, turned into a link to it, or reduced to its alt text."""
    attrs = {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(attributes)}
    src, alt = attrs.get("src", "").strip(), attrs.get("alt", "")
    if not src.lower().startswith(("http://", "https://")) or not _host(src):
        # No usable source (relative, data:, javascript:, none): the alt text, as text.
        return _LONE.sub(_isolate, html.escape(alt, quote=False))
    host = _host(src)
    if hosts is None or host in hosts:
        return f"<img{attributes}>"
    label = _LONE.sub(_isolate, html.escape(f"🖼 image from {host}", quote=False))
    if inside_link:
        return label
    title = html.escape(alt or src)
    return f'<a href="{html.escape(src)}" title="{title}" rel="noopener noreferrer" target="_blank">{label} — open</a>'


def export_html(md: str) -> str:
    """``md`` rendered for a markdown cell: HTML that marked passes through untouched.

    JupyterLab's markdown step cuts ``$`` math out of the raw source before marked runs;
    written as character references, dollars and backslashes reach the page only after
    it. The HTML keeps its lines (readable in the saved file) but never a blank one, the
    only thing that ends an HTML block in marked.
    """
    body = render_html(md).strip().translate(_HTML_LINE_ESCAPES)
    body = _BLANK_LINES.sub(lambda m: m.group(0)[:-1].replace("\n", "&#10;") + "\n", body)
    return f"<div>\n{body}\n</div>" if body else "<div></div>"


_HTML_LINE_ESCAPES = str.maketrans({"\r": "&#13;", "$": "&#36;", "\\": "&#92;"})
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")


# --- Where streamed text can be cut ------------------------------------------------------

_LINE_END = re.compile(r"\r\n?|\n")
_CONTAINER_TAG = re.compile(
    r"<(/?)(?:details|div|table|blockquote|ul|ol|dl|section|article|aside|center|figure)(?=[\s/>])", re.I
)
_REPARSE_BELOW = 4096  # an open tail shorter than this is parsed at every call
_REPARSE_GROWTH = 1.5  # a longer one again only once it has grown by half

# The last text parsed and its answer: a prefix found stable stays stable as the text grows.
_last: tuple[str, int] = ("", 0)


def _container_change(html_source: str) -> int:
    """How many block containers (``<details>``, ``<div>``, …) an HTML block leaves open."""
    return sum(-1 if m.group(1) else 1 for m in _CONTAINER_TAG.finditer(html_source))


def _line_starts(text: str) -> list[int]:
    """Offsets where each line of ``text`` begins, as markdown-it counts lines."""
    return [0, *(m.end() for m in _LINE_END.finditer(text))]


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
    # Such an element is rendered whole, so it must not be cut before it closes.
    last = open_at if depth and open_at is not None else len(blocks) - 1
    line = blocks[last][0]
    floor = blocks[last - 1][1] if last > 0 else 0
    # A link reference definition right before the last block may still take the next
    # line as its title, so it stays with that block.
    while line > floor and complete[starts[line - 1] : starts[line]].strip():
        line -= 1
    k = starts[line]
    return k if complete[:k].strip() else 0
