"""Markdown the kernel writes for finished parts (tables, joined outputs), read by marked 17 as JupyterLab does."""

from __future__ import annotations

import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

from html_readers import OK_ATTRS, OK_TAGS, dangers, our_math, typeset, visible_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from test_markdown import _FRAGMENTS, _MARKED_ORACLE_JS, RICH, _marked_dir
from xss_corpus import base_vectors, vectors

from qwen_magic._markdown import answer_bundles, merged, render_html, table_markdown

# What a cell may hold: everything that is markup to marked, removeMath or MathJax somewhere.
_CELL_PIECES = [
    "a", "word", "12.5", " ", "  ", "中文", "😀", "✅", "$", "$5", "$x$", "\\", "\\$", "\\(", "\\\\(", "\\begin{x}",
    "{", "}", "@", "@@0@@", "a@b.example", "`", "`code`", "``", "*", "**", "**b**", "*i*", "_", "__u__", "_e_",
    "~", "~~", "~~s~~", "<", ">", "<b>", "<img src=x onerror=alert(1)>", "&", "&amp;", "&lt;", "&#36;", "&#x3C;",
    "[", "]", "[a](https://x.example)", "![i](https://x.example/i.png)", "!", "(", ")", "|", "\\|", "#", "-",
    "---", "=", ":", "://", "https://x.example", "www.x.example", "javascript:alert(1)", '"', "'", "\t", "\u2028",
    "\x00", "^", "+", "1.", "> ", "- ",
]  # fmt: skip
_ALIGNS = ["---", ":--", "--:", ":-:"]


def _table(rng: random.Random) -> str:
    columns = rng.randint(1, 4)
    rows = [[("".join(rng.choice(_CELL_PIECES) for _ in range(rng.randint(0, 5))).replace("\n", " "))
             for _ in range(columns)] for _ in range(rng.randint(1, 4))]  # fmt: skip
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(rng.choice(_ALIGNS) for _ in range(columns)) + "|")
    return "\n".join(lines) + "\n"


class _Cells(HTMLParser):
    """A table's structure as a reader sees it: cells, their alignment, formatting and text."""

    KEPT = frozenset({"table", "tr", "th", "td", "strong", "em", "code", "del", "s"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.KEPT:
            found = dict(attrs)
            align = found.get("align") or (found.get("style") or "").replace("text-align:", "")
            self.out.append(f"<{'s' if tag == 'del' else tag} {align or ''}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.KEPT:
            self.out.append(f"</{'s' if tag == 'del' else tag}>")

    def handle_data(self, data: str) -> None:
        text = re.sub(r"\s+", " ", data)
        if text.strip():
            self.out.append(text)


def cells(html: str) -> list[str]:
    parser = _Cells()
    parser.feed(html)
    parser.close()
    return parser.out


def _oracle(docs: list[str], tmp_path: Path, folder: str) -> list[dict[str, object]]:
    """removeMath and marked 17.0.6 (``test_markdown``'s oracle) on each document; a table's ``align`` is allowed."""
    import os
    import subprocess

    script = tmp_path / "oracle.mjs"
    script.write_text(
        _MARKED_ORACLE_JS % {"tags": json.dumps(sorted(OK_TAGS)), "attrs": json.dumps(sorted(OK_ATTRS | {"align"}))}
    )
    proc = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True,
                          env={**os.environ, "MARKED_DIR": folder}, check=True)  # fmt: skip
    return json.loads(proc.stdout)


def test_tables_written_here_read_in_marked_as_the_model_wrote_them(tmp_path: Path) -> None:
    """Hostile cells: a table written here makes no tag but the table's, no math, and the same cells."""
    folder = _marked_dir()
    assert folder is not None
    rng = random.Random(15)
    docs = [_table(rng) for _ in range(4000)]
    docs += [
        "| id | `sensor` | value |\n|--:|---|:-:|\n"
        + "".join(f"| {n} | `s_{n}` | **{n * 0.5}** ~~x~~ *y* |\n" for n in range(9))
    ]
    written = [(doc, w) for doc in docs if (w := table_markdown(doc)) is not None]
    assert len(written) > 300  # hostile pieces are common: most tables fall back, enough do not
    results = _oracle([w for _, w in written], tmp_path, folder)
    for (doc, w), result in zip(written, results, strict=True):
        html = str(result["html"])
        assert result["bad"] == [], (doc, w)
        assert typeset(html) == [], (doc, w)
        assert cells(html) == cells(render_html(doc)), (doc, w, html)
        assert not re.search(r"[$@]|\\[^\\`*_\[\]<>!&|~]", w), w  # no math, and backslashes only as escapes


def test_joined_outputs_run_nothing_and_show_what_the_html_shows(tmp_path: Path) -> None:
    """Parts finished together, joined by ``_merged``: marked runs nothing, MathJax finds only our math."""
    folder = _marked_dir()
    assert folder is not None
    rng = random.Random(16)
    code = "```python\nx = '$a$ <img src=x onerror=alert(1)> ` `` \\\\( @@0@@'\n```\n\n"
    table = "| a | b |\n|---|--:|\n| `x` | **1** |\n| $5 | <b>no</b> |\n\n| c |\n|---|\n| ok *y* |\n\n"
    docs = [code + v + "\n\n" + table + v for v in vectors()]
    docs += [code + RICH + "\n\n" + table, code + "\n\n".join(base_vectors()) + "\n\n" + table]
    docs += [
        code + "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 30))) + "\n\n" + table for _ in range(1500)
    ]
    joined = [
        (doc, out[0]["text/markdown"])
        for doc in docs
        if len(out := merged(answer_bundles(doc))) == 1 and "text/markdown" in out[0]
    ]
    assert len(joined) > 0.9 * len(docs)  # the rest is one part (a fence the soup left open swallows the rest)
    results = _oracle([md for _, md in joined], tmp_path, folder)
    for (doc, md), result in zip(joined, results, strict=True):
        html = str(result["html"])
        assert result["bad"] == [], (doc, md, result["bad"])
        assert typeset(html) == our_math(html) == our_math(render_html(doc)), doc
        assert "".join(visible_text(html).split()) == "".join(visible_text(render_html(doc)).split()), doc


# A cell's text, from everything that is markup somewhere.
_cell = st.lists(st.sampled_from(_CELL_PIECES), max_size=6).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_cell, min_size=1, max_size=3), min_size=1, max_size=4), st.sampled_from(_ALIGNS))
def test_a_table_is_written_here_only_as_markdown_that_means_the_same(rows: list[list[str]], align: str) -> None:
    width = len(rows[0])
    rows = [[c.replace("\n", " ") for c in (row + [""] * width)[:width]] for row in rows]
    doc = "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "|".join([align] * width) + "|",
                     *("| " + " | ".join(row) + " |" for row in rows[1:])]) + "\n"  # fmt: skip
    written = table_markdown(doc)
    if written is None:
        return
    assert not re.search(r"[$@\x00\u2028]|://|www\.|\\[^\\`*_\[\]<>!&|~]", written), written
    # markdown-it (as a stand-in for marked; the node test runs marked itself) reads the same cells.
    reader = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    assert cells(reader.render(written)) == cells(render_html(doc))
    assert dangers(reader.render(written)) == []


