"""An answer's markdown as display bundles of safe HTML, finished or live, in few bytes.

Why the kernel renders: JupyterLab 4.6 renders the ``text/markdown`` outputs of a running
session as *trusted*, through marked 17.0.6 with raw HTML allowed and no sanitizer.
Keeping the model's markdown and cleaning it meant predicting how marked would read
every byte, and each disagreement between marked and our parser (quotes in reference
definitions, titles, attributes, fence info strings, math pasted back) was a live event
handler. So no frontend markdown parser ever sees model text: ``render_html`` parses it
here (``_parse``), cleans the HTML with nh3 (``_safe``) and publishes ``text/html``, with
the model's markdown unchanged in ``text/plain`` for saving, copying and terminals. The
alternative, escaping every ``<``/``&`` construct the sanitizer does not allow in the
markdown, still hands model text to marked and to JupyterLab's math pass: two more
parsers to agree with. (The one exception, finished code blocks, is ``_marked``.)

Bytes. An answer's HTML is sent once whole, and a few hundred characters of it five times
a second while it streams; both are kept small without changing the page. ``compact``
drops what a browser does not keep (line breaks between block tags, end tags the HTML
Living Standard lets a document leave out, quotes around simple attribute values): a
table's HTML shrinks by a third, and a parse5 test checks the tree is the same. Live
windows leave code uncoloured, and stay linear in the answer however long one block stays
open (``_live_html``).
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from ._highlight import _lexer, _plain_code
from ._parse import _container_change, _parser
from ._safe import _cleaner, _finish

if TYPE_CHECKING:
    from markdown_it.token import Token
    from markdown_it.utils import EnvType, OptionsDict, OptionsType

    from .._publish import Bundle

MARKDOWN_CLASS = "qwen-markdown"  # the element holding rendered model markdown in an output


@functools.cache
def _plain_options() -> OptionsDict:
    """The render parser's options, with code left uncoloured (for live windows)."""
    from markdown_it.utils import OptionsDict

    options = OptionsDict(cast("OptionsType", dict(_parser().options)))  # a copy of every option
    options["highlight"] = _plain_code
    return options


def warm_up() -> None:
    """Import markdown-it, nh3 and Pygments and build the parsers ahead of the first answer."""
    _cleaner()
    for kind in ("render", "blocks"):
        _parser(kind)
    _lexer("python")


def render_html(md: str, *, colour: bool = True) -> str:
    """``md`` as HTML that cannot run script and shows every non-math ``$`` as a dollar.

    Each top-level block is cleaned on its own (an HTML container such as ``<details>``
    together with the blocks it holds), so that an element left open in one, say a
    ``<textarea>`` or ``<math>`` whose content is dropped, cannot swallow the rest.
    ``colour=False`` leaves code uncoloured (in the same ``<pre class="highlight">``):
    live windows are repainted five times a second, and Pygments' spans triple their size.
    """
    env: EnvType = {}
    try:
        parser = _parser()
        tokens = parser.parse(md, env)
        clean = _cleaner().clean
        options = parser.options if colour else _plain_options()
        return _finish("".join(clean(parser.renderer.render(group, options, env)) for group in _groups(tokens)))
    except Exception:  # never let a parser bug publish the raw text
        return _finish('<div style="white-space:pre-wrap">' + html.escape(md, quote=False) + "</div>")


def _groups(tokens: list[Token]) -> Iterator[list[Token]]:
    """The tokens of each top-level block, blocks inside an open HTML container joined."""
    group: list[Token] = []
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
