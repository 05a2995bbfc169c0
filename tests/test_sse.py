"""The stream's Server-Sent Events are read as the SDK's own decoder reads them, however the body is cut."""

from __future__ import annotations

from anthropic._streaming import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_magic._stream import _server_sent_events

_LINES = [
    b"event: content_block_delta\n", b'data: {"a": 1}\n', b"\n", b": comment\n", b"data: x\n", b"data:y\n",
    b"event:ping\n", b"id: 5\n", b"retry: 10\n", b"event: error\n", b"data: \xe4\xb8\xad\n", b"noval\n", b"event\n",
    b"\n\n", b"data: last", b"data: r\r\n", b"\r\n", b"\r", b"event: message_stop\r\n",
]  # fmt: skip


def _acted_on(events: list[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """What the stream loop acts on: named events other than pings."""
    return [(name, data) for name, data in events if name not in (None, "ping")]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=14), st.lists(st.integers(0, 400), max_size=5))
def test_events_are_the_sdk_decoders_however_the_body_is_cut(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(lines)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    sdk = [(e.event, e.data) for e in SSEDecoder().iter_bytes(iter(chunks))]
    assert _acted_on(list(_server_sent_events(iter(chunks)))) == _acted_on(sdk)


def test_a_service_stream_is_read_an_event_a_chunk() -> None:
    chunks = [b'event: content_block_delta\ndata: {"t": "\xe4\xb8\xad"}\n\n', b"event: ping\ndata: {}\n\n",
              b"event: message_stop\ndata: {}\n\nevent: mess", b"age_stop\ndata: 2\n\ntrailing"]  # fmt: skip
    assert list(_server_sent_events(iter(chunks))) == [
        ("content_block_delta", '{"t": "中"}'), ("ping", "{}"), ("message_stop", "{}"), ("message_stop", "2"),
    ]  # fmt: skip


_EVENTS = [
    b'event: content_block_delta\ndata: {"a": 1}\n\n', b"event:ping\ndata:{}\n\n", b"event: \ndata: x\n\n",
    b"event:  two  spaces \ndata:  y\n\n", b"event: a:b\ndata: c\n\n", b"event: error\ndata: \xe4\xb8\xad\n\n",
    b"data: only\n\n", b"event: x\ndata: 1\ndata: 2\n\n", b"event: x\ndata: r\r\n\r\n", b"event: x\n\n",
    b"event: message_stop\ndata: {}\n\nevent: y\ndata: 2\n\n", b"event: x\ndata: cut", b": comment\n\n",
]  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_EVENTS), max_size=10))
def test_an_event_a_chunk_is_read_as_the_sdk_reads_it(chunks: list[bytes]) -> None:
    sdk = [(e.event, e.data) for e in SSEDecoder().iter_bytes(iter(chunks))]
    assert _acted_on(list(_server_sent_events(iter(chunks)))) == _acted_on(sdk)
