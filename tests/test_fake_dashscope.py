"""The fake DashScope server, driven over real HTTP by the real ``anthropic`` SDK."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_dashscope import (
    CACHE_MIN_TOKENS,
    DEFAULT_API_KEY,
    FakeDashScope,
    Hang,
    Status,
    Stream,
    ToolCall,
    estimate_tokens,
)

MODEL = "qwen3.6-plus"
HI = [{"role": "user", "content": "hi"}]
BASE: dict[str, Any] = {"model": MODEL, "max_tokens": 32, "messages": HI}
CACHE_FIELDS = {"cache_creation_input_tokens", "cache_read_input_tokens"}
LONG = "lorem ipsum dolor sit amet " * 200  # 5400 ASCII bytes: 1350 tokens, enough to be cached


@pytest.fixture
def fake() -> Iterator[FakeDashScope]:
    with FakeDashScope() as server:
        yield server


@pytest.fixture
def make_client() -> Iterator[Callable[..., anthropic.Anthropic]]:
    """Make SDK clients (no retries unless asked), closed after the test."""
    made: list[anthropic.Anthropic] = []

    def make(base_url: str, api_key: str = DEFAULT_API_KEY, max_retries: int = 0) -> anthropic.Anthropic:
        made.append(anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=max_retries))
        return made[-1]

    yield make
    for sdk in made:
        sdk.close()


@pytest.fixture
def client(fake: FakeDashScope, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(fake.url)


def raw_events(client: anthropic.Anthropic, **params: Any) -> list[Any]:
    """Stream a request through the SDK and return its raw events."""
    params = {"model": MODEL, "max_tokens": 256, "messages": HI, **params}
    with client.messages.create(stream=True, **params) as stream:
        return list(stream)


def post(
    fake: FakeDashScope, body: Any, headers: dict[str, str] | None = None, path: str = "/v1/messages"
) -> httpx2.Response:
    """Send one raw request (for bodies the SDK's signature would refuse to build)."""
    headers = {"x-api-key": fake.api_key, **(headers or {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(fake.url + path, content=content, headers=headers, timeout=10)


def ask(client: anthropic.Anthropic, messages: list[dict[str, Any]], **params: Any) -> anthropic.types.Message:
    """Stream one request and return the SDK's final message."""
    params = {"model": MODEL, "max_tokens": 256, **params}
    with client.messages.stream(messages=messages, **params) as stream:
        return stream.get_final_message()


# --------------------------------------------------------------------------- streaming


def test_text_with_cjk_and_emoji_reassembles_exactly(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    text = "你好，世界！こんにちは 🌍 family: 👨‍👩‍👧‍👦 flags 🇨🇳 done."
    for chunk in (1, 2, 3, 7):
        fake.queue(Stream(text=text, chunk=chunk))
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        assert "".join(pieces) == text
        assert all(len(p) <= chunk for p in pieces) and len(pieces) == -(-len(text) // chunk)
        assert final.content[0].text == text
        assert final.stop_reason == "end_turn"


def test_event_sequence_is_faithful(client: anthropic.Anthropic, fake: FakeDashScope) -> None:
    fake.queue(Stream(text="abcdef", thinking="xyz", chunk=3, tool_calls=[ToolCall("f", {"a": 1}, id="toolu_1")]))
    events = raw_events(client, model="qwen3.7-max")
    kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in events]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", None),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "text_delta"),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        *[("content_block_delta", "input_json_delta")] * 4,
        ("content_block_stop", None),
        ("message_delta", None),
        ("message_stop", None),
    ]
    start = events[0].message
    assert start.model == "qwen3.7-max" and start.id.startswith("msg_") and start.usage.output_tokens == 0
    assert [e.index for e in events if e.type == "content_block_start"] == [0, 1, 2]
    assert events[9].content_block.type == "tool_use" and events[9].content_block.input == {}


def test_thinking_then_text_with_empty_signature(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(thinking="Let me think… 嗯", text="Answer", chunk=4))
    thinking, signatures = [], []
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=HI, thinking={"type": "enabled", "budget_tokens": 32}
    ) as stream:
        for event in stream:
            if event.type == "thinking":
                thinking.append(event.thinking)
            elif event.type == "signature":
                signatures.append(event.signature)
        final = stream.get_final_message()
    assert "".join(thinking) == "Let me think… 嗯"
    assert signatures == [""]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think… 嗯" and final.content[0].signature == ""
    assert final.content[1].text == "Answer"


def test_tool_use_json_split_awkwardly_reassembles(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    arguments = {"query": 'say "hi"\\n\tthen 你好 🌏', "limit": 3, "nested": {"x": [1.5, None, True]}}
    fake.queue(Stream(text="Calling.", tool_calls=[ToolCall("search", arguments), ToolCall("noop", {})], json_chunk=3))
    events = raw_events(client, tools=[{"name": "search", "input_schema": {"type": "object"}}])
    partials = [e.delta.partial_json for e in events if e.type == "content_block_delta" and e.index == 1]
    assert partials[0] == ""
    assert all(0 < len(p) <= 3 for p in partials[1:])
    assert "".join(partials) == json.dumps(arguments, ensure_ascii=False)
    # every escape is split right after its backslash
    escapes = re.findall(r"\\.", "".join(partials))
    assert len(escapes) == 4 and sum(p.endswith("\\") for p in partials) == len(escapes)

    fake.queue(Stream(tool_calls=[ToolCall("search", arguments, id="toolu_fixed")], json_chunk=2))
    final = ask(client, HI)
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in final.content] == [
        ("tool_use", "toolu_fixed", "search", arguments)
    ]
    fake.queue(Stream(tool_calls=[ToolCall("noop", {})]))
    assert ask(client, HI).content[0].id.startswith("toolu_")


def test_usage_arrives_complete_in_message_delta(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="12345678", thinking="abcd"))
    events = raw_events(client, system="You are terse.")
    delta = next(e for e in events if e.type == "message_delta")
    expected_input = estimate_tokens("You are terse.") + estimate_tokens("hi")
    assert delta.usage.input_tokens == expected_input
    assert delta.usage.output_tokens == estimate_tokens("12345678") + estimate_tokens("abcd")
    assert delta.usage.cache_creation_input_tokens == 0 and delta.usage.cache_read_input_tokens == 0
    assert events[0].message.usage.input_tokens == expected_input  # message_start: the whole prompt count

    fake.queue(Stream(text="hello", usage={"output_tokens": 42, "cache_read_input_tokens": 7}))
    final = ask(client, HI)
    assert final.usage.output_tokens == 42 and final.usage.cache_read_input_tokens == 7
    assert final.usage.cache_creation_input_tokens == 0 and final.usage.input_tokens == estimate_tokens("hi")
    assert fake.last.usage == final.usage.model_dump(include={"input_tokens", "output_tokens", *CACHE_FIELDS})


def test_stop_reason_model_and_ping(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    reply = Stream(text="abcdefgh", chunk=1, ping_every=3, stop_reason="max_tokens", model="qwen3-max")
    fake.queue(reply)
    response = post(fake, {**BASE, "stream": True})  # the SDK drops pings: count them on the wire
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.count('event: ping\ndata: {"type": "ping"}\n\n') == 2
    fake.queue(reply)
    final = ask(client, HI)
    assert final.content[0].text == "abcdefgh"
    assert final.stop_reason == "max_tokens" and final.model == "qwen3-max"


def test_pacing_and_timestamps(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(thinking="th", text="abcd", chunk=1, first_delay=0.15, delay=0.02))
    started = time.monotonic()
    ask(client, HI)
    record = fake.last
    assert started <= record.received_at < record.first_delta_at <= record.finished_at
    # first_delay before the thinking delta, then 2 more deltas (signature, first text) at 0.02 s
    assert record.first_delta_at - record.received_at >= 0.15 + 2 * 0.02
    assert record.finished_at - record.received_at >= 0.15 + 6 * 0.02
    assert not record.disconnected and record.status == 200


def test_error_after_raises_api_status_error_mid_stream(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(
        Stream(text="abcdefghij", chunk=2, error_after=2, error=("rate_limit_error", "Allocated quota exceeded"))
    )
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
            received.extend(stream.text_stream)
    assert received == ["ab", "cd"]
    assert caught.value.status_code == 200
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Allocated quota exceeded"},
    }
    fake.wait_idle()
    assert fake.last.usage is None and not fake.last.disconnected


def test_cut_after_breaks_the_body(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="abcdefghij", chunk=2, cut_after=3))
    received = []
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as caught:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
            received.extend(stream.text_stream)
    assert received == ["ab", "cd", "ef"]
    assert "incomplete chunked read" in str(caught.value) or isinstance(caught.value, anthropic.APIConnectionError)
    fake.wait_idle()
    assert fake.last.usage is None

    fake.queue(Stream(text="whole", cut_after=0))
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        client.messages.create(model=MODEL, max_tokens=64, messages=HI)


def test_hang_triggers_client_timeout(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Hang(5))
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(timeout=0.2).messages.create(model=MODEL, max_tokens=64, messages=HI)
    fake.wait_idle()
    assert time.monotonic() - started < 2
    assert fake.last.disconnected and fake.last.status is None


def test_client_that_stops_early_marks_disconnected(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="x" * 400, chunk=1, delay=0.005))
    with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
        for n, _ in enumerate(stream.text_stream):
            if n == 3:
                break
    fake.wait_idle()
    record = fake.last
    assert record.disconnected and record.usage is None
    assert record.finished_at - record.received_at < 400 * 0.005


def test_complete_stream_is_not_disconnected(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="done"))
    ask(client, HI)
    fake.wait_idle()
    assert not fake.last.disconnected and fake.last.usage is not None


