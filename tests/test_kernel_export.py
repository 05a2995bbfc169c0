"""%qwen export writes a conversation as a valid notebook."""

from __future__ import annotations

import nbformat
import pytest
from fake_dashscope import Stream

pytestmark = pytest.mark.kernel

PNG_URL = "https://example.org/chart.png"


def test_export_writes_one_markdown_cell_per_turn(fresh, tmp_path):
    fresh.run("%%qwen --system\nBe brief.")
    fresh.server.queue(Stream(thinking="I should <compare> them.", text="## Answer\n\nThey differ.", usage={"input_tokens": 42}))
    fresh.run(f"%%qwen --thinking\nCompare {PNG_URL} with this one.")
    fresh.run(
        "from PIL import Image\npicture = Image.new('RGB', (8, 8), 'red')"
    )
    fresh.run("%%qwen\nAnd {picture}? <script>alert(1)</script>")
    target = tmp_path / "talk.ipynb"
    run = fresh.run(f"%qwen export {target}")
    assert run.status == "ok", run.error_text
    assert "written to" in run.data("text/plain")[0]
    nb = nbformat.read(target, as_version=4)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["markdown"] * 3
    header, first, second = (c.source for c in nb.cells)
    # Cells hold HTML rendered and cleaned in the kernel: no markdown parser reads model text.
    assert "Conversation <code>default</code>" in header and "<blockquote>\n<p>Be brief.</p>" in header
    assert "<h3>1. You</h3>" in first and f'<img src="{PNG_URL}" alt="image">' in first
    assert "<details><summary>Thinking</summary>" in first and "I should &lt;compare&gt; them." in first
    assert "<h2>Answer</h2>" in first and "42 in" in first
    assert "\n\n![image](attachment:turn2-1.png)\n\n" in second
    assert nb.cells[2].attachments["turn2-1.png"]["image/png"]
    assert "<script>" not in second  # prompt text is sanitized too


def test_export_refuses_to_overwrite_unless_forced(fresh, tmp_path):
    fresh.run("%%qwen\nHello")
    target = tmp_path / "once.ipynb"
    target.write_text("{}")
    refused = fresh.run(f"%qwen export {target}")
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert target.read_text() == "{}"
    fresh.run(f"%qwen export {target} --force")
    assert nbformat.read(target, as_version=4).cells
    wrong = fresh.run(f"%qwen export {tmp_path / 'x.txt'}")
    assert "ending in .ipynb" in wrong.stderr
    unknown = fresh.run(f"%qwen export {tmp_path / 'e.ipynb'} --chat nobody")
    assert "No conversation is named 'nobody'" in unknown.stderr
    fresh.run("%qwen reset")
    empty = fresh.run(f"%qwen export {tmp_path / 'e.ipynb'}")
    assert "no turns" in empty.stderr and not (tmp_path / "e.ipynb").exists()


def test_export_summarises_tool_calls(fresh, tmp_path):
    from fake_dashscope import ToolCall

    fresh.run("def add(a: int, b: int) -> int:\n    '''Add two numbers.'''\n    return a + b")
    fresh.server.queue(Stream(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]), Stream(text="It is 5."))
    run = fresh.run("%%qwen --tools add\nWhat is 2 + 3?")
    assert run.status == "ok", run.error_text
    target = tmp_path / "tools.ipynb"
    fresh.run(f"%qwen export {target}")
    turn = nbformat.read(target, as_version=4).cells[1].source
    assert "🔧 add({&quot;a&quot;: 2, &quot;b&quot;: 3})" in turn or '🔧 add({"a": 2, "b": 3})' in turn
    assert "<pre>5</pre>" in turn and "It is 5." in turn


def _exported_with_inline_images(fresh, tmp_path):
    """A conversation whose prompts hold inline images (a file, a value, two in a row) and a URL."""
    fresh.run(
        "from PIL import Image\n"
        f"Image.new('RGB', (8, 8), 'red').save({str(tmp_path / 'red.png')!r})\n"
        "blue = Image.new('RGB', (8, 8), 'blue')\n"
        "green = Image.new('RGBA', (4, 4), 'green')"
    )
    fresh.run(f"%%qwen\nDescribe {tmp_path / 'red.png'} and {{blue}}")
    fresh.run(f"%%qwen\n{{green}} {{blue}} then {PNG_URL}")
    target = tmp_path / "pictures.ipynb"
    run = fresh.run(f"%qwen export {target}")
    assert run.status == "ok", run.error_text
    return target


def test_exported_inline_images_become_data_uris_in_nbconvert_html(fresh, tmp_path):
    """nbconvert resolves attachments only in markdown images: each one is a data: URI in the HTML."""
    import re

    from nbconvert import HTMLExporter

    nb = nbformat.read(_exported_with_inline_images(fresh, tmp_path), as_version=4)
    names = [name for cell in nb.cells for name in cell.get("attachments", {})]
    assert names == ["turn1-1.png", "turn1-2.png", "turn2-1.png", "turn2-2.png"]
    body, _ = HTMLExporter().from_notebook_node(nb)
    sources = re.findall(r'<img [^>]*src="([^"]*)"', body)
    assert "attachment:" not in body
    assert sum(src.startswith("data:image/png;base64,") for src in sources) == len(names)
    assert PNG_URL in sources


def test_exported_inline_images_read_in_marked_as_images(fresh, tmp_path):
    """JupyterLab's marked reads each attachment as an image between the cell's HTML blocks, and nothing else changes."""
    from test_markdown import _jupyterlab_markdown, _marked_dir

    folder = _marked_dir()
    assert folder is not None
    nb = nbformat.read(_exported_with_inline_images(fresh, tmp_path), as_version=4)
    turns = [cell.source for cell in nb.cells[1:]]
    results = _jupyterlab_markdown(turns, tmp_path, folder)
    for source, result in zip(turns, results, strict=True):
        html = str(result["html"])
        names = [line[len("![image](attachment:") : -1] for line in source.splitlines() if line.startswith("![image]")]
        assert result["bad"] == [f"img[attachment:{name}]" for name in names]  # the oracle allows only http(s)
        assert all(f'<p><img src="attachment:{name}" alt="image"></p>' in html for name in names)
        assert html.count("<div>") == html.count("</div>") == len(names) + 1


def test_exported_dollars_outside_the_answer_are_not_math_either(fresh, tmp_path):
    """A tool call's arguments and the footer are written here: MathJax pairs none of their dollars."""
    from fake_dashscope import ToolCall
    from html_readers import our_math, typeset, visible_text
    from test_markdown import _jupyterlab_markdown, _marked_dir

    folder = _marked_dir()
    assert folder is not None
    fresh.run("def price(item: str) -> str:\n    '''Price of an item.'''\n    return '$5 (was $7)'")
    fresh.server.queue(Stream(tool_calls=[ToolCall("price", {"item": "tea at $5 or $6"})]), Stream(text="It is $5, not $7."))
    assert fresh.run("%%qwen --tools price\nHow much is tea?").status == "ok"
    target = tmp_path / "dollars.ipynb"
    fresh.run(f"%qwen export {target}")
    turn = nbformat.read(target, as_version=4).cells[1].source
    (result,) = _jupyterlab_markdown([turn], tmp_path, folder)
    html = str(result["html"])
    assert result["bad"] == [] and result["cut"] == 0
    assert typeset(html) == our_math(html) == []
    assert "tea at $5 or $6" in visible_text(html) and "It is $5, not $7." in visible_text(html)
