"""Tests for qwen_magic._markdown: model markdown rendered to safe HTML, dollars that stay dollars,
the answer-image policy, and stable_prefix() for streaming."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import LINE_KINDS
from html_readers import OK_ATTRS, OK_TAGS, dangers, our_math, typeset, visible_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from xss_corpus import base_vectors, vectors

from qwen_magic import _markdown
from qwen_magic._markdown import (
    export_html,
    image_policy,
    markdown_bundle,
    render_html,
    simple_block,
    simple_ends,
    stable_prefix,
)
from qwen_magic._markdown._stable import _stable_prefix


def assert_safe(md: str) -> str:
    """Render ``md``; nothing can run, and MathJax typesets exactly the math we marked."""
    out = render_html(md)
    assert dangers(out) == [], (md, out)
    assert typeset(out) == our_math(out), (md, out)
    return out


# --- The corpus: whole, and every prefix (the live view renders prefixes) ----------------


def test_corpus_is_large_and_inert() -> None:
    corpus = vectors()
    assert len(corpus) >= 150
    for doc in corpus:
        assert_safe(doc)


def test_every_prefix_of_every_vector_is_inert() -> None:
    for vector in base_vectors():
        for doc in (vector, f"- item\n- {vector}", f"> {vector} $x$"):
            for cut in range(1, len(doc) + 1):
                out = render_html(doc[:cut])
                assert dangers(out) == [], (doc[:cut], out)


_FRAGMENTS = [
    "$", "$$", "\\(", "\\)", "\\[", "\\]", "\\begin{x}", "\\end{x}", "`", "``", "```", "```py", "~~~", "~",
    "<img src=x onerror=alert(1)>", '"onerror="alert(1)//', '"', "'", "javascript:alert(1)", "java&#x09;script:",
    "[a](", ")", "](", "]: ", "[", "]", "![i](", "> ", "- ", "1. ", "- [ ] ", "    ", "  ", "|",
    "| a | b |\n|---|---|\n", "---", "===", "\n", "\n\n", "\r\n", "\t", "\\", "{", "}", "@@0@@", "<!--",
    "-->", "<div>", "</div>", "<details>", "</details>", "<x_y onmouseover=alert(1)>", "www.example.com/",
    "https://a.example/", "*", "_", "word ", "中文", "😀", "# ", "<", "a<b", "<b>", "&lt;", "&#60;", "\\<",
    "\\`", "[1]: ", "<https://x.example>", "<svg onload=alert(1)>", "<script>", "</script>", "\x00", "\u2028",
    "5", " ", "$5", "\\$", "&#36;", "<span>$</span>", "<img src=https://evil.example/i.png>", "![](https://e.example/i.png)",
    "\\href{javascript:alert(1)}{x}", "<a href='javascript:alert(1)'>", "<form>", "<meta>", "<base href=x>",
]  # fmt: skip

_documents = st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_fragment_soup_is_inert_whole_and_split(doc: str) -> None:
    assert_safe(doc)
    for cut in range(1, len(doc), max(1, len(doc) // 12)):
        assert dangers(render_html(doc[:cut])) == [], doc[:cut]
        k = stable_prefix(doc[:cut])
        assert 0 <= k <= cut


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A corpus vector with characters inserted, deleted or replaced (mutation XSS)."""
    doc = list(draw(st.sampled_from(base_vectors())))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(doc)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from([*list("<>\"'`=/\\ \t\n&#;:$[]()!-*_|~{}"), "\x00", "\xa0", "&#x09;", "&colon;"]))
        if action == "insert" or not doc:
            doc.insert(pos, char)
        elif action == "delete":
            del doc[min(pos, len(doc) - 1)]
        else:
            doc[min(pos, len(doc) - 1)] = char
    return "".join(doc)


