"""Cassettes below the SDK: normalised keys, matching, the closest-request message, no key, pace."""

from __future__ import annotations

import base64
import itertools
import json
import time
from pathlib import Path

import anthropic
import httpx2
import pytest
from fake_dashscope import FakeDashScope, Status, Stream, ToolCall
from IPython.core.error import UsageError

from qwen_magic import _command
from qwen_magic._cache import TokenEstimator
from qwen_magic._cassette import (
    CassetteError,
    Player,
    Recorder,
    differences,
    header,
    normalise,
    read,
    request_key,
)
from qwen_magic._client import translate
from qwen_magic._conversation import Conversation, Options

REQUEST = {"model": "qwen3.6-plus", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


def key(body: dict) -> str:
    return request_key("POST", "/v1/messages", normalise(body))


def sdk(transport: httpx2.BaseTransport, url: str = "http://127.0.0.1:9/apps/anthropic", **options) -> anthropic.Anthropic:
    """The SDK as qwen_magic builds it: the cassette's transport in place of the network."""
    return anthropic.Anthropic(
        api_key="sk-placeholder-key",
        base_url=url,
        max_retries=options.pop("max_retries", 2),
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )


def streamed(client: anthropic.Anthropic, body: dict) -> anthropic.types.Message:
    with client.messages.stream(**body) as events:
        for _ in events:
            pass
        return events.get_final_message()


@pytest.fixture
def recording(server: FakeDashScope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Recorder on a fresh cassette, and an SDK client recording through it to the fake server."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", server.api_key)
    recorder = Recorder(tmp_path / "demo.jsonl", overwrite=True)
    client = anthropic.Anthropic(
        api_key=server.api_key,
        base_url=server.url,
        max_retries=2,
        http_client=anthropic.DefaultHttpxClient(transport=recorder),
    )
    return recorder, client


# -- the normalised key ----------------------------------------------------------------------


def test_cache_markers_metadata_whitespace_and_string_forms_do_not_count():
    plain = {
        "model": "qwen3.6-plus",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Summarise the table"}],
    }
    marked = {
        **plain,
        "metadata": {"user_id": "u-1"},
        "stream": False,
        "system": [{"type": "text", "text": "Be brief.\n", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "  Summarise the table\n", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    }
    assert key(plain) == key(marked)
    assert "cache_control" not in key(marked) and "metadata" not in key(marked)


def test_the_automatic_cache_policy_does_not_change_the_key():
    chat = Conversation(system="You are terse. " * 400)  # long enough for automatic markers
    estimator = TokenEstimator()
    prompt = [{"type": "text", "text": "Tell me about tides. " * 300}]
    auto = chat.request(prompt, Options("qwen3.6-plus", 512, cache="auto", estimator=estimator))
    off = chat.request(prompt, Options("qwen3.6-plus", 512, cache="off", estimator=estimator))
    assert "cache_control" in json.dumps(auto) and "cache_control" not in json.dumps(off)
    assert key(auto) == key(off)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "qwen3.7-max"},
        {"max_tokens": 50},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"temperature": 0.2},
        {"stream": True},
        {"system": "Answer in French."},
        {"tools": [{"name": "f", "input_schema": {"type": "object"}}]},
        {"messages": [{"role": "user", "content": "Hi!"}]},
    ],
)
def test_what_changes_the_answer_changes_the_key(change):
    assert key(REQUEST) != key({**REQUEST, **change})


def tool_round(first: str, second: str) -> dict:
    """A request after a tool round, with the given tool call ids."""
    return {
        **REQUEST,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": first, "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": second, "name": "weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": first, "content": "Sunny"},
                    {"type": "tool_result", "tool_use_id": second, "content": "Rain"},
                    {"type": "text", "text": f"Image 1 of 1 returned by weather (tool_use_id {second}):"},
                ],
            },
        ],
    }


def test_tool_ids_count_by_order_of_appearance_also_inside_text():
    one = normalise(tool_round("toolu_0123456789abcdef", "toolu_fedcba9876543210"))
    other = normalise(tool_round("call_aaaaaaaaaaaa", "call_bbbbbbbbbbbb"))
    assert one == other
    calls, results = one["messages"][1]["content"], one["messages"][2]["content"]
    assert [c["id"] for c in calls] == ["tool_1", "tool_2"]
    assert [r["tool_use_id"] for r in results[:2]] == ["tool_1", "tool_2"]
    assert results[2]["text"].endswith("(tool_use_id tool_2):")
    # Which call a result answers still counts.
    swapped = tool_round("toolu_0123456789abcdef", "toolu_fedcba9876543210")
    swapped["messages"][2]["content"][:2] = swapped["messages"][2]["content"][1::-1]
    assert normalise(swapped) != one


