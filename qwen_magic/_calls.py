"""Calling a tool, and showing the call: results as the model reads them, calls history keeps.

The turn (``_turn.converse``) runs the rounds: while an answer asks for tools, each call
is validated against its schema and run in the kernel (``call_tool``), in order, shown
as a collapsible part of the output (``call_bundle``), and its result is sent back as a
``tool_result`` (``result_content``); the next answer streams on in the same cell.
Failures go back as the result's text (DashScope has no ``is_error``), also for a call
the model got wrong: a name that is not a tool's, or arguments that are not one JSON
object (checked as they stream by ``CheckedClient``, before the SDK's parser can fail
the whole answer). Such a call stays in history with a valid name and ``{}`` arguments,
so the next request is accepted (``make_acceptable``). Results go out with the API key
masked. Every ``tool_use`` gets its ``tool_result`` before any later request, also when
the round limit stops the loop or the user interrupts a tool.

Results: a string as it is; anything else as JSON (pydantic's encoder: dataclasses,
models, enums, dates …) or else its repr; text is cut at ``MAX_RESULT_CHARS``. An image
(PIL image, matplotlib figure or axes, PNG/JPEG bytes) cannot go in a ``tool_result`` on
DashScope (string content only), so the result's text says "image follows" and the image
goes as an image block after the tool results, in the same user message.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._answer import Answer
from ._blocks import calls_of, from_answer
from ._tools import TOOL_NAME, ArgumentMismatch, Toolbox

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import ImageBlockParam, TextBlockParam, ToolResultBlockParam, ToolUseBlockParam

    from ._blocks import Block, ImageMediaType

MAX_RESULT_CHARS = 20_000  # characters of a result's text the model reads
PREVIEW_CHARS = 2_000  # characters of a result shown in the cell
SUMMARY_CHARS = 120  # characters of arguments or result on the one-line summary


# -- calling --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one call produced: the text the model reads, images to send after, and whether it worked."""

    text: str
    images: list[ImageBlockParam] = field(default_factory=list)
    ok: bool = True


def call_tool(toolbox: Toolbox | None, block: ToolUseBlockParam, broken: str | None = None) -> Outcome:
    """Run one ``tool_use`` block; every failure becomes an ``Outcome`` the model can read.

    ``broken`` is the argument text as it streamed when it was not a JSON object.
    """
    # As the model wrote them: the name need not be a string, nor the input an object.
    name: object = block.get("name", "")
    arguments: object = block.get("input")
    made = toolbox.get(name) if toolbox and isinstance(name, str) else None
    if made is None or not isinstance(name, str):
        available = ", ".join(toolbox) if toolbox else "none in this cell"
        shown = _cut(name, 100) if isinstance(name, str) else repr(name)
        return Outcome(f"Error: there is no tool named {shown!r}. Available tools: {available}.", ok=False)
    if broken is not None or not isinstance(arguments, dict):
        sent = broken if broken is not None else json.dumps(arguments, ensure_ascii=False, default=repr)
        return Outcome(
            f"Error: the arguments for {name} must be one JSON object of named arguments, and they were not "
            f"({_one_line(sent, SUMMARY_CHARS)}), so it was not called. Call it again with a JSON object.",
            ok=False,
        )
    try:
        value = made.call(arguments)
    except ArgumentMismatch as exc:
        return Outcome(
            f"Error: the arguments do not match the schema of {name}, so it was not called: {exc}. "
            "Call it again with corrected arguments.",
            ok=False,
        )
    except KeyboardInterrupt:  # the user's: the loop stops (``_turn._run_calls``)
        raise
    except BaseException as exc:  # also sys.exit() or a custom BaseException: neither may fail the cell
        note = " (it tried to exit; the kernel went on)." if isinstance(exc, SystemExit) else ""
        return Outcome(f"Error: {name} raised {_raised(exc)}{note}", ok=False)
    try:
        return result_outcome(value, name)
    except Exception as exc:  # an image that cannot be encoded, say: the tool ran, its result is lost
        return Outcome(f"Error: {name} ran, but its result could not be sent: {_raised(exc)}", ok=False)


def _raised(exc: BaseException) -> str:
    """``Type: message`` of an exception, also when its message cannot be read."""
    try:
        message = _cut(str(exc), PREVIEW_CHARS)
    except Exception as broken:
        message = f"<message unreadable: {type(broken).__name__}>"
    return type(exc).__name__ + (f": {message}" if message else ".")


