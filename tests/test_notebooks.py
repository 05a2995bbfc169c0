"""Every lesson in notebooks/ runs end to end in a real kernel against the local server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from kernel_harness import kernel_env
from responders import last_user_text, own_blocks, own_text, responder

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, server, tmp_path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    server.responder = responder
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "committed with outputs"
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", json.dumps(nb)), "a key-like string is committed"
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env(DASHSCOPE_BASE_URL=server.url, DASHSCOPE_API_KEY=server.api_key))
    nbformat.validate(nb)
    return nb


def shown(cell) -> str:
    """Everything a cell displayed, as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            data = output.get("data", {})
            # Rendered answers: their text/plain is the model's markdown.
            markdown = data.get("text/plain") if "qwen-markdown" in data.get("text/html", "") else None
            parts.append(data.get("text/markdown") or markdown or data.get("text/html") or data.get("text/plain", ""))
    return "\n".join(parts)


def cells_with(nb, text: str) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and text in c.source]


def test_notebooks_directory_holds_the_lessons():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names[0] == "01-quickstart" and "06-data-analysis" in names


def test_01_quickstart(server, tmp_path):
    nb = execute("01-quickstart", server, tmp_path)
    (first,) = cells_with(nb, "list comprehension")
    assert "You asked: *Explain what a Python list comprehension" in shown(first)
    assert "qwen3.6-plus" in shown(first) and " in · " in shown(first)
    (history,) = cells_with(nb, "%qwen history")
    assert "**You (2):**" in shown(history)
    (after_reset,) = cells_with(nb, "what did I ask you before")
    assert "what did I ask you before" in shown(after_reset)
    assert len(server.requests[-1].body["messages"]) == 1  # reset really forgot


def test_02_thinking(server, tmp_path):
    nb = execute("02-thinking", server, tmp_path)
    (bat,) = cells_with(nb, "A bat and a ball")
    assert '<details class="qwen-thinking">' in shown(bat) and "step by step" in shown(bat)
    (panel,) = [c for c in nb.cells if c.source.strip() == "%qwen"]
    data = panel.outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data and "model qwen3.6-plus" in data["text/plain"]
    (prime,) = cells_with(nb, "1001")
    assert "qwen-thinking" in shown(prime)
    assert server.requests[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_03_images_and_video(server, tmp_path):
    pytest.importorskip("PIL")
    pytest.importorskip("matplotlib")
    nb = execute("03-images-and-video", server, tmp_path)
    kinds = [[b["type"] for b in r.body["messages"][-1]["content"]] for r in server.requests]
    assert kinds[0][0] == "image" and kinds[1][0] == "video"
    sources = [r.body["messages"][-1]["content"][0]["source"]["type"] for r in server.requests[:2]]
    assert sources == ["url", "url"]
    base64_sent = [b for r in server.requests[2:4] for b in own_blocks(r.body) if b["type"] == "image"]
    assert [b["source"]["type"] for b in base64_sent] == ["base64", "base64"]
    (picture_cell,) = cells_with(nb, "Which shapes")
    assert "<img" in shown(picture_cell)  # the preview of what was sent


def test_05_caching(server, tmp_path):
    nb = execute("05-caching", server, tmp_path)
    reads = [r.usage["cache_read_input_tokens"] for r in server.requests]
    assert reads[0] == 0 and all(r > 1024 for r in reads[1:])
    (usage,) = cells_with(nb, "%qwen usage")
    assert re.search(r"\| default \| 3 \|", shown(usage)) and "saved by caching" in shown(usage)
    (second,) = cells_with(nb, "sentence 200")
    assert "read" in shown(second) and "saved by caching" in shown(second)


def test_06_data_analysis(server, tmp_path):
    pytest.importorskip("pandas")
    nb = execute("06-data-analysis", server, tmp_path)
    first_prompt = last_user_text(server.requests[0].body)
    assert "DataFrame `sales`: 6 rows × 3 columns" in first_prompt
    (explain,) = cells_with(nb, "%qwen explain")
    explained = last_user_text(server.requests[1].body)
    assert "KeyError" in explained and 'sales["unit"]' in explained
    assert "Here you go" in shown(explain)
    (code_cell,) = cells_with(nb, "--code -o plot_code")
    assert "new cell below" in shown(code_cell)
    (printed,) = [c for c in nb.cells if c.source.strip() == "print(plot_code)"]
    assert "print('fixed')" in shown(printed)
    # "Why is this plot empty?" with no braces: the plot's cell, its output and its figure went with it.
    (why,) = cells_with(nb, "Why is this plot empty?")
    assert "{" not in why.source
    (asked,) = [r.body for r in server.requests if own_text(r.body) == "Why is this plot empty?"]
    content = asked["messages"][-1]["content"]
    context = last_user_text(asked)
    assert 'north = sales[sales["region"] == "North"]' in context and "0 rows selected" in context
    images = [b for b in content if b["type"] == "image"]
    assert len(images) == 1 and images[0]["source"]["media_type"] == "image/png"
    assert "%%qwen" not in context  # the question cells themselves are not context
    assert re.search(r"Context: In \[\d+\]–\[\d+\] · 2 cells · 1 figure · ≈[\d,]+ tokens", shown(why))
    assert "matches no rows" in shown(why)


def test_04_tools(server, tmp_path):
    nb = execute("04-tools", server, tmp_path)
    (listing,) = [c for c in nb.cells if c.source.strip() == "%qwen tools"]
    assert "stock" in shown(listing) and "price" in shown(listing)
    (ask,) = cells_with(nb, "%%qwen --tools")
    text = shown(ask)
    assert "stock" in text and "12" in text and "0.8" in text
    assert "The tools said: 12, 0.8." in text
    first, second = server.requests[-2:]
    assert {t["name"] for t in first.body["tools"]} == {"stock", "price"}
    results = [b for b in second.body["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["12", "0.8"]


def test_07_structured_output(server, tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    nb = execute("07-structured-output", server, tmp_path)
    (ask,) = cells_with(nb, '--schema "list[City]"')
    assert "Stored a list[City] of 3 items in cities" in shown(ask) and "<th>population</th>" in shown(ask)
    (printed,) = cells_with(nb, "biggest = max")
    assert shown(printed).strip() == "City Lima 9751717"
    (mood,) = cells_with(nb, "print(repr(mood))")
    assert shown(mood).strip() == "'positive'"
    (receipt,) = cells_with(nb, '-o receipt --schema "DataFrame[Row]"')
    assert "Stored a DataFrame[Row] of 3 rows × 2 columns in receipt" in shown(receipt)
    (dtypes,) = cells_with(nb, "receipt.dtypes")
    assert "price" in shown(dtypes) and "float64" in shown(dtypes)
    asked_for_rows = next(r for r in server.requests if "DataFrame[Row]" in last_user_text(r.body))
    assert any(b["type"] == "image" for b in asked_for_rows.body["messages"][-1]["content"])
    (style,) = cells_with(nb, "print(type(style)")
    assert shown(style).startswith("dict ")
    (follow_up,) = cells_with(nb, "visit in winter")
    history = server.requests[-1].body["messages"]
    assert any(b.get("type") == "tool_use" and b["name"] == "answer" for m in history for b in m["content"])
    assert "You asked" in shown(follow_up)
    (bad,) = cells_with(nb, "list[Town]")
    assert "'Town' is not defined in the notebook" in shown(bad)