def test_inline_media_count_by_their_digest_not_their_bytes():
    def with_image(data: bytes) -> dict:
        source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(data).decode()}
        return {**REQUEST, "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]}

    big = with_image(b"\x89PNG" + b"x" * 50_000)
    assert base64.b64encode(b"x" * 300).decode() not in key(big)
    assert len(key(big)) < 1000
    assert key(big) == key(with_image(b"\x89PNG" + b"x" * 50_000))
    assert key(big) != key(with_image(b"\x89PNG" + b"y" * 50_000))


# -- what differs ----------------------------------------------------------------------------


def recorded(body: dict) -> tuple[str, str, dict]:
    return "POST", "/v1/messages", normalise(body)


def test_differences_name_the_field_and_quote_the_text():
    chat = {**REQUEST, "messages": [{"role": "user", "content": "Summarise the table of sales by region"}]}
    edited = {**REQUEST, "messages": [{"role": "user", "content": "Summarize the table of sales by region"}]}
    assert differences(recorded(chat), recorded(edited)) == [
        "the last user message differs: recorded 'Summarise the table of sales by region' "
        "vs now 'Summarize the table of sales by region'"
    ]
    assert differences(recorded(chat), recorded({**chat, "model": "qwen3.7-max"})) == [
        "model differs: recorded qwen3.6-plus vs now qwen3.7-max"
    ]
    thinking = {**chat, "thinking": {"type": "enabled", "budget_tokens": 4096}}
    assert differences(recorded({**chat, "thinking": {"type": "disabled"}}), recorded(thinking)) == [
        "thinking differs: recorded off vs now on (budget 4096)"
    ]
    assert differences(recorded({**chat, "stream": True}), recorded(chat)) == [
        "stream differs: recorded streamed vs now not streamed (--no-stream)"
    ]


def test_a_long_text_is_quoted_around_where_it_differs():
    before = "Here is a long question. " * 10 + "What is the capital of France?"
    after = "Here is a long question. " * 10 + "What is the capital of Spain?"
    (found,) = differences(
        recorded({**REQUEST, "messages": [{"role": "user", "content": before}]}),
        recorded({**REQUEST, "messages": [{"role": "user", "content": after}]}),
    )
    assert "recorded '…" in found and "capital of France?'" in found and "capital of Spain?'" in found
    assert len(found) < 200


def test_an_earlier_message_and_a_longer_conversation():
    history = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    changed = [dict(history[0], content="First questions"), *history[1:]]
    (found,) = differences(recorded({**REQUEST, "messages": history}), recorded({**REQUEST, "messages": changed}))
    assert found.startswith("user message 1 differs: recorded 'First question' vs now 'First questions'")
    (found,) = differences(recorded({**REQUEST, "messages": history[:1]}), recorded({**REQUEST, "messages": history}))
    assert found.startswith("the conversation has 3 messages now, 1 when recorded")


# -- recording and replaying through the SDK ---------------------------------------------------


def test_replay_gives_the_same_messages_without_a_network(recording, server):
    recorder, client = recording
    server.queue(
        Stream(thinking="Let me think.", text="Rayleigh scattering.", chunk=4),
        Status(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "5"}),
        Stream(text="Whole answer."),
        Status(400, "invalid_request_error", "Range of input length should be [1, 30720]"),
    )
    live = streamed(client, {**REQUEST, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    whole = client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Once more"}]})
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Too long"}]})
    assert len(server.requests) == 4  # the 529 was retried by the SDK, and recorded too

    player = Player(recorder.path, speed=0)
    client = sdk(player)
    assert streamed(client, {**REQUEST, "thinking": {"type": "enabled", "budget_tokens": 1024}}) == live
    assert client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Once more"}]}) == whole
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Too long"}]})
    assert "Range of input length" in str(refused.value)
    assert len(server.requests) == 4


def test_identical_requests_replay_in_order_then_repeat_the_last(recording, server):
    recorder, client = recording
    server.queue(Stream(text="First."), Stream(text="Second."))
    for _ in range(2):
        streamed(client, REQUEST)
    client = sdk(Player(recorder.path, speed=0))
    texts = [streamed(client, REQUEST).content[0].text for _ in range(3)]
    assert texts == ["First.", "Second.", "Second."]


def test_tool_rounds_are_recorded_and_replayed(recording, server):
    recorder, client = recording
    tools = [{"name": "weather", "description": "Weather now.", "input_schema": {"type": "object"}}]
    server.queue(Stream(tool_calls=[ToolCall("weather", {"city": "Paris"})]), Stream(text="Sunny in Paris."))

    def converse(client: anthropic.Anthropic) -> list[anthropic.types.Message]:
        first = streamed(client, {**REQUEST, "tools": tools})
        call = first.content[-1]
        follow = {
            **REQUEST,
            "tools": tools,
            "messages": [
                *REQUEST["messages"],
                {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}]},
            ],
        }
        return [first, streamed(client, follow)]

    live = converse(client)
    assert live[0].stop_reason == "tool_use"
    lines = recorder.path.read_text().splitlines()[1:]
    assert [json.loads(line)["request"]["messages"][-1]["content"][0].get("tool_use_id") for line in lines] == [
        None,
        "tool_1",
    ]
    assert converse(sdk(Player(recorder.path, speed=0))) == live