@settings(max_examples=500, deadline=None)
@given(_mutated())
def test_mutated_vectors_are_inert(doc: str) -> None:
    assert_safe(doc)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>[]()!`~$\\{}\"'&#:;/*_-=|\n\r\t ab1中😀@", max_size=150))
def test_random_text_never_raises_and_is_inert(doc: str) -> None:
    assert_safe(doc)
    assert isinstance(stable_prefix(doc), int)


def test_falls_back_to_escaped_text_if_the_parser_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(_markdown._render, "_parser", boom)
    out = render_html("hello <img src=x onerror=alert(1)> costs $5 and $6")
    assert "<img" not in out and "&lt;img" in out
    assert dangers(out) == [] and typeset(out) == []


# --- Dollars and math ----------------------------------------------------------------------

PRICES = "The ticket costs $5 and the meal $10, so $15 in total."


def test_prices_are_dollars_and_math_is_math() -> None:
    out = assert_safe(PRICES)
    assert typeset(out) == [] and visible_text(out).strip() == PRICES
    out = assert_safe(f"{PRICES} Area: $\\pi r^2$.\n\n$$E = mc^2$$\n")
    assert typeset(out) == ["$\\pi r^2$", "$$E = mc^2$$"]
    assert visible_text(out).startswith(PRICES)


# (markdown, the math spans it holds) — pandoc's rule for single dollars.
DOLLAR_CASES = [
    ("$x$", ["$x$"]),
    ("$5 and $10", []),
    ("costs $5, or $ 5 $", []),
    ("$x $", []),
    ("$ x$", []),
    ("$x$5", []),  # a closing `$` followed by a digit closes nothing
    ("$x$ and $y$", ["$x$", "$y$"]),
    ("between $1 and $2 is $\\alpha$", ["$\\alpha$"]),
    ("$a_1 * b_2 * c_3$", ["$a_1 * b_2 * c_3$"]),  # emphasis never reaches inside math
    ("$$a_1 *b* c$$", ["$$a_1 *b* c$$"]),
    ("\\(x_1^*\\) and \\[y_2\\]", ["\\(x_1^*\\)", "\\[y_2\\]"]),
    ("\\begin{align}a &= b\\end{align}", ["\\begin{align}a &= b\\end{align}"]),
    ("`$x$` and $y$", ["$y$"]),
    ("\\$5 and \\$x\\$", []),
    ("US$5 vs $US", []),
    ("$$", []),
    ("$$$$", []),
    ("${a}$", ["${a}$"]),
    ("**$x$**", ["$x$"]),
    ("[$x$](https://e.example)", ["$x$"]),
    ("$x\ny$", ["$x\ny$"]),
    ("$x\n\ny$", []),
    ("a \\( b", []),
    ("C:\\Users\\(x) and \\begin{x}", []),
    ("$\\href{javascript:alert(1)}{x}$", []),  # TeX that makes links stays text
    ("$$\na $$ b\n$$\n", ["$$\na $$"]),  # a display block MathJax would end early is not one block
    ("\\begin{align}\na &= b\n\\end{align}\n", ["\\begin{align}\na &= b\n\\end{align}"]),
    ("$$\n{a\n$$\n", []),
]


@pytest.mark.parametrize(("md", "math"), DOLLAR_CASES)
def test_dollar_rule(md: str, math: list[str]) -> None:
    out = assert_safe(md)
    assert our_math(out) == math, out
    assert "$" not in visible_text(out).replace("".join(math), "") or md.count("$") > 0


def test_display_math_block_keeps_its_lines() -> None:
    md = "Before.\n\n$$\n\\begin{aligned}\na_1 &= b_1 * c \\\\\n- d &< e\n\\end{aligned}\n$$\n\nAfter $5.\n"
    out = assert_safe(md)
    assert our_math(out) == [md[md.index("$$") : md.index("$$", 10) + 2]]
    assert "<li>" not in out and "<em>" not in out


def test_literal_backslashes_and_dollars_show_as_written() -> None:
    md = "Path C:\\temp\\(x) and \\[not math and a lone $ sign; 100$ and $$ alone."
    out = assert_safe(md)
    assert typeset(out) == []
    assert visible_text(out).strip() == "Path C:\\temp(x) and [not math and a lone $ sign; 100$ and $$ alone."


# --- Images and links ----------------------------------------------------------------------


def test_images_from_other_hosts_become_links() -> None:
    md = "![chart](https://mine.example/c.png) ![leak](https://evil.example/x.png?q=secret \"t\")"
    with image_policy("link", [{"type": "text", "text": "plot https://mine.example/data.csv"}]):
        out = render_html(md)
    assert '<img src="https://mine.example/c.png" alt="chart">' in out
    assert "<img" not in out.replace('<img src="https://mine.example/c.png" alt="chart">', "")
    assert "🖼 image from evil.example — open" in visible_text(out)
    assert 'href="https://evil.example/x.png?q=secret"' in out
    with image_policy("show"):
        assert out.count("<img") == 1 and render_html(md).count("<img") == 2
    assert dangers(out) == []


def test_policy_also_covers_raw_html_images_and_images_in_links() -> None:
    md = '<img src="https://evil.example/a.png" alt="A"> [![b](https://evil.example/b.png)](https://e.example)'
    with image_policy("link", []):
        out = render_html(md)
    assert "<img" not in out and out.count("image from evil.example") == 2
    assert "<a" not in out.split("<a", 2)[-1].split("</a>")[0]  # no link inside a link


def test_images_without_a_usable_source_keep_their_alt_text() -> None:
    for md in ("![a chart](chart.png)", "![a chart](data:image/png;base64,AAAA)", '<img src="x" alt="a chart">',
               "![a chart](javascript:alert(1))", "<img alt='a chart'>", "![a chart]()"):  # fmt: skip
        out = render_html(md)
        assert "<img" not in out and "a chart" in visible_text(out), out


def test_hosts_come_from_text_and_media_urls() -> None:
    blocks = [
        {"type": "text", "text": "see https://A.example/x and http://b.example:8080/y."},
        {"type": "image", "source": {"type": "url", "url": "https://c.example/i.png"}},
    ]
    assert _markdown.hosts_in(blocks) == {"a.example", "b.example", "c.example"}


def test_bad_links_keep_their_text() -> None:
    out = render_html("see [the docs](javascript:alert(1)) now, [ok](https://e.example/a?b=1&c=2)")
    assert "the docs" in visible_text(out) and "javascript" not in out
    assert 'href="https://e.example/a?b=1&amp;c=2"' in out


# --- Ordinary markdown looks as it did -------------------------------------------------------

RICH = """# Quick guide 🚀

Here is **bold**, *italic*, ~~struck~~ and `inline <div> code`.
A second line of the same paragraph with a [link](https://example.com/path?q=1&r=2#frag)
and an image: ![diagram](https://example.com/img.png "Title"), [relative](docs/a.md), [anchor](#top).

## Math

Inline $a<b$ and $x^2 + y^2 = z^2$, display:

$$
\\int_0^1 f(x)\\,dx < \\infty
$$

Also \\\\(e^{i\\pi} + 1 = 0\\\\) and costs of $5 and $10.

## Code

```python
def f(x: list[int]) -> dict[str, int]:
    return {"<script>": 1}  # javascript: in a string