def result_outcome(value: Any, label: str = "result") -> Outcome:
    """A returned value as text for the model, with images split out."""
    from . import _media

    encoded = _images(value)
    if encoded is None:
        return Outcome(_cut(result_text(value), MAX_RESULT_CHARS))
    images = [base64.b64encode(data).decode("ascii") for data, _ in encoded]
    too_big = [len(data) for data in images if len(data) > _media.MAX_INLINE]
    if too_big:
        return Outcome(
            f"[{len(images)} image(s) returned, not sent: {_media.human_size(max(too_big))} encoded is over "
            f"the {_media.human_size(_media.MAX_INLINE)} limit for one inline image]",
            ok=False,
        )
    blocks: list[ImageBlockParam] = [
        {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        for data, (_, media_type) in zip(images, encoded, strict=True)
    ]
    count = len(blocks)
    plural = "s" if count != 1 else ""
    return Outcome(f"[{count} image{plural}: sent after the tool results, labelled {label!r}]", blocks)


def result_text(value: Any) -> str:
    """A string as it is; else JSON (pydantic's encoder), else the repr."""
    if isinstance(value, str):
        return value
    try:
        from pydantic_core import to_json

        return to_json(value).decode("utf-8")
    except Exception:
        pass
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break the loop
        return f"<{type(value).__name__} object: repr failed: {type(exc).__name__}>"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters cut; the limit is {limit:,}]"


def _images(value: Any) -> list[tuple[bytes, ImageMediaType]] | None:
    """Encoded images for an image or a non-empty list of images; None for anything else."""
    from . import _media

    items = list(value) if isinstance(value, (list, tuple)) else [value]
    encoded = [e for e in (_media.image_bytes(item) for item in items) if e is not None]
    if not items or len(encoded) < len(items):
        return None
    return encoded


def result_content(calls: list[ToolUseBlockParam], outcomes: dict[str, Outcome]) -> list[Block]:
    """The user message answering ``calls``: a ``tool_result`` each, in order, then any images.

    A call without an outcome (the loop stopped before it) is answered as not run.
    """
    content: list[Block] = []
    images: list[TextBlockParam | ImageBlockParam] = []
    for call in calls:
        outcome = outcomes.get(call["id"]) or Outcome("Not run: the tool loop stopped before this call.", ok=False)
        result: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": call["id"], "content": outcome.text or "(empty)"}
        content.append(result)
        for n, image in enumerate(outcome.images, 1):
            label = f"Image {n} of {len(outcome.images)} returned by {call['name']} (tool_use_id {call['id']}):"
            images += [{"type": "text", "text": label}]
            images.append(image)
    return content + images


# -- painting calls ----------------------------------------------------------------------------


def _arguments_text(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return repr(arguments)
    return ", ".join(f"{key}={value!r}" for key, value in arguments.items())


def _one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def call_bundle(call: ToolUseBlockParam, outcome: Outcome | None) -> dict[str, str]:
    """One call as a closed ``<details>``: name, arguments and result on its summary line, all of it inside."""
    from ._markdown import text_html  # markdown-it and nh3 load in the warm-up, not with %load_ext
    signature = f"{call.get('name', '?')}({_one_line(_arguments_text(call.get('input')))})"
    if outcome is None:
        state = "running…"
    else:
        state = ("→ " if outcome.ok else "⚠ ") + _one_line(outcome.text)
    summary = f"🔧 {signature} {state}"
    arguments = json.dumps(call.get("input"), indent=2, ensure_ascii=False, default=repr)
    body = [
        '<div style="font-size:0.9em;border-left:3px solid #ddd;padding-left:0.8em;margin:0.3em 0">',
        '<div style="color:#888">arguments</div>',
        f'<pre style="margin:0.2em 0">{html.escape(arguments)}</pre>',
    ]
    if outcome is not None:
        body += [
            f'<div style="color:#888">{"result" if outcome.ok else "error"} (as the model reads it)</div>',
            f'<pre style="margin:0.2em 0;white-space:pre-wrap">{html.escape(_cut(outcome.text, PREVIEW_CHARS))}</pre>',
        ]
        for image in outcome.images:
            source = image["source"]
            assert source["type"] == "base64"  # result_outcome makes only inline images
            body.append(
                f'<img src="data:{html.escape(source["media_type"])};base64,{html.escape(str(source["data"]))}" '
                'style="max-height:160px;margin:0.2em 0.4em 0 0" alt="image returned by the tool">'
            )
    body.append("</div>")
    return {
        "text/html": (
            '<details class="qwen-tool"><summary style="color:#666;cursor:pointer">'
            f"{text_html(summary)}</summary>{''.join(body)}</details>"
        ),
        "text/plain": summary,
    }


def tool_lines(answer: Answer) -> list[str]:
    """Markdown lines for ``%qwen history``: each call of a tool round and what it returned."""
    results = {b["tool_use_id"]: b.get("content", "") for b in from_answer(answer.tool_results) if b["type"] == "tool_result"}
    lines = []
    for call in calls_of(answer.tool_calls):
        result = results.get(call["id"], "")
        result = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        signature = _one_line(f"{call['name']}({_arguments_text(call.get('input'))})", 200)
        lines.append(f"- 🔧 `{signature}` → {_one_line(result, 200)}")
    return lines


# -- calls the service would not take back ------------------------------------------------------


def sendable(text: str) -> str:
    """A result's text as it may be sent: the API key masked, lone surrogates as ``\\udcff`` escapes.

    A tool that returns the environment must not send the key; text decoded with
    ``surrogateescape`` (file names) cannot be encoded as UTF-8 for the request.
    """
    from ._text import mask_key

    return mask_key(text).encode("utf-8", "backslashreplace").decode("utf-8")


INVALID_NAME = "invalid_tool_name"  # stands in history for a called name the service would refuse


def make_acceptable(call: ToolUseBlockParam, broken: dict[str, str]) -> None:
    """Rewrite a ``tool_use`` block (in place) so that resending it in history is accepted.

    The service refuses a history whose tool call has a name outside ``^[A-Za-z0-9_-]{1,64}$``
    or an input that is not a JSON object. The call was already answered with an error
    result naming what was wrong, so the model still reads what happened.
    """
    name: object = call.get("name")  # as the model wrote it: not necessarily a string
    arguments: object = call.get("input")
    if not (isinstance(name, str) and TOOL_NAME.match(name)):
        call["name"] = INVALID_NAME
    if call.get("id") in broken or not isinstance(arguments, dict):
        call["input"] = {}


def _arguments_problem(text: str) -> bool:
    """Whether streamed argument text is not one JSON object (empty text counts as ``{}``)."""
    if not text.strip():
        return False
    try:
        value = json.loads(text, parse_constant=_refuse_constant, strict=False)
    except (ValueError, RecursionError):
        return True
    return not isinstance(value, dict)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class CheckedClient:
    """The SDK client, with each tool call's arguments checked before the SDK's accumulator reads them.

    The SDK parses a call's arguments while they stream and raises mid-answer on text that
    is not JSON (losing the rest of the answer), and keeps a string or a list as the input.
    Here a call's argument pieces are held back until its block ends, then passed on whole
    when they are a JSON object, or replaced by ``{}`` and noted in ``broken`` (by call id)
    so the loop answers the call with an error. Everything else streams through unchanged.
    """

    def __init__(self, client: anthropic.Anthropic, broken: dict[str, str]) -> None:
        self._client = client
        self.messages = _CheckedMessages(client.messages, broken)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _CheckedMessages:
    def __init__(self, messages: Any, broken: dict[str, str]) -> None:
        self._messages, self._broken = messages, broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._messages, name)

    def create(self, **request: Any) -> Any:
        """A whole answer: non-object inputs are noted and replaced (raw events: checked as they stream)."""
        message = self._messages.create(**request)
        if request.get("stream"):
            return _CheckedEvents(message, self._broken)
        for block in getattr(message, "content", None) or []:
            if getattr(block, "type", None) == "tool_use" and not isinstance(block.input, dict):
                self._broken[block.id] = json.dumps(block.input, ensure_ascii=False, default=repr)
                block.input = {}
        return message

    def stream(self, **request: Any) -> _CheckedStream:
        return _CheckedStream(self._messages, request, self._broken)


