"""Prompt caching end to end: markers sent, the simulated cache read and written, cost shown."""

from __future__ import annotations

import itertools
import json

import pytest

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
    assert "saved by caching" in table
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
