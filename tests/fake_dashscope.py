"""A local imitation of DashScope's Anthropic-compatible Messages API, served over real HTTP.

The server speaks the protocol the ``anthropic`` SDK expects from
``https://dashscope-intl.aliyuncs.com/apps/anthropic``: ``POST .../v1/messages`` with
``x-api-key`` (or ``Authorization: Bearer``) auth, strict request validation, server-sent
events over ``Transfer-Encoding: chunked``, complete usage in ``message_delta`` and a
simulated explicit prompt cache. It uses the standard library only.

In-process use (pytest, notebooks)::

    with FakeDashScope() as server:
        client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
        server.queue(Stream(text="你好 👋", thinking="hmm", chunk=2, delay=0.01))
        server.queue(Status(429, "rate_limit_error", "Requests rate limit exceeded", {"retry-after-ms": "5"}))
        ...
        server.requests[0].body, server.requests[0].usage, server.cache.entries

Scripting: every valid request takes the next queued reply (``queue()``, one per request,
SDK retries included); when the queue is empty it asks ``responder(body)``, and without a
responder it echoes the last user message (``"Echo: ..."`` plus one ``[image ...]`` /
``[video ...]`` line per media block). Requests that fail auth or validation are answered
by the server itself and do not consume a queued reply. Replies are:

- ``Stream``: a streamed (or, for ``"stream": false``, a single JSON) message with optional
  thinking, text and tool calls, pacing (``delay``, ``first_delay``, ``chunk``), pings, and
  failure modes (``cut_after``: drop the connection mid-body; ``error_after``: an SSE
  ``error`` event after HTTP 200).
- ``Status``: an HTTP error answer in DashScope's JSON error shape.
- ``Hang``: read the request, answer nothing for a while, then close (client timeouts).

Every request is recorded as a ``Recorded`` (timestamps are ``time.monotonic()``, which is
shared by all processes on Linux, so benchmarks may compare them with their own clock).

The prompt cache follows DashScope's explicit cache: ``cache_control`` markers on tools,
system blocks or message blocks; the last 4 markers count; a 20-block lookback; prefixes
under 1024 tokens are never cached; entries are written when a reply completes and live
300 s on a simulated clock (real monotonic time plus ``advance()``), refreshed on each hit.

Standalone: ``python tests/fake_dashscope.py [--port N] [--api-key K] [--delay S] [--chunk N]``
prints its base URL on the first stdout line and serves echo replies until killed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import math
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from types import TracebackType
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_API_KEY",
    "KNOWN_MODELS",
    "CachePlan",
    "FakeDashScope",
    "Hang",
    "PromptCache",
    "Recorded",
    "Reply",
    "Status",
    "Stream",
    "ToolCall",
    "estimate_tokens",
]

DEFAULT_API_KEY = "sk-test-qwen-magic"
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what the Messages API accepts as a tool name
KNOWN_MODELS: frozenset[str] = frozenset(
    {
        "qwen3.6-plus",
        "qwen3.7-plus",
        "qwen3.5-plus",
        "qwen-plus",
        "qwen3.7-max",
        "qwen3-max",
        "qwen3.6-flash",
        "qwen3-vl-plus",
    }
)

IMAGE_TOKENS = 1000
VIDEO_TOKENS = 2000
MAX_INLINE_CHARS = 10 * 1024 * 1024  # limit on a base64 source's encoded length
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

CACHE_TTL = 300.0
CACHE_MIN_TOKENS = 1024
CACHE_LOOKBACK = 20
CACHE_MAX_MARKERS = 4

ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
REASONS = {529: "Overloaded"}


def estimate_tokens(text: str) -> int:
    """Return a deterministic token estimate: a quarter of the UTF-8 size, rounded up."""
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


def _new_id(prefix: str) -> str:
    """Return a fresh identifier such as ``msg_0123...``."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _canonical(value: Any) -> str:
    """Serialize ``value`` canonically (sorted keys, compact, UTF-8 kept)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _strip_cache_control(value: Any) -> Any:
    """Return ``value`` without any ``cache_control`` keys, at any depth."""
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


# --------------------------------------------------------------------------- replies


@dataclass
class ToolCall:
    """One ``tool_use`` block the fake model emits.

    ``input`` may be any JSON value (a model can send a string or a list); ``raw``, when
    set, is streamed as the argument text verbatim (broken JSON), and sent whole as a string.
    """

    name: str
    input: Any
    id: str | None = None
    raw: str | None = None


@dataclass
class Stream:
    """A successful model reply, streamed as SSE (or sent whole for non-streaming requests)."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    chunk: int = 8
    delay: float = 0.0
    first_delay: float = 0.0
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None
    cut_after: int | None = None
    error_after: int | None = None
    error: tuple[str, str] = ("overloaded_error", "Overloaded")
    ping_every: int = 0
    json_chunk: int = 3
    model: str | None = None
    stall_after: int | None = None  # after this many deltas, send nothing for ``stall`` seconds, then close
    stall: float = 0.0
    garble_after: int | None = None  # after this many deltas, send ``garbage`` as an event's data, then end
    garbage: str = '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x'
    clock: bool = False  # delta n leaves at first + n × delay: no drift from the time writes take