def test_concurrent_streams(fake: FakeDashScope, make_client: Callable[..., anthropic.Anthropic]) -> None:
    fake.responder = lambda body: Stream(text=body["messages"][0]["content"] * 5, chunk=1, delay=0.01)
    clients = [make_client(fake.url) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        futures = [pool.submit(ask, c, [{"role": "user", "content": str(n)}]) for n, c in enumerate(clients)]
        texts = [f.result().content[0].text for f in futures]
    assert texts == ["00000", "11111", "22222", "33333"]
    assert time.monotonic() - started < 4 * 5 * 0.01 + 0.5


# --------------------------------------------------------------------------- non-streaming and scripting


def test_non_streaming_reply(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(thinking="hmm", text="答案 ✅", tool_calls=[ToolCall("f", {"k": "v"}, id="toolu_a")]))
    message = client.messages.create(model=MODEL, max_tokens=64, messages=HI)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[1].text == "答案 ✅" and message.content[2].input == {"k": "v"}
    assert message.stop_reason == "tool_use" and message.model == MODEL
    assert message.usage.output_tokens == estimate_tokens("hmm") + estimate_tokens("答案 ✅") + estimate_tokens(
        '{"k": "v"}'
    )
    assert message.usage.cache_read_input_tokens == 0
    assert fake.last.body.get("stream") is None and fake.last.first_delta_at is None

    fake.queue(Stream(text="x", error_after=0))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=64, messages=HI)


