"""Tests for qwen_magic._markdown: sanitize() against script in trusted markdown, stable_prefix() for streaming."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from qwen_magic import _markdown
from qwen_magic._markdown import _math_spans, sanitize, stable_prefix

MODULE_PATH = Path(_markdown.__file__)

# --- Renderers that trust the markdown, as JupyterLab does for a running session --------


def _trusting_markdown_it() -> MarkdownIt:
    """markdown-it with raw HTML on and every link accepted: a browser-like trusting renderer."""
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.normalizeLink = lambda url: url  # type: ignore[method-assign]
    return md


TRUSTING = _trusting_markdown_it()


def render_trusting(md: str) -> str:
    """Render like a trusting renderer with no math handling."""
    return TRUSTING.render(md)


def render_jupyterlab_like(md: str) -> str:
    """Cut math out, render, paste it back escaping only ``&<>`` (JupyterLab's removeMath/replaceMath)."""
    pieces, math, pos = [], [], 0
    for a, b in _math_spans(md):
        pieces.append(md[pos:a])
        pieces.append(f"@@{len(math)}@@")
        math.append(md[a:b].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        pos = b
    pieces.append(md[pos:])
    rendered = TRUSTING.render("".join(pieces))
    return re.sub(
        r"@@(\d+)@@", lambda m: math[int(m.group(1))] if int(m.group(1)) < len(math) else m.group(0), rendered
    )


_OK_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "b", "i", "em", "strong", "code", "pre", "kbd",
    "sub", "sup", "mark", "s", "del", "ins", "u", "small", "span", "div", "blockquote", "ul", "ol", "li",
    "table", "thead", "tbody", "tr", "th", "td", "a", "img", "details", "summary", "input",
}  # fmt: skip
_OK_ATTRS = {
    "href",
    "src",
    "alt",
    "title",
    "class",
    "id",
    "align",
    "start",
    "type",
    "checked",
    "disabled",
    "rel",
    "style",
}


class _Dangers(HTMLParser):
    """Collects what in an HTML fragment could run script: unknown tags, handlers, bad URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _OK_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name not in _OK_ATTRS:
                self.found.append(f"{tag}[{name}]")
            elif name == "style" and value and re.search(r"url|expression", value, re.I):
                self.found.append(f"{tag}[style={value}]")
            elif name in ("href", "src") and value is not None and _bad_url(value):
                self.found.append(f"{tag}[{name}={value}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _bad_url(url: str) -> bool:
    """Whether a browser would follow ``url`` to a scheme other than http(s) or mailto."""
    url = re.sub(r"[\t\n\r]", "", url).strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10 ")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", url)
    return m is not None and m.group(1).lower() not in ("http", "https", "mailto")


def dangers(html: str) -> list[str]:
    """Everything in ``html`` that could run script."""
    parser = _Dangers()
    parser.feed(html)
    parser.close()
    return parser.found


def outside_code(md: str) -> str:
    """``md`` without fenced code, indented code and code spans, lowercased (rough, for assertions)."""
    md = re.sub(r"(?ms)^ {0,3}(`{3,}|~{3,}).*?(^ {0,3}\1|\Z)", "", md)
    md = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md, flags=re.S)
    return md.lower()


def assert_inert(md: str) -> None:
    """Neither a trusting renderer nor JupyterLab's math pass can find script in ``md``."""
    assert dangers(render_trusting(md)) == [], md
    assert dangers(render_jupyterlab_like(md)) == [], md


# --- sanitize: payloads --------------------------------------------------------------

PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[click](javascript:window.__pwned=1)",
    "[click](JaVaScRiPt:window.__pwned=1)",
    "[x](  javascript:window.__pwned=1)",
    "[x](<java\tscript:window.__pwned=1>)",
    "[x](java&#x09;script:window.__pwned=1)",
    "[x](javascript&colon;window.__pwned=1)",
    "[x](&#x6A;avascript:window.__pwned=1)",
    "<javascript:alert(1)>",
    "[ref][1]\n\n[1]: javascript:alert(1)",
    "[ref]\n\n[ref]: <javascript:alert(1)> 'title'",
    "![i](data:text/html,<script>alert(1)</script>)",
    "![i](data:image/svg+xml;base64,PHN2Zz4=)",
    "![i](vbscript:msgbox(1))",
    "[f](file:///etc/passwd)",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<iframe src="https://evil.example"></iframe>',
    "<svg onload=alert(1)>",
    '<math><mtext><table><mglyph><style><img src=x onerror="alert(1)">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<form><button formaction="javascript:alert(1)">x</button></form>',
    "<!-- comment --><img src=x onerror=alert(1)>",
    "text <img src=x onerror=alert(1)> inline",
    "> quoted <img src=x onerror=alert(1)>",
    "- item <svg onload=alert(1)>\n- [link](javascript:alert(1))",
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |",
    "# Title <script>alert(1)</script>",
    '<object data="javascript:alert(1)"></object>',
    '<embed src="javascript:alert(1)">',
]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("context", ["{}", "Intro *text*.\n\n{}\n\nOutro with `code`.", "# Head\n{}\nTail"])
def test_payloads_are_neutralised(payload: str, context: str) -> None:
    out = sanitize(context.format(payload))
    visible = outside_code(out)
    for bad in ("onerror", "onload", "onmouseover", "<script", "javascript:", "<iframe", "<svg", "formaction"):
        assert bad not in visible, (bad, out)
    assert_inert(out)
    assert sanitize(out) == out


