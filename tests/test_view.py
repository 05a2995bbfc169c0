"""The notebook view's repaints, without a kernel: every output it publishes is safe as a whole."""

from __future__ import annotations

import random
import re

import pytest
from helpers import LINE_KINDS
from html_readers import dangers, our_math, typeset
from kernel_harness import is_markdown, shown

from qwen_magic import _view, _widgets
from qwen_magic._answer import Answer
from qwen_magic._ends import BlockEnds
from qwen_magic._markdown import answer_bundles, merged
from qwen_magic._markdown._parse import _parser

ADVERSARIAL = [
    # Safe apart, unsafe joined: the `$` of the heading pairs with the paragraph's first one.
    "# T $\n\nx $ <img src=x onerror=alert(1)> $\n\nmore text\n",
    "```\ncode\n  ```\n\n$ <img src=x onerror=alert(1)> $\n```\n",
    "Intro with a [link](https://qwen.ai).\n\n" * 40 + "<script>alert(1)</script>\n\n$a$ and $b\n\n$ <b onclick=x>c</b>\n",
]


@pytest.fixture
def published(monkeypatch):
    """Capture every bundle the view publishes, by display id, instead of sending it."""
    outputs: list[tuple[str, dict]] = []
    monkeypatch.setattr(_view, "_publish", lambda display_id, bundle, new=False, metadata=None: outputs.append((display_id, bundle)))
    monkeypatch.setattr(_widgets, "live_status", lambda: None)
    return outputs


def stream(text: str, size: int, commit_at: int = 600) -> None:
    view = _view.NotebookView()
    view.INTERVAL = 0  # repaint on every delta: the most intermediate states
    view.COMMIT_AT = commit_at
    view.start(Answer(model="m"))
    for i in range(0, len(text), size):
        view.text(text[i : i + size])
    answer = Answer(model="m", text=text)
    view.finish(answer)


@pytest.mark.parametrize("doc", ADVERSARIAL)
@pytest.mark.parametrize("size", [1, 3, 7, 50])
@pytest.mark.parametrize("commit_at", [0, 600, 100_000])
def test_every_published_output_is_safe_as_a_whole(published, doc, size, commit_at):
    stream(doc, size, commit_at)
    written = [bundle["text/markdown"] for _, bundle in published if "text/markdown" in bundle]
    for md in written:
        assert_safe_markdown(md)
    rendered = [bundle["text/html"] for _, bundle in published if "qwen-markdown" in bundle.get("text/html", "")]
    assert rendered or written
    for html in rendered:
        assert dangers(html) == [], html
        assert typeset(html) == our_math(html), html


_CODE_MARKDOWN = re.compile(r'<div class="qwen-markdown">\n\n(`{3,})([A-Za-z0-9_+.-]*)\n(.*)\1\n\n</div>', re.S)


def assert_safe_markdown(md: str) -> None:
    """``md`` (a code block, a table, or parts joined by ``_merged``) runs nothing and typesets only our math.

    markdown-it with raw HTML on stands in for marked here; ``test_merged_outputs.py`` runs the real one.
    """
    if _CODE_MARKDOWN.fullmatch(md) and md.count("<div") == 1:
        assert_only_code(md)
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(md)
    assert dangers(html) == [], md
    assert typeset(html) == our_math(html), md


def assert_only_code(md: str) -> None:
    """``md`` is one fenced code block no line of which can close it: marked shows it as code text."""
    m = _CODE_MARKDOWN.fullmatch(md)
    assert m is not None, md
    fence, code = m.group(1), m.group(3)
    assert code == "" or code.endswith("\n")
    assert max((len(run) for run in re.findall("`+", code)), default=0) < len(fence), md