class _CheckedStream:
    """``messages.stream(...)``'s context manager, over the raw events with arguments checked."""

    def __init__(self, messages: Any, request: dict[str, Any], broken: dict[str, str]) -> None:
        self._messages, self._request, self._broken = messages, request, broken
        self._stream: Any = None

    def __enter__(self) -> Any:
        from anthropic import NOT_GIVEN
        from anthropic.lib.streaming import MessageStream

        raw = self._messages.create(**self._request, stream=True)
        self._stream = MessageStream(_CheckedEvents(raw, self._broken), output_format=NOT_GIVEN)  # type: ignore[arg-type]
        return self._stream

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()


class _CheckedEvents:
    """Raw stream events; a tool call's ``input_json_delta`` pieces are held back and checked at its stop."""

    def __init__(self, raw: Any, broken: dict[str, str]) -> None:
        self._raw, self._broken = raw, broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> _CheckedEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def __iter__(self) -> Any:
        from anthropic.types import InputJSONDelta, RawContentBlockDeltaEvent

        held: dict[int, tuple[str, list[str]]] = {}
        for event in self._raw:
            kind = getattr(event, "type", None)
            if kind == "content_block_start" and getattr(event.content_block, "type", None) == "tool_use":
                block = event.content_block
                if not isinstance(block.input, dict):  # a start that already carries a non-object
                    self._broken[block.id] = json.dumps(block.input, ensure_ascii=False, default=repr)
                    block.input = {}
                held[event.index] = (block.id, [])
            elif kind == "content_block_delta" and event.index in held:
                if getattr(event.delta, "type", None) == "input_json_delta":
                    held[event.index][1].append(event.delta.partial_json or "")
                    continue
            elif kind == "content_block_stop" and event.index in held:
                call_id, pieces = held.pop(event.index)
                text = "".join(pieces)
                if _arguments_problem(text):
                    self._broken[call_id] = text
                elif text.strip():
                    self._broken.pop(call_id, None)  # a good object replaces what the start held
                    delta = InputJSONDelta(type="input_json_delta", partial_json=text)
                    yield RawContentBlockDeltaEvent(type="content_block_delta", index=event.index, delta=delta)
            yield event