def test_a_cut_connection_and_an_interrupt_replay_as_they_happened(recording, server):
    recorder, client = recording
    server.queue(Stream(text="abcdefghijklmnop", chunk=2, cut_after=3))
    with pytest.raises(httpx2.HTTPError) as live:
        streamed(client, REQUEST)
    server.queue(Stream(text="x" * 400, chunk=2, delay=0.002))
    with client.messages.stream(**{**REQUEST, "messages": [{"role": "user", "content": "Long"}]}) as events:
        next(iter(events))  # the reader stops early, as an interrupt does

    exchanges = read(recorder.path, "demo")
    assert [e["end"] for e in exchanges] == ["error", "closed"]
    client = sdk(Player(recorder.path, speed=0))
    with pytest.raises(httpx2.HTTPError) as replayed:
        streamed(client, REQUEST)
    assert type(replayed.value) is type(live.value)
    assert "broke before the answer finished" in str(translate(replayed.value, model="m", base_url="u"))
    with pytest.raises(httpx2.ReadError, match="interrupted while it was recorded"):
        streamed(client, {**REQUEST, "messages": [{"role": "user", "content": "Long"}]})


def test_a_miss_is_one_clear_error_not_retried_and_not_sent(recording, server):
    recorder, client = recording
    server.queue(Stream(text="The table, summarised."))
    streamed(client, {**REQUEST, "messages": [{"role": "user", "content": "Summarise the table"}]})
    client = sdk(Player(recorder.path, speed=0), max_retries=2)
    started = time.monotonic()
    with pytest.raises(CassetteError) as miss:
        streamed(client, {**REQUEST, "messages": [{"role": "user", "content": "Summarize the table"}]})
    assert time.monotonic() - started < 0.3  # no SDK retry backoff
    text = str(miss.value)
    assert "demo.jsonl holds no answer for this request" in text
    assert "request 1 of 1 ('Summarise the table')" in text
    assert "the last user message differs: recorded 'Summarise the table' vs now 'Summarize the table'" in text
    assert "%qwen replay --stop" in text
    assert translate(miss.value, model="m", base_url="u") is miss.value  # shown as it is
    assert miss.value._render_traceback_()[0].endswith(text)
    assert len(server.requests) == 1


# -- the file, and the key ---------------------------------------------------------------------


def test_the_cassette_holds_no_key_nor_auth_headers(recording, server, monkeypatch):
    recorder, client = recording
    # A service that echoes the key in an error must not get it into the cassette.
    server.queue(Status(400, "invalid_request_error", f"Bad request from key {server.api_key}"), Stream(text="Fine."))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**REQUEST)
    streamed(client, REQUEST)
    text = recorder.path.read_text()
    assert server.api_key not in text
    for word in ("x-api-key", "authorization", "cookie"):
        assert word not in text.lower()
    assert "Bad request from key sk-…agic" in text
    header_line, *lines = text.splitlines()
    assert set(json.loads(header_line)) == {"cassette", "version", "created", "qwen_magic"}
    assert all(set(json.loads(line)["headers"]) <= {"content-type", "request-id"} for line in lines)