def test_code_blocks_are_published_as_markdown_only_code_can_be_read_from(published):
    hostile = "<img src=x onerror=alert(1)> $x$ $$y$$ ~D </code></pre><script>alert(1)</script>\n``` ```` `````\n"
    mathy = "\\begin{x} a<b \\end{x} @@0@@ \\\\(z\\\\)\n"  # removeMath would cut these out: HTML
    doc = f"Intro\n\n~~~ py`thon {{onclick=x}}\n{hostile}~~~\n\n```tex\n{mathy}```\n   ```\n{hostile}\nAfter, unclosed"
    stream(doc, 5)
    final: dict[str, dict] = {}
    for display_id, bundle in published:
        final[display_id] = bundle
    outputs = [b for b in final.values() if is_markdown(b)]
    assert "".join(b["text/plain"] for b in outputs) == doc
    # Parts finished together share an output (_merged); each part is what answer_bundles makes of it.
    parts = []
    for output in outputs:
        assert merged(answer_bundles(output["text/plain"])) == [output]
        if "text/markdown" in output:
            assert_safe_markdown(output["text/markdown"])
        parts += answer_bundles(output["text/plain"])
    codes = [b["text/markdown"] for b in parts if "text/markdown" in b]
    assert len(codes) == 2
    for code in codes:
        assert_only_code(code)
        assert hostile in code
    assert codes[0].startswith('<div class="qwen-markdown">\n\n``````python\n')
    (tex,) = [b for b in parts if "tex" in b["text/plain"]]
    assert "text/markdown" not in tex and "a&lt;b" in tex["text/html"]


def test_committed_plain_text_is_the_answer(published):
    doc = "# Title\n\n" + "A paragraph of text.\n\n" * 60 + "```python\nprint(1)\n```\n"
    stream(doc, 9)
    final: dict[str, dict] = {}
    for display_id, bundle in published:
        final[display_id] = bundle
    plain = "".join(b["text/plain"] for b in final.values() if is_markdown(b))
    assert plain == doc


def _shapes() -> dict[str, str]:
    code = "Intro.\n\n```python\n" + "".join(f"x_{n} = compute({n})  # step {n}\n" for n in range(400)) + "```\n\nAfter.\n"
    table = "| a | b |\n|---|--:|\n" + "".join(f"| row {n} | {n * 7} |\n" for n in range(500)) + "\nDone.\n"
    items = "".join(f"- item {n} with `code` and **bold**\n" + ("  - nested\n" if n % 4 == 0 else "") for n in range(400))
    loose = "".join(f"1. step {n}\n\n   detail of step {n}\n\n" for n in range(200)) + "# End\n"
    paragraph = " ".join(f"word{n}" for n in range(3000)) + ".\n\n## Next\n\nShort.\n"
    quote = "".join(f"> quoted line {n}\n" for n in range(400)) + "\nafter the quote\n"
    crlf = "```\r\n" + "".join(f"line {n}\r\n" for n in range(300)) + "```\r\n\r\ntext\r\n"
    return {"code": code, "table": table, "list": items, "loose": loose, "paragraph": paragraph, "quote": quote,
            "crlf": crlf}


@pytest.mark.parametrize("name", sorted(_shapes()))
@pytest.mark.parametrize("size", [1, 8, 61, 500])
def test_live_windows_are_bounded_and_the_final_outputs_are_the_answer(published, name, size):
    doc = _shapes()[name]
    stream(doc, size, commit_at=1)
    final: dict[str, dict] = {}
    for display_id, bundle in published:
        if "text/plain" not in bundle and is_markdown(bundle):  # a live repaint
            # Rendered HTML of a ~WINDOW-character window (code is coloured: many spans per line),
            # whatever the length of the document.
            assert len(shown(bundle)) <= 25 * _view.NotebookView.WINDOW + 2000
        final[display_id] = bundle
    parts = [b for b in final.values() if is_markdown(b)]
    assert "".join(b["text/plain"] for b in parts) == doc
    assert all(merged(answer_bundles(b["text/plain"])) == [b] for b in parts)
    assert not any("characters above" in shown(b) for b in parts)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_a_key_split_across_deltas_never_shows_in_part(published, monkeypatch, size):
    key = "sk-0123456789abcdefWXYZ"
    monkeypatch.setenv("DASHSCOPE_API_KEY", key)
    doc = f"Start {key} middle\n\n```\ncode {key}\n```\n\n" + "filler " * 100 + f"\n\nend {key}"
    stream(doc, size)
    for _, bundle in published:
        shown = bundle.get("text/html", "") + bundle.get("text/plain", "")
        for n in range(8, len(key) + 1):
            assert key[:n] not in shown, (n, shown[-60:])
    assert "sk-…WXYZ" in "".join(b.get("text/plain", "") for _, b in published)