def test_echo_describes_text_and_media(client: anthropic.Anthropic) -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAAAA=="}},
        {"type": "video", "source": {"type": "url", "url": "https://example.invalid/v.mp4"}},
        {"type": "text", "text": "twice"},
    ]
    final = ask(client, [{"role": "user", "content": content}], model="qwen3-vl-plus")
    assert final.content[0].text == (
        "Echo: look\ntwice\n"
        "[image url=https://example.invalid/a.png]\n"
        "[image base64 image/png 4 bytes]\n"
        "[video url=https://example.invalid/v.mp4]"
    )
    assert final.usage.input_tokens == 2 * 1000 + 2000 + estimate_tokens("look") + estimate_tokens("twice")
    history = [*HI, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "最后 🙂"}]
    assert ask(client, history).content[0].text == "Echo: 最后 🙂"


def test_queue_then_responder_then_echo(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="one"), Stream(text="two"))
    fake.responder = lambda body: Stream(text=f"responder saw {body['messages'][-1]['content']}")
    texts = [ask(client, [{"role": "user", "content": f"q{n}"}]).content[0].text for n in range(3)]
    assert texts == ["one", "two", "responder saw q2"]
    fake.responder = lambda body: None
    assert ask(client, HI).content[0].text == "Echo: hi"
    fake.reset()
    assert fake.requests == [] and fake.pending == 0 and fake.responder is None
    assert ask(client, HI).content[0].text == "Echo: hi"