```

```html
<!DOCTYPE html>
<script>alert("hi")</script>
<img src=x onerror="alert(1)">
```

> A quote with `code` and a [relative link](docs/index.md).
>
> - nested list in quote

| Name | Value | Note |
|:-----|------:|:----:|
| α    | 1     | `<b>` |
| 中文 | 2     | $a<b$ |

1. Install:
   ```bash
   pip install qwen-magic > /dev/null
   ```
2. Use `std::vector<int>`:
   ```cpp
   #include <vector>
   std::vector<int> v;
   ```
3. Done ✅

- [ ] todo item
- [x] done item
  - nested *item*
    - deeper

---

中文段落，包含**粗体**和`代码`。😀👍🏽 Emoji family: 👨‍👩‍👧‍👦

Email: <mailto:someone@example.com>, <https://example.com/auto> and www.example.com.
"""


def test_ordinary_markdown_renders_as_before() -> None:
    with image_policy("show"):
        out = assert_safe(RICH)
    for tag in ["<h1>", "<h2>", "<strong>bold</strong>", "<em>italic</em>", "<s>struck</s>", "<blockquote>",
                "<table>", '<th style="text-align:right">', "<ol>", "<ul>", "<hr>",
                "<code>inline &lt;div&gt; code</code>", '<a href="https://example.com/path?q=1&amp;r=2#frag"',
                '<img src="https://example.com/img.png" alt="diagram" title="Title">', 'href="docs/a.md"',
                '<pre class="highlight"><code class="language-python">', '<code class="language-html">']:  # fmt: skip
        assert tag in out, tag
    # Python is coloured with Pygments' classes (JupyterLab styles them); HTML in code stays text.
    assert "alert(" in visible_text(out) and "&lt;" in out.split('<code class="language-html">')[1].split("</code>")[0]
    assert '<span class="k">def</span>' in out
    assert typeset(out) == ["$a<b$", "$x^2 + y^2 = z^2$", "$$\n\\int_0^1 f(x)\\,dx < \\infty\n$$",
                            "$a<b$"]  # fmt: skip
    assert "costs of $5 and $10" in visible_text(out)


def test_unknown_languages_and_huge_blocks_stay_plain() -> None:
    out = render_html("```nosuchlang\nx = <b>\n```\n")
    assert out == '<pre><code class="language-nosuchlang">x = &lt;b&gt;\n</code></pre>\n'
    big = "```python\n" + "x = 1\n" * 5000 + "```\n"
    assert "<span" not in render_html(big)


def test_fence_info_cannot_break_out() -> None:
    out = assert_safe('```py" onmouseover="alert(1)\ncode\n```\n')
    assert "<code>" in out or "<code class" in out


def test_bundle_keeps_the_markdown_as_plain_text() -> None:
    md = "Costs $5 <b>x</b>\n"
    html = f'<div class="qwen-markdown">{render_html(md)}</div>'
    assert markdown_bundle(md) == {"text/html": html, "text/plain": md}
    assert markdown_bundle(md, live=True) == {"text/html": html}


def test_export_html_is_one_html_block_marked_cannot_split() -> None:
    for doc in [RICH, PRICES, "a\n\n\nb $x$ \\(y\\)", "```\na\n\n  \n\t\nb\n```", *base_vectors()[:40]]:
        cell = export_html(doc)
        assert "\r" not in cell and "$" not in cell and "\\" not in cell
        assert all(line.strip() for line in cell.split("\n")), cell
        assert cell.startswith("<div>") and cell.endswith("</div>")


def test_import_is_lazy() -> None:
    code = (
        "import sys\n"
        "import qwen_magic._markdown as m\n"
        "print('markdown_it' in sys.modules, 'nh3' in sys.modules)\n"
        "m.warm_up()\n"
        "print('markdown_it' in sys.modules, 'nh3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True"]


# --- Differential: what JupyterLab's own markdown step makes of exported cells ------------------
# The package publishes answers as text/html, which no frontend markdown parser sees; the one
# place it still writes markdown is an exported notebook's cells. Those go through JupyterLab's
# removeMath and marked 17.0.6 (its version in JupyterLab 4.6), run here in node.

_MARKED_ORACLE_JS = r"""
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import fs from 'node:fs';
const req = createRequire(process.env.MARKED_DIR + '/');
const load = async name => import(pathToFileURL(req.resolve(name)).href);
const markedModule = await load('marked');
const Marked = markedModule.Marked ?? markedModule.default.Marked;
const { gfmHeadingId } = await load('marked-gfm-heading-id');
const { mangle } = await load('marked-mangle');
const { parseFragment } = await load('parse5');

const MATHSPLIT = /(\$\$?|\\(?:begin|end)\{[a-z]*\*?\}|\\[{}$]|[{}]|(?:\n\s*)+|@@\d+@@|\\\\(?:\(|\)|\[|\]))/i;
function processMath(i, j, pre, math, blocks) {
  let block = blocks.slice(i, j + 1).join('').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  while (j > i) { blocks[j] = ''; j--; }
  blocks[i] = '@@' + math.length + '@@';
  math.push(pre(block));
  return blocks;
}
function removeMath(text) {
  const math = []; let start = null, end = null, last = null, braces = 0, deTilde = t => t;
  if (text.includes('`') || text.includes('~~~')) {
    text = text.replace(/~/g, '~T')
      .replace(/^(?<fence>`{3,}|(~T){3,})[^`\n]*\n([\s\S]*?)^\k<fence>`*$/gm, w => w.replace(/\$/g, '~D'))
      .replace(/(^|[^\\])(`+)([^\n]*?[^`\n])\2(?!`)/gm, w => w.replace(/\$/g, '~D'));
    deTilde = t => t.replace(/~([TD])/g, (w, c) => (c === 'T' ? '~' : '$'));
  }
  let blocks = text.replace(/\r\n?/g, '\n').split(MATHSPLIT);
  for (let i = 1, m = blocks.length; i < m; i += 2) {
    const block = blocks[i];
    if (block.charAt(0) === '@') { blocks[i] = '@@' + math.length + '@@'; math.push(block); }
    else if (start !== null) {
      if (block === end) {
        if (braces) { last = i; } else { blocks = processMath(start, i, deTilde, math, blocks); start = end = last = null; }
      } else if (block.match(/\n.*\n/)) {
        if (last !== null) { i = last; blocks = processMath(start, i, deTilde, math, blocks); }
        start = end = last = null; braces = 0;
      } else if (block === '{') { braces++; } else if (block === '}' && braces) { braces--; }
    } else if (block === '$' || block === '$$') { start = i; end = block; braces = 0; }
    else if (block === '\\\\(' || block === '\\\\[') { start = i; end = block.slice(-1) === '(' ? '\\\\)' : '\\\\]'; braces = 0; }
    else if (block.substr(1, 5) === 'begin') { start = i; end = '\\end' + block.substr(6); braces = 0; }
  }
  if (start !== null && last !== null) { blocks = processMath(start, last, deTilde, math, blocks); }
  return { text: deTilde(blocks.join('')), math };
}
const replaceMath = (text, math) => text.replace(/@@(\d+)@@/g, (m, n) => math[n]);