@pytest.mark.parametrize("size", [3, 8, 40])
@pytest.mark.parametrize("after", ["table", "paragraph", "code"])
def test_a_long_block_is_published_whole_as_soon_as_the_next_block_begins(published, size, after):
    code = "```python\n" + "".join(f"y_{n} = f({n})\n" for n in range(600)) + "```\n\n"
    rest = {
        "table": "| a | b |\n|---|---|\n" + "".join(f"| {n} | {n} |\n" for n in range(400)),
        "paragraph": "Then a paragraph that goes on. " * 200 + "\n",
        "code": "~~~\n" + "".join(f"z{n}\n" for n in range(1500)) + "~~~\n",
    }[after]
    stream(code + rest, size, commit_at=1)
    whole = [i for i, (_, bundle) in enumerate(published) if bundle.get("text/plain") in (code, code[:-1])]
    assert whole, "the code block is published whole on its own"
    # ... long before the answer ends: the repaints after it show the next block's window.
    later_windows = [b for _, b in published[whole[0] + 1 :] if "text/plain" not in b and is_markdown(b)]
    assert len(later_windows) > len(rest) // size // 4
    assert not any("y_" in shown(b) for b in later_windows)


@pytest.mark.parametrize(
    "doc",
    [
        "<details>\n\n" + "A paragraph inside the open details element.\n\n" * 600,  # the end never confirms
        "- item\n" + "lazy continuation line of the item\n- next item\n" * 500,  # lazy lines
        "```\n" + "code line\n" * 3000,  # an open fence
        "| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 3000,  # a table
        "> quote line\n" * 3000,
    ],
    ids=["details", "lazy-list", "fence", "table", "quote"],
)
def test_finding_block_ends_costs_linear_time(published, monkeypatch, doc):
    from qwen_magic import _markdown

    parsed: list[int] = []
    real = _markdown.stable_prefix
    monkeypatch.setattr(_markdown, "stable_prefix", lambda text: parsed.append(len(text)) or real(text))
    stream(doc, 16, commit_at=1)  # a repaint at every delta: the most looks for block ends
    # Each look parses the open text's last lines (a few KB) or, a bounded number of times
    # (as the text doubles, or to confirm a boundary its last lines show), the whole of it.
    probe = BlockEnds.REPARSE + 2600
    whole = [n for n in parsed if n > probe]
    assert len(whole) <= 8, whole
    assert sum(whole) <= 3 * len(doc)


def test_a_long_table_is_published_whole_when_a_paragraph_follows(published):
    table = "| a | b |\n|---|---|\n" + "".join(f"| {n} | {n * n} |\n" for n in range(800))
    rest = "\nAfter the table.\n\n" + "More words here. " * 300 + "\n"
    stream(table + rest, 24, commit_at=1)
    firsts = [b["text/plain"] for _, b in published if "text/plain" in b and is_markdown(b)]
    assert firsts[0] in (table, table + "\n"), firsts[0][-80:]


def test_the_stream_rests_between_paints_and_briefly_while_a_long_block_would_be_slow_to_publish(published):
    """``idle``: nothing while waiting; after a paint, until the next one is due; at most ``REST``
    when the open text would take long to render whole; ``THINKING_REST`` while thinking."""

    def streamed(text: str, *, thinking: bool = False) -> _view.NotebookView:
        view = _view.NotebookView()
        view.start(Answer(model="m"))
        assert view.idle() == 0.0  # waiting: the first delta is read as it comes
        view.INTERVAL = 0  # paint at every idle()
        for i in range(0, len(text), 1000):
            (view.thinking if thinking else view.text)(text[i : i + 1000])
            view.idle()
        del view.INTERVAL  # then idle() as after a paint at the usual pace
        return view

    code = streamed("```python\n" + "x = 1\n" * 4000)
    assert code.REST < code.idle() <= code.INTERVAL
    assert 0 < streamed("word " * 5000).idle() <= _view.NotebookView.REST
    assert 0 < streamed("- item\n" * 5000).idle() <= _view.NotebookView.REST
    assert streamed("short").idle() > _view.NotebookView.REST
    assert 0 < streamed("hmm " * 50, thinking=True).idle() <= _view.NotebookView.THINKING_REST