def test_broken_responder_answers_500(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.responder = lambda body: "not a reply"
    with pytest.raises(anthropic.InternalServerError, match="responder failed"):
        ask(client, HI)
    with pytest.raises(TypeError):
        fake.queue("not a reply")  # type: ignore[arg-type]


def test_recorded_request(fake: FakeDashScope, make_client: Callable[..., anthropic.Anthropic]) -> None:
    sdk = make_client(fake.url + "/apps/anthropic")
    ask(sdk, HI, system=[{"type": "text", "text": "sys"}], extra_headers={"X-Custom": "Yes"})
    record = fake.last
    assert record.path == "/apps/anthropic/v1/messages"
    assert record.headers["x-custom"] == "Yes" and all(name == name.lower() for name in record.headers)
    assert record.body["messages"] == HI and record.body["stream"] is True
    assert record.status == 200 and isinstance(record.reply, Stream)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("code", "kind", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "authentication_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.OverloadedError),
    ],
)
def test_status_maps_to_sdk_exceptions(
    fake: FakeDashScope, client: anthropic.Anthropic, code: int, kind: str, exception: type[Exception]
) -> None:
    fake.queue(Status(code, kind, "scripted failure"))
    with pytest.raises(exception) as caught:
        ask(client, HI)
    assert caught.value.status_code == code
    assert caught.value.body["error"] == {"type": kind, "message": "scripted failure"}
    assert caught.value.request_id and caught.value.body["request_id"] == caught.value.request_id
    assert fake.last.status == code


def test_rate_limit_retried_then_raised(fake: FakeDashScope, make_client: Callable[..., anthropic.Anthropic]) -> None:
    limited = Status(429, "rate_limit_error", "Requests rate limit exceeded", {"retry-after-ms": "5"})
    sdk = make_client(fake.url, max_retries=2)
    fake.queue(limited, limited, limited)
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError):
        ask(sdk, HI)
    assert len(fake.requests) == 3 and time.monotonic() - started < 1.5
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]

    fake.queue(limited, Stream(text="recovered"))
    assert ask(sdk, HI).content[0].text == "recovered"


