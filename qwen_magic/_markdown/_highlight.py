"""Code coloured in the kernel with Pygments, in the classes JupyterLab already styles.

Models Pygments 2.20 (as installed) and the stylesheet of jupyterlab_pygments 0.3 (installed
with nbconvert), which colours Pygments' short class names (``k``, ``s2``, ``c1``) in
JupyterLab's editor colours: JupyterLab itself highlights only markdown, and answers reach
it as HTML. Plain names, text and punctuation get no element, to keep the bytes down;
code longer than ``_HIGHLIGHT_LIMIT`` and languages Pygments does not know stay plain.
"""

from __future__ import annotations

import functools
import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pygments.lexer import Lexer
    from pygments.token import _TokenType

# Pygments' classes written as bare text: plain names, whitespace, punctuation, errors.
_PLAIN_TOKENS = frozenset({"", "n", "w", "p", "nx", "err"})
_TOKEN_CLASS = re.compile(r"[a-z]{1,3}[0-9]?")
_HIGHLIGHT_LIMIT = 20_000  # characters of one code block worth colouring; longer ones stay plain


def _highlight(code: str, lang: str, attrs: str) -> str:
    """Code coloured by Pygments (a whole ``<pre class="highlight">``), or "" to leave it plain."""
    if not lang or len(code) > _HIGHLIGHT_LIMIT:
        return ""
    lexer = _lexer(lang.lower())
    if lexer is None:
        return ""
    out: list[str] = []
    css, run = "", list[str]()
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


def _span(css: str, text: str) -> str:
    text = html.escape(text, quote=False)
    return f'<span class="{css}">{text}</span>' if css else text


@functools.cache
def _css_class(kind: _TokenType) -> str:
    from pygments.token import STANDARD_TYPES

    while kind not in STANDARD_TYPES and kind.parent is not None:
        kind = kind.parent
    css = STANDARD_TYPES.get(kind, "")
    return "" if css in _PLAIN_TOKENS else css


@functools.cache
def _lexer(lang: str) -> Lexer | None:
    try:
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:  # pygments comes with IPython; without it code is plain
        return None
    try:
        return get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None