def test_surrounding_markdown_is_kept() -> None:
    src = "Intro *text*.\n\n<img src=x onerror=alert(1)>\n\nOutro with `code`.\n"
    out = sanitize(src)
    assert out.startswith("Intro *text*.\n\n")
    assert out.endswith("\n\nOutro with `code`.\n")


def test_harmless_markup_is_kept() -> None:
    out = sanitize("Some <b>bold</b> and <i>it</i> text.")
    assert "<b>bold</b>" in out and "<i>it</i>" in out
    assert_inert(out)

    out = sanitize("<details><summary>More</summary>\n\nhidden *text* here\n\n</details>\n\nafter\n")
    assert "<details><summary>More</summary>" in out
    # The markdown inside stays inside the element, rendered.
    assert "<em>text</em>" in out and out.index("<em>text</em>") < out.index("</details>")
    assert out.endswith("\n\nafter\n")
    assert_inert(out)


def test_replacement_is_one_html_line_followed_by_a_blank_line() -> None:
    out = sanitize("para one\n<div onclick=alert(1)>x</div>\nmore *markdown*\n")
    lines = out.split("\n")
    html_lines = [n for n, line in enumerate(lines) if line.startswith("<")]
    assert html_lines, out
    for n in html_lines:
        assert lines[n + 1] == "", out
        assert lines[n - 1] == "" or n == 0, out


def test_bad_links_keep_their_text() -> None:
    out = sanitize("see [the docs](javascript:alert(1)) now")
    assert "the docs" in out and "href" not in out


def test_code_is_literal() -> None:
    src = (
        "Use `<script>` and `javascript:x` freely in code.\n\n"
        '```html\n<script>alert(1)</script>\n<a href="javascript:alert(1)">x</a>\n```\n\n'
        "~~~\n<img src=x onerror=alert(1)>\n~~~\n"
    )
    assert sanitize(src) == src


# --- sanitize: what marked (in JupyterLab) reads differently ---------------------------