def test_model_text_holding_the_key_is_recorded_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-live-0123456789")
    recorder = Recorder(tmp_path / "c.jsonl")
    recorder.write({"method": "POST", "path": "/v1/messages", "body": [{"t": 0, "text": "sk-live-0123456789"}]}, set())
    text = recorder.path.read_text()
    assert "sk-live-0123456789" not in text and '"text":"sk-…6789"' in text


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 40])
def test_a_key_split_across_deltas_is_recorded_masked_and_replays_masked(recording, server, chunk):
    recorder, client = recording
    key = server.api_key
    server.queue(
        Stream(text=f"Key: {key}. Again:{key}", thinking=f"{key}!", chunk=chunk, tool_calls=[ToolCall("f", {"k": key})])
    )
    streamed(client, {**REQUEST, "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
    text = recorder.path.read_text()
    assert key not in text
    replayed = streamed(sdk(Player(recorder.path, speed=0)), {**REQUEST, "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
    blocks = {b.type: b for b in replayed.content}
    assert blocks["text"].text == "Key: sk-…agic. Again:sk-…agic"
    assert blocks["thinking"].thinking == "sk-…agic!"
    assert blocks["tool_use"].input == {"k": "sk-…agic"}


def test_appending_and_overwriting(recording, server):
    recorder, client = recording
    server.queue(Stream(text="One."))
    streamed(client, REQUEST)
    again = Recorder(recorder.path)
    assert again.count == 1 and recorder.path.read_text().count('"cassette"') == 1
    assert Recorder(recorder.path, overwrite=True).count == 0
    assert read(recorder.path, "demo") == []


def test_files_that_are_not_cassettes(tmp_path):
    with pytest.raises(UsageError, match="No cassette at"):
        Player(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(UsageError, match="not a qwen-magic cassette"):
        Player(tmp_path / "notes.txt")
    with pytest.raises(UsageError, match="not a qwen-magic cassette"):
        Recorder(tmp_path / "notes.txt")  # appending to it would spoil it
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**header(), "version": 99}) + "\n")
    with pytest.raises(UsageError, match="newer qwen-magic"):
        Player(newer)


# -- pace ----------------------------------------------------------------------------------------


def paced_cassette(path: Path) -> Path:
    events = [{"t": 0.1 * i, "event": "ping", "data": {"type": "ping"}} for i in range(1, 6)]
    message = {"id": "m", "type": "message", "role": "assistant", "model": "qwen3.6-plus", "content": [],
               "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 0}}
    events[0] = {"t": 0.1, "event": "message_start", "data": {"type": "message_start", "message": message}}
    exchange = {
        "method": "POST",
        "path": "/v1/messages",
        "request": normalise({**REQUEST, "stream": True}),
        "status": 200,
        "headers": {"content-type": "text/event-stream"},
        "at": 0.05,
        "body": events,
        "end": "complete",
    }
    path.write_text(json.dumps(header()) + "\n" + json.dumps(exchange) + "\n")
    return path


@pytest.mark.parametrize(("speed", "low", "high"), [(1, 0.48, 0.75), (10, 0.04, 0.2), (0, 0, 0.1), (float("inf"), 0, 0.1)])
def test_replay_keeps_the_recorded_pace_divided_by_speed(tmp_path, speed, low, high):
    player = Player(paced_cassette(tmp_path / "paced.jsonl"), speed=speed)
    with httpx2.Client(transport=player) as client:
        started = time.monotonic()
        with client.stream("POST", "http://nowhere.invalid/apps/anthropic/v1/messages", json={**REQUEST, "stream": True}) as response:
            arrivals = [time.monotonic() - started for _ in response.iter_bytes()]
    assert len(arrivals) == 5
    assert low <= arrivals[-1] <= high, arrivals
    if speed == 1:
        # Each piece comes at its recorded time (0.1 s apart), never early; a busy machine may
        # deliver one late, after which the next catches up with the recording's clock.
        assert all(at >= 0.1 * (i + 1) - 0.03 for i, at in enumerate(arrivals)), arrivals
        gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
        assert 0.07 <= gaps[len(gaps) // 2] <= 0.2, gaps


def test_speed_on_the_command_line():
    assert _command.parse_line("replay demo.jsonl --speed 10").speed == 10
    assert _command.parse_line("replay demo.jsonl --speed inf").speed == float("inf")
    assert _command.parse_line("replay --stop").stop
    assert _command.parse_line("record demo.jsonl --overwrite").overwrite
    for bad in ("-1", "fast", "nan"):
        with pytest.raises(UsageError, match="--speed"):
            _command.parse_line(f"replay demo.jsonl --speed {bad}")
