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
    assert '<img src="attachment:turn2-1.png" alt="image">' in second
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
    empty = fresh.run(f"%qwen export {tmp_path / 'e.ipynb'} --chat nobody")
    assert "no turns" in empty.stderr


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