MARKED_VECTORS = [
    # math pasted back unescaped into attributes
    '![a](x$"onerror="alert(1)//$)',
    '[a](https://x.example/$"onmouseover="alert(1)//$)',
    'see https://example.com/$"onmouseover="alert(1)$ ok',
    '![$"onerror="alert(1)//$](x)',
    # math hiding a fence opener from marked
    "$x\n```\n$ <img src=x onerror=alert(1)>",
    # JupyterLab writes the info string into class="language-…" unescaped
    '```py" onmouseover="alert(1)\ncode\n```\n',
    '~~~ x"onmouseover="alert(1)\ncode\n~~~\n',
    # marked closes a fence CommonMark keeps open
    "```\ncode\n```~\n<img src=x onerror=alert(1)>\n",
    # marked splits table cells inside code spans
    "| `a | <img src=x onerror=alert(1)>` |\n|---|---|\n",
    # a failed ~ strikethrough or a GFM autolink swallows a backtick or backslash
    "[a]$)~`<img src=x onerror=alert(1)>`",
    "a ~`- ![i](~<script>alert(1)</script>) b",
    "www.example.com/```py`](x) <svg onload=alert(1)>`",
    "https://a.example/-->\\<svg onload=alert(1)>",
    # a table-like row ends marked's paragraph, unpairing a code span
    "x `\n<img src=x onerror=alert(1)>| a | b |\n|---|---|\n` y",
    # marked completes a definition with the next line, or a multi-line label or title
    "[1]:\n```\n<img src=x onerror=alert(1)>\n```\n",
    "[)\n```\n# x)]: y\n<img src=x onerror=alert(1)>\n```\n",
    '[a]: /u "\n```\n"\n<img src=x onerror=alert(1)>\n```\n',
    # task items are re-read as fresh lines by marked
    '- [ ] ~~~"$$``<script>``\n',
    # lazy lines and empty items put fences elsewhere in marked
    '- > \n| x |\nmore\n  ```\n1) ```py" onmouseover="alert(1)\n',
    "* \n2) ~~~```\n\t[x](javascript:alert(1))\n",
    "- [ ] \n> > \n  ```\nx <svg onload=alert(1)>\n",
    "- \n  ```\n\n<p>x</p>\n\n  ```\n\n- <script>alert(1)</script>\n",
    # marked's tag names may hold `_`, CommonMark's may not
    "<x_y onmouseover=alert(1)>hi</x_y>",
    # content nested past markdown-it's limit is dropped, not parsed
    ">" * 30 + " <img src=x onerror=alert(1)>",
]


@pytest.mark.parametrize("payload", MARKED_VECTORS)
def test_marked_divergences_are_replaced(payload: str) -> None:
    out = sanitize(payload)
    assert out != payload
    assert_inert(out)
    for bad in ("onerror=", "onload=", "onmouseover=", "<script", "<svg", "<x_y"):
        # Only inside a replacement line, escaped as text or inside a URL.
        for line in out.split("\n"):
            if bad in line:
                assert line.startswith("<") and not line.startswith(("<script", "<svg", "<x_y")), (bad, out)


def test_unclosed_tag_is_inert() -> None:
    out = sanitize('text <img src="x" onerror="alert(1)"')
    assert "<img" not in out
    assert_inert(out)


