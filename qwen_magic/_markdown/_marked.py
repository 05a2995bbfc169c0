"""Code blocks (finished or still open) and exported cells as markdown JupyterLab's own renderer reads.

Models JupyterLab 4.6's markdown step: its math pass (``removeMath``, which cuts ``$…$``,
``\\(…\\)``, ``\\begin{…}`` and the like out of the source and pastes them back after
marked, for MathJax 3 to typeset), then marked 17.0.6 with GFM, as the
``@jupyterlab/markedparser-extension`` plugin runs it. ``tests/test_markdown.py`` renders
exported cells through that exact marked version in node. Everything here is written so
that neither pass can read model text as anything but code or our own HTML.

A finished top-level fenced code block is published as markdown written here
(``answer_bundles``); marked escapes fenced code, and the fence is chosen so that neither
marked nor the math pass can end it early; code holding what that math pass would still
cut out (``\\begin{``, ``@@1@@``) is rendered as HTML instead, and so is code in a language
JupyterLab draws rather than shows (``mermaid``). An exported notebook's
cells (``export_html``) are HTML that marked passes through untouched, with dollars and
backslashes as character references.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._parse import _line_starts, _parser
from ._render import MARKDOWN_CLASS, markdown_bundle, render_html
from ._tables import table_bundles

if TYPE_CHECKING:
    from markdown_it.token import Token

    from .._publish import Bundle


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
            bundles += table_bundles(part)  # tables as markdown written in ``_tables``
        elif _MATH_MARKERS.search(fence.content) or _claimed(fence.info):
            bundles.append(markdown_bundle(part))
        else:
            bundles.append({"text/markdown": _code_markdown(fence.content, fence.info), "text/plain": part})
    return bundles


def _code_parts(md: str) -> list[tuple[str, Token | None]]:
    """``md`` cut around each top-level fenced code block: ``(text, fence token or None)`` in order.

    Blank lines stay with the part before them; the parts' texts join to ``md``.
    """
    if "```" not in md and "~~~" not in md:
        return [(md, None)]
    starts = [*_line_starts(md), len(md)]
    parts: list[tuple[str, Token | None]] = []
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
# (it protects only the dollars there), and the line separators its JavaScript ``^`` also
# starts a line after: code holding one is rendered here, as HTML.
_MATH_MARKERS = re.compile(r"\\(?:begin|end)\{|@@\d|\\\\[()\[\]]|[\u2028\u2029]", re.I)
# Languages whose fenced blocks JupyterLab hands to a renderer of their own instead of showing
# code: mermaid draws a diagram, fetching the images it names (past ``_safe.image_policy``) and
# writing its text into attributes. Such code is rendered here, as HTML code.
_CLAIMED_LANGUAGES = frozenset({"mermaid"})


def _language(info: str) -> str:
    """The language name a fence's info string gives, as written into markdown here."""
    words = info.split()
    return _LANGUAGE_CHARACTERS.sub("", words[0])[:40] if words else ""


def _claimed(info: str) -> bool:
    return _language(info).lower() in _CLAIMED_LANGUAGES


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
    language = _language(info)
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    if code and not code.endswith("\n"):
        code += "\n"
    return f'<div class="{MARKDOWN_CLASS}">\n\n{fence}{language}\n{code}{fence}\n\n</div>'


def open_code_markdown(code: str, info: str, note: str = "") -> str | None:
    """A live window of a fenced code block still open, as ``_code_markdown`` writes it finished.

    ``note`` is a line of this package's own markdown shown above the code (how much is
    above the window). None when the code or its info string holds what JupyterLab's math
    pass would cut out: the window is then rendered as HTML.
    """
    if _MATH_MARKERS.search(info) or _MATH_MARKERS.search(code) or _claimed(info):
        return None
    return _code_markdown(code, info).replace("\n\n", "\n\n" + note, 1)


def export_html(md: str) -> str:
    """``md`` rendered for a markdown cell: HTML that marked passes through untouched.

    JupyterLab's markdown step cuts ``$`` math out of the raw source before marked runs;
    written as character references, dollars and backslashes reach the page only after
    it. The HTML keeps its lines (readable in the saved file) but never a blank one, the
    only thing that ends an HTML block in marked.
    """
    body = html_lines(render_html(md).strip())
    return f"<div>\n{body}\n</div>" if body else "<div></div>"


def html_lines(html: str) -> str:
    """``html`` as lines marked passes through untouched inside an HTML block: no blank line
    (the only thing that ends one), and dollars and backslashes as character references, so
    that JupyterLab's math pass, which reads the raw source first, finds nothing in it."""
    return _BLANK_LINES.sub(lambda m: m.group(0)[:-1].replace("\n", "&#10;") + "\n", html.translate(_HTML_LINE_ESCAPES))


# Also backticks and tildes: in an output joined with code written as markdown (``_merged``), a
# line of HTML starting with three of them (code rendered as HTML) would be where removeMath
# starts a fence of its own, pairing it with a line of the next code block and leaving that
# code's dollars to be cut out as math. U+2028/U+2029 start a line for its JavaScript ``^``.
_HTML_LINE_ESCAPES = str.maketrans(
    {"\r": "&#13;", "$": "&#36;", "\\": "&#92;", "`": "&#96;", "~": "&#126;", "\u2028": "&#8232;", "\u2029": "&#8233;"}
)
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
