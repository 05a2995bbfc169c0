"""The finished parts of an answer that the view publishes at once, as one output.

``_markdown.answer_bundles`` gives a fenced code block or a table its own ``text/markdown``
output (markdown written in the kernel, which JupyterLab colours and styles at the code's
or the table's own size) and the text between its own ``text/html``. An answer of many
short blocks then has many outputs, each paying for a message (about 110 bytes of JSON),
a wrapper and a plain-text field: a third of the bytes of a 20,000-character answer.

So the parts the view finishes together are joined into one ``text/markdown`` output when
at least one of them is markdown: each HTML part is carried in it as an HTML block, written
the way ``_markdown.export_html`` writes a markdown cell (the same safety argument and the
same differential test against JupyterLab's ``removeMath`` and marked 17): marked passes an
HTML block that starts with ``<div>`` untouched until a blank line, so the part has none
(a blank line becomes ``&#10;``), and ``removeMath`` sees no ``$`` or ``\\`` in it (they are
``&#36;`` and ``&#92;``, which the browser turns back after it), nor a backtick or tilde that
could start a fence of its own and steal the closing line of the code after it. The HTML is the sanitized,
compacted HTML the part would have had on its own; the markdown parts are unchanged. The
plain text is the answer's text, so the output still says exactly what the model wrote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._marked import html_lines
from ._render import MARKDOWN_CLASS

if TYPE_CHECKING:
    from .._publish import Bundle

_OPEN = f'<div class="{MARKDOWN_CLASS}">'


def merged(bundles: list[Bundle]) -> list[Bundle]:
    """``bundles`` (in order, together the answer's text) as one output when one of them is markdown."""
    if len(bundles) < 2 or not any("text/markdown" in b for b in bundles):
        return bundles
    blocks = [_block(b) for b in bundles]
    body = "\n\n".join(block for block in blocks if block)
    plain = "".join(b.get("text/plain", "") for b in bundles)
    return [{"text/markdown": f"{_OPEN}\n\n{body}\n\n</div>", "text/plain": plain}]


def _block(bundle: Bundle) -> str:
    """One part inside the joined markdown: its markdown without its wrapper, or its HTML as an HTML block."""
    if "text/markdown" in bundle:
        text = bundle["text/markdown"]
        if text.startswith(_OPEN) and text.endswith("</div>"):
            text = text[len(_OPEN) : -len("</div>")]
        return text.strip("\n")
    html = bundle.get("text/html", "")
    if html.startswith(_OPEN):
        html = "<div>" + html[len(_OPEN) :]
    elif not html.startswith("<div>"):
        html = f"<div>{html}</div>"
    return html_lines(html).strip("\n")