const marked = new Marked();
marked.use(gfmHeadingId(), mangle());
const esc = s => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
marked.use({ gfm: true, renderer: { code({ text, lang }) {
  return lang ? `<pre><code class="language-${lang}">${esc(text)}</code></pre>` : `<pre><code>${esc(text)}</code></pre>`;
} } });

const OK_TAGS = new Set(%(tags)s);
const OK_ATTRS = new Set(%(attrs)s);
function badUrl(v) {
  const u = v.replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, '').replace(/[\t\n\r]/g, '');
  const m = /^([a-zA-Z][a-zA-Z0-9+.\-]*):/.exec(u);
  return m && !['http', 'https', 'mailto'].includes(m[1].toLowerCase());
}
function check(node, out) {
  if (node.tagName) {
    if (!OK_TAGS.has(node.tagName)) out.push('<' + node.tagName + '>');
    for (const a of node.attrs || []) {
      if (!OK_ATTRS.has(a.name) || a.name.startsWith('on')) out.push(node.tagName + '[' + a.name + ']');
      else if ((a.name === 'href' || a.name === 'src') && badUrl(a.value)) out.push(node.tagName + '[' + a.value + ']');
    }
  }
  for (const c of node.childNodes || []) check(c, out);
  if (node.content) check(node.content, out);
}
const results = [];
for (const src of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  const parts = removeMath(src);
  const html = replaceMath(await marked.parse(parts.text), parts.math);
  const bad = [];
  check(parseFragment(html), bad);
  // cut: math removeMath took out (a literal @@n@@ marker it also takes is put back as it was)
  results.push({ html, bad, cut: parts.math.filter(m => !m.startsWith('@')).length });
}
process.stdout.write(JSON.stringify(results));
"""



def _marked_dir() -> str | None:
    """Where marked 17.0.6 and its extensions are installed, or None (a failure in CI)."""
    folder = os.environ.get("QWEN_MAGIC_MARKED_DIR")
    problem = None
    if not folder or shutil.which("node") is None:
        problem = "set QWEN_MAGIC_MARKED_DIR to a folder whose node_modules has marked@17.0.6, marked-gfm-heading-id, marked-mangle and parse5 (.ci/run does)"
    else:
        package = Path(folder) / "node_modules" / "marked" / "package.json"
        version = json.loads(package.read_text()).get("version") if package.exists() else None
        if version != "17.0.6":
            problem = f"JupyterLab 4.6 runs marked 17.0.6, {folder} has {version}"
    if problem is None:
        return folder
    if os.environ.get("QWEN_MAGIC_BROWSER_REQUIRED") == "1":
        pytest.fail(f"differential test required but cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


def _jupyterlab_markdown(docs: list[str], tmp_path: Path, folder: str) -> list[dict[str, object]]:
    script = tmp_path / "oracle.mjs"
    script.write_text(_MARKED_ORACLE_JS % {"tags": json.dumps(sorted(OK_TAGS)), "attrs": json.dumps(sorted(OK_ATTRS))})
    proc = subprocess.run(
        ["node", str(script)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        env={**os.environ, "MARKED_DIR": folder},
        check=True,
    )
    return json.loads(proc.stdout)


def test_exported_cells_against_real_marked(tmp_path: Path) -> None:
    """JupyterLab's own pipeline finds nothing to run in exported cells, and MathJax only our math."""
    folder = _marked_dir()
    assert folder is not None
    rng = random.Random(7)
    originals = [*vectors(), PRICES, RICH, *("".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 30))) for _ in range(1500))]
    results = _jupyterlab_markdown([export_html(doc) for doc in originals], tmp_path, folder)
    bad = [(src, r["bad"]) for src, r in zip(originals, results, strict=True) if r["bad"]]
    assert bad == []
    for src, r in zip(originals, results, strict=True):
        html = str(r["html"])
        assert typeset(html) == our_math(html) == our_math(render_html(src)), src
    # The oracle does see the attacks when they are not rendered by us.
    raw = _jupyterlab_markdown(base_vectors(), tmp_path, folder)
    assert sum(1 for r in raw if r["bad"]) > len(raw) // 2


