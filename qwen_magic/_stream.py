"""Run one request through the SDK, feeding a view as events arrive.

The SDK's ``messages.stream()`` helper rebuilds its message snapshot on every delta
(``text += delta`` on a model attribute copies the whole text each time), and even its
raw iterator builds a pydantic model per event; together that is most of the kernel's
CPU while an answer streams. Here the SDK still sends the request, retries it and raises
its status errors (``messages.create(stream=True)``), but the body's Server-Sent Events
are read with the SDK's public ``Stream.raw_events`` and each event's JSON is applied as
a plain dict: text and thinking kept as lists of deltas, joined once; the few other
events applied the way the SDK's accumulator does; an ``event: error`` raised as the
SDK raises it. An event that is not JSON or not of the expected shape is a
``malformed event stream`` error, never a ``JSONDecodeError`` or ``KeyError``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._answer import Answer, Usage
from ._client import malformed_stream, translate
from ._context_text import sendable
from ._errors import ConnectionFailed, Interrupted
from ._text import mask_key

if TYPE_CHECKING:
    import anthropic

    from ._view import View

# A network chunk that is one whole event, a name and one data line, as a service sends them.
_ONE_EVENT = re.compile(rb"event: ?([^\n\r:]*)\ndata: ?([^\n\r]*)\n\n")


def run(
    client: anthropic.Anthropic,
    request: dict[str, Any],
    view: View,
    answer: Answer,
    *,
    stream: bool = True,
) -> None:
    """Send ``request``, filling ``answer`` and painting it; raise a ``QwenError`` on failure.

    The caller owns ``answer``, so whatever arrived before a failure or an interrupt is
    still there for it to keep in the conversation.
    """
    message = _Message()
    try:
        _run(client, request, view, answer, message, stream=stream)
    except KeyboardInterrupt:  # after the stream: while the answer was painted (``view.finish``)
        shown = answer.complete
        answer.interrupted = True
        answer.finished_at = answer.finished_at or time.monotonic()
        error = Interrupted(_interrupted_painting(answer) if shown else _interrupted(answer))
        answer.error = str(error)
        raise error from None


def _run(
    client: anthropic.Anthropic, request: dict[str, Any], view: View, answer: Answer, message: _Message, *, stream: bool
) -> None:
    view.start(answer)
    # A view that wants the other events (a tool's input as it streams) has ``event()``:
    # it gets each event's JSON as a dict.
    other = getattr(view, "event", None)
    try:
        if stream:
            # Leaving the ``with`` block closes the response: an interrupt cancels the request.
            with client.messages.create(**request, stream=True) as events, _resting(events, view, message):
                answer.request_id = _request_id(events)
                for data in _event_data(client, events):
                    try:
                        kind, piece = message.add(data)
                    except _Malformed as exc:
                        raise malformed_stream(str(exc), str(client.base_url)) from None
                    if piece is not None:
                        _first_token(answer)
                        (view.text if kind == "text" else view.thinking)(piece)
                    elif other is not None:
                        other(data)
            if not message.stopped:
                raise ConnectionFailed(
                    f"The stream from {client.base_url} ended before the answer finished (no message_stop); "
                    "the text so far is kept. Run the cell again."
                )
        else:
            reply = client.messages.create(**request)
            _first_token(answer)
            answer.request_id = getattr(reply, "_request_id", None)
            message.blocks = [block.model_dump(exclude_none=True) for block in reply.content]
            message.usage = Usage.from_sdk(reply.usage)
            message.stop_reason = reply.stop_reason
        message.finish(answer)
        answer.finished_at = time.monotonic()
    except KeyboardInterrupt:
        message.finish(answer, partial=True)
        answer.interrupted = True
        answer.finished_at = time.monotonic()
        error: Exception = Interrupted(_interrupted(answer))
        answer.error = str(error)
        raise error from None
    except Exception as exc:
        message.finish(answer, partial=True)
        answer.finished_at = time.monotonic()
        error = translate(exc, model=request["model"], base_url=str(client.base_url))
        answer.error = str(error)
        raise error from None
    finally:
        view.finish(answer)  # may be interrupted too: ``run`` takes that as any other interrupt


@contextlib.contextmanager
def _resting(events: Any, view: View, message: _Message) -> Iterator[None]:
    """While the body streams, call the view's ``idle()`` each time the HTTP layer is about to
    wait on the socket, and rest as long as it says first (see ``NotebookView.idle``).

    That moment, when every event that came has been applied, is known only to the HTTP
    layer: its network stream (the ``network_stream`` response extension of httpx and
    httpcore) is wrapped for this response, in this thread, and unwrapped after it, before
    the connection can serve another request. A view without ``idle``, or a transport
    without a network stream (a mock, a replayed cassette), reads as events come.
    """
    idle = getattr(view, "idle", None)
    response = getattr(events, "response", None)
    network: Any = (getattr(response, "extensions", None) or {}).get("network_stream")
    read = getattr(network, "read", None)
    own = getattr(network, "__dict__", None)  # where the wrapper goes: none, or one there already, and it reads as is
    if idle is None or read is None or own is None or "read" in own:
        yield
        return
    reader = threading.get_ident()

    def resting_read(max_bytes: int, timeout: float | None = None) -> Any:
        # Not after the answer's end (the body's last bytes are read at once), nor in another thread.
        if not message.stopped and threading.get_ident() == reader and (rest := idle()) > 0:
            time.sleep(rest)
        return read(max_bytes, timeout)

    network.read = resting_read
    try:
        yield
    finally:
        del network.read


def _event_data(client: Any, events: Any) -> Iterator[Any]:
    """The JSON of each event of the response, as the SDK's own iterator filters them."""
    import anthropic

    if getattr(anthropic.Stream, "raw_events", None) is None:  # an SDK without it: its parsed events, as dicts
        for event in events:
            yield event.to_dict()
        return
    for name, data in _server_sent_events(events.response.iter_bytes()):
        if name is None or name == "ping":
            continue
        if name == "error":
            try:
                body: Any = json.loads(data)
                message = f"{body}"
            except ValueError:
                body, message = data, data or f"Error code: {events.response.status_code}"
            make = getattr(client, "_make_status_error", None)
            if make is not None:
                raise make(message, body=body, response=events.response)
            raise anthropic.APIStatusError(message, response=events.response, body=body)
        if data:
            yield json.loads(data)