def test_authentication(fake: FakeDashScope, make_client: Callable[..., anthropic.Anthropic]) -> None:
    wrong = make_client(fake.url, api_key="sk-wrong")
    fake.queue(Stream(text="kept"))
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        ask(wrong, HI)
    assert caught.value.body["error"] == {"type": "authentication_error", "message": "Invalid API-key provided."}
    assert fake.pending == 1, "a refused request does not consume a scripted reply"
    assert post(fake, {"model": MODEL, "max_tokens": 8, "messages": HI}).status_code == 200  # x-api-key
    bearer = {"x-api-key": "", "authorization": f"Bearer {fake.api_key}"}
    assert post(fake, {"model": MODEL, "max_tokens": 8, "messages": HI}, headers=bearer).status_code == 200
    response = httpx2.post(fake.url + "/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HI})
    assert response.status_code == 403
    assert [r.status for r in fake.requests] == [403, 200, 200, 403]


def test_unknown_model(
    fake: FakeDashScope, client: anthropic.Anthropic, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        ask(client, HI, model="claude-sonnet-4")
    assert caught.value.body["error"] == {
        "type": "not_found_error",
        "message": "The model `claude-sonnet-4` does not exist or you do not have access to it.",
    }
    with FakeDashScope(known_models={"my-model"}) as other:
        sdk = make_client(other.url)
        assert ask(sdk, HI, model="my-model").content[0].text == "Echo: hi"
        with pytest.raises(anthropic.NotFoundError):
            ask(sdk, HI)


def test_unknown_path_and_bad_json(fake: FakeDashScope) -> None:
    assert post(fake, {}, path="/v1/complete").status_code == 404
    assert httpx2.get(fake.url + "/v1/messages").status_code == 404
    response = post(fake, b"{not json")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- validation


def _tool_turns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool round trip whose tool_result is ``result``."""
    return [
        *HI,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [result]},
    ]


def _image(source: dict[str, Any]) -> list[dict[str, Any]]:
    """A user message carrying one image block."""
    return [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image", "source": source}]}]


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing max_tokens", {"model": MODEL, "messages": HI}, "max_tokens: Field required"),
    ("zero max_tokens", {**BASE, "max_tokens": 0}, "max_tokens"),
    ("missing messages", {"model": MODEL, "max_tokens": 32}, "messages: Field required"),
    ("missing model", {"max_tokens": 32, "messages": HI}, "model: Field required"),
    ("empty messages", {**BASE, "messages": []}, "at least one message"),
    ("assistant first", {**BASE, "messages": [{"role": "assistant", "content": "x"}, *HI]}, "first message"),
    ("two users", {**BASE, "messages": [*HI, *HI]}, 'multiple "user" roles'),
    (
        "two assistants",
        {**BASE, "messages": [*HI, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
        'multiple "assistant" roles',
    ),
    ("system role", {**BASE, "messages": [{"role": "system", "content": "x"}]}, "role"),
    (
        "thinking in history",
        {
            **BASE,
            "messages": [
                *HI,
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""}]},
                *HI,
            ],
        },
        "`thinking` blocks are not supported",
    ),
    (
        "redacted thinking in history",
        {
            **BASE,
            "messages": [*HI, {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]}, *HI],
        },
        "`redacted_thinking` blocks",
    ),
    (
        "is_error",
        {
            **BASE,
            "messages": _tool_turns(
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "no", "is_error": True}
            ),
        },
        "is_error",
    ),
    (
        "unanswered tool_use",
        {**BASE, "messages": _tool_turns({"type": "text", "text": "forgot the result"})},
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
    ),
    (
        "tool_result with the wrong id",
        {**BASE, "messages": _tool_turns({"type": "tool_result", "tool_use_id": "toolu_2", "content": "r"})},
        "toolu_1",
    ),
    (
        "orphan tool_result",
        {
            **BASE,
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
        },
        "unexpected `tool_use_id`",
    ),
    (
        "empty text block",
        {**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        "non-empty",
    ),
    ("empty string content", {**BASE, "messages": [{"role": "user", "content": ""}]}, "non-empty content"),
    ("empty system block", {**BASE, "system": [{"type": "text", "text": ""}]}, "system.0"),
    ("temperature 2", {**BASE, "temperature": 2}, "temperature"),
    ("temperature negative", {**BASE, "temperature": -0.1}, "temperature"),
    ("thinking adaptive", {**BASE, "thinking": {"type": "adaptive"}}, "thinking"),
    ("thinking without budget", {**BASE, "thinking": {"type": "enabled"}}, "budget_tokens"),
    ("thinking zero budget", {**BASE, "thinking": {"type": "enabled", "budget_tokens": 0}}, "budget_tokens"),
    ("file source", {**BASE, "messages": _image({"type": "file", "file_id": "f"})}, "source type 'file'"),
    (
        "video file source",
        {
            **BASE,
            "messages": [{"role": "user", "content": [{"type": "video", "source": {"type": "file", "file_id": "f"}}]}],
        },
        "unsupported video source type",
    ),
    (
        "base64 over 10 MB",
        {
            **BASE,
            "messages": _image({"type": "base64", "media_type": "image/png", "data": "A" * (10 * 1024 * 1024 + 4)}),
        },
        "10 MB",
    ),
    (
        "bad base64",
        {**BASE, "messages": _image({"type": "base64", "media_type": "image/png", "data": "@@@"})},
        "base64",
    ),
    (
        "bad media type",
        {**BASE, "messages": _image({"type": "base64", "media_type": "image/bmp", "data": "AAAA"})},
        "media",
    ),
    ("document block", {**BASE, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "document"),
    ("tool without schema", {**BASE, "tools": [{"name": "f"}]}, "input_schema"),
]


@pytest.mark.parametrize(("body", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_requests_are_refused(fake: FakeDashScope, body: dict[str, Any], message: str) -> None:
    fake.queue(Stream(text="not for invalid requests"))
    response = post(fake, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert message in payload["error"]["message"]
    assert fake.pending == 1 and fake.last.status == 400


VALID: list[tuple[str, dict[str, Any]]] = [
    ("thinking disabled", {**BASE, "thinking": {"type": "disabled"}}),
    ("thinking enabled", {**BASE, "thinking": {"type": "enabled", "budget_tokens": 1}}),
    ("temperature 0", {**BASE, "temperature": 0}),
    ("temperature 1.99", {**BASE, "temperature": 1.99}),
    ("prefill", {**BASE, "messages": [*HI, {"role": "assistant", "content": "Sure,"}]}),
    (
        "tool round trip",
        {**BASE, "messages": _tool_turns({"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"})},
    ),
    (
        "small base64 image",
        {**BASE, "messages": _image({"type": "base64", "media_type": "image/png", "data": "A" * 1000})},
    ),
    (
        "base64 video",
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "source": {"type": "base64", "media_type": "video/mp4", "data": "AAAA"}}
                    ],
                }
            ],
        },
    ),
]


@pytest.mark.parametrize("body", [case[1] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_requests_are_accepted(fake: FakeDashScope, body: dict[str, Any]) -> None:
    response = post(fake, body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


def test_validation_errors_reach_the_sdk_as_bad_request(client: anthropic.Anthropic) -> None:
    history = [*HI, {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""}]}, *HI]
    with pytest.raises(anthropic.BadRequestError, match="not supported"):
        ask(client, history)
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        ask(client, HI, extra_body={"temperature": 2.5})


# --------------------------------------------------------------------------- prompt cache


def _usage(final: anthropic.types.Message) -> tuple[int, int, int]:
    """(input, creation, read) of a final message."""
    usage = final.usage
    return usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens


MARK = {"type": "ephemeral"}
SYSTEM = [{"type": "text", "text": LONG, "cache_control": MARK}]


def test_identical_request_reads_the_cache(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    total = estimate_tokens(LONG) + estimate_tokens("hi")
    assert _usage(ask(client, HI, system=SYSTEM)) == (estimate_tokens("hi"), estimate_tokens(LONG), 0)
    assert len(fake.cache.entries) == 1
    assert _usage(ask(client, HI, system=SYSTEM)) == (estimate_tokens("hi"), 0, estimate_tokens(LONG))
    assert fake.last.usage["input_tokens"] + fake.last.usage["cache_read_input_tokens"] == total
    # the marker is not part of the key, the model is
    assert _usage(ask(client, HI, system=[{"type": "text", "text": LONG}]))[2] == 0
    assert _usage(ask(client, HI, system=SYSTEM, model="qwen3.7-plus"))[2] == 0


def test_conversation_reads_the_previous_prefix(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    turns: list[dict[str, Any]] = []
    previous_prefix = 0
    for n in range(4):
        question = f"question {n}: " + "why? " * 60
        turns.append({"role": "user", "content": [{"type": "text", "text": question, "cache_control": MARK}]})
        final = ask(client, turns, system=SYSTEM)
        prefix = estimate_tokens(LONG) + sum(map(_turn_tokens, turns))
        input_tokens, creation, read = _usage(final)
        assert read == (previous_prefix if n else 0)
        assert creation == prefix - read and input_tokens == 0
        previous_prefix = prefix
        # history is resent without the old markers, as the recommended pattern does
        del turns[-1]["content"][0]["cache_control"]
        turns.append({"role": "assistant", "content": final.content[0].text})
    assert len(fake.cache.entries) == 1 + 4  # the system prefix, and one prefix per turn


def _turn_tokens(turn: dict[str, Any]) -> int:
    """Estimated tokens of a message made of text."""
    content = turn["content"]
    return estimate_tokens(content) if isinstance(content, str) else sum(estimate_tokens(b["text"]) for b in content)


def test_lookback_is_twenty_blocks(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    ask(client, HI, system=SYSTEM)  # caches the prefix [system]
    plain = [{"type": "text", "text": LONG}]
    for extra, hit in ((19, True), (20, True), (21, False)):
        blocks = [{"type": "text", "text": f"block {i}"} for i in range(extra)]
        blocks[-1]["cache_control"] = MARK
        final = ask(client, [{"role": "user", "content": blocks}], system=plain)
        assert (_usage(final)[2] == estimate_tokens(LONG)) is hit, extra
        fake.cache.clear()
        ask(client, HI, system=SYSTEM)


def test_short_prefixes_are_never_cached(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    short = [{"type": "text", "text": "x" * (4 * CACHE_MIN_TOKENS - 8), "cache_control": MARK}]
    for _ in range(2):
        assert _usage(ask(client, HI, system=short))[1:] == (0, 0)
    assert fake.cache.entries == {}
    just_enough = [{"type": "text", "text": "x" * (4 * CACHE_MIN_TOKENS), "cache_control": MARK}]
    assert _usage(ask(client, HI, system=just_enough))[1] == CACHE_MIN_TOKENS


def test_ttl_expiry_and_refresh(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    ask(client, HI, system=SYSTEM)
    ((tokens, expires_at),) = fake.cache.entries.values()
    assert tokens == estimate_tokens(LONG) and expires_at - fake.cache.now() == pytest.approx(300, abs=1)
    fake.advance(200)
    assert _usage(ask(client, HI, system=SYSTEM))[2] == tokens  # a hit refreshes the TTL
    fake.advance(200)
    assert _usage(ask(client, HI, system=SYSTEM))[2] == tokens
    fake.advance(301)
    assert _usage(ask(client, HI, system=SYSTEM))[1:] == (tokens, 0)


def test_only_the_last_four_markers_count(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    blocks = [{"type": "text", "text": f"{n} " + LONG, "cache_control": MARK} for n in range(5)]
    sizes = [estimate_tokens(b["text"]) for b in blocks]
    final = ask(client, HI, system=blocks)
    assert _usage(final)[1] == sum(sizes)
    assert sorted(tokens for tokens, _ in fake.cache.entries.values()) == [sum(sizes[: k + 1]) for k in range(1, 5)]
    # the first block's own prefix was never written: its marker was the fifth from the end
    assert _usage(ask(client, HI, system=blocks[:1]))[2] == 0


def test_tools_are_part_of_the_prefix(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    tools = [{"name": "lookup", "description": LONG, "input_schema": {"type": "object"}, "cache_control": MARK}]
    first = _usage(ask(client, HI, tools=tools))
    assert first[1] > estimate_tokens(LONG) and first[2] == 0
    assert _usage(ask(client, HI, tools=tools, system="different system"))[2] == first[1]


def test_nothing_is_stored_after_a_failed_reply(fake: FakeDashScope, client: anthropic.Anthropic) -> None:
    fake.queue(Stream(text="abc", chunk=1, error_after=1))
    with pytest.raises(anthropic.APIStatusError):
        ask(client, HI, system=SYSTEM)
    fake.queue(Stream(text="abc", chunk=1, cut_after=1))
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        ask(client, HI, system=SYSTEM)
    fake.queue(Status(500, "api_error", "boom"))
    with pytest.raises(anthropic.InternalServerError):
        ask(client, HI, system=SYSTEM)
    fake.wait_idle()
    assert fake.cache.entries == {}
    assert _usage(ask(client, HI, system=SYSTEM))[2] == 0
    assert len(fake.cache.entries) == 1


def test_estimate_tokens() -> None:
    assert [estimate_tokens(s) for s in ("", "a", "abcd", "abcde", "你好", "🙂")] == [0, 1, 1, 2, 2, 1]


# --------------------------------------------------------------------------- lifecycle and CLI


def test_stop_closes_idle_connections_and_is_idempotent(make_client: Callable[..., anthropic.Anthropic]) -> None:
    server = FakeDashScope().start()
    sdk = make_client(server.url)
    ask(sdk, HI)
    server.stop()
    server.stop()
    with pytest.raises(anthropic.APIConnectionError):
        ask(sdk, HI)


def test_standalone_cli(make_client: Callable[..., anthropic.Anthropic]) -> None:
    script = Path(__file__).resolve().parent / "fake_dashscope.py"
    command = [sys.executable, str(script), "--port", "0", "--api-key", "sk-cli", "--chunk", "2", "--delay", "0.001"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            sdk = make_client(url + "/apps/anthropic", api_key="sk-cli")
            messages = [{"role": "user", "content": "命令行"}]
            with sdk.messages.stream(model=MODEL, max_tokens=32, messages=messages) as stream:
                pieces = list(stream.text_stream)
            assert "".join(pieces) == "Echo: 命令行" and max(map(len, pieces)) == 2
        finally:
            process.terminate()
            _, errors = process.communicate(timeout=5)
    assert process.returncode == 0 and errors == ""
