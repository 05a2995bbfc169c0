"""Long blocks stream as a bounded window and are published whole once; errors say what happened;
the key never shows; the final output says which model wrote it."""

from __future__ import annotations

import json
import re
import time

import pytest
from fake_dashscope import Stream
from helpers import assert_short_error
from kernel_harness import is_markdown, shown

pytestmark = pytest.mark.kernel

WINDOW_BYTES = 12_000  # a live repaint's rendered HTML (coloured code: many spans a line), whatever the block's length


def code_block(lines: int) -> str:
    body = "".join(f"    total += row_{n}.value * {n}  # line {n}\n" for n in range(lines))
    return "Here it is:\n\n```python\ndef f(rows):\n    total = 0\n" + body + "    return total\n```\n"


def table(rows: int) -> str:
    head = "| id | name | value |\n|---:|---|---:|\n"
    return head + "".join(f"| {n} | item {n} | {n * 3} |\n" for n in range(rows))


def bullet_list(items: int) -> str:
    return "".join(f"- item {n}: **check** `col_{n}` then move on\n" for n in range(items))


def paragraph(words: int) -> str:
    return " ".join(f"word{n}" for n in range(words)) + ".\n"


SHAPES = {
    "code": (code_block, 150, r"language-python|```python"),  # a code window is markdown written in the kernel
    "table": (table, 260, r"<th>name|\| name \|"),  # as markdown written in the kernel (_markdown._tables)
    "list": (bullet_list, 150, "<li>item"),
    "paragraph": (paragraph, 1100, "word"),
}


def live_markdown(run) -> list[str]:
    """What every repaint that is not a finished part shows (finished parts carry text/plain too)."""
    return [
        shown(m["content"]["data"])
        for m in run.of("display_data", "update_display_data")
        if is_markdown(m["content"]["data"]) and "text/plain" not in m["content"]["data"]
    ]


def answer_outputs(run) -> list[dict]:
    return [o for o in run.outputs if is_markdown(o.get("data", {}))]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_long_block_streams_as_a_bounded_window_and_is_published_whole_once(fresh, shape):
    make, size, looks = SHAPES[shape]
    text = make(size)
    assert len(text) > 6000
    fresh.server.queue(Stream(text=text, chunk=24, delay=0.004))
    run = fresh.run("%%qwen\nOne long block, please")
    assert run.status == "ok", run.error_text
    live = live_markdown(run)
    assert len(live) >= 3, "the block should repaint while it streams"
    assert max(len(md.encode()) for md in live) <= WINDOW_BYTES
    windows = [md for md in live if "characters above" in md]
    assert windows, "a long block shows how much is above its window"
    assert all(re.search(looks, md) for md in windows[-3:]), "the window renders as the block it is part of"
    hidden = [int(re.search(r"([\d,]+) characters above", md).group(1).replace(",", "")) for md in windows]
    assert hidden == sorted(hidden) and hidden[-1] > len(text) / 2
    # Published whole, once: the final outputs are the answer, with nothing of a window left.
    outputs = answer_outputs(run)
    assert "".join(o["data"]["text/plain"] for o in outputs) == text
    assert not any("characters above" in shown(o["data"]) for o in outputs)
    whole = [m for m in run.of("display_data", "update_display_data") if "text/plain" in m["content"]["data"]
             and is_markdown(m["content"]["data"])]
    assert sum(len(m["content"]["data"]["text/plain"]) for m in whole) == len(text), "each part is sent whole once"
    assert "qwen-usage" in run.outputs[-1]["data"].get("text/html", "")


def test_repaints_do_not_grow_with_the_block(fresh):
    sizes = []
    for lines in (150, 600):  # both long enough for full windows
        fresh.server.queue(Stream(text=code_block(lines), chunk=40, delay=0.003))
        run = fresh.run("%%qwen --new\nCode")
        assert run.status == "ok", run.error_text
        sizes.append(max(len(md) for md in live_markdown(run)))
    assert sizes[1] <= sizes[0] * 1.3, sizes


