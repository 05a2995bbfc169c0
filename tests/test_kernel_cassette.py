"""Record a notebook against the local server, stop it, replay the notebook with nbclient."""

from __future__ import annotations

import datetime
import json
import shlex
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
from fake_dashscope import FakeDashScope, Status, Stream, ToolCall
from helpers import assert_short_error, assert_usage_error
from kernel_harness import is_markdown, kernel_env

pytestmark = pytest.mark.kernel

STORY = "Once upon a time a lighthouse keeper counted the waves. " * 4

CELLS = [
    "%load_ext qwen_magic",
    "%qwen record {cassette}",
    "def get_weather(city: str) -> str:\n    \"\"\"The weather now in a city.\"\"\"\n    return f'Sunny in {city}, 21 °C'",
    "%%qwen --thinking\nWhy is the sky blue?",
    "%%qwen\nWhat is in https://example.com/cat.png ?",
    "%%qwen\nSummarise this very long text",
    "%%qwen\nAnd now a longer answer",
    "%%qwen --tools get_weather\nWhat is the weather in Paris?",
    "%%qwen\nTell me a short story",
]
REPLIES = [
    Stream(thinking="Sunlight scatters off air molecules; blue the most. ", text="**Rayleigh scattering**.", chunk=6),
    Stream(text="A cat sitting on a mat."),
    Status(400, "invalid_request_error", "Range of input length should be [1, 30720]"),
    Stream(text="Here is the first part of a long answer", chunk=4, error_after=3),
    Stream(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]),
    Stream(text="It is sunny in Paris (21 °C)."),
    Stream(text=STORY, chunk=3, delay=0.03),  # about 75 deltas: some 2.3 s
]


def execute(cells: list[str], env: dict[str, str]) -> Any:
    """Run a notebook of ``cells`` in a fresh kernel, as ``jupyter nbconvert --execute`` would."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True)
    client.execute(env=env)
    return notebook


def shown(cell: Any) -> dict[str, Any]:
    """What a reader sees of a cell's answer (timings and the footer aside)."""
    data = [o.get("data", {}) for o in cell.outputs]
    return {
        "answer": "".join(d.get("text/plain", "") for d in data if is_markdown(d)),
        "thinking": any("qwen-thinking" in d.get("text/html", "") for d in data),
        "tools": [d["text/plain"] for d in data if d.get("text/plain", "").startswith("🔧")],
        "errors": ["\n".join(o.traceback) for o in cell.outputs if o.output_type == "error"],
    }


def footers(cell: Any) -> list[str]:
    return [
        o.data["text/plain"] for o in cell.outputs if "qwen-usage" in o.get("data", {}).get("text/html", "")
    ]