_SAME_DOM_JS = r"""
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import fs from 'node:fs';
const req = createRequire(process.env.MARKED_DIR + '/');
const { parseFragment } = await import(pathToFileURL(req.resolve('parse5')).href);
// The tree as a browser builds it, whitespace-only text left out (it renders nothing between blocks).
function tree(node) {
  if (node.nodeName === '#text') return /^\s*$/.test(node.value) ? '' : JSON.stringify(node.value);
  if (node.nodeName === '#comment') return '';
  const attrs = (node.attrs || []).map(a => `${a.name}=${JSON.stringify(a.value)}`).join(' ');
  const kids = (node.content ? node.content.childNodes : node.childNodes || []).map(tree).join('');
  return `<${node.nodeName} ${attrs}>${kids}</${node.nodeName}>`;
}
const pairs = JSON.parse(fs.readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(pairs.map(([a, b]) => [tree(parseFragment(a)), tree(parseFragment(b))])));
"""


def test_compact_html_is_the_same_page(tmp_path: Path) -> None:
    """Without line breaks between blocks and optional end tags, a browser builds the same tree."""
    folder = _marked_dir()
    assert folder is not None
    rng = random.Random(11)
    tables = "| a | b |\n|:-|--:|\n" + "".join(f"| `r{n}` | **{n}** |\n" for n in range(5)) + "\npara\n\n> q\n>\n> - x\n>\n>   y\n"
    lists = "- a\n- b\n  - c\n\n  d\n1. x\n\n   <details><summary>s</summary>\n\n   p\n\n   </details>\n"
    docs = [*vectors(), PRICES, RICH, tables, lists, *("".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 40))) for _ in range(1500))]
    pairs = [[full, _markdown.compact(full)] for full in map(render_html, docs)]
    assert len(_markdown.compact(render_html(tables))) < 0.8 * len(render_html(tables))
    script = tmp_path / "same_dom.mjs"
    script.write_text(_SAME_DOM_JS)
    proc = subprocess.run(["node", str(script)], input=json.dumps(pairs), capture_output=True, text=True,
                          env={**os.environ, "MARKED_DIR": folder}, check=True)  # fmt: skip
    different = [(doc, a, b) for doc, (a, b) in zip(docs, json.loads(proc.stdout), strict=True) if a != b]
    assert different == []
    for _, short in pairs:
        assert dangers(short) == []