def test_blocks_after_a_long_block_follow_it_and_all_is_whole_in_the_end(fresh):
    text = code_block(200) + "\nAfter the code, a paragraph.\n\n" + table(120) + "\n## Done\n\nBye.\n"
    fresh.server.queue(Stream(text=text, chunk=16, delay=0.002))
    run = fresh.run("%%qwen\nMixed")
    assert run.status == "ok", run.error_text
    outputs = answer_outputs(run)
    assert "".join(o["data"]["text/plain"] for o in outputs) == text
    history = fresh.run("%qwen history")
    assert code_block(200).strip() in history.markdown.replace("\r", "")


def test_thinking_then_a_long_answer_keeps_both_whole(fresh):
    thinking = "I weigh this step by step and check the units again. " * 300
    text = code_block(150)
    fresh.server.queue(Stream(thinking=thinking, text=text, chunk=30, delay=0.002))
    run = fresh.run("%%qwen --thinking\nThink, then code")
    assert run.status == "ok", run.error_text
    html = [data["text/html"] for data in run.marked("qwen-thinking")]
    assert len(html) == 1 and "<details class=\"qwen-thinking\">" in html[0]
    assert thinking.strip().split(". ")[0] in html[0] and f"{len(thinking):,} characters" in html[0]
    assert "".join(o["data"]["text/plain"] for o in answer_outputs(run)) == text


# -- errors that say what happened -------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x',  # cut JSON
        "not json at all",
        '{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}',  # no index
        '{"type": "content_block_delta", "index": 7, "delta": {"type": "text_delta", "text": "x"}}',  # no such block
        '{"type": "content_block_delta", "index": 0}',  # no delta
    ],
)
def test_a_malformed_event_stream_says_so_and_keeps_the_text(fresh, garbage):
    fresh.server.queue(Stream(text="Partial answer here. " * 10, chunk=10, garble_after=5, garbage=garbage))
    run = fresh.run("%%qwen\nHello")
    text = assert_short_error(run, "malformed event stream")
    assert "JSONDecodeError" not in text and "AttributeError" not in text and "KeyError" not in text
    assert run.markdown.startswith("Partial answer")
    fresh.server.queue(Stream(text="Recovered."))
    assert fresh.run("%%qwen\nAgain").markdown == "Recovered."


def test_text_that_cannot_be_encoded_is_named_not_a_unicode_traceback(fresh):
    fresh.run("bad = 'abc \\ud800 def'")
    before = len(fresh.server.requests)
    run = fresh.run("%%qwen\nLook at {bad}")
    # Caught where the prompt is built (a UsageError naming the value), before anything is sent.
    text = run.stderr + run.error_text
    assert run.status == "error" and "lone surrogate" in text and "{bad}" in text, text
    assert "UnicodeEncodeError" not in text and "Traceback" not in text
    assert len(fresh.server.requests) == before


def test_a_lone_surrogate_in_the_answer_is_shown_as_a_replacement_character(fresh):
    fresh.server.queue(Stream(text="before \ud800 after", chunk=4))
    run = fresh.run("%%qwen\nHello")
    assert run.status == "ok", run.error_text
    assert run.markdown == "before \ufffd after"


def test_a_stall_after_the_answer_began_says_it_stalled_and_how_to_wait_longer(fresh):
    fresh.run("%qwen config timeout=1 max_retries=0")
    fresh.server.queue(Stream(text="The start of an answer. " * 5, chunk=10, stall_after=4, stall=3))
    started = time.monotonic()
    run = fresh.run("%%qwen\nHello")
    assert time.monotonic() - started < 10
    text = assert_short_error(run, "stalled", "timeout=")
    assert "broke" not in text and "Could not reach" not in text
    assert run.markdown.startswith("The start of an answer.")