# JupyterLab's pipeline for trusted markdown, in node: removeMath (rendermime/latex.ts),
# marked as markedparser-extension configures it (its code renderer writes the language
# into the class attribute unescaped), replaceMath; then the HTML is parsed like a
# browser (parse5) and anything that could run script is reported.
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
  results.push({ html, bad });
}
process.stdout.write(JSON.stringify(results));
"""


@pytest.mark.skipif(
    not os.environ.get("QWEN_MAGIC_MARKED_DIR") or shutil.which("node") is None,
    reason="set QWEN_MAGIC_MARKED_DIR to a folder whose node_modules has marked@15, "
    "marked-gfm-heading-id, marked-mangle and parse5",
)
def test_against_real_marked(tmp_path: Path) -> None:
    """Differential check: JupyterLab's own pipeline finds nothing to run in sanitized text."""
    script = tmp_path / "oracle.mjs"
    script.write_text(
        _MARKED_ORACLE_JS % {"tags": json.dumps(sorted(_OK_TAGS)), "attrs": json.dumps(sorted(_OK_ATTRS))}
    )
    originals = PAYLOADS + MARKED_VECTORS + _fuzz_docs(2000, seed=7)
    docs = [sanitize(doc) for doc in originals]
    proc = subprocess.run(
        ["node", str(script)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        env={**os.environ, "MARKED_DIR": os.environ["QWEN_MAGIC_MARKED_DIR"]},
        check=True,
    )
    results = json.loads(proc.stdout)
    bad = [(src, doc, r["bad"]) for src, doc, r in zip(originals, docs, results, strict=True) if r["bad"]]
    assert bad == []
    # The oracle does see the attacks when they are not sanitized.
    raw = subprocess.run(
        ["node", str(script)],
        input=json.dumps(MARKED_VECTORS),
        capture_output=True,
        text=True,
        env={**os.environ, "MARKED_DIR": os.environ["QWEN_MAGIC_MARKED_DIR"]},
        check=True,
    )
    assert all(r["bad"] for r in json.loads(raw.stdout))


# --- sanitize: ordinary markdown is untouched -------------------------------------------

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

ORDINARY = [
    RICH,
    RICH.replace("\n", "\r\n"),
    "Short answer: use `Array<T>`.\n\n```ts\nfunction first<T>(xs: Array<T>): T | undefined {\n  return xs[0];\n}\n```\n",
    "Steps:\n1. First step\n2. Second step, wrapped\n   onto a second line.\n\n   A second paragraph.\n\n3. Third step\n",
    "No newline at the end: $a<b$ and `<tag>`",
    "Here is the code:\n```js\nconst el = document.querySelector('<div>');\n```\nThat's it.",
    "Ratio: 3 < 4 and 5 > 2; a <= b.",
    'A [reference link][docs].\n\n[docs]: https://example.com/docs "The docs"\n',
    "",
    "plain text only",
]


@pytest.mark.parametrize("doc", ORDINARY)
def test_ordinary_markdown_is_byte_for_byte(doc: str) -> None:
    assert sanitize(doc) == doc


def test_fast_path_returns_the_same_object() -> None:
    text = "Plain *markdown* with # headings\n\n- and lists, no risky characters at all\n"
    assert sanitize(text) is text


# --- sanitize: robustness ---------------------------------------------------------------

_FRAGMENTS = [
    "$", "$$", "\\\\(", "\\\\)", "\\begin{x}", "\\end{x}", "`", "``", "```", "```py", "~~~", "~",
    "<img src=x onerror=alert(1)>", '"onerror="alert(1)//', '"', "javascript:alert(1)", "java&#x09;script:",
    "[a](", ")", "](", "]: ", "[", "]", "![i](", "> ", "- ", "1. ", "- [ ] ", "    ", "  ", "|",
    "| a | b |\n|---|---|\n", "---", "===", "\n", "\n\n", "\r\n", "\t", "\\", "{", "}", "@@0@@", "<!--",
    "-->", "<div>", "</div>", "<details>", "</details>", "<x_y onmouseover=alert(1)>", "www.example.com/",
    "https://a.example/", "*", "_", "word ", "中文", "😀", "# ", "<", "a<b", "<b>", "&lt;", "&#60;", "\\<",
    "\\`", "[1]: ", "<https://x.example>", "<svg onload=alert(1)>", "<script>", "</script>", "\x00", "\u2028",
]  # fmt: skip


def _fuzz_docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_fuzz_never_raises_and_stays_inert() -> None:
    for doc in _fuzz_docs(300, seed=1):
        out = sanitize(doc)
        assert isinstance(out, str)
        assert_inert(out)
        assert sanitize(out) == out, doc


def test_random_text_never_raises() -> None:
    rng = random.Random(2)
    alphabet = "<>[]()!`~$\\{}\"'&#:;/*_-=|\n\r\t ab1中😀@"
    for _ in range(300):
        doc = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert isinstance(sanitize(doc), str)
        assert isinstance(stable_prefix(doc), int)


def test_falls_back_to_escaped_html_if_the_parser_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(_markdown, "_sanitize", boom)
    out = sanitize("hello <img src=x onerror=alert(1)>")
    assert out == "<p>hello <img></p>\n"  # the whole text through nh3; a relative image source dropped
    monkeypatch.setattr(_markdown, "_html_line", boom)
    out = sanitize("hello <img src=x onerror=alert(1)>\n$x$")
    assert out.startswith("<div>") and "<img" not in out and "$" not in out


def test_math_spans_match_jupyterlab() -> None:
    """Golden cases from JupyterLab's removeMath (run in node): the text marked sees."""
    golden = {
        "a $x$ b": "a @@0@@ b",
        "cost $5 and $10": "cost @@0@@10",
        "`$x$` and $y$": "`$x$` and @@0@@",
        "```\n$a$\n```\n$b$": "```\n$a$\n```\n@@0@@",
        "  ```\n$a$\n  ```\n$b$": "  ```\n@@0@@\n  ```\n@@1@@",
        "$a\n\nb$": "$a\n\nb$",
        "$a\nb$": "@@0@@",
        "\\\\(x\\\\) and \\\\[y\\\\]": "@@0@@ and @@1@@",
        "\\begin{align}x\\end{align}": "@@0@@",
        "$a{$b$}$ c": "@@0@@ c",
        "\\$5 and $6$": "\\$5 and @@0@@",
        "~~~\n$a$\n~~~\n$b$": "~~~\n$a$\n~~~\n@@0@@",
        "$a\r\nb$ c": "@@0@@ c",
        "x `a $ b` $c$": "x `a $ b` @@0@@",
        "$$a$$ $$b": "@@0@@ $$b",
        "$a \\\\( b$": "@@0@@",
        "{$a$}": "{@@0@@}",
    }
    for text, expected in golden.items():
        out, pos = [], 0
        for n, (a, b) in enumerate(_math_spans(text)):
            out += [text[pos:a], f"@@{n}@@"]
            pos = b
        assert "".join([*out, text[pos:]]) == expected, text


def test_import_is_lazy() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(MODULE_PATH)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print('markdown_it' in sys.modules, 'nh3' in sys.modules)\n"
        "m.warm_up()\n"
        "print('markdown_it' in sys.modules, 'nh3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True"]