@dataclass
class Status:
    """An HTTP error answer: ``{"type":"error","error":{...},"request_id":...}``."""

    code: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Read the request, answer nothing for ``seconds``, then close the connection."""

    seconds: float


Reply: TypeAlias = Stream | Status | Hang


@dataclass
class Recorded:
    """One request the server received, and what became of its reply."""

    path: str  # without the query string, e.g. "/apps/anthropic/v1/messages"
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]  # the parsed JSON body ({} if it was not a JSON object)
    received_at: float  # time.monotonic() when the request had been read
    first_delta_at: float | None = None  # when the first text_delta was written and flushed
    finished_at: float | None = None  # when the reply was complete, cut, refused or abandoned
    disconnected: bool = False  # the client closed the connection before the reply was complete
    usage: dict[str, Any] | None = None  # the final usage reported (None unless the reply completed)
    status: int | None = None  # the HTTP status answered (None for a Hang)
    reply: Reply | None = None  # the scripted, responder or echo reply used (None if refused)


# --------------------------------------------------------------------------- prompt cache


@dataclass
class _Block:
    """One block of the flattened prompt: its canonical form, tokens and cache marker."""

    canonical: str
    tokens: int
    marked: bool


@dataclass
class CachePlan:
    """The cache outcome of one request: figures to report and entries to write on success."""

    total: int = 0
    read: int = 0
    creation: int = 0
    writes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def uncached(self) -> int:
        """Input tokens neither read from nor written to the cache."""
        return self.total - self.read - self.creation


class PromptCache:
    """The simulated DashScope explicit prompt cache (``entries``: key -> (tokens, expires_at))."""

    ttl = CACHE_TTL
    min_tokens = CACHE_MIN_TOKENS
    lookback = CACHE_LOOKBACK
    max_markers = CACHE_MAX_MARKERS

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, float]] = {}
        self.offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the simulated clock: ``time.monotonic()`` plus everything ``advance()``d."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward."""
        with self._lock:
            self.offset += seconds

    def clear(self) -> None:
        """Forget every entry and reset the clock offset."""
        with self._lock:
            self.entries.clear()
            self.offset = 0.0

    def live(self) -> dict[str, tuple[int, float]]:
        """Return the entries that have not expired."""
        now = self.now()
        with self._lock:
            return {key: entry for key, entry in self.entries.items() if entry[1] > now}

    def plan(self, model: str, body: dict[str, Any]) -> CachePlan:
        """Work out reads and creation for a request; refreshes the entry it reads."""
        blocks = list(_flatten_prompt(body))
        keys: list[str] = []
        prefix_tokens: list[int] = []
        digest = hashlib.sha256(_canonical(model).encode("utf-8"))
        running = 0
        for block in blocks:
            digest.update(b"\x1e" + block.canonical.encode("utf-8"))
            keys.append(digest.copy().hexdigest())
            running += block.tokens
            prefix_tokens.append(running)
        plan = CachePlan(total=running)
        markers = [i for i, block in enumerate(blocks) if block.marked][-self.max_markers :]
        if not markers:
            return plan
        now = self.now()
        with self._lock:
            self._purge(now)
            hit: str | None = None
            for i in markers:
                for j in range(i, max(-1, i - self.lookback - 1), -1):
                    entry = self.entries.get(keys[j])
                    if entry is not None:
                        if entry[0] > plan.read:
                            plan.read, hit = entry[0], keys[j]
                        break
            if hit is not None:
                self.entries[hit] = (self.entries[hit][0], now + self.ttl)
        last = markers[-1]
        if prefix_tokens[last] >= self.min_tokens:
            plan.creation = max(0, prefix_tokens[last] - plan.read)
        plan.writes = [(keys[i], prefix_tokens[i]) for i in markers if prefix_tokens[i] >= self.min_tokens]
        return plan

    def commit(self, plan: CachePlan) -> None:
        """Write a completed reply's entries (or refresh them if present)."""
        now = self.now()
        with self._lock:
            self._purge(now)
            for key, tokens in plan.writes:
                self.entries[key] = (tokens, now + self.ttl)

    def _purge(self, now: float) -> None:
        """Drop expired entries (the lock is held)."""
        for key in [key for key, (_, expires) in self.entries.items() if expires <= now]:
            del self.entries[key]


