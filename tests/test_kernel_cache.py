"""Prompt caching end to end: markers sent, the simulated cache read and written, cost shown."""

from __future__ import annotations

import itertools
import json

import pytest
from helpers import strip

pytestmark = pytest.mark.kernel

CONTEXT = "The handbook says: " + " ".join(f"rule {i} is to be kind and precise." for i in range(700))


def markers(body: dict) -> list[str]:
    """Where the request carries cache markers, as readable paths."""
    found = []
    system = body.get("system")
    if isinstance(system, list):
        found += [f"system[{i}]" for i, b in enumerate(system) if "cache_control" in b]
    for m, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, list):
            found += [f"messages[{m}][{b}]" for b, block in enumerate(content) if "cache_control" in block]
    return found


def set_context(kernel, flags: str = "") -> None:
    run = kernel.run(f"%%qwen --system {flags}\n{CONTEXT}")
    assert run.status == "ok", run.error_text


def test_a_second_identical_request_reads_the_cache(fresh):
    set_context(fresh)
    fresh.run("%%qwen\nSummarise the handbook.", cell_id="c1")
    first = fresh.server.requests[-1].usage
    assert first["cache_creation_input_tokens"] > 1024 and first["cache_read_input_tokens"] == 0
    fresh.run("%%qwen\nSummarise the handbook.", cell_id="c1")  # re-run: the same request again
    second = fresh.server.requests[-1].usage
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0


def test_each_turn_reads_the_prefix_the_previous_turn_wrote(fresh):
    set_context(fresh)
    reads, writes = [], []
    for turn in range(5):
        fresh.run(f"%%qwen\nQuestion {turn}: " + "tell me more " * 20)
        usage = fresh.server.requests[-1].usage
        reads.append(usage["cache_read_input_tokens"])
        writes.append(usage["cache_creation_input_tokens"])
        assert len(markers(fresh.server.requests[-1].body)) <= 4
    assert reads[0] == 0 and writes[0] > 1024
    for turn in range(1, 5):
        assert reads[turn] == reads[turn - 1] + writes[turn - 1]  # exactly what the last turn cached
        assert 0 < writes[turn] < 300  # only the increment is written
    footer = fresh.run("%%qwen\nOne more").outputs[-1]["data"]["text/plain"]
    assert "input-token equivalents" in footer and "saved by caching" in footer


def test_off_sends_no_markers_at_all(fresh):
    fresh.run("%qwen config cache=off")
    set_context(fresh, "--cache")
    fresh.run("%%qwen --cache\nHello")
    fresh.run("%%qwen --cache\nAgain")
    assert markers(fresh.server.requests[-1].body) == []
    assert isinstance(fresh.server.requests[-1].body["system"], str)
    assert fresh.server.requests[-1].usage["cache_read_input_tokens"] == 0


def test_short_prompts_get_no_automatic_markers(fresh):
    fresh.run("%%qwen\nHi")
    fresh.run("%%qwen\nHow are you?")
    assert markers(fresh.server.requests[-1].body) == []


def test_manual_marks_exactly_what_cache_marks(fresh):
    fresh.run("%qwen config cache=manual")
    set_context(fresh, "--cache")
    fresh.run("%%qwen\nNot marked")
    body = fresh.server.requests[-1].body
    assert markers(body) == ["system[0]"]
    assert body["system"][0]["text"] == CONTEXT
    fresh.run("%%qwen --cache\nMarked cell")
    fresh.run("%%qwen\nAfter it")
    body = fresh.server.requests[-1].body
    assert markers(body) == ["system[0]", "messages[2][0]"]
    assert body["messages"][2]["content"][0]["text"] == "Marked cell"


def test_never_more_than_four_markers(fresh):
    set_context(fresh, "--cache")
    for i in range(7):
        fresh.run(f"%%qwen --cache\nMarked question {i}")
        assert len(markers(fresh.server.requests[-1].body)) <= 4
    body = fresh.server.requests[-1].body
    assert markers(body)[-1] == f"messages[{len(body['messages']) - 1}][0]"  # the newest is always kept


def test_usage_table_shows_conversations_and_savings(fresh):
    set_context(fresh)
    fresh.run("%%qwen\nFirst")
    fresh.run("%%qwen\nSecond")
    fresh.run("%%qwen --chat other\nElsewhere")
    table = fresh.run("%qwen usage").markdown
    assert "| default | 2 |" in table and "| other | 1 |" in table and "**session**" in table
    default = next(line for line in table.splitlines() if line.startswith("| default |"))
    assert "saved " in default and "(" in default  # saved N% (M tokens) against full price
    sent = json.dumps([r.body for r in fresh.server.requests])
    assert "thinking\": {\"type\": \"disabled\"" in sent