def seconds(cell: Any) -> float:
    timing = cell.metadata.execution
    start, end = (datetime.datetime.fromisoformat(timing[k].replace("Z", "+00:00")) for k in
                  ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def recorded_stream_time(cassette: Path, prompt: str) -> float:
    for line in cassette.read_text().splitlines()[1:]:
        exchange = json.loads(line)
        if exchange["request"]["messages"][-1]["content"][0].get("text") == prompt:
            return exchange["body"][-1]["t"]
    raise AssertionError(f"{prompt!r} was not recorded")


def test_a_recorded_notebook_replays_the_same_without_the_server(tmp_path):
    cassette = tmp_path / "demo.jsonl"
    cells = [cell.format(cassette=shlex.quote(str(cassette))) if "{cassette}" in cell else cell for cell in CELLS]
    with FakeDashScope() as server:
        server.queue(*REPLIES)
        live = execute(cells, kernel_env(DASHSCOPE_BASE_URL=server.url, DASHSCOPE_API_KEY=server.api_key))
        key, url = server.api_key, server.url
        assert len(server.requests) == len(REPLIES)
    # The server is gone: a request that reached the network would fail to connect.

    expected = [shown(cell) for cell in live.cells]
    assert "Rayleigh scattering" in expected[3]["answer"] and expected[3]["thinking"]
    assert expected[4]["answer"] == "A cat sitting on a mat."
    assert "400" in expected[5]["errors"][0] and "Range of input length" in expected[5]["errors"][0]
    assert "stopped the answer with an error" in expected[6]["errors"][0]
    assert "🔧 get_weather(city='Paris') → Sunny in Paris, 21 °C" in expected[7]["tools"]
    assert expected[7]["answer"] == "It is sunny in Paris (21 °C)."
    assert expected[8]["answer"].strip() == STORY.strip()
    assert all("● recorded to" in f for f in footers(live.cells[8]))

    text = cassette.read_text()
    assert key not in text and "authorization" not in text.lower() and "x-api-key" not in text.lower()
    before = cassette.read_bytes()

    # In class: the same notebook, QWEN_MAGIC_REPLAY set, no key; `%qwen record` is skipped.
    replay = execute(cells, kernel_env(DASHSCOPE_BASE_URL=url, DASHSCOPE_API_KEY=None, QWEN_MAGIC_REPLAY=str(cassette)))
    assert [shown(cell) for cell in replay.cells] == expected
    assert "is not recorded" in replay.cells[1].outputs[0]["data"]["text/plain"]
    assert footers(replay.cells[8]) and all("▶ replayed from" in f for f in footers(replay.cells[8]))
    assert cassette.read_bytes() == before

    recorded = recorded_stream_time(cassette, "Tell me a short story")
    assert recorded > 1.5
    assert 0.85 * recorded <= seconds(replay.cells[8]) <= recorded + 1.5, (seconds(replay.cells[8]), recorded)

    # Ten times faster, started from the notebook itself.
    fast_cells = [*cells[:1], f"%qwen replay {shlex.quote(str(cassette))} --speed 10", *cells[2:]]
    fast = execute(fast_cells, kernel_env(DASHSCOPE_BASE_URL=url, DASHSCOPE_API_KEY=None))
    assert [shown(cell) for cell in fast.cells[2:]] == expected[2:]
    assert seconds(fast.cells[8]) < 0.4 * recorded, (seconds(fast.cells[8]), recorded)
    assert cassette.read_bytes() == before


def test_a_request_the_cassette_does_not_hold_says_what_differs(fresh, tmp_path):
    cassette = shlex.quote(str(tmp_path / "lesson.jsonl"))
    assert fresh.run(f"%qwen record {cassette} --overwrite").status == "ok"
    fresh.server.queue(Stream(text="Sales rose in the north."))
    assert fresh.run("%%qwen\nSummarise the table").markdown == "Sales rose in the north."
    fresh.run("%qwen record --stop")
    fresh.run("%qwen reset --all")  # as in a new session, in class
    sent = len(fresh.server.requests)

    # Started from the settings, as ipython_config.py would.
    fresh.run(f"%config QwenMagics.cassette = {str(tmp_path / 'lesson.jsonl')!r}")
    fresh.run("%config QwenMagics.cassette_mode = 'replay'")
    fresh.run("%config QwenMagics.replay_speed = 0")
    text = assert_short_error(
        fresh.run("%%qwen\nSummarize the table"),
        "lesson.jsonl holds no answer for this request",
        "request 1 of 1 ('Summarise the table')",
        "the last user message differs: recorded 'Summarise the table' vs now 'Summarize the table'",
        "%qwen replay --stop",
    )
    assert len(text) < 700, text
    assert_short_error(
        fresh.run("%%qwen -m qwen3.7-max\nSummarise the table"), "model differs: recorded qwen3.6-plus vs now qwen3.7-max"
    )
    run = fresh.run("%%qwen\nSummarise the table")
    assert run.status == "ok", run.error_text
    assert run.markdown == "Sales rose in the north." and "▶ replayed from" in run.data("text/plain")[-1]
    assert len(fresh.server.requests) == sent  # nothing went to the network

    status = fresh.run("%qwen replay")
    assert "replaying" in status.data("text/plain")[0] and "as fast as possible" in status.data("text/plain")[0]
    fresh.run("%qwen replay --stop")
    fresh.server.queue(Stream(text="Live again."))
    assert fresh.run("%%qwen\nAnd now?").markdown == "Live again."


def test_replay_needs_no_key_and_a_missing_cassette_is_a_usage_error(fresh, tmp_path):
    missing = shlex.quote(str(tmp_path / "nothing.jsonl"))
    run = fresh.run(f"%qwen replay {missing}")
    assert_usage_error(run, "No cassette at")
    cassette = shlex.quote(str(tmp_path / "k.jsonl"))
    fresh.run(f"%qwen record {cassette}")
    fresh.server.queue(Stream(text="Recorded."))
    fresh.run("%%qwen\nHello")
    fresh.run(f"%qwen replay {cassette} --speed 0")
    fresh.run("import os; del os.environ['DASHSCOPE_API_KEY']")
    run = fresh.run("%%qwen\nHello")
    assert run.status == "ok", run.error_text + run.stderr
    assert run.markdown == "Recorded."
    # Recording needs the key: without one, nothing is started and the cassette is not touched.
    before = (tmp_path / "k.jsonl").read_bytes()
    run = fresh.run(f"%qwen record {cassette} --overwrite")
    assert_usage_error(run, "DASHSCOPE_API_KEY")
    assert (tmp_path / "k.jsonl").read_bytes() == before
