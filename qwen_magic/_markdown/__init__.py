"""Model markdown as safe HTML, rendered in the kernel; and where streamed text can be cut.

No frontend markdown parser sees model text: JupyterLab renders a running session's
outputs as trusted, so the kernel parses the answer, cleans the HTML and publishes
``text/html`` (with the markdown itself as ``text/plain``). One module per step:

- ``_parse``: markdown-it-py as the one parser, math found while parsing (pandoc's rules,
  MathJax's ends), guards against its slow paths.
- ``_highlight``: code coloured with Pygments' short classes.
- ``_safe``: nh3's allow-list, every lone ``$``/``\\`` kept from MathJax, the image policy.
- ``_render``: the display bundles of an answer, finished or live, in few bytes.
- ``_marked``: the only markdown JupyterLab's own renderer reads (code blocks, exported
  cells), written so that it can only be read as intended; ``_tables``: tables likewise,
  when every cell is in a subset proved to read as written; ``_merged``: the parts
  finished together joined into one markdown output.
- ``_stable``: where streamed text can be cut, so that finished blocks are sent once;
  ``_lines``: the lines that cannot end a block, so that most cuts need no parse.

Callers import from here; the modules' docstrings say which renderer each one models.
"""

from __future__ import annotations

from ._lines import simple_block, simple_ends
from ._marked import answer_bundles, export_html, open_code_markdown
from ._merged import merged
from ._render import compact, markdown_bundle, render_html, warm_up
from ._safe import hosts_in, image_policy, text_html
from ._stable import stable_prefix
from ._tables import prepare_table, table_markdown

__all__ = [
    "answer_bundles",
    "compact",
    "export_html",
    "hosts_in",
    "image_policy",
    "markdown_bundle",
    "merged",
    "open_code_markdown",
    "prepare_table",
    "render_html",
    "simple_block",
    "simple_ends",
    "stable_prefix",
    "table_markdown",
    "text_html",
    "warm_up",
]