def _server_sent_events(chunks: Iterator[bytes]) -> Iterator[tuple[str | None, str]]:
    """``(event, data)`` of each Server-Sent Event in the body, as the SDK's ``SSEDecoder`` reads them.

    The SDK's decoder handles every line in Python (a method call and an object per line);
    a service sends one event a network chunk, lines ended by ``\n``, so here each chunk is
    cut at its blank lines and each event's lines read at once. A body with a ``\r`` in it
    is handed, from there on, to the SDK's own decoder, which knows every line ending.
    """
    pending = b""
    for chunk in chunks:
        if not pending and (one := _ONE_EVENT.fullmatch(chunk)) is not None:
            yield one[1].decode("utf-8") or None, one[2].decode("utf-8")  # the common case: one whole event
            continue
        if b"\r" in chunk:
            yield from _sdk_events(itertools.chain([pending, chunk], chunks))
            return
        pending += chunk
        if b"\n\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n\n")
        for block in complete:
            yield from _fields(block.decode("utf-8"))
    # What follows the last blank line is no event (the SDK drops it too).


def _fields(block: str) -> Iterator[tuple[str | None, str]]:
    """The events of ``block``: lines ended by a blank line, which may hold more blank lines only at its start."""
    event: str | None = None
    data: list[str] = []
    for line in block.split("\n"):
        if not line:
            if event is not None or data:
                yield event or None, "\n".join(data)
                event, data = None, []
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if event is not None or data:
        yield event or None, "\n".join(data)  # the SDK takes an empty name for none


def _sdk_events(chunks: Iterator[bytes]) -> Iterator[tuple[str | None, str]]:
    from anthropic._streaming import SSEDecoder

    for sse in SSEDecoder().iter_bytes(chunks):
        yield sse.event, sse.data