# --- stable_prefix ---------------------------------------------------------------------------


def test_stable_prefix_basics() -> None:
    assert stable_prefix("") == 0
    assert stable_prefix("one line, still open") == 0
    assert stable_prefix("para\n") == 0  # the only block may still grow
    text = "# Title\n\nA paragraph.\n\nAnother one\n"
    assert text[: stable_prefix(text)] == "# Title\n\nA paragraph.\n\n"


def test_unclosed_fence_is_one_open_block() -> None:
    head = "Intro.\n\n"
    body = "```python\nx = 1\n\n# not a heading\n\n- not a list\n\n| not | table |\n|---|---|\n"
    for cut in range(len(body) + 1):
        assert stable_prefix(head + body[:cut]) <= len(head)
    assert stable_prefix(head + body) == len(head)
    closed = head + body + "```\n\nAfter.\n"
    assert closed[: stable_prefix(closed)] == head + body + "```\n\n"


def test_loose_list_is_not_split() -> None:
    text = "# H\n\n- one\n\n- two\n\n  more of two\n\n- three\n"
    assert stable_prefix(text) == len("# H\n\n")
    text += "\nAfter the list.\n"
    assert text[: stable_prefix(text)].endswith("- three\n\n")


def test_setext_underline_arriving_later() -> None:
    text = "# H\n\nTitle line\n"
    k = stable_prefix(text)
    assert k == len("# H\n\n")
    assert stable_prefix(text + "===") == k
    assert stable_prefix(text + "===\n\nNext\n") == len("# H\n\nTitle line\n===\n\n")


def test_blocks_no_later_line_can_continue_are_finished_at_once() -> None:
    """An ATX heading ends with its line; a paragraph, table, quote or heading at a blank line.
    A list, an indented or fenced code block, an HTML block and a rule not yet followed by one wait."""
    finished = ["# H\n", "## H ##\n\n", "para\nmore\n\n", "| a |\n|---|\n| 1 |\n\n", "> q\n> r\n\n", "Title\n===\n\n",
                "a\r\n\r\n", "x\n\n  \n", "$$\nx\n\n"]
    for text in finished:
        assert stable_prefix(text) == len(text), text
    waiting = ["para\n", "para\n   ", "Title\n===\n", "- a\n\n", "1. a\n\n", "    code\n\n", "```\nx\n\n", "<div>\n\n",
               "<details>\n\npara\n\n", "<pre>\nx\n\n", "| a |\n|---|\n", "> q\n"]
    for text in waiting:
        assert stable_prefix(text) == 0, text
    # What a later line would have changed, it does not: the piece renders alone as it did in the whole.
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for text in finished:
        for later in ("===\n", "---\n", "    more\n", "lazy\n", "| 2 |\n", "> s\n", "- item\n"):
            assert md.render(text) + md.render(later) == md.render(text + later), (text, later)


def test_text_of_one_simple_block_holds_no_boundary():
    """``simple_block`` lets the view skip a parse; whenever it does, a parse would have found no
    finished block. Checked on random runs of lines of every kind."""

    rng = random.Random(15)
    said: dict[str, int] = {}
    for _ in range(40_000):
        lines = [rng.choice(LINE_KINDS) for _ in range(rng.randint(1, 9))]
        text = "".join(line + "\n" for line in lines)
        if simple_block(text, 0, len(text)):
            assert _stable_prefix(text) == 0, text
            kind = "table" if "|" in text else {">": "quote", "-": "list", "*": "list", "+": "list"}.get(text[0], "text")
            said[kind] = said.get(kind, 0) + 1
    assert min(said.get(kind, 0) for kind in ("table", "quote", "list", "text")) >= 20, said  # not vacuous


def test_blocks_that_visibly_ended_are_cut_where_the_parser_would():
    """``simple_ends`` cuts after an ATX heading, and after a paragraph, table or quote and a blank
    line: never inside a block, and the pieces render as the whole did."""
    rng = random.Random(16)
    kinds = LINE_KINDS + ["# head", "## H2", "word here", "", "| a | b |", "|---|---|", "> quote"] * 3
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    cuts = 0
    for _ in range(30_000):
        text = "".join(rng.choice(kinds) + "\n" for _ in range(rng.randint(1, 10)))
        cut = simple_ends(text, len(text))
        if not cut or "[" in text:  # (a link definition in one piece changes links in another)
            continue
        cuts += 1
        assert cut <= _stable_prefix(text) or not text[cut:].strip(), text
        assert md.render(text[:cut]) + md.render(text[cut:]) == md.render(text), text
    assert cuts > 1000
    assert simple_ends("# H\n\npara\n\n- item\n\n", 21) == len("# H\n\npara\n\n")
    assert simple_ends("- item\n\npara\n\n", 15) == 0  # a list goes on after a blank line: the parser decides
    assert simple_ends("para\nmore", 5) == 0  # only whole lines, and a blank one ends a paragraph


