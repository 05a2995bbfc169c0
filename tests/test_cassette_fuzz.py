"""Broken cassettes: a real recording, cut and mutated, only ever gives short UsageErrors or recorded failures.

Loading a cassette either works or is a ``UsageError`` of one short line; replaying what
loaded either serves the body or raises what a recorded failure raises (a ``CassetteError``
for a request it does not hold, an ``httpx2`` transport error for a recorded broken
connection), never a ``TypeError``/``KeyError`` from a shape it did not expect, never a hang.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.lib.streaming import MessageStream
from anthropic.types import Message, RawMessageStreamEvent
from fake_dashscope import FakeDashScope, Status, Stream, ToolCall
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from qwen_magic._calls import _CheckedEvents
from qwen_magic._cassette import MAX_TIME, CassetteError, Player, Recorder

REQUEST = {"model": "qwen3.6-plus", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
TOOLS = [{"name": "f", "description": "A tool.", "input_schema": {"type": "object"}}]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A cassette recorded from the fake service: streamed text and thinking, a tool call, whole JSON, an error."""
    path = tmp_path_factory.mktemp("fuzz") / "real.jsonl"
    with FakeDashScope() as server:
        recorder = Recorder(path, overwrite=True)
        client = anthropic.Anthropic(
            api_key=server.api_key, base_url=server.url, max_retries=0,
            http_client=anthropic.DefaultHttpxClient(transport=recorder),
        )
        server.queue(
            Stream(text="Hello **world** <b>bold</b>", thinking="Let me think.", chunk=5),
            Stream(tool_calls=[ToolCall("f", {"x": [1, 2], "y": "z"})]),
            Stream(text="Whole answer."),
            Status(400, "invalid_request_error", "Bad request"),
        )
        thinking = {"type": "enabled", "budget_tokens": 50}
        with client.messages.stream(**REQUEST, thinking=thinking) as events:
            events.get_final_message()
        with client.messages.stream(**{**REQUEST, "messages": [{"role": "user", "content": "Use f"}]}, tools=TOOLS) as events:
            events.get_final_message()
        client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Whole"}]})
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "Bad"}]})
    data = path.read_bytes()
    assert len(data.splitlines()) == 5
    return data


def check_usage_error(error: UsageError) -> None:
    message = str(error)
    assert message and len(message) < 500, message
    assert "Traceback" not in message and "\n" not in message.strip(), message


def load_and_replay(path: Path) -> None:
    """Load ``path``; replay every exchange it holds; fail on anything but the allowed errors."""
    try:
        player = Player(path, speed=0)
    except UsageError as error:
        check_usage_error(error)
        return
    for exchange in player.exchanges:
        body = exchange.get("request")
        try:
            request = httpx2.Request(
                exchange["method"], "http://127.0.0.1:9/apps/anthropic" + exchange["path"],
                content=json.dumps(body).encode(),
            )
        except Exception:  # a method or path no client would send: nothing can ask for it
            continue
        started = time.monotonic()
        try:
            response = player.handle_request(request)
            for _ in response.stream:
                pass
        except (CassetteError, httpx2.TransportError) as error:
            assert len(str(error)) < 2000
        assert time.monotonic() - started < 2, "replay waited"
        through_the_sdk(player, exchange)


def through_the_sdk(player: Player, exchange: dict[str, Any]) -> None:
    """Replay ``exchange`` as the cell does (the SDK's stream accumulator, then the final message's parts).

    Allowed: the SDK's own errors (a recorded error status, a recorded broken connection) and
    the cassette's; not a ``TypeError``/``AttributeError``/``AssertionError`` from a damaged event.
    """
    client = anthropic.Anthropic(
        api_key="sk-replay", base_url="http://127.0.0.1:9/apps/anthropic", max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=player),
    )
    body = exchange.get("request")
    streamed = isinstance(body, dict) and body.get("stream") is True
    try:
        if streamed:
            raw = client.post(
                exchange["path"], body=body, cast_to=Message, stream=True, stream_cls=anthropic.Stream[RawMessageStreamEvent]
            )
            if "tools" in body:  # as the tool loop reads it: arguments checked before the accumulator
                raw = _CheckedEvents(raw, {})
            with MessageStream(raw, output_format=anthropic.NOT_GIVEN) as events:
                for _ in events:
                    pass
                message = events.get_final_message()
        else:
            message = client.post(exchange["path"], body=body, cast_to=Message)
        for block in message.content:
            block.model_dump(exclude_none=True)
        assert message.usage is not None
    except anthropic.AnthropicError:  # CassetteError is one too
        pass
    except UnicodeEncodeError:  # a body the client cannot send: nothing can ask for it
        pass


def mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a node of a JSON value."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from mutations(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from mutations(item, (*path, index))


DELETE = object()
REPLACEMENTS = [DELETE, [], {}, "text", "\ud800", 7, -1, 0, None, True, 1e300, [[{}]], {"type": "x"}]


def mutate(line: Any, path: tuple[Any, ...], replacement: Any) -> Any:
    if not path:
        return None if replacement is DELETE else replacement
    copied = copy.deepcopy(line)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    if replacement is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return copied


pytestmark = pytest.mark.filterwarnings("error::UserWarning")  # a damaged event must not reach the SDK's serializer either


def test_every_truncation_is_a_short_error_or_a_shorter_cassette(recorded, tmp_path):
    path = tmp_path / "cut.jsonl"
    step = max(1, len(recorded) // 300)
    for end in range(0, len(recorded), step):
        path.write_bytes(recorded[:end])
        load_and_replay(path)


def test_swapped_types_and_deleted_keys_are_short_errors_or_replay(recorded, tmp_path):
    lines = [json.loads(line) for line in recorded.decode().splitlines()]
    cases = [
        (number, where, replacement)
        for number, line in enumerate(lines)
        for where in mutations(line)
        for replacement in REPLACEMENTS
    ]
    sample = random.Random(13).sample(cases, min(len(cases), 2500))
    path = tmp_path / "mutant.jsonl"
    for number, where, replacement in sample:
        mutant = [*lines]
        mutant[number] = mutate(lines[number], where, replacement)
        path.write_text("\n".join(json.dumps(line) for line in mutant) + "\n")
        load_and_replay(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"", None),
        (b"\xff\xfe not utf-8\n", "not UTF-8"),
        (b"[1, 2, 3]\n", "not a qwen-magic cassette"),
        (b'{"cassette": "qwen-magic", "version": 99}\n', "newer qwen-magic"),
        (b'{"cassette": "qwen-magic", "version": "1"}\n', "format version"),
        (b'{"cassette": "qwen-magic", "version": true}\n', "format version"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/messages", "body": [], "at": NaN}\n', "not valid JSON"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/messages", "body": [], "at": 1e9}\n', "seconds"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/messages", "body": [{"t": 1e9, "text": "x"}]}\n', "seconds"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/messages", "body": {"t": 0}}\n', "body should be a list"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/messages", "body": [], "status": "200"}\n', "status"),
        (b'{"cassette": "qwen-magic", "version": 1}\n' + b"[" * 100_000 + b"\n", "not valid JSON"),
        (b'{"cassette": "qwen-magic", "version": 1}\n{"method": "POST", "path": "/v1/mess', "cut short"),
    ],
)
def test_damaged_files_say_what_is_wrong(tmp_path, text, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(text)
    if needle is None:
        assert Player(path).exchanges == []
        return
    with pytest.raises(UsageError, match=needle) as error:
        Player(path)
    check_usage_error(error.value)


def test_an_enormous_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("qwen_magic._cassette._file.MAX_LINE", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text('{"cassette": "qwen-magic", "version": 1}\n' + '{"text": "' + "x" * 5000 + '"}\n')
    with pytest.raises(UsageError, match="line 2: over"):
        Player(path)


def test_recorded_times_are_bounded_so_replay_cannot_hang():
    assert MAX_TIME <= 3600


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["method", "path", "body", "t", "data", "sse", "json", "text", "base64", "event", "status",
                         "at", "end", "error", "headers", "request", "tail", "type"]),
        inner, max_size=6),
    max_leaves=20,
))
def test_any_json_line_is_an_exchange_or_a_short_error(tmp_path, line):
    path = tmp_path / "any.jsonl"
    path.write_text('{"cassette": "qwen-magic", "version": 1}\n' + json.dumps(line) + "\n")
    load_and_replay(path)


def test_the_real_recording_replays_whole(recorded, tmp_path):
    """The checks refuse damage only: every exchange of the real recording passes them and replays."""
    from qwen_magic._cassette._replay import _stream_problem

    path = tmp_path / "real.jsonl"
    path.write_bytes(recorded)
    player = Player(path, speed=0)
    assert [_stream_problem(e) for e in player.exchanges if e["status"] == 200] == [None, None, None]
    for exchange in player.exchanges:
        through_the_sdk(player, exchange)