# HTML parts that hold lines of backticks or tildes (code rendered as HTML: indented code, code
# with ``\begin{``), then code written as markdown whose dollars only its fence protects.
_FENCE_LIKE = [
    "Intro.\n\n    a\n    ```x\n\n",
    "    ~~~\n    $a$\n\n",
    "```\n\\begin{x} ```y\n```\n\n",
    "<pre>\n```\n</pre>\n\n",
    "- item\n\n      ```js\n\n",
    "> ```\n> $q$\n\n",
]
_CODE_AFTER = [
    "~~~mermaid\nflowchart LR\n%%\u2028```\naccTitle: $\" onload=\"window.x=1\" y=\"$\nA-->B\n~~~\n\n",
    "```python\nprice = '$5' if a else '$6'\n```\n\n",
    "~~~\n```\n$x$ and $y$\n```\n~~~\n\n",
    "````sh\necho $HOME ```\u2029``` $PATH\n````\n\n",
]


def test_no_part_of_a_joined_output_lets_jupyterlab_cut_math_from_code(tmp_path: Path) -> None:
    """Each markdown output written here leaves JupyterLab's removeMath nothing to cut: no code's
    dollars, whatever the HTML parts before it hold (a fence-like line of theirs used to pair with
    a line of the code after it)."""
    folder = _marked_dir()
    assert folder is not None
    rng = random.Random(19)
    docs = [before + after + "Done, $5 only.\n" for before in _FENCE_LIKE for after in _CODE_AFTER]
    docs += ["".join(rng.choice(_FENCE_LIKE + _CODE_AFTER + _FRAGMENTS) for _ in range(rng.randint(2, 12))) for _ in range(800)]
    written = [(doc, b["text/markdown"]) for doc in docs for b in merged(answer_bundles(doc)) if "text/markdown" in b]
    assert len(written) > 150
    results = _oracle([md for _, md in written], tmp_path, folder)
    for (doc, md), result in zip(written, results, strict=True):
        assert result["cut"] == 0, (doc, md)
        assert result["bad"] == [], (doc, md)


def test_mermaid_code_never_reaches_jupyterlab_s_diagram_renderer() -> None:
    """JupyterLab draws a ```mermaid block (fetching the images it names): such code is shown as HTML code."""
    from qwen_magic._view import _bundle

    for info in ("mermaid", "Mermaid", " mermaid {theme: x}", "MERMAID"):
        doc = f"```{info}\nflowchart LR\n  A@{{ img: \"https://evil.example/x.png\" }}\n```\n"
        for bundle in answer_bundles(doc) + merged(answer_bundles("Hi.\n\n" + doc + "\n| a |\n|---|\n| 1 |\n")):
            # (HTML code of class language-mermaid is fine: only a fenced block goes to mermaid.)
            assert not re.search(r"^ *(?:`{3,}|~{3,}) *mermaid", bundle.get("text/markdown", ""), re.I | re.M), bundle
        assert "text/html" in _bundle(doc[: doc.rindex("```")])  # the live window, still open
    assert "text/markdown" in answer_bundles("```python\nx = 1\n```\n")[0]  # other code stays markdown