def test_display_math_not_closed_yet_keeps_the_lines_after_it() -> None:
    """A ``$$``/``\\[``/``\\begin`` line starts display math once its closer arrives, taking in the
    lines between, whatever they look like meanwhile (a heading, a list item): no cut among them."""
    assert stable_prefix("$$\n# head\n") == 0
    assert stable_prefix("para\n\n$$\nx\n- y\n") == len("para\n\n")
    assert stable_prefix("# H\n\n\\begin{align}\nx\n# y\n") == len("# H\n\n")
    assert stable_prefix("# H\n\n\\[\n# x\n") == len("# H\n\n")
    closed = "para\n\n$$\nx\n$$\n\nmore\n"
    assert stable_prefix(closed) == len("para\n\n$$\nx\n$$\n\n")
    assert stable_prefix("$$ x $$\n# h\n") == len("$$ x $$\n# h\n")  # math within one line: a paragraph
    assert stable_prefix("$$\nx\n\n# h\n") == len("$$\nx\n\n# h\n")  # a blank line ends any hope of a closer


def test_table_still_receiving_rows() -> None:
    text = "Intro.\n\n| a | b |\n|---|---|\n"
    for row in range(5):
        assert stable_prefix(text) == len("Intro.\n\n")
        text += f"| {row} | x |\n"


def test_no_trailing_newline_counts_only_whole_lines() -> None:
    # "```a" may still become "```a`" (no fence at all), "#" may become "#x": the
    # unterminated line is never relied on.
    assert stable_prefix("# H\n\npara") == len("# H\n\n")  # a heading ends with its line
    assert stable_prefix("# H\n\npara\n") == len("# H\n\n")
    assert stable_prefix("para\n\n```a") == len("para\n\n")  # a paragraph ends at a blank line
    assert stable_prefix("- a\n\n```a") == 0  # a list does not
    assert stable_prefix("#") == stable_prefix("# H") == 0
    assert stable_prefix("para\n\nmore\n\n```a") == len("para\n\nmore\n\n")


def test_cjk_emoji_and_crlf() -> None:
    text = "中文标题 😀\r\n\r\n第二段 👨‍👩‍👧\r\n\r\n第三段\r\n"
    k = stable_prefix(text)
    assert text[:k] == "中文标题 😀\r\n\r\n第二段 👨‍👩‍👧\r\n\r\n"
    assert stable_prefix("a\r\n\r\nb\r") == len("a\r\n\r\n")


def test_open_details_is_kept_together() -> None:
    text = "<details>\n<summary>More</summary>\n\ninside\n\nstill inside\n"
    assert stable_prefix(text) == 0
    text += "\n</details>\n\nafter\n"
    assert text[: stable_prefix(text)].endswith("</details>\n\n")


def test_definition_stays_with_the_block_after_it() -> None:
    text = "Intro.\n\n[1]: https://example.com\n'ti"
    assert stable_prefix(text + "\n") == len("Intro.\n\n")


STREAM_DOCS = [
    RICH,
    RICH.replace("\n", "\r\n"),
    "# Plan\n\n1. one\n   - nested *a*\n   - nested b\n\n     continued\n2. two\n\n> quote\nlazy line\n\n"
    "```\nunclosed until later\n\n# fake heading\n```\n\n| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n"
    "Text $$\\sum_i x_i$$ and 中文 😀.\nFinal line without newline",
    "Para one\nstill para one\n===\n\n- a\n- b\n\n\n* c\n* d\n\n    indented code\n\n    more code\n\nend\n",
]


def _feed(doc: str, rng: random.Random) -> list[tuple[str, int]]:
    """The text and stable prefix after each delta of a random-size stream of ``doc``."""
    steps, pos = [], 0
    while pos < len(doc):
        pos = min(len(doc), pos + rng.choice([1, 1, 2, 3, 5, 8, 13, 40]))
        steps.append((doc[:pos], stable_prefix(doc[:pos])))
    return steps


@pytest.mark.parametrize("doc", STREAM_DOCS)
def test_streaming_property(doc: str) -> None:
    for seed in range(5):
        rng = random.Random(seed)
        committed, previous = [], 0
        for text, k in _feed(doc, rng):
            assert k >= previous, (text, k, previous)
            assert doc.startswith(text[:k])
            assert k == 0 or text[k - 1] in "\r\n"
            committed.append(text[previous:k])
            previous = k
        assert "".join(committed) + doc[previous:] == doc