def test_paints_happen_when_the_stream_has_read_all_that_came(published):
    """Once the stream calls ``idle``, deltas never paint on their own (a backlog read after a rest
    would show only its first delta): the paint comes at ``idle``, when due, with all of them."""
    view = _view.NotebookView()
    view.start(Answer(model="m"))
    view.idle()
    view.text("First words.")  # the first text is painted at once
    assert published[-1][1] and "First words." in published[-1][1]["text/html"]
    count = len(published)
    view.INTERVAL = 0  # every paint is due at once
    for word in (" and", " more", " words"):
        view.text(word)
    assert len(published) == count  # a backlog being read: no paint
    assert view.idle() == 0.0 and len(published) == count + 1
    assert "First words. and more words" in published[-1][1]["text/html"]
    assert view.idle() == 0.0 and len(published) == count + 1  # nothing new: nothing painted
    view.text(" Done.")
    view.idle()
    assert "words Done." in published[-1][1]["text/html"]
    # Thinking too.
    thinking = _view.NotebookView()
    thinking.start(Answer(model="m"))
    thinking.idle()
    thinking.INTERVAL = 0
    thinking.thinking("Let me see")
    count = len(published)
    thinking.thinking(", carefully")
    assert len(published) == count
    thinking.idle()
    assert "Let me see, carefully" in str(published[-1][1])


@pytest.mark.parametrize(
    "doc",
    [
        "Words of a long paragraph, line after line,\n" * 90,
        "- item with `code` and **bold**\n  - nested item\n  more of it\n" * 40,
        "1. step one\n2. step two\n" * 50,
        "| a | b |\n|---|---|\n" + "| `x` | **y** |\nrow without pipes\n" * 60,
        "> a quoted line\n" * 90,
    ],
    ids=["paragraph", "list", "ordered", "table", "quote"],
)
def test_lines_that_only_continue_the_open_block_are_not_parsed(published, monkeypatch, doc):
    """A paragraph, list, table or quote being written is parsed for block ends only when a blank
    line or another kind of line comes: not at every repaint."""
    from qwen_magic import _markdown

    parsed: list[int] = []
    real = _markdown.stable_prefix
    monkeypatch.setattr(_markdown, "stable_prefix", lambda text: parsed.append(len(text)) or real(text))
    stream(doc + "\nAfter.\n", 16, commit_at=1)  # a repaint at every delta
    assert len(parsed) <= 3, parsed
    final = {display_id: bundle for display_id, bundle in published}
    assert "".join(b["text/plain"] for b in final.values() if is_markdown(b)) == doc + "\nAfter.\n"


def test_a_short_tail_after_finished_blocks_waits_for_the_next_paint(published):
    """When blocks finish, a few characters of the next one are not worth an output of their own
    at once: they show at the next paint, in a new output below the finished blocks."""
    view = _view.NotebookView()
    view.start(Answer(model="m"))
    view.INTERVAL = 0
    start = len(published)
    view.text("Intro paragraph.\n\nNe")
    painted = published[start:]
    assert [b.get("text/plain") for _, b in painted] == ["Intro paragraph.\n\n"]  # the finished block, nothing else
    view.text("xt words")
    (display_id, window), = published[start + 1 :]
    assert "Next words" in shown(window) and "text/plain" not in window
    assert display_id != painted[0][0]  # an output of its own, below
    view.text("long " * 60)  # a longer tail after a finished block shows at once
    view.text("\n\nMore" + " text" * 40)
    assert "More" in shown(published[-1][1])
    # A block the window already showed whole changes nothing when it is published finished:
    # then the next block's first words show at once, or the reader would see no update.
    view.text("\n\nA last paragraph.\n")
    before = len(published)
    view.text("\nTh")
    assert [b.get("text/plain") for _, b in published[before:-1]] == ["A last paragraph.\n\n"]
    assert "Th" in shown(published[-1][1]) and "text/plain" not in published[-1][1]
    view.finish(Answer(model="m", text="x"))
    final = {display_id: bundle for display_id, bundle in published}
    assert "".join(b["text/plain"] for b in final.values() if is_markdown(b)) == (
        "Intro paragraph.\n\nNext words" + "long " * 60 + "\n\nMore" + " text" * 40 + "\n\nA last paragraph.\n\nTh"
    )


