"""Readers of rendered HTML as a browser would take it: what could run, what MathJax would typeset, what shows."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from qwen_magic._markdown import _safe

# --- What counts as dangerous in the HTML the browser gets ------------------------------

OK_TAGS = set(_safe._ALLOWED_TAGS)
OK_ATTRS = {"href", "src", "alt", "title", "class", "style", "start", "colspan", "rowspan", "open", "rel", "target"}


class _Dangers(HTMLParser):
    """Collects what in an HTML fragment could run script or load a page: tags, handlers, URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in OK_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name not in OK_ATTRS:
                self.found.append(f"{tag}[{name}]")
            elif name == "style" and value and re.search(r"url|expression|javascript", value, re.I):
                self.found.append(f"{tag}[style={value}]")
            elif name in ("href", "src") and value is not None and _bad_url(value):
                self.found.append(f"{tag}[{name}={value}]")
            elif name == "src" and not (value or "").lower().startswith(("http://", "https://")):
                self.found.append(f"img without a usable src: {value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _bad_url(url: str) -> bool:
    """Whether a browser would follow ``url`` to a scheme other than http(s) or mailto."""
    url = re.sub(r"[\t\n\r]", "", url).strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10 ")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", url)
    return m is not None and m.group(1).lower() not in ("http", "https", "mailto")


def dangers(html: str) -> list[str]:
    """Everything in ``html`` that could run script, load a page, or show as a broken image."""
    parser = _Dangers()
    parser.feed(html)
    parser.close()
    return parser.found


# --- What MathJax (as JupyterLab configures it) would typeset ---------------------------

_SKIPPED = {"script", "noscript", "style", "textarea", "pre", "code"}


class _MathJaxStrings(HTMLParser):
    """The text strings MathJax 3 searches: every element but br/wbr/comments ends one (HTMLDomStrings)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.strings: list[str] = []
        self.current = ""
        self.skip = 0

    def _push(self) -> None:
        if self.current:
            self.strings.append(self.current)
        self.current = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.current += "\n"
            return
        if tag == "wbr":
            return
        self._push()
        if tag in _SKIPPED:
            self.skip += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIPPED:
            self.skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "wbr"):
            return
        self._push()
        if tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.current += data


_MJ_START = re.compile(r"\$\$|\\\[|\$|\\\(|\\begin\s*\{([^}]*)\}|(\\[\\$])")
_MJ_ENDS = {"$$": "$$", "\\[": "\\]", "$": "$", "\\(": "\\)"}


def _mathjax_find(text: str) -> list[str]:
    """Math MathJax's FindTeX finds in one string (processEscapes and processEnvironments on)."""
    found = []
    pos = 0
    while m := _MJ_START.search(text, pos):
        if m.group(2):  # an escape: `\$` or `\\`
            pos = m.end()
            continue
        if m.group(1) is not None:
            close = "\\end{" + m.group(1) + "}"
            end_re = re.compile(r"\\end\s*\{" + re.escape(m.group(1)) + r"\}|\\(?:[a-zA-Z]|.)|[{}]")
        else:
            close = _MJ_ENDS[m.group(0)]
            end_re = re.compile(re.escape(close) + r"|\\(?:[a-zA-Z]|.)|[{}]")
        braces, hit = 0, None
        for e in end_re.finditer(text, m.end()):
            token = e.group(0)
            if (token == close or token.startswith("\\end")) and token.replace(" ", "") == close and braces == 0:
                hit = e
                break
            if token == "{":
                braces += 1
            elif token == "}" and braces:
                braces -= 1
        if hit is None:
            pos = m.end()
            continue
        found.append(text[m.start() : hit.end()])
        pos = hit.end()
    return found


def typeset(html: str) -> list[str]:
    """Every math span MathJax would typeset in ``html``."""
    parser = _MathJaxStrings()
    parser.feed(html)
    parser.close()
    parser._push()
    return [math for string in parser.strings for math in _mathjax_find(string)]


class _OurMath(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.spans: list[str] = []
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "span" and self.depth:
            self.depth += 1
        elif tag == "span" and ("class", "qm-math") in attrs:
            self.depth = 1
            self.spans.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.spans[-1] += data


def our_math(html: str) -> list[str]:
    parser = _OurMath()
    parser.feed(html)
    parser.close()
    return parser.spans


def visible_text(html: str) -> str:
    """The text a reader sees (tags dropped, references decoded)."""

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.text: list[str] = []

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.text)