def test_each_tool_round_reads_what_the_round_before_wrote(fresh):
    from fake_dashscope import Stream, ToolCall

    set_context(fresh)
    fresh.run("def lookup(rule: int) -> str:\n    '''The text of a rule.'''\n    return f'rule {rule} text'")
    fresh.server.queue(
        Stream(tool_calls=[ToolCall("lookup", {"rule": 3})]),
        Stream(tool_calls=[ToolCall("lookup", {"rule": 4})]),
        Stream(text="Done."),
    )
    run = fresh.run("%%qwen --tools lookup\nCompare rules 3 and 4.")
    assert run.status == "ok", run.error_text
    rounds = fresh.server.requests[-3:]
    for before, after in itertools.pairwise(rounds):
        body = after.body
        assert markers(body)[-1] == f"messages[{len(body['messages']) - 1}][0]"  # the new tool results
        written = before.usage["cache_creation_input_tokens"] + before.usage["cache_read_input_tokens"]
        assert after.usage["cache_read_input_tokens"] == written


# -- inline media and the cache -----------------------------------------------------------------

MAKE_PNG = """
import random as _r, struct as _s, zlib as _z
def _png(seed, size):
    side = max(8, int((size / 3) ** 0.5))
    rng = _r.Random(seed)
    rows = b"".join(b"\\x00" + rng.randbytes(side * 3) for _ in range(side))
    chunk = lambda k, d: _s.pack(">I", len(d)) + k + d + _s.pack(">I", _z.crc32(k + d))
    head = _s.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", head) + chunk(b"IDAT", _z.compress(rows, 0)) + chunk(b"IEND", b"")
"""


def inline_count(body: dict) -> int:
    return json.dumps(body["messages"]).count('"base64"')


def image_chat(kernel, turns: int, size: int = 20_000, keep: int = 3) -> list:
    """``turns`` cells each sending its own inline image; the requests the server got."""
    assert kernel.run(MAKE_PNG).status == "ok"
    kernel.run(f"%qwen config keep_media_turns={keep}")
    set_context(kernel)
    first = len(kernel.server.requests)
    for turn in range(turns):
        kernel.run(f"_plot = _png({turn}, {size})")
        run = kernel.run(f"%%qwen\nPlot {turn}: {{_plot}} what trend do you see? " + "Explain it slowly. " * 10)
        assert run.status == "ok", run.error_text
    return kernel.server.requests[first:]


def test_old_images_leave_in_batches_and_the_prefix_stays_byte_stable_between(fresh):
    requests = image_chat(fresh, 11)
    # K = 3: the newest 3 turns always, 3 more waiting, then the waiting ones leave at once.
    assert [inline_count(r.body) for r in requests] == [1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]
    for before, after in itertools.pairwise(requests):
        sent, next_sent = strip(before.body["messages"]), strip(after.body["messages"])
        dropped = inline_count(after.body) < inline_count(before.body)
        # Between drops every request starts with the previous one byte for byte ...
        assert (json.dumps(next_sent[: len(sent)]) == json.dumps(sent)) is not dropped
        usage = after.usage
        previous = before.usage
        written = previous["cache_read_input_tokens"] + previous["cache_creation_input_tokens"]
        if not dropped:  # ... so it reads everything the previous one cached
            assert usage["cache_read_input_tokens"] == written
        else:  # the drop reads the prefix before the first image (system prompt and turn 0's question)
            assert len(CONTEXT) // 4 < usage["cache_read_input_tokens"] < written
    placeholder = requests[7].body["messages"][0]["content"]
    assert any("no longer attached" in b.get("text", "") for b in placeholder)
    table = fresh.run("%qwen usage").markdown
    default = next(line for line in table.splitlines() if line.startswith("| default |"))
    assert "saved " in default


def test_the_request_size_stays_within_twice_the_per_turn_drop(fresh):
    size, keep = 200_000, 3
    requests = image_chat(fresh, 14, size=size, keep=keep)
    largest = max(int(r.headers["content-length"]) for r in requests)
    encoded = size * 4 / 3
    assert largest < (2 * keep + 1) * encoded + 60_000  # 7 images and the text
    assert largest < 2 * (keep + 1) * encoded  # within 2× of resending K + 1 images
    assert int(requests[-1].headers["content-length"]) < largest  # it does not keep growing


def test_a_cell_per_new_conversation_shows_what_caching_cost(fresh):
    for i in range(2):
        run = fresh.run(f"%%qwen --chat c{i}\n" + CONTEXT[: 6000 + i])  # a long prompt, written, never read
        assert run.status == "ok", run.error_text
    table = fresh.run("%qwen usage").markdown
    line = next(line for line in table.splitlines() if line.startswith("| c0 |"))
    assert "**cost 25% more (" in line
    assert "**cost" in next(line for line in table.splitlines() if line.startswith("| **session** |"))
    panel = fresh.run("%qwen panel")
    fallback = "".join(panel.data("text/plain"))  # what nbconvert and GitHub show
    assert "c0: cost 25% more" in fallback and "c1: cost 25% more" in fallback
    fresh.run("_p = _qm._panels[-1]")
    fresh.run("%%qwen --chat c2\n" + CONTEXT[:6000])
    fresh.run("%%qwen --chat c2\nAnd again, shorter.")
    live = fresh.run("print(_p.totals.value)").stdout  # the widget, refreshed when the answer ended
    assert "c0: cost 25% more" in live and "c2: saved" in live
