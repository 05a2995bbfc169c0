"""Run one request through the SDK, feeding a view as events arrive.

The SDK's ``messages.stream()`` helper rebuilds its message snapshot on every delta
(``text += delta`` on a model attribute copies the whole text each time), so its CPU grows
faster than the answer. Here the raw events of ``messages.create(stream=True)`` are read
instead: the SDK still sends the request, retries it, raises its errors (an ``event:
error`` included) and parses each event; ``_Message`` keeps the text and thinking as lists
of deltas, joined once, and applies the few other events the way the SDK's accumulator does.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ._answer import Answer, Usage
from ._client import malformed_stream, translate
from ._errors import Interrupted
from ._text import mask_key

if TYPE_CHECKING:
    import anthropic

    from ._view import View

# A lone surrogate cannot be encoded as UTF-8: a delta holding one (a JSON ``\ud800``
# escape) would break the message that paints it. It is shown as U+FFFD instead.
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    view.start(answer)
    message = _Message()
    try:
        if stream:
            # Leaving the ``with`` block closes the response: an interrupt cancels the request.
            with client.messages.create(**request, stream=True) as events:
                answer.request_id = _request_id(events)
                for event in events:
                    try:
                        kind, piece = message.add(event)
                    except (AttributeError, KeyError, IndexError, TypeError) as exc:
                        raise malformed_stream(_shape(event, exc), str(client.base_url)) from None
                    if piece is not None:
                        _first_token(answer)
                        (view.text if kind == "text" else view.thinking)(piece)
        else:
            reply = client.messages.create(**request)
            _first_token(answer)
            answer.request_id = getattr(reply, "_request_id", None)
            message.blocks = [block.model_dump(exclude_none=True) for block in reply.content]
            message.usage, message.stop_reason = reply.usage, reply.stop_reason
        message.finish(answer)
        answer.finished_at = time.monotonic()
    except KeyboardInterrupt:
        message.finish(answer, partial=True)
        answer.interrupted = True
        answer.finished_at = time.monotonic()
        error: Exception = Interrupted(_interrupted(message, answer))
        answer.error = str(error)
        raise error from None
    except Exception as exc:
        message.finish(answer, partial=True)
        answer.finished_at = time.monotonic()
        error = translate(exc, model=request["model"], base_url=str(client.base_url))
        answer.error = str(error)
        raise error from None
    finally:
        view.finish(answer)


class _Message:
    """The answer's content blocks and usage, built from raw stream events."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []
        self.parts: dict[int, list[str]] = {}  # text, thinking or tool JSON of each open block
        self.text: list[str] = []  # every text delta, across blocks
        self.thinking: list[str] = []
        self.usage: Any = None
        self.stop_reason: str | None = None

    def add(self, event: Any) -> tuple[str, str | None]:
        """Apply one raw event; return ``("text"|"thinking", delta)`` for a delta to paint."""
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            dtype = delta.type
            if dtype == "text_delta":
                piece = _encodable(delta.text)
                self.parts[event.index].append(piece)
                self.text.append(piece)
                return "text", piece
            if dtype == "thinking_delta":
                piece = _encodable(delta.thinking)
                self.parts[event.index].append(piece)
                self.thinking.append(piece)
                return "thinking", piece
            if dtype == "input_json_delta":
                self.parts[event.index].append(delta.partial_json)
            elif dtype == "signature_delta":
                self.blocks[event.index]["signature"] = delta.signature
            elif dtype == "citations_delta":
                self.blocks[event.index].setdefault("citations", []).append(delta.citation.model_dump(exclude_none=True))
        elif kind == "content_block_start":
            self.blocks.append(event.content_block.model_dump(exclude_none=True))
            self.parts[event.index] = []
        elif kind == "content_block_stop":
            self._close(event.index)
        elif kind == "message_start":
            self.usage = event.message.usage
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason
            # Counts on a message_delta are totals: they overwrite; absent ones keep the start's.
            if self.usage is None:
                self.usage = event.usage
            else:
                for name in ("output_tokens", "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                    value = getattr(event.usage, name, None)
                    if value is not None:
                        setattr(self.usage, name, value)
        return kind, None

    def _close(self, index: int) -> None:
        """Join a finished block's deltas into it (tool input parsed as the SDK does)."""
        parts = self.parts.pop(index, None)
        if parts is None:
            return
        block = self.blocks[index]
        kind = block.get("type")
        if kind == "text":
            block["text"] = block.get("text", "") + "".join(parts)
        elif kind == "thinking":
            block["thinking"] = block.get("thinking", "") + "".join(parts)
        elif parts and "input" in block:
            from jiter import from_json

            raw = "".join(parts)
            try:
                block["input"] = from_json(raw.encode(), partial_mode=True)
            except ValueError:
                # Not a JSON object: the tool loop answers the call with an error the model can read.
                block["input"] = raw

    def finish(self, answer: Answer, *, partial: bool = False) -> None:
        """Fill ``answer`` with what arrived: all of it, or (``partial``) the text and thinking so far."""
        if self.text or self.thinking or not self.blocks:
            answer.text, answer.thinking = "".join(self.text), "".join(self.thinking)
        else:  # not streamed: the blocks hold everything
            answer.text = "".join(b.get("text", "") for b in self.blocks if b.get("type") == "text")
            answer.thinking = "".join(b.get("thinking", "") for b in self.blocks if b.get("type") == "thinking")
        answer.text, answer.thinking = mask_key(answer.text), mask_key(answer.thinking)
        if partial:
            return
        for index in list(self.parts):  # a stream that ended without closing a block
            self._close(index)
        for block in self.blocks:
            for name in ("text", "thinking"):
                if isinstance(block.get(name), str):
                    block[name] = mask_key(block[name])
        answer.blocks = self.blocks
        answer.usage = Usage.from_sdk(self.usage) if self.usage is not None else None
        answer.stop_reason = self.stop_reason


def _interrupted(message: _Message, answer: Answer) -> str:
    """What Ctrl-C kept: the text so far, or the thinking when the answer had not begun."""
    if answer.text:
        kept = f"the {len(answer.text):,} characters above are kept"
    elif answer.thinking:
        return (
            f"Interrupted while thinking: the request was cancelled; "
            f"{len(answer.thinking):,} characters of thinking kept (no answer text had arrived)."
        )
    else:
        kept = "nothing had arrived"
    return f"Interrupted: the request was cancelled; {kept}."


def _shape(event: Any, exc: BaseException) -> str:
    """What was wrong with a raw event the accumulator could not apply, in words."""
    kind = getattr(event, "type", None)
    if isinstance(exc, AttributeError):
        what = f"without its {exc.name!r} field" if getattr(exc, "name", None) else "missing a field"
    elif isinstance(exc, (KeyError, IndexError)):
        what = "for a content block that was never started"
    else:
        what = "with a field of the wrong type"
    return f"a {kind!r} event {what}"[:200]


def _encodable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _request_id(events: Any) -> str | None:
    response = getattr(events, "response", None)
    headers = getattr(response, "headers", None) or {}
    return headers.get("request-id") or headers.get("x-request-id")


def _first_token(answer: Answer) -> None:
    if answer.first_token_at is None:
        answer.first_token_at = time.monotonic()