@pytest.mark.parametrize("doc", STREAM_DOCS)
def test_pieces_render_like_the_whole(doc: str) -> None:
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    cuts = sorted({k for _, k in _feed(doc, random.Random(0))} | {stable_prefix(doc)})
    bounds = [0, *[k for k in cuts if k], len(doc)]
    pieces = [doc[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert len(pieces) > 2
    assert "".join(md.render(piece) for piece in pieces) == md.render(doc)


# --- speed -------------------------------------------------------------------------------------


def test_speed_on_two_kilobytes() -> None:
    """200 calls on a 2 kB tail stay far from quadratic blow-ups (a few ms each at most)."""
    _markdown.warm_up()
    doc = RICH + RICH
    tail = doc[doc.index("\n", len(doc) - 2048) + 1 :]  # about 2 kB, from a line start
    assert 1800 < len(tail) <= 2048
    for func in (stable_prefix, render_html):
        start = time.perf_counter()
        for n in range(200):
            func(tail[: len(tail) - n])
        assert time.perf_counter() - start < 3.0, func


def test_adversarial_shapes_stream_in_linear_time() -> None:
    """A 100 kB pathological answer: every repaint's stable_prefix plus the final render, generously bounded."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_adversarial import SHAPES, stream_cost

    for name, make in SHAPES.items():
        cpu = stream_cost(make(100_000))
        assert cpu < 5.0, (name, cpu)  # the benchmark's target is 1 s; this bound only catches blow-ups


def test_a_long_open_tail_stays_safe_and_cheap_while_live() -> None:
    """Past a few kB an open block is rendered whole only as it doubles; in between it stays inert."""
    vectors_text = " ".join(base_vectors()).replace("\n", " ")
    for doc in ("```python\n" + "x = '<img src=x onerror=alert(1)>' # $5 and $6\n" * 800,
                ("word $5 and $x$ " + vectors_text + " ") * 8):  # fmt: skip
        start = time.process_time()
        for cut in range(100, len(doc), 97):
            html = markdown_bundle(doc[:cut], live=True)["text/html"]
            assert dangers(html) == [] and typeset(html) == our_math(html), doc[:cut][-200:]
        assert time.process_time() - start < 20.0
    code = "```python\n" + "print(1)\n" * 1500
    markdown_bundle(code, live=True)
    grown = markdown_bundle(code + "print(2)\n", live=True)["text/html"]
    assert grown.endswith("print(2)\n</code></pre>\n</div>")  # the newest lines inside the code block


@pytest.mark.kernel
def test_answer_images_in_a_real_cell(fresh) -> None:
    """Through %%qwen: hosts the prompt named load, others are links; `show` loads them all."""
    from fake_dashscope import Stream

    answer = "Here: ![chart](https://mine.example/c.png) and ![leak](https://evil.example/x.png?q=secret)\n"
    fresh.server.queue(Stream(text=answer))
    run = fresh.run("%%qwen\nPlot the data at https://mine.example/data.csv")
    html = "".join(run.data("text/html"))
    assert '<img src="https://mine.example/c.png" alt="chart">' in html
    assert "evil.example/x.png" in html and '<img src="https://evil.example' not in html
    assert "🖼 image from evil.example — open" in html
    fresh.run("%config QwenMagics.answer_images = 'show'")
    fresh.server.queue(Stream(text=answer))
    html = "".join(fresh.run("%%qwen\nAgain").data("text/html"))
    assert html.count("<img ") == 2
    fresh.run("%config QwenMagics.answer_images = 'link'")
    wrong = fresh.run("%config QwenMagics.answer_images = 'sometimes'")
    assert "answer_images" in wrong.error_text + wrong.stderr


def test_delimiter_and_bracket_soup_stays_literal_text_while_ordinary_emphasis_and_links_render():
    from qwen_magic._markdown import render_html

    soup = ("*_" * 100 + "\n") * 30  # 6,000 emphasis marks in one paragraph
    html = render_html(soup)
    assert "<em>" not in html and "<strong>" not in html and html.count("*") == soup.count("*")
    brackets = "[" * 40 + "a" + "](" * 40 + "x)"
    assert "<a " not in render_html(brackets)
    ordinary = render_html("**bold**, _it_, ~~gone~~ and [a [b] link](https://qwen.ai)")
    assert "<strong>bold</strong>" in ordinary and "<em>it</em>" in ordinary and "<s>gone</s>" in ordinary
    assert '<a href="https://qwen.ai"' in ordinary


@pytest.mark.parametrize(
    ("doc", "math"),
    [
        ("> $$\n> a+b\n> $$\n", "$$\na+b\n$$"),
        (">> $$\n>> q\n>> $$\n", "$$\nq\n$$"),
        ("> \\begin{align}\n> a &= 1 \\\\\n> b &= 2\n> \\end{align}\n", "\\begin{align}\na &= 1 \\\\\nb &= 2\n\\end{align}"),
        ("- $$\n  x^2\n  $$\n", "$$\nx^2\n$$"),
        ("1. item\n\n   \\[\n   y\n   \\]\n", "\\[\ny\n\\]"),
        ("$$\na+b\n$$\n", "$$\na+b\n$$"),
    ],
)
def test_display_math_in_a_quote_or_list_is_its_own_lines_without_their_markers(doc: str, math: str) -> None:
    """The quote's ``>`` and the item's indent are markdown, not TeX (pandoc reads them so too)."""
    html = render_html(doc)
    assert our_math(html) == typeset(html) == [math]
