"""Replaying: a transport that serves recorded exchanges at their pace, each checked before the SDK reads it."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

from .._files import resolve
from ._file import KEPT_HEADERS, MAX_TIME, CassetteError, exchange_count, read_numbered, speed_text
from ._match import describe_request, miss_message, request_key, shorten

if TYPE_CHECKING:
    from typing import TypeGuard

    import pydantic

    from ._file import Exchange, Piece

# -- replaying -------------------------------------------------------------------------------


class Player(httpx2.BaseTransport):
    """Answers requests from a cassette, at the recorded pace divided by ``speed``; no network."""

    replaying = True

    def __init__(self, path: str | Path, speed: float = 1.0) -> None:
        self.name = str(path)
        self.path = resolve(path)
        self.speed = speed
        numbered = read_numbered(self.path, self.name)
        self.exchanges = [exchange for _, exchange in numbered]
        self._lines = {id(exchange): number for number, exchange in numbered}
        self._queues: dict[str, list[Exchange]] = {}
        for exchange in self.exchanges:
            key = request_key(exchange["method"], exchange["path"], exchange.get("request"))
            self._queues.setdefault(key, []).append(exchange)
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def footer(self) -> str:
        return f"▶ replayed from {self.name}"

    def describe(self) -> str:
        return f"replaying {self.name} ({exchange_count(len(self.exchanges))}, {speed_text(self.speed)})"

    def wait(self, started: float, t: float) -> None:
        """Sleep until ``t`` recorded seconds after ``started``, scaled by the current speed."""
        speed = self.speed
        if speed <= 0 or math.isinf(speed):
            return
        delay = started + t / speed - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, MAX_TIME))  # a tiny speed must not overflow sleep(); Ctrl-C still stops it

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        now = describe_request(request)
        key = request_key(*now)
        with self._lock:
            queue = self._queues.get(key)
            if not queue:
                try:
                    message = miss_message(self.name, self.exchanges, now)
                except Exception:  # a recorded request of an odd shape: no closest one to name
                    message = (
                        f"replay: {self.name} holds no answer for this request. Run the cell as it was recorded, "
                        f"record it again (`%qwen record {self.name}`, online), or stop replaying (`%qwen replay --stop`)."
                    )
                raise CassetteError(message)
            served = self._served.get(key, 0)
            self._served[key] = served + 1
            exchange = queue[min(served, len(queue) - 1)]
        damage = _stream_problem(exchange) if exchange.get("status") == 200 else None
        if damage is not None:
            raise CassetteError(
                f"replay: {self.name}, line {self._lines.get(id(exchange), '?')}: the recorded answer is damaged "
                f"at {damage}. Record the cassette again (`%qwen record {self.name} --overwrite`, online)."
            )
        self.wait(started, exchange.get("at") or 0.0)
        if exchange.get("status") is None:
            raise _replayed_error(exchange, request)
        # Only the headers a recording keeps: an edited cassette cannot make the SDK misread the body.
        headers = {
            name: value
            for name, value in (exchange.get("headers") or {}).items()
            if name.lower() in (*KEPT_HEADERS, "content-encoding")
        }
        status = exchange["status"]
        assert status is not None  # a connection failure was raised above
        return httpx2.Response(status, headers=headers, stream=_Replay(self, exchange, started, request))


_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json",
               "signature_delta": "signature"}
_BLOCK_TEXT = {"text": "text", "thinking": "thinking"}


def _integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_TOLERATED = ("missing", "literal_error", "union_tag_invalid", "union_tag_not_found")  # checked by hand, or harmless


def _typed_problem(kind: str, data: Any) -> str | None:
    """A value of the wrong type anywhere in ``data``, by the SDK's own model of a ``kind`` event or message.

    The SDK builds its objects without checking them; a field of the wrong type then breaks
    it later (or floods the cell with serializer warnings). Missing fields and values outside
    a documented set are left to the checks by hand: the service may omit or extend them.
    """
    import pydantic
    from anthropic import types

    models: dict[str, type[pydantic.BaseModel]] = {
        "message": types.Message,
        "message_start": types.RawMessageStartEvent,
        "message_delta": types.RawMessageDeltaEvent,
        "content_block_start": types.RawContentBlockStartEvent,
        "content_block_delta": types.RawContentBlockDeltaEvent,
        "content_block_stop": types.RawContentBlockStopEvent,
    }
    model = models.get(kind)
    if model is None:
        return None
    try:
        model.model_validate(data)
    except pydantic.ValidationError as error:
        for item in error.errors(include_url=False):
            if item["type"] not in _TOLERATED:
                where = ".".join(str(part) for part in item["loc"] if not str(part)[:1].isupper())
                return f"its {where or 'value'} is wrong ({item['msg']})"
    return None


def _event_problem(data: Any, blocks: int, started: bool) -> str | None:
    """What in one recorded stream event the SDK could not take, given the blocks started before it."""
    if not isinstance(data, dict):
        return "it is not an object"
    kind = data.get("type")
    typed = _typed_problem(str(kind), data)
    if typed is not None:
        return typed
    if kind == "message_start":
        message = data.get("message")
        problem = _message_problem(message)
        return None if problem is None else f"its message {problem}"
    if kind not in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"):
        return f"its type {shorten(kind, 40)} is not a Messages stream event"
    if not started:
        return "it comes before message_start"
    if kind == "message_delta":
        delta = data.get("delta")
        if not isinstance(delta, dict) or not (delta.get("stop_reason") is None or isinstance(delta["stop_reason"], str)):
            return "it has no delta, or a stop_reason that is not a string"
        if _usage_problem(data.get("usage")) is not None or not _integer(data["usage"].get("output_tokens")):
            return "its usage has no whole-number output_tokens"
    elif kind == "content_block_start":
        block = data.get("content_block")
        if data.get("index") != blocks or not _integer(data.get("index")):
            return f"its index is not {blocks}, the next block"
        problem = _block_problem(block)
        if problem is not None:
            return f"its content_block {problem}"
    elif kind in ("content_block_delta", "content_block_stop"):
        index = data.get("index")
        if not (_integer(index) and 0 <= index < blocks):
            return "its index names no block started before it"
        delta = data.get("delta")
        if kind == "content_block_delta":
            if not (isinstance(delta, dict) and isinstance(delta.get("type"), str)):
                return "its delta has no type"
            field = _DELTA_TEXT.get(delta["type"])
            if field is not None and not isinstance(delta.get(field), str):
                return f"its {field} is not a string"
    return None


_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _usage_problem(usage: Any) -> str | None:
    if not isinstance(usage, dict):
        return "has no usage"
    if any(not (usage.get(name) is None or _integer(usage[name])) for name in _USAGE_FIELDS):
        return "has token counts that are not whole numbers"
    return None


def _message_problem(message: Any) -> str | None:
    """What in a recorded whole answer (``--no-stream``) the SDK or the cell could not take; or None."""
    if not isinstance(message, dict):
        return "is not an object"
    content = message.get("content")
    if not isinstance(content, list):
        return "has no content list"
    if any(not isinstance(message.get(name, ""), str) for name in ("id", "model", "role", "type")):
        return "has an id, model, role or type that is not a string"
    if not (message.get("stop_reason") is None or isinstance(message["stop_reason"], str)):
        return "has a stop_reason that is not a string"
    problem = _usage_problem(message.get("usage")) or _typed_problem("message", message)
    if problem is not None:
        return problem
    for number, block in enumerate(content, 1):
        problem = _block_problem(block)
        if problem is not None:
            return f"content block {number} {problem}"
    return None


def _block_problem(block: Any) -> str | None:
    """What in a content block the SDK or the cell could not take; or None."""
    if not (isinstance(block, dict) and isinstance(block.get("type"), str)):
        return "has no type"
    field = _BLOCK_TEXT.get(block["type"])
    if field is not None and not isinstance(block.get(field), str):
        return f"has no {field} string"
    if block["type"] == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
        return "is a tool call with no id or name"
    return None


def _stream_problem(exchange: Exchange) -> str | None:
    """What in a recorded answer (status 200) the SDK or the cell could not take, said in words; or None."""
    request, pieces = exchange.get("request"), exchange.get("body") or []
    streamed = isinstance(request, dict) and request.get("stream") is True
    content_type = str((exchange.get("headers") or {}).get("content-type", "")).lower()
    if any("data" in p or "sse" in p for p in pieces) and not (streamed and content_type.startswith("text/event-stream")):
        return "its events, which only a streamed request served as text/event-stream can carry"
    if any("json" in p for p in pieces) and (streamed or "json" not in content_type):
        return "its whole JSON answer, which only a --no-stream request served as JSON can carry"
    complete = exchange.get("end", "complete") == "complete"
    if not streamed:
        whole = [p["json"] for p in pieces if "json" in p]
        if complete and not whole and not any("text" in p or "base64" in p for p in pieces):
            return "the whole answer: there is none"
        problem = next((_message_problem(m) for m in whole if _message_problem(m) is not None), None)
        return None if problem is None else f"the whole answer, which {problem}"
    blocks, started = 0, False
    for number, piece in enumerate(pieces, 1):
        if "data" not in piece or piece.get("event") in (None, "ping", "error"):
            continue
        problem = _event_problem(piece["data"], blocks, started)
        if problem is not None:
            return f"event {number} ({shorten(piece.get('event'), 40)}): {problem}"
        kind = piece["data"].get("type")
        if kind == "message_start":
            started, blocks = True, len(piece["data"]["message"]["content"])
        blocks += kind == "content_block_start"
    if complete and not started and not any("sse" in p or "base64" in p or "text" in p for p in pieces):
        return "its end: no message_start came"
    return None


def _replayed_error(exchange: Exchange, request: httpx2.Request) -> Exception:
    """The transport error recorded for this exchange, raised again."""
    error = exchange.get("error") or {}
    kind = getattr(httpx2, str(error.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, httpx2.TransportError)):
        kind = httpx2.ReadError
    return kind(str(error.get("message") or "recorded connection failure"), request=request)


def _piece_bytes(piece: Piece) -> bytes:
    def dump(data: Any) -> str:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    if "data" in piece:
        event = f"event: {piece['event']}\n" if "event" in piece else ""
        return f"{event}data: {dump(piece['data'])}\n\n".encode(errors="replace")  # lone surrogates → ?
    if "sse" in piece:
        return (piece["sse"] + ("" if piece.get("tail") else "\n\n")).encode(errors="replace")
    if "json" in piece:
        return dump(piece["json"]).encode(errors="replace")
    if "base64" in piece:
        return base64.b64decode(piece["base64"])
    return str(piece.get("text", "")).encode(errors="replace")


class _Replay(httpx2.SyncByteStream):
    """A recorded body, piece by piece, at the player's pace."""

    def __init__(self, player: Player, exchange: Exchange, started: float, request: httpx2.Request) -> None:
        self._player, self._exchange, self._started, self._request = player, exchange, started, request

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._exchange.get("body") or []:
            self._player.wait(self._started, piece.get("t") or 0.0)
            yield _piece_bytes(piece)
        end = self._exchange.get("end")
        if end == "closed":
            raise httpx2.ReadError(
                "the recording stops here: this answer was interrupted while it was recorded", request=self._request
            )
        if end == "error":
            raise _replayed_error(self._exchange, self._request)