def test_ctrl_c_while_thinking_says_how_much_thinking_is_kept(fresh):
    fresh.server.queue(Stream(thinking="thinking hard " * 400, text="never", chunk=5, delay=0.02))
    run = fresh.run("%%qwen --thinking\nThink long", interrupt_after=1.0)
    text = assert_short_error(run, "Interrupted while thinking", "characters of thinking kept")
    kept = int(re.search(r"([\d,]+) characters of thinking kept", text).group(1).replace(",", ""))
    assert 0 < kept < len("thinking hard " * 400)
    footer = run.outputs[-2]["data"]["text/plain"] if run.outputs[-1]["output_type"] == "error" else ""
    assert f"interrupted while thinking, {kept:,} characters of thinking kept" in footer, run.outputs
    assert any(f"({kept:,} characters)" in o.get("data", {}).get("text/html", "") for o in run.outputs)


# -- the key ------------------------------------------------------------------------------


def test_a_key_in_the_answer_or_thinking_is_masked_everywhere(fresh):
    key = fresh.server.api_key
    masked = f"sk-…{key[-4:]}"
    text = f"Your key is {key} — keep it secret.\n\n```\nAPI_KEY = '{key}'\n```\n" + f"Again: {key}"
    # Chunks of 3 split the key across deltas at every offset over the repeats.
    fresh.server.queue(Stream(thinking=f"The user pasted {key} here.", text=text, chunk=3, delay=0.01))
    run = fresh.run("%%qwen --thinking -o said\nEcho my key")
    assert run.status == "ok", run.error_text
    everything = json.dumps([m["content"] for m in run.messages], ensure_ascii=False)
    assert key not in everything
    assert masked in run.markdown and "sk-test" not in run.markdown.replace(masked, "")
    assert not any(key[: n] in md[-len(key):] for md in live_markdown(run) for n in range(6, len(key)))
    assert masked in fresh.run("print(said)").stdout
    history = fresh.run("%qwen history")
    assert key not in json.dumps([m["content"] for m in history.messages]) and masked in history.markdown
    internal = fresh.run("print(get_ipython().magics_manager.registry['QwenMagics'].chats['default'].turns[-1].answer)")
    assert key not in internal.stdout


# -- provenance --------------------------------------------------------------------------


def test_the_final_output_says_which_model_wrote_the_answer(fresh):
    fresh.server.queue(Stream(text="Hello there.", usage={"input_tokens": 11, "output_tokens": 3}))
    run = fresh.run("%%qwen -m qwen3.7-max\nHi")
    assert run.status == "ok", run.error_text
    last = [m for m in run.of("display_data") if "qwen-usage" in m["content"]["data"].get("text/html", "")][-1]
    meta = last["content"]["metadata"]["qwen_magic"]
    import qwen_magic

    assert meta["version"] == qwen_magic.__version__
    assert meta["model"] == "qwen3.7-max" and meta["stop_reason"] == "end_turn" and meta["replayed"] is False
    assert meta["request_id"] and meta["usage"]["output_tokens"] == 3 and meta["usage"]["input_tokens"] >= 1


def test_a_saved_notebook_carries_provenance_and_validates(server, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DASHSCOPE_BASE_URL", server.url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", server.api_key)
    for variable in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "QWEN_MAGIC_REPLAY"):
        monkeypatch.delenv(variable, raising=False)
    server.queue(Stream(text=code_block(120), chunk=30, delay=0.001), Stream(thinking="Hmm. " * 50, text="Two."))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext qwen_magic"),
        nbformat.v4.new_code_cell("%%qwen\nCode please"),
        nbformat.v4.new_code_cell("%%qwen --thinking\nAnd think"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
    for cell, text in ((saved.cells[1], code_block(120)), (saved.cells[2], "Two.")):
        tagged = [o for o in cell.outputs if "qwen_magic" in o.get("metadata", {})]
        assert len(tagged) == 1 and tagged[0] is cell.outputs[-1]
        assert tagged[0].metadata["qwen_magic"]["model"] == "qwen3.6-plus"
        plain = "".join(o.data.get("text/plain", "") for o in cell.outputs if is_markdown(o.get("data", {})))
        assert plain == text
        assert not any("characters above" in o.get("data", {}).get("text/html", "") for o in cell.outputs)