def _block_tokens(block: Any) -> int:
    """Estimate the tokens of one content block's meaningful content."""
    if isinstance(block, str):
        return estimate_tokens(block)
    if not isinstance(block, dict):
        return estimate_tokens(_canonical(block))
    kind = block.get("type")
    if kind == "text":
        return estimate_tokens(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "video":
        return VIDEO_TOKENS
    if kind == "tool_use":
        return estimate_tokens(str(block.get("name", "")) + _canonical(block.get("input", {})))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            return sum(_block_tokens(item) for item in content)
        return estimate_tokens(str(content))
    return estimate_tokens(_canonical(_strip_cache_control(block)))


def _flatten_prompt(body: dict[str, Any]) -> Iterator[_Block]:
    """Yield the prompt as flat blocks: tools, then system blocks, then each message's blocks."""
    for tool in body.get("tools") or []:
        clean = _strip_cache_control(tool)
        yield _Block(_canonical({"tool": clean}), estimate_tokens(_canonical(clean)), _marked(tool))
    system = body.get("system")
    if isinstance(system, str) and system:
        yield _Block(_canonical({"system": {"type": "text", "text": system}}), estimate_tokens(system), False)
    elif isinstance(system, list):
        for block in system:
            yield _Block(_canonical({"system": _strip_cache_control(block)}), _block_tokens(block), _marked(block))
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            clean = _strip_cache_control(block)
            yield _Block(_canonical({role: clean}), _block_tokens(block), _marked(block))


def _marked(block: Any) -> bool:
    """Tell whether a block carries an ephemeral ``cache_control`` marker."""
    return isinstance(block, dict) and isinstance(block.get("cache_control"), dict)


# --------------------------------------------------------------------------- validation


class _Invalid(Exception):
    """A request the service would refuse: carries the HTTP status, error type and message."""

    def __init__(self, code: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.code, self.kind, self.message = code, kind, message


def _bad(message: str) -> _Invalid:
    """Return a 400 ``invalid_request_error``."""
    return _Invalid(400, "invalid_request_error", message)


def _validate(body: Any, known_models: Iterable[str]) -> None:
    """Raise ``_Invalid`` for a request DashScope would refuse."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required")
    if model not in known_models:
        raise _Invalid(404, "not_found_error", f"The model `{model}` does not exist or you do not have access to it.")
    if "max_tokens" not in body:
        raise _bad("max_tokens: Field required")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens: Input should be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream: Input should be a valid boolean")
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature < 2:
            raise _bad(f"temperature: Range of temperature should be [0.0, 2.0), got {temperature!r}")
    _validate_thinking(body.get("thinking"))
    _validate_system(body.get("system"))
    _validate_tools(body.get("tools"))
    _validate_tool_choice(body.get("tool_choice"), body.get("tools"))
    if "messages" not in body:
        raise _bad("messages: Field required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _bad("messages: Input should be a valid list")
    if not messages:
        raise _bad("messages: at least one message is required")
    _validate_messages(messages)


def _validate_thinking(thinking: Any) -> None:
    """Accept ``{"type": "disabled"}`` and ``{"type": "enabled", "budget_tokens": N > 0}``."""
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _bad('thinking: type must be "enabled" or "disabled"')
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            raise _bad("thinking.budget_tokens: Input should be a positive integer")


def _validate_system(system: Any) -> None:
    """Accept a string or a list of non-empty text blocks."""
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system: Input should be a string or a list of text blocks")
    for n, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"system.{n}: Input should be a text block")
        if not block["text"]:
            raise _bad(f"system.{n}: text content blocks must be non-empty")


def _validate_tools(tools: Any) -> None:
    """Accept a list of tools, each with a name and an ``input_schema`` object."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    for n, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools.{n}.name: Field required")
        if not TOOL_NAME.match(tool["name"]):
            raise _bad(f"tools.{n}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if not isinstance(tool.get("input_schema"), dict):
            raise _bad(f"tools.{n}.input_schema: Field required")


def _validate_tool_choice(choice: Any, tools: Any) -> None:
    """Accept ``auto``/``none``; ``any`` and ``tool`` need tools, ``tool`` one of them by name."""
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "none", "tool"):
        raise _bad('tool_choice.type: Input should be "auto", "any", "none" or "tool"')
    if choice["type"] in ("any", "tool") and not tools:
        raise _bad(f"tool_choice: type {choice['type']!r} needs tools")
    if choice["type"] == "tool" and choice.get("name") not in {t.get("name") for t in tools}:
        raise _bad(f"tool_choice.name: {choice.get('name')!r} is not one of the tools")


def _validate_messages(messages: list[Any]) -> None:
    """Check roles, alternation, block types and tool_use/tool_result pairing."""
    previous_role: str | None = None
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages.{n}: Input should be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _bad(f'messages.{n}.role: Input should be "user" or "assistant"')
        if n == 0 and role != "user":
            raise _bad('messages: first message must use the "user" role')
        if role == previous_role:
            raise _bad(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        previous_role = role
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise _bad(f"messages.{n}.content: Input should be a string or a list of content blocks")
        if not content and not (n == len(messages) - 1 and role == "assistant"):
            raise _bad(
                f"messages.{n}: all messages must have non-empty content "
                "except for the optional final assistant message"
            )
        if isinstance(content, list):
            for m, block in enumerate(content):
                _validate_block(block, f"messages.{n}.content.{m}", role)
    for n, message in enumerate(messages):
        following = messages[n + 1] if n + 1 < len(messages) else {}
        answered = {b["tool_use_id"] for b in _blocks_of(following, "tool_result")}
        missing = [b["id"] for b in _blocks_of(message, "tool_use") if b["id"] not in answered]
        if missing:
            raise _bad(
                f"messages.{n + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                "in the next message."
            )
        previous = messages[n - 1] if n > 0 else {}
        asked = {b["id"] for b in _blocks_of(previous, "tool_use")}
        unexpected = [b["tool_use_id"] for b in _blocks_of(message, "tool_result") if b["tool_use_id"] not in asked]
        if unexpected:
            raise _bad(
                f"messages.{n}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(unexpected)}. Each `tool_result` block must have a corresponding "
                "`tool_use` block in the previous message."
            )


def _blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Return a (validated) message's content blocks of one type."""
    content = message.get("content")
    return [b for b in content if b.get("type") == kind] if isinstance(content, list) else []


def _validate_block(block: Any, where: str, role: str) -> None:
    """Check one content block."""
    if not isinstance(block, dict):
        raise _bad(f"{where}: Input should be a content block object")
    kind = block.get("type")
    if kind in ("thinking", "redacted_thinking"):
        raise _bad(f"{where}: `{kind}` blocks are not supported in requests; remove them from the message history")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad(f"{where}.text: Field required")
        if not block["text"]:
            raise _bad(f"{where}: text content blocks must be non-empty")
    elif kind in ("image", "video"):
        if role != "user":
            raise _bad(f"{where}: {kind} blocks are only allowed in user messages")
        _validate_source(block.get("source"), f"{where}.source", kind)
    elif kind == "tool_use":
        if role != "assistant":
            raise _bad(f"{where}: tool_use blocks are only allowed in assistant messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise _bad(f"{where}: tool_use blocks need an id and a name")
        if not TOOL_NAME.match(block["name"]):
            raise _bad(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if not isinstance(block.get("input"), dict):
            raise _bad(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if role != "user":
            raise _bad(f"{where}: tool_result blocks are only allowed in user messages")
        if "is_error" in block:
            raise _bad(f"{where}.is_error: Extra inputs are not permitted (state the error in the result content)")
        if not isinstance(block.get("tool_use_id"), str):
            raise _bad(f"{where}.tool_use_id: Field required")
        content = block.get("content", "")
        if isinstance(content, list):
            for k, item in enumerate(content):
                _validate_block(item, f"{where}.content.{k}", "user")
        elif not isinstance(content, str):
            raise _bad(f"{where}.content: Input should be a string or a list of content blocks")
    else:
        raise _bad(f"{where}.type: unsupported content block type {kind!r}")


def _validate_source(source: Any, where: str, kind: str) -> None:
    """Check an image/video source: ``url`` or ``base64`` (at most 10 MB encoded)."""
    if not isinstance(source, dict):
        raise _bad(f"{where}: Field required")
    source_type = source.get("type")
    if source_type == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _bad(f"{where}.url: Field required")
        return
    if source_type != "base64":
        raise _bad(f'{where}.type: unsupported {kind} source type {source_type!r}; use "url" or "base64"')
    media_type = source.get("media_type")
    if kind == "image" and media_type not in IMAGE_MEDIA_TYPES:
        raise _bad(f"{where}.media_type: Input should be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}")
    if kind == "video" and not (isinstance(media_type, str) and media_type.startswith("video/")):
        raise _bad(f"{where}.media_type: Input should be a video media type such as video/mp4")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise _bad(f"{where}.data: Field required")
    if len(data) > MAX_INLINE_CHARS:
        raise _bad(f"{where}.data: inline {kind} data exceeds the 10 MB limit ({len(data)} bytes)")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.data: invalid base64 data") from None


# --------------------------------------------------------------------------- reply rendering


def _pieces(text: str, size: int) -> list[str]:
    """Split ``text`` into pieces of ``size`` characters (code points, never inside UTF-8)."""
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _json_pieces(text: str, size: int) -> list[str]:
    """Split JSON every ``size`` characters, and also right after each escape's backslash."""
    cuts = set(range(0, len(text), max(1, size)))
    position = 0
    while (position := text.find("\\", position)) != -1:
        cuts.add(position + 1)
        position += 2
    bounds = sorted(cuts | {len(text)})
    return [text[a:b] for a, b in pairwise(bounds)]


def _tool_json(call: ToolCall) -> str:
    """Serialize a tool call's input the way a model streams it."""
    return call.raw if call.raw is not None else json.dumps(call.input, ensure_ascii=False)


def _output_tokens(reply: Stream) -> int:
    """Estimate a reply's output tokens."""
    return (
        estimate_tokens(reply.thinking)
        + estimate_tokens(reply.text)
        + sum(estimate_tokens(_tool_json(call)) for call in reply.tool_calls)
    )


def _echo_text(body: dict[str, Any]) -> str:
    """Describe the last user message: its text blocks and a line per image/video block."""
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), None)
    if last is None:
        return "Echo: "
    content = last.get("content")
    if isinstance(content, str):
        return "Echo: " + content
    texts: list[str] = []
    media: list[str] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind in ("image", "video"):
            source = block.get("source", {})
            if source.get("type") == "url":
                media.append(f"[{kind} url={source.get('url')}]")
            else:
                data = source.get("data", "")
                size = len(data) * 3 // 4 - data[-2:].count("=")
                media.append(f"[{kind} base64 {source.get('media_type')} {size} bytes]")
    return "\n".join(["Echo: " + "\n".join(texts), *media])


# --------------------------------------------------------------------------- HTTP


class _ClientGone(Exception):
    """The client closed the connection (or the server is stopping) while a reply was written."""


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding a reference to its ``FakeDashScope`` and its open connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeDashScope) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about connections that the client (or ``stop()``) closed."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``POST .../v1/messages``."""

    protocol_version = "HTTP/1.1"
    # Each event is flushed as written; Nagle's algorithm would hold small ones for the ACK.
    disable_nagle_algorithm = True
    server_version = "FakeDashScope/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        """Register the connection so ``stop()`` can close it."""
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the server silent."""

    # ---------------------------------------------------------------- entry points

    def do_GET(self) -> None:
        """Answer anything but ``POST .../v1/messages`` with a 404."""
        self._read_body()
        self._send_json(404, self._error_body("not_found_error", f"No route for GET {self.path}"))

    do_PUT = do_DELETE = do_PATCH = do_GET

    def do_POST(self) -> None:
        """Record, validate and answer one Messages request."""
        fake = self.server.fake
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            body = json.loads(raw) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        record = Recorded(path, headers, body if isinstance(body, dict) else {}, time.monotonic())
        fake._record(record)
        try:
            self._answer(record, body)
        finally:
            if record.finished_at is None:
                record.finished_at = time.monotonic()
            fake._finished()

    def _answer(self, record: Recorded, body: Any) -> None:
        """Authenticate, validate, choose the reply and send it."""
        fake = self.server.fake
        if not record.path.rstrip("/").endswith("/v1/messages"):
            return self._fail(record, 404, "not_found_error", f"No route for POST {record.path}")
        if not fake._authorized(record.headers):
            return self._fail(record, 403, "authentication_error", "Invalid API-key provided.")
        if body is None:
            return self._fail(record, 400, "invalid_request_error", "The request body is not valid JSON.")
        try:
            _validate(body, fake.known_models)
        except _Invalid as invalid:
            return self._fail(record, invalid.code, invalid.kind, invalid.message)
        try:
            reply = fake._next_reply(body)
        except Exception as error:  # a broken responder must not leave the client waiting
            traceback.print_exc()
            return self._fail(record, 500, "api_error", f"FakeDashScope responder failed: {error!r}")
        record.reply = reply
        if isinstance(reply, Status):
            record.status = reply.code
            self._send_json(reply.code, self._error_body(reply.type, reply.message), reply.headers, record)
        elif isinstance(reply, Hang):
            self._hang(record, reply)
        elif body.get("stream"):
            self._stream(record, body, reply)
        else:
            self._whole(record, body, reply)
        return None

    # ---------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _error_body(kind: str, message: str) -> dict[str, Any]:
        """Return DashScope's JSON error shape."""
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": str(uuid.uuid4())}

    def _fail(self, record: Recorded, code: int, kind: str, message: str) -> None:
        """Answer the server's own refusal (auth, validation, routing)."""
        record.status = code
        self._send_json(code, self._error_body(kind, message), record=record)

    def _send_json(
        self,
        code: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
        record: Recorded | None = None,
    ) -> bool:
        """Send a complete JSON response (noting ``record.finished_at``); return False if the client had gone."""
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(code, REASONS.get(code))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", payload.get("request_id") or payload.get("id") or str(uuid.uuid4()))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if record is not None:
                record.finished_at = time.monotonic()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def _client_gone(self) -> bool:
        """Tell whether the client has closed its end (or the server is stopping)."""
        if self.server.fake._stopping.is_set():
            return True
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _hang(self, record: Recorded, reply: Hang) -> None:
        """Send nothing for ``reply.seconds`` (or until the client leaves), then close."""
        self.close_connection = True
        deadline = time.monotonic() + reply.seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._client_gone():
                record.disconnected = not self.server.fake._stopping.is_set()
                break
            time.sleep(min(0.02, remaining))
        self._abort()

    def _abort(self) -> None:
        """Close the connection without finishing the response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _usage(self, body: dict[str, Any], reply: Stream) -> tuple[dict[str, Any], CachePlan]:
        """Compute the reply's complete usage and the cache plan behind it."""
        plan = self.server.fake.cache.plan(body["model"], body)
        usage: dict[str, Any] = {
            "input_tokens": plan.uncached,
            "output_tokens": _output_tokens(reply),
            "cache_creation_input_tokens": plan.creation,
            "cache_read_input_tokens": plan.read,
        }
        usage.update(reply.usage or {})
        return usage, plan

    def _whole(self, record: Recorded, body: dict[str, Any], reply: Stream) -> None:
        """Answer a non-streaming request with one Message JSON."""
        usage, plan = self._usage(body, reply)
        deltas = len(_pieces(reply.thinking, reply.chunk)) + len(_pieces(reply.text, reply.chunk))
        time.sleep(reply.first_delay + reply.delay * max(0, deltas - 1))
        if reply.error_after is not None:
            kind, message = reply.error
            record.status = ERROR_STATUS.get(kind, 500)
            self._send_json(record.status, self._error_body(kind, message), record=record)
            return
        content: list[dict[str, Any]] = []
        if reply.thinking:
            content.append({"type": "thinking", "thinking": reply.thinking, "signature": ""})
        if reply.text or not (reply.thinking or reply.tool_calls):
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            tool_id = call.id or _new_id("toolu")
            arguments = call.raw if call.raw is not None else call.input
            content.append({"type": "tool_use", "id": tool_id, "name": call.name, "input": arguments})
        message = {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": reply.model or body["model"],
            "content": content,
            "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": usage,
        }
        record.status = 200
        if reply.cut_after is not None:
            data = json.dumps(message, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
            except OSError:
                record.disconnected = True
            self._abort()
            return
        record.usage = usage
        self.server.fake.cache.commit(plan)
        if not self._send_json(200, message, record=record):
            record.disconnected = True

    # ---------------------------------------------------------------- streaming

    def _write_chunk(self, data: bytes) -> None:
        """Write one HTTP chunk and flush it, or raise ``_ClientGone``."""
        if self._client_gone():
            raise _ClientGone
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as error:
            raise _ClientGone from error

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        """Write one SSE event as its own chunk."""
        data = json.dumps(payload, ensure_ascii=False)
        if not data.isascii():
            try:
                data.encode()
            except UnicodeEncodeError:  # a lone surrogate: sent as a JSON escape, as a service would
                data = json.dumps(payload)
        self._write_chunk(f"event: {name}\ndata: {data}\n\n".encode())

    def _stream(self, record: Recorded, body: dict[str, Any], reply: Stream) -> None:
        """Answer a streaming request with SSE over chunked transfer encoding."""
        usage, plan = self._usage(body, reply)
        record.status = 200
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("request-id", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.flush()
            if self._send_events(record, body, reply, usage):
                if reply.error_after is None:
                    # before the body ends, so a client that has the whole reply sees the cache written
                    record.usage = usage
                    self.server.fake.cache.commit(plan)
                record.finished_at = time.monotonic()
                self._write_chunk(b"")  # the terminating zero-length chunk
        except _ClientGone:
            record.disconnected = not self.server.fake._stopping.is_set()
            self._abort()
        except OSError:
            record.disconnected = True
            self._abort()

    def _send_events(self, record: Recorded, body: dict[str, Any], reply: Stream, usage: dict[str, Any]) -> bool:
        """Write the events; return False if the body was cut (the caller must not finish it)."""
        model = reply.model or body["model"]
        # DashScope's message_start carries the whole prompt count; message_delta has the split.
        prompt = sum(usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        start_usage = {"input_tokens": prompt, "output_tokens": 0}
        self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": _new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        sent = 0
        paced_from = time.monotonic()
        for index, (start, deltas) in enumerate(self._blocks(reply)):
            self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            for delta in deltas:
                if self._interrupt(reply, sent):
                    return reply.cut_after is None and reply.stall_after is None
                if reply.clock and sent:
                    time.sleep(max(0.0, paced_from + sent * reply.delay - time.monotonic()))
                else:
                    time.sleep(reply.first_delay if sent == 0 else reply.delay)
                    paced_from = time.monotonic()
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                sent += 1
                if delta["type"] == "text_delta" and record.first_delta_at is None:
                    record.first_delta_at = time.monotonic()
                if reply.ping_every and sent % reply.ping_every == 0:
                    self._event("ping", {"type": "ping"})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        if self._interrupt(reply, sent):
            return reply.cut_after is None and reply.stall_after is None
        stop_reason = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
        )
        self._event("message_stop", {"type": "message_stop"})
        return True

    @staticmethod
    def _blocks(reply: Stream) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Yield each content block's start payload and its deltas."""
        if reply.thinking:
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(reply.thinking, reply.chunk)]
            deltas.append({"type": "signature_delta", "signature": ""})
            yield {"type": "thinking", "thinking": "", "signature": ""}, deltas
        if reply.text or not (reply.thinking or reply.tool_calls):
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(reply.text, reply.chunk)]
            yield {"type": "text", "text": ""}, deltas
        for call in reply.tool_calls:
            pieces = ["", *_json_pieces(_tool_json(call), reply.json_chunk)]
            start = {"type": "tool_use", "id": call.id or _new_id("toolu"), "name": call.name, "input": {}}
            yield start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]

    def _interrupt(self, reply: Stream, sent: int) -> bool:
        """Cut the connection, stall, garble or send the scripted error once ``sent`` deltas went out."""
        if reply.cut_after is not None and sent >= reply.cut_after:
            self._abort()
            return True
        if reply.stall_after is not None and sent >= reply.stall_after:
            time.sleep(reply.stall)
            self._abort()
            return True
        if reply.garble_after is not None and sent >= reply.garble_after:
            self._write_chunk(f"event: content_block_delta\ndata: {reply.garbage}\n\n".encode())
            return True
        if reply.error_after is not None and sent >= reply.error_after:
            kind, message = reply.error
            self._event("error", {"type": "error", "error": {"type": kind, "message": message}})
            return True
        return False


# --------------------------------------------------------------------------- the server


class FakeDashScope:
    """A scriptable DashScope Anthropic-compatible endpoint on a local port."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        known_models: set[str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.known_models: set[str] = set(KNOWN_MODELS if known_models is None else known_models)
        self.requests: list[Recorded] = []
        self.responder: Callable[[dict[str, Any]], Reply | None] | None = None
        self.cache = PromptCache()
        self.echo_chunk = 8
        self.echo_delay = 0.0
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give the SDK, e.g. ``http://127.0.0.1:40123``."""
        if self._server is None and not self.port:
            raise RuntimeError("FakeDashScope has no port yet: call start() first")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeDashScope:
        """Bind the port and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"FakeDashScope:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():  # wake the accept loop now rather than at its next poll
            try:
                socket.create_connection(server.server_address[:2], timeout=1).close()
            except OSError:
                pass
            stopper.join(0.01)
        server.server_close()
        with server.connections_lock:
            connections = list(server.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeDashScope:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- scripting

    def queue(self, *replies: Reply) -> None:
        """Script replies, consumed one per valid request in order (retries included)."""
        for reply in replies:
            if not isinstance(reply, (Stream, Status, Hang)):
                raise TypeError(f"not a reply (Stream, Status or Hang): {reply!r}")
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """How many queued replies are still unused."""
        with self._lock:
            return len(self._replies)

    def reset(self) -> None:
        """Clear the queue, the recorded requests, the cache and the responder."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.responder = None
        self.cache.clear()

    def advance(self, seconds: float) -> None:
        """Move the simulated cache clock forward (TTL tests)."""
        self.cache.advance(seconds)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no reply is being written (e.g. after a client closed a stream early)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._active} request(s) still being answered after {timeout} s")
                self._idle.wait(remaining)

    @property
    def last(self) -> Recorded:
        """The most recent request."""
        with self._lock:
            return self.requests[-1]

    # ---------------------------------------------------------------- used by the handler

    def _record(self, record: Recorded) -> None:
        """Append a request to ``requests``."""
        with self._lock:
            self.requests.append(record)
            self._active += 1

    def _finished(self) -> None:
        """Note that a reply is done."""
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def _authorized(self, headers: dict[str, str]) -> bool:
        """Accept ``x-api-key: KEY`` or ``Authorization: Bearer KEY``."""
        if headers.get("x-api-key") == self.api_key:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        """Take the next queued reply, else ask the responder, else echo."""
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            responder = self.responder
        reply = responder(body) if responder is not None else None
        if reply is None:
            reply = Stream(text=_echo_text(body), chunk=self.echo_chunk, delay=self.echo_delay)
        if not isinstance(reply, (Stream, Status, Hang)):
            raise TypeError(f"the responder returned {reply!r}, not a Stream, Status or Hang")
        return reply


def main(argv: list[str] | None = None) -> None:
    """Run the server standalone, printing its base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description="A local DashScope Anthropic-compatible server (echo replies).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key clients must send")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed deltas of echo replies")
    parser.add_argument("--chunk", type=int, default=8, help="characters per streamed delta of echo replies")
    args = parser.parse_args(argv)
    server = FakeDashScope(api_key=args.api_key, port=args.port)
    server.echo_delay, server.echo_chunk = args.delay, args.chunk
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