def test_random_answers_are_cut_only_between_blocks(published):
    """End to end through the view (block ends found by a parse, by ``_markdown._lines`` or by a
    fence's closing line): the published parts are the answer, and each renders as its part of
    the whole did, so no cut fell inside a block."""
    md = _parser()  # the parser that renders answers (its display math, too)
    kinds = [k for k in LINE_KINDS if "[" not in k] + ["# head", "word here", "", "", "| a | b |", "|---|---|", "```", "- item"] * 2
    rng = random.Random(17)
    cuts = 0
    for _ in range(400):
        doc = "".join(rng.choice(kinds) + "\n" for _ in range(rng.randint(2, 30)))
        published.clear()
        stream(doc, rng.choice([1, 3, 8, 21]), commit_at=1)
        final = {display_id: bundle for display_id, bundle in published}
        parts = [b["text/plain"] for b in final.values() if is_markdown(b)]
        assert "".join(parts) == doc
        cuts += len(parts) - 1
        assert "".join(md.render(part) for part in parts) == md.render(doc), parts
    assert cuts > 800  # not vacuous


def _visible(published: list[tuple[str, dict]], upto: int) -> str:
    """What a frontend shows after the first ``upto`` messages: each output's markdown or HTML, in order."""
    outputs: dict[str, dict] = {}
    for display_id, bundle in published[:upto]:
        outputs[display_id] = bundle
    return "\x00".join(str(_view._look(b)) for b in outputs.values())


def _mixed_documents() -> list[str]:
    import random as _random

    rng = _random.Random(7)
    blocks = [
        "```javascript\nconst kept = rows.filter((r) => r.ok);\nconsole.log(`${kept.length} rows`);\n```\n",
        "```python\n" + "".join(f"x_{n} = {n}\n" for n in range(30)) + "```\n",
        "| call | rows | ok |\n|---|---:|:---:|\n| `read` | 7 | ✅ |\n| `check` | 14 | ❌ |\n",
        "> **Note**: step 8 is idempotent.\n> Rerun it freely.\n",
        "## 9. Loading the data\n",
        "This step uses **pandas** to get from raw input to a *tidy* frame, see [docs](https://example.org).\n",
        "- the input has at least 10 columns\n- no column is empty\n  - empty strings count\n",
        "1. Read the file.\n2. Validate the schema.\n",
        "中文小结：第 8 步完成后，数据应当已经可以用于下一步。\n",
        "$$\nx^2\n$$\n",
    ]
    return ["\n".join(rng.choice(blocks) for _ in range(40)) for _ in range(3)]


@pytest.mark.parametrize("doc", _mixed_documents(), ids=["doc0", "doc1", "doc2"])
@pytest.mark.parametrize("size", [8, 40, 88, 130])
def test_every_paint_after_new_words_changes_what_is_shown(published, doc, size):
    """A paint that publishes finished blocks looking as their window did must show the tail now, not
    defer it to the next paint: that paint would change nothing a reader sees (a stall of two intervals).
    A paint may leave the view as it was only when all that came is already shown (a table's window
    completes a row that the next delta only closes)."""
    view = _view.NotebookView()
    view.start(Answer(model="m"))
    view.idle()
    view.INTERVAL = 0
    for offset in range(0, len(doc), size):
        piece = doc[offset : offset + size]
        view.text(piece)
        before = len(published)
        seen = _visible(published, before)
        view.idle()
        if piece.strip() and offset and _visible(published, len(published)) == seen:  # (the first text: ``text``)
            assert not view._tail or view._shown, (offset, piece)  # nothing held back