# --- stable_prefix ------------------------------------------------------------------------


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


def test_table_still_receiving_rows() -> None:
    text = "Intro.\n\n| a | b |\n|---|---|\n"
    for row in range(5):
        assert stable_prefix(text) == len("Intro.\n\n")
        text += f"| {row} | x |\n"


def test_no_trailing_newline_counts_only_whole_lines() -> None:
    # "```a" may still become "```a`" (no fence at all), "#" may become "#x": the
    # unterminated line is never relied on.
    assert stable_prefix("# H\n\npara") == 0
    assert stable_prefix("# H\n\npara\n") == len("# H\n\n")
    assert stable_prefix("para\n\n```a") == 0
    assert stable_prefix("para\n\nmore\n\n```a") == len("para\n\n")


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


# --- speed -----------------------------------------------------------------------------


def test_speed_on_two_kilobytes() -> None:
    """200 calls on a 2 kB tail stay far from quadratic blow-ups (a few ms each at most)."""
    _markdown.warm_up()
    doc = RICH + RICH
    tail = doc[doc.index("\n", len(doc) - 2048) + 1 :]  # about 2 kB, from a line start
    assert 1800 < len(tail) <= 2048
    for func in (stable_prefix, sanitize):
        start = time.perf_counter()
        for n in range(200):
            func(tail[: len(tail) - n])
        assert time.perf_counter() - start < 2.0, func
    start = time.perf_counter()
    for _ in range(20):
        sanitize(tail + "\n<img src=x onerror=alert(1)>\n")  # a replacement, and the second look
    assert time.perf_counter() - start < 1.0
