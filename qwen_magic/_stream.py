"""Run one request through the SDK, feeding a view as events arrive."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._answer import Answer, Usage
from ._client import translate
from ._errors import Interrupted

if TYPE_CHECKING:
    import anthropic

    from ._view import View


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
    # Joined once at the end: appending to a str per delta would copy the answer each time.
    text: list[str] = []
    thinking: list[str] = []
    # A view that wants the other events (a tool's input as it streams) has ``event()``.
    other = getattr(view, "event", None)
    try:
        if stream:
            # Leaving the ``with`` block closes the response: an interrupt cancels the request.
            with client.messages.stream(**request) as events:
                for event in events:
                    kind = event.type
                    if kind == "text":
                        if not text:
                            _first_token(answer)
                        text.append(event.text)
                        view.text(event.text)
                    elif kind == "thinking":
                        _first_token(answer)
                        thinking.append(event.thinking)
                        view.thinking(event.thinking)
                    elif other is not None:
                        other(event)
                message = events.get_final_message()
        else:
            message = client.messages.create(**request)
            _first_token(answer)
            # The view paints a whole answer once, in ``finish``.
            answer.thinking = "".join(b.thinking for b in message.content if b.type == "thinking")
            answer.text = "".join(b.text for b in message.content if b.type == "text")
        if stream:
            answer.text, answer.thinking = "".join(text), "".join(thinking)
        answer.blocks = [block.model_dump(exclude_none=True) for block in message.content]
        answer.usage = Usage.from_sdk(message.usage)
        answer.stop_reason = message.stop_reason
        answer.finished_at = time.monotonic()
    except KeyboardInterrupt:
        answer.text, answer.thinking = "".join(text), "".join(thinking)
        answer.interrupted = True
        answer.finished_at = time.monotonic()
        kept = f"the {len(answer.text):,} characters above are kept" if answer.text else "nothing had arrived"
        error: Exception = Interrupted(f"Interrupted: the request was cancelled; {kept}.")
        answer.error = str(error)
        raise error from None
    except Exception as exc:
        answer.text, answer.thinking = "".join(text), "".join(thinking)
        answer.finished_at = time.monotonic()
        error = translate(exc, model=request["model"], base_url=str(client.base_url))
        answer.error = str(error)
        raise error from None
    finally:
        view.finish(answer)


def _first_token(answer: Answer) -> None:
    if answer.first_token_at is None:
        answer.first_token_at = time.monotonic()
