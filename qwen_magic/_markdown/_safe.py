"""What of the rendered HTML may reach the browser: nh3's allow-list, lone dollars, the image policy.

Models nh3 0.3 (as installed; the Rust ammonia sanitizer) configured as an allow-list of
tags and attributes: link URLs http(s)/mailto or relative, image URLs http(s) only, and
only the attribute values this package writes itself (code languages, table alignments,
Pygments' classes, the math class). JupyterLab 4.6 inserts the HTML of a running
session's outputs as *trusted*, without a sanitizer of its own, so what the browser gets
is exactly what nh3 let through.

Lone dollars. MathJax 3 (which JupyterLab runs over HTML outputs too) looks for
delimiters only within runs of text that no element interrupts, so every ``$`` and ``\\``
outside the math that ``_parse`` found is put in an element of its own (``_finish``,
``text_html``): alone it pairs with nothing, in JupyterLab live or reopened, in Notebook 7,
or anywhere MathJax does not run (where a ``\\$`` escape would show its backslash).
``&#36;`` and ``\\$`` do not survive: the first is a plain ``$`` to MathJax, the second
needs MathJax to run.

Images (``answer_images``). A markdown image is fetched as soon as it renders, so a
prompt-injected answer could send data to any host without a click. While a cell runs,
``image_policy`` holds the hosts the user's own prompt named; an image from another host
becomes a link (``🖼 image from HOST — open``), and an image with no usable http(s)
source keeps only its alt text, so nothing shows as a broken image when reopened.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from ._highlight import _TOKEN_CLASS
from ._parse import _MATH_CLASS

if TYPE_CHECKING:
    import nh3

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
def _cleaner() -> nh3.Cleaner:
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


def hosts_in(blocks: Iterable[str | Mapping[str, object]]) -> frozenset[str]:
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
def image_policy(policy: str, prompt: Iterable[str | Mapping[str, object]] = ()) -> Iterator[None]:
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


def lone_dollars(html_text: str) -> str:
    """HTML written elsewhere (pandas' tables) with each ``$`` and ``\\`` of its text alone, as ``_finish`` leaves them."""
    return _finish(html_text)


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