def _tool_input(raw: str) -> Any:
    """A tool call's streamed arguments: the JSON object they spell, else their text as it came.

    Strict JSON (no ``NaN``/``Infinity``, nothing cut short): anything else stays text, which
    the tool loop answers with an error result and keeps out of the history it resends.
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return raw
    return value if isinstance(value, dict) else raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Malformed(Exception):
    """An event that is JSON but not of the shape the Messages API streams."""


class _Message:
    """The answer's content blocks and usage, built from raw stream events."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []
        self.parts: dict[int, list[str]] = {}  # text, thinking or tool JSON of each open block
        self.position: dict[int, int] = {}  # a block's index in the stream -> its place in ``blocks``
        self.text: list[str] = []  # every text delta, across blocks
        self.thinking: list[str] = []
        self.usage: Usage | None = None
        self._usage: dict[str, Any] = {}  # the raw counts, as message_start and message_delta report them
        self.stop_reason: str | None = None
        # Whether the service said the answer is over (a stop reason, or message_stop): a
        # body that ends before that is an answer cut short, however cleanly it closed.
        self.stopped = False
        self.call_input = 0  # characters of tool-call input, across blocks

    def add(self, data: Any) -> tuple[str, str | None]:
        """Apply one event's JSON; return ``("text"|"thinking", delta)`` for a delta to paint."""
        try:
            return self._apply(data)
        except _Malformed:
            raise
        except KeyError as exc:
            raise _Malformed(f"a {_kind(data)} event without its {exc.args[0]!r} field") from None
        except (TypeError, AttributeError, IndexError):
            raise _Malformed(f"a {_kind(data)} event with a field of the wrong type") from None

    def _apply(self, data: Any) -> tuple[str, str | None]:
        if not isinstance(data, dict):
            raise _Malformed(f"an event that is not a JSON object: {str(data)[:60]!r}")
        kind = data["type"]
        if kind == "content_block_delta":
            delta = data["delta"]
            dtype = delta["type"]
            parts = self.parts.get(data["index"])
            if parts is None:
                raise _Malformed(f"a delta for content block {data['index']!r}, which was never started")
            if dtype == "text_delta":
                piece = sendable(delta["text"])  # a lone surrogate (JSON ``\ud800``) as U+FFFD
                parts.append(piece)
                self.text.append(piece)
                return "text", piece
            if dtype == "thinking_delta":
                piece = sendable(delta["thinking"])
                parts.append(piece)
                self.thinking.append(piece)
                return "thinking", piece
            if dtype == "input_json_delta":
                parts.append(delta["partial_json"])
                self.call_input += len(delta["partial_json"])
            elif dtype == "signature_delta":
                self.blocks[self.position[data["index"]]]["signature"] = delta["signature"]
            elif dtype == "citations_delta":
                self.blocks[self.position[data["index"]]].setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_start":
            block, index = data["content_block"], data["index"]
            if not isinstance(block, dict) or index in self.position:
                raise _Malformed(f"a second or broken start of content block {index!r}")
            self.position[index] = len(self.blocks)
            self.blocks.append({k: v for k, v in block.items() if v is not None})
            self.parts[index] = []
        elif kind == "content_block_stop":
            self._close(data["index"])
        elif kind == "message_start":
            self.usage = Usage.from_sdk(data["message"].get("usage") or {})
            self._usage = dict(data["message"].get("usage") or {})
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "message_delta":
            self.stop_reason = data["delta"].get("stop_reason")
            self.stopped = self.stopped or self.stop_reason is not None
            # Counts on a message_delta are totals: they overwrite; absent ones keep the start's.
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            self.usage = Usage.from_sdk(self._usage)
        return kind, None

    def _close(self, index: int) -> None:
        """Join a finished block's deltas into it (tool input parsed as the SDK does)."""
        parts = self.parts.pop(index, None)
        if parts is None:
            return
        block = self.blocks[self.position[index]]
        kind = block.get("type")
        if kind == "text":
            block["text"] = block.get("text", "") + "".join(parts)
        elif kind == "thinking":
            block["thinking"] = block.get("thinking", "") + "".join(parts)
        elif parts and "input" in block:
            block["input"] = _tool_input("".join(parts))

    def finish(self, answer: Answer, *, partial: bool = False) -> None:
        """Fill ``answer`` with what arrived: all of it, or (``partial``) the text and thinking so far."""
        if self.text or self.thinking or not self.blocks:
            answer.text, answer.thinking = "".join(self.text), "".join(self.thinking)
        else:  # not streamed: the blocks hold everything
            answer.text = "".join(b.get("text", "") for b in self.blocks if b.get("type") == "text")
            answer.thinking = "".join(b.get("thinking", "") for b in self.blocks if b.get("type") == "thinking")
        answer.text, answer.thinking = mask_key(answer.text), mask_key(answer.thinking)
        answer.call_input = self.call_input
        if partial:
            return
        for index in list(self.parts):  # a stream that ended without closing a block
            self._close(index)
        for block in self.blocks:
            for name in ("text", "thinking"):
                if isinstance(block.get(name), str):
                    block[name] = mask_key(block[name])
        answer.blocks = self.blocks
        answer.usage = self.usage
        answer.stop_reason = self.stop_reason


def _interrupted(answer: Answer) -> str:
    """What Ctrl-C kept: the text so far, or the thinking when the answer had not begun."""
    if answer.text:
        kept = f"the {len(answer.text):,} characters above are kept"
    elif answer.thinking:
        return (
            f"Interrupted while thinking: the request was cancelled; "
            f"{len(answer.thinking):,} characters of thinking kept on screen only: no answer text had arrived, "
            "so the conversation does not keep this turn. Run the cell again."
        )
    elif answer.call_input:
        kept = f"{answer.call_input:,} characters of a tool call's input had arrived, not used"
    else:
        kept = "nothing had arrived"
    return f"Interrupted: the request was cancelled; {kept}."


def _interrupted_painting(answer: Answer) -> str:
    """What Ctrl-C kept when the whole answer had arrived and was being painted."""
    calls = " Its tool calls were not run." if answer.tool_calls else ""
    return f"Interrupted while the answer was shown: its {len(answer.text):,} characters are kept.{calls}"


def _kind(data: Any) -> str:
    kind = data.get("type") if isinstance(data, dict) else None
    return repr(kind)[:40]


def _request_id(events: Any) -> str | None:
    response = getattr(events, "response", None)
    headers = getattr(response, "headers", None) or {}
    return headers.get("request-id") or headers.get("x-request-id")


def _first_token(answer: Answer) -> None:
    if answer.first_token_at is None:
        answer.first_token_at = time.monotonic()
