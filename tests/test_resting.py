"""The stream paints and rests where it has read all that came (``_stream._resting``), in-process,
through the real SDK and HTTP stack against the local server."""

from __future__ import annotations

import time

import anthropic
import pytest
from fake_dashscope import FakeDashScope, Stream

from qwen_magic import _stream
from qwen_magic._answer import Answer
from qwen_magic._errors import QwenError

REQUEST = {"model": "qwen3.6-plus", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}


class View:
    """A view that paints (records the text it has) when the stream is idle, every ``every`` seconds."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.last = every, 0.0
        self.parts: list[str] = []
        self.idles = 0
        self.paints: list[tuple[float, str]] = []

    def start(self, answer: Answer) -> None: ...
    def thinking(self, delta: str) -> None: ...
    def finish(self, answer: Answer) -> None: ...

    def text(self, delta: str) -> None:
        self.parts.append(delta)

    def show(self, bundle: dict[str, str]):  # pragma: no cover - no tool calls here
        return lambda _: None

    def idle(self) -> float:
        self.idles += 1
        now = time.monotonic()
        if now >= self.last + self.every:
            self.last = now
            self.paints.append((now, "".join(self.parts)))
        return max(self.last + self.every - time.monotonic(), 0.0)


def run(server: FakeDashScope, view: object, reply: Stream, client: anthropic.Anthropic | None = None) -> Answer:
    server.queue(reply)
    client = client or anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    answer = Answer(model="qwen3.6-plus")
    _stream.run(client, REQUEST, view, answer)  # type: ignore[arg-type]
    return answer


def test_the_stream_rests_between_paints_and_each_paint_has_all_that_came(server):
    text = "word " * 400  # 250 deltas of 8 characters, 4 ms apart: a second
    view = View()
    answer = run(server, view, Stream(text=text, chunk=8, delay=0.004, clock=True))
    assert answer.text == text
    deltas = len(text) // 8
    # One idle call per read that would wait: far fewer than the deltas, as the stream rested.
    assert 5 <= view.idles <= deltas / 4, (view.idles, deltas)
    request = server.requests[-1]
    # Every paint shows every delta the server had sent 30 ms before it (what waited was read first).
    for at, shown in view.paints[1:]:
        sent = int((at - 0.03 - request.first_delta_at) / 0.004) + 1
        assert len(shown) >= min(sent, deltas) * 8 - 8, (at - request.first_delta_at, len(shown), sent * 8)


def test_the_network_stream_is_unwrapped_after_the_answer_and_after_a_failure(server):
    """The wrapped read serves only its own response: the pooled connection is clean for the next request."""
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    seen: list[object] = []
    real = _stream._resting

    def spy(events, view, message):
        seen.append(events.response.extensions["network_stream"])
        return real(events, view, message)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_stream, "_resting", spy)
        run(server, View(), Stream(text="hello there " * 20, chunk=8, delay=0.001), client)
        with pytest.raises(QwenError):
            run(server, View(), Stream(text="cut short " * 20, chunk=8, delay=0.001, cut_after=5), client)
    assert len(seen) == 2
    for network in seen:
        assert "read" not in vars(network)  # the class's own read again
    # A second answer on the same client reuses the connection and reads normally.
    view = View()
    assert run(server, view, Stream(text="again " * 10, chunk=8), client).text == "again " * 10


def test_a_view_without_idle_reads_as_events_come(server):
    class Plain:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def start(self, answer): ...
        def thinking(self, delta): ...
        def text(self, delta):
            self.parts.append(delta)
        def finish(self, answer): ...
        def show(self, bundle):  # pragma: no cover
            return lambda _: None

    view = Plain()
    assert run(server, view, Stream(text="plain " * 30, chunk=8, delay=0.001)).text == "plain " * 30
    assert "".join(view.parts) == "plain " * 30
