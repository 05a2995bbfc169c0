"""Cassettes: record every request and its answer once, replay them anywhere without a network.

A cassette is a JSON-lines file: a header line, then one line per HTTP exchange, written
when the exchange ends::

    {"cassette": "qwen-magic", "version": 1, "created": "2026-05-04T09:00:00+00:00", "qwen_magic": "0.1.0"}
    {"method": "POST", "path": "/v1/messages", "status": 200, "end": "complete", "at": 0.41,
     "headers": {"content-type": "text/event-stream"}, "request": {…the normalised request…},
     "body": [{"t": 0.41, "event": "message_start", "data": {…}}, {"t": 0.45, …}, …]}

``at`` is when the response headers came and each body piece's ``t`` when it came, in
seconds from the request. A piece is an SSE event (``event`` and its JSON ``data``, or
``sse`` verbatim when it is not plain JSON), a whole JSON body (``json``, for errors and
``--no-stream`` answers), or ``text``/``base64``. ``end`` is ``complete``; ``closed`` (the
client stopped reading, i.e. an interrupt); or ``error`` (the connection failed: ``error``
holds the exception's type and message; ``status`` is null when no response came at all).
Only headers that steer the SDK are kept (content type, retry hints, request id): never
auth or cookies. The key is masked (``sk-…abcd``) wherever it stands, also in model text
split across stream deltas; a last check refuses to write a line that still holds it.

Both ends are ``httpx2`` transports under the SDK (``http_client=httpx2.Client(transport=…)``),
so its retries, errors and streaming helpers work as they do live. ``Recorder`` tees the
real transport's stream: events reach the notebook as they arrive while being recorded.
``Player`` makes no network call: it serves the recorded body as a streamed response,
sleeping the recorded gaps divided by ``speed`` (0 or infinity: no waiting).

Matching. A request is found by a key: its method, its path from ``/v1/``, and its JSON
body normalised so that what does not change the answer's meaning does not count:

- dropped: ``cache_control`` markers (the automatic cache policy moves them from turn to
  turn), ``metadata``, all headers, the query string and the base URL;
- ``tool_use`` ids, and the ``tool_result`` ids answering them, become ``tool_1``,
  ``tool_2`` … in order of appearance (also where an id is quoted inside text);
- text loses the whitespace at its ends; a string ``content`` or ``system`` counts as one
  text block; inline (base64) media count by their SHA-256, not their bytes;
- in text, what differs from run to run of the same notebook does not count: memory
  addresses (``0x7f3a…`` in reprs) and the kernel's temporary paths (``/tmp/ipykernel_42/
  123.py``, ``<ipython-input-3-…>``, ``/tmp/tmpab12cd34``) — they reach requests through the
  notebook context (``_context``).

Everything else counts: model, system, the messages' text and media, tools, tool_choice,
thinking and its budget, temperature and the other sampling fields, ``max_tokens`` (a
smaller limit may cut the answer) and ``stream`` (a streamed body cannot answer a request
that waits for one JSON document). A request recorded several times replays its answers
in the order they were recorded, then the last one again. A request the cassette does not
hold fails with a message naming the closest recorded request and what differs.

A cassette is a file anyone may edit, so it is read as untrusted input: only a regular
file, line by line with a bound, each exchange checked for the shape replay relies on
when the file is opened, and each recorded answer checked for what the SDK could not take
(wrong types, events out of order) before it is served. Anything else is a short
``UsageError`` or ``CassetteError`` naming the line; a replayed answer reaches the notebook
through the SDK and the same painting (and sanitizing) as a live one.

This module imports the SDK and ``httpx2``: it is imported only once a cassette is used.
"""

from __future__ import annotations

import base64
import codecs
import datetime
import difflib
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from IPython.core.error import UsageError

from ._client import KEY_VARIABLE
from ._errors import QwenError
from ._files import check_target, open_regular, resolve, safe_text, write_failed
from ._text import masked

FORMAT = "qwen-magic"
VERSION = 1
IGNORED_FIELDS = frozenset({"metadata"})
KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-should-retry", "request-id", "x-request-id")
FIRST_FIELDS = ("model", "stream", "max_tokens", "thinking", "temperature")


class CassetteError(QwenError, anthropic.AnthropicError):
    """A request the cassette cannot answer, or an exchange it refuses to record.

    Also an ``AnthropicError``, so the SDK passes it up unwrapped and does not retry it,
    and the cell shows it as a short message, like any other failed request.
    """


# -- normalising requests ------------------------------------------------------------------


def normalise(body: Any) -> Any:
    """The request body as matching sees it (see the module docstring)."""
    if not isinstance(body, dict):
        return body
    ids = _tool_ids(body.get("messages"))
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in IGNORED_FIELDS:
            continue
        if key == "system":
            value = _as_blocks(value)
        elif key == "messages" and isinstance(value, list):
            value = [{**m, "content": _as_blocks(m.get("content"))} if isinstance(m, dict) else m for m in value]
        out[key] = _clean(value, ids)
    out["stream"] = bool(body.get("stream", False))
    return out


def _as_blocks(content: Any) -> Any:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _tool_ids(messages: Any) -> dict[str, str]:
    """Each tool call id (and any id a result answers) → ``tool_N``, in order of appearance."""
    ids: dict[str, str] = {}
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            raw = block.get("id") if block.get("type") == "tool_use" else block.get("tool_use_id")
            if isinstance(raw, str) and raw and raw not in ids:
                ids[raw] = f"tool_{len(ids) + 1}"
    return ids


def _clean(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_clean(item, ids) for item in value]
    if isinstance(value, str):
        # Longest first, so an id that is a prefix of another cannot split it.
        for raw in sorted(ids, key=len, reverse=True):
            if len(raw) >= 8 and raw in value:
                value = value.replace(raw, ids[raw])
        return value
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "cache_control":
            continue
        if key in ("id", "tool_use_id") and isinstance(item, str) and item in ids:
            out[key] = ids[item]
        elif key == "data" and value.get("type") == "base64" and isinstance(item, str):
            out["sha256"] = hashlib.sha256(item.encode("ascii", "replace")).hexdigest()
            out["chars"] = len(item)
        else:
            out[key] = _clean(item, ids)
    if out.get("type") == "text" and isinstance(out.get("text"), str):
        out["text"] = _stable(out["text"].strip())
    if out.get("type") == "tool_result" and isinstance(out.get("content"), str):
        out["content"] = _stable(out["content"].strip())
    return out


_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,16}\b")
_CELL_FILE = re.compile(r"[^\s\"'<>()]*ipykernel_\d+[/\\]\d+\.py|<ipython-input-\d+-[0-9a-f]+>")
_TEMP_DIR = re.compile(r"(?:/tmp|/var/folders/[^/\s]+/[^/\s]+/T|[A-Za-z]:\\[^\s]*?\\Temp)[/\\]tmp[\w-]{6,}")


def _stable(text: str) -> str:
    """``text`` without what changes between two runs of the same notebook (addresses, temp paths)."""
    if "0x" in text:
        text = _ADDRESS.sub("0x…", text)
    if "ipykernel_" in text or "<ipython-input-" in text:
        text = _CELL_FILE.sub("<cell>", text)
    if "tmp" in text:
        text = _TEMP_DIR.sub("<tmp>", text)
    return text


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_key(method: str, path: str, request: Any) -> str:
    """The string a recorded exchange is found by."""
    # Normalised again: a cassette written before a normalisation rule was added still matches.
    return _canonical([method.upper(), path, normalise(request)])


def describe_request(request: httpx2.Request) -> tuple[str, str, Any]:
    """``(method, path from /v1/, normalised body)`` of an outgoing request."""
    raw = request.read()
    path = request.url.path
    if (start := path.find("/v1/")) >= 0:
        path = path[start:]
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = {"sha256": hashlib.sha256(raw).hexdigest()}
    return request.method.upper(), path, normalise(body)


# -- saying what differs -------------------------------------------------------------------


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_value(key: str, value: Any) -> str:
    if value is None:
        return "not set"
    if key == "thinking" and isinstance(value, dict):
        if value.get("type") == "enabled":
            return f"on (budget {value.get('budget_tokens')})"
        if value.get("type") == "disabled":
            return "off"
    if key == "stream":
        return "streamed" if value else "not streamed (--no-stream)"
    return _short(value)


def _excerpts(recorded: str, now: str, width: int = 48) -> tuple[str, str]:
    """The two texts around where they start to differ."""
    same = next((i for i, (a, b) in enumerate(zip(recorded, now, strict=False)) if a != b), min(len(recorded), len(now)))
    start = max(0, same - 16)

    def cut(text: str) -> str:
        piece = text[start : start + width]
        return ("…" if start else "") + piece.replace("\n", "⏎") + ("…" if start + width < len(text) else "")

    return cut(recorded), cut(now)


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return _short(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if kind in ("image", "video") and source.get("type") == "url":
        return f"[{kind} {source.get('url')}]"
    if kind in ("image", "video"):
        return f"[{kind} {source.get('media_type')} sha256 {str(source.get('sha256', ''))[:10]}]"
    if kind == "tool_use":
        return f"[call {block.get('id')} {block.get('name')}({_short(block.get('input'), 200)})]"
    if kind == "tool_result":
        return f"[result of {block.get('tool_use_id')}: {_short(block.get('content'), 200)}]"
    return _short(block, 200)


def _text_of(content: Any) -> str:
    return " ".join(_block_text(b) for b in content) if isinstance(content, list) else _short(content)


def _message_label(messages: list[Any], index: int) -> str:
    role = messages[index].get("role") if isinstance(messages[index], dict) else None
    same = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == role]
    if role == "user":
        return "the last user message" if index == len(messages) - 1 else f"user message {same.index(index) + 1}"
    if role == "assistant":
        return f"answer {same.index(index) + 1} (an assistant message in the history)"
    return f"message {index + 1}"


def differences(recorded: tuple[str, str, Any], now: tuple[str, str, Any], limit: int = 3) -> list[str]:
    """What differs between a recorded request and this one, most telling first."""
    found: list[str] = []
    if recorded[:2] != now[:2]:
        found.append(f"the endpoint differs: recorded {' '.join(recorded[:2])} vs now {' '.join(now[:2])}")
    old, new = recorded[2], now[2]
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [*found, "the request body differs"] if old != new else found
    structural = ("system", "tools", "messages")
    others = sorted((set(old) | set(new)) - set(FIRST_FIELDS) - set(structural))
    for key in (*FIRST_FIELDS, *others):
        if old.get(key) != new.get(key):
            found.append(f"{key} differs: recorded {_field_value(key, old.get(key))} vs now {_field_value(key, new.get(key))}")
    if old.get("system") != new.get("system"):
        if not old.get("system") or not new.get("system"):
            found.append("the system prompt differs: " + ("there is one now" if new.get("system") else "it was set when recorded"))
        else:
            a, b = _excerpts(_text_of(old["system"]), _text_of(new["system"]))
            found.append(f"the system prompt differs: recorded '{a}' vs now '{b}'")
    if old.get("tools") != new.get("tools"):
        names = [[t.get("name") for t in x.get("tools") or [] if isinstance(t, dict)] for x in (old, new)]
        if names[0] != names[1]:
            found.append(f"the tools differ: recorded {names[0] or 'none'} vs now {names[1] or 'none'}")
        else:
            changed = [n for n, a, b in zip(names[1], old["tools"], new["tools"], strict=False) if a != b]
            found.append(f"the definition of tool {', '.join(map(str, changed))} differs")
    found += _message_differences(old.get("messages") or [], new.get("messages") or [])
    return found[:limit]


def _message_differences(old: list[Any], new: list[Any]) -> list[str]:
    for index in range(min(len(old), len(new))):
        if old[index] == new[index]:
            continue
        label = _message_label(new, index)
        a, b = (old[index].get("role"), new[index].get("role")) if isinstance(old[index], dict) else (None, None)
        if a != b:
            text = f"{label}: recorded a {a} message vs now a {b} message"
        else:
            before, after = _text_of(old[index].get("content")), _text_of(new[index].get("content"))
            if before == after:
                text = f"{label} differs (in an image's or video's bytes)"
            else:
                x, y = _excerpts(before, after)
                text = f"{label} differs: recorded '{x}' vs now '{y}'"
        if len(old) != len(new):
            text += f" (and the conversation has {len(new)} messages now, {len(old)} when recorded)"
        return [text]
    if len(old) != len(new):
        return [
            f"the conversation has {len(new)} messages now, {len(old)} when recorded "
            "(a cell before this one was changed, skipped or failed)"
        ]
    return []


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def closest(candidates: list[tuple[str, str, Any]], now: tuple[str, str, Any]) -> int | None:
    """The index of the candidate most like ``now`` (by ``difflib`` on the keys)."""
    if not candidates:
        return None
    target = request_key(*now)
    keys = [request_key(*c) for c in candidates]
    # quick_ratio is linear: it picks a few, the slower exact ratio orders them.
    shortlist = sorted(range(len(keys)), key=lambda i: difflib.SequenceMatcher(None, keys[i], target).quick_ratio())
    return max(shortlist[-5:], key=lambda i: (_similarity(keys[i], target), i))


def _last_user_text(request: Any) -> str:
    messages = request.get("messages") if isinstance(request, dict) else None
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _short(_text_of(message.get("content")), 50)
    return ""


def miss_message(name: str, exchanges: list[dict[str, Any]], now: tuple[str, str, Any]) -> str:
    """The error for a request ``name`` does not hold: the closest recorded one and what differs."""
    if not exchanges:
        return f"replay: {name} holds no recorded requests yet. Record some with `%qwen record {name}` (online)."
    candidates = [(e["method"], e["path"], e.get("request")) for e in exchanges]
    best = closest(candidates, now)
    assert best is not None
    found = differences(candidates[best], now) or ["it differs in something matching ignores only partly"]
    label = _last_user_text(candidates[best][2])
    return (
        f"replay: {name} holds no answer for this request. Closest recorded: request {best + 1} of "
        f"{len(exchanges)}" + (f" ('{label}')" if label else "") + ": " + "; ".join(found) + ". "
        f"Run the cell as it was recorded, record it again (`%qwen record {name}`, online), "
        "or stop replaying (`%qwen replay --stop`)."
    )


# -- the file ------------------------------------------------------------------------------


def header() -> dict[str, Any]:
    from ._version import __version__

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"cassette": FORMAT, "version": VERSION, "created": created, "qwen_magic": __version__}


MAX_LINE = 64 * 1024 * 1024  # bytes of one cassette line (an exchange); this version writes far less
MAX_FILE = 1024 * 1024 * 1024  # bytes of a whole cassette
MAX_TIME = 3600.0  # recorded seconds from a request to a piece of its answer
ENDS = ("complete", "closed", "error")
PIECE_KINDS = ("data", "sse", "json", "base64", "text")


def _blank(path: Path) -> bool:
    size = path.stat().st_size
    return size == 0 or (size < 64 and not path.read_bytes().strip())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """The cassette's lines, numbered, each read with a bound; a ``UsageError`` for a file that is not one."""
    if not path.exists():
        raise UsageError(f"No cassette at {name}: record one first with `%qwen record {name}` (online).")
    file, size = open_regular(path, name)
    with file:
        if size > MAX_FILE:
            raise UsageError(f"{name} is over {MAX_FILE >> 30} GB: not a cassette qwen-magic wrote.")
        number = 0
        while True:
            try:
                raw = file.readline(MAX_LINE + 1)
            except OSError as exc:
                raise UsageError(f"Cannot read the cassette {name}: {safe_text(exc)}.") from None
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE:
                raise UsageError(
                    f"{name}, line {number}: over {MAX_LINE >> 20} MB, longer than any exchange qwen-magic "
                    "records; the file is damaged or not a cassette. Record it again."
                )
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{name}, line {number}: not UTF-8 text, so not a cassette line. Record it again.") from None


def read(path: Path, name: str) -> list[dict[str, Any]]:
    """The exchanges of a cassette file; a ``UsageError`` saying what is wrong if it will not do."""
    return [exchange for _, exchange in _read_numbered(path, name)]


def _read_numbered(path: Path, name: str) -> list[tuple[int, dict[str, Any]]]:
    """``read``, each exchange with its line number."""
    exchanges: list[tuple[int, dict[str, Any]]] = []
    for number, line in _lines(path, name):
        if number > 1 and not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            item = None
        if number == 1:
            if not isinstance(item, dict) or item.get("cassette") != FORMAT:
                raise UsageError(f"{name} is not a qwen-magic cassette (its first line is not a cassette header).")
            version = item.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise UsageError(f"{name}: the cassette header has no valid format version; record it again.")
            if version > VERSION:
                raise UsageError(f"{name} was written by a newer qwen-magic (format {version}); upgrade.")
            continue
        if item is None:
            truncated = "" if line.endswith("\n") else " (the file ends in the middle of it: cut short?)"
            raise UsageError(f"{name}, line {number}: not valid JSON{truncated}. Record the cassette again.")
        problem = _exchange_problem(item)
        if problem is not None:
            raise UsageError(f"{name}, line {number}: not a recorded exchange ({problem}). Record the cassette again.")
        exchanges.append((number, item))
    return exchanges


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIME


def _exchange_problem(item: Any) -> str | None:
    """What makes ``item`` not an exchange this module can replay, or None."""
    if not isinstance(item, dict):
        return f"a JSON {type(item).__name__} where an object belongs"
    for field in ("method", "path"):
        if not isinstance(item.get(field), str) or not item[field]:
            return f"{field} should be text"
    status = item.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599):
        return "status should be an HTTP status code or null"
    if "at" in item and item["at"] is not None and not _number(item["at"]):
        return f"at should be a number of seconds from 0 to {MAX_TIME:g}"
    if item.get("end", "complete") not in ENDS:
        return f"end should be one of {', '.join(ENDS)}"
    headers = item.get("headers", {})
    if headers is not None and not (
        isinstance(headers, dict)
        and all(isinstance(v, str) and v.isascii() and v.isprintable() and k.isascii() for k, v in headers.items())
    ):
        return "headers should map names to printable ASCII text"
    error = item.get("error", {})
    if error is not None and not isinstance(error, dict):
        return "error should be an object"
    body = item.get("body")
    if not isinstance(body, list):
        return "body should be a list of pieces"
    for index, piece in enumerate(body):
        problem = _piece_problem(piece)
        if problem is not None:
            return f"body piece {index + 1}: {problem}"
    return None


def _piece_problem(piece: Any) -> str | None:
    if not isinstance(piece, dict):
        return f"a JSON {type(piece).__name__} where an object belongs"
    if "t" in piece and piece["t"] is not None and not _number(piece["t"]):
        return f"t should be a number of seconds from 0 to {MAX_TIME:g}"
    kinds = [kind for kind in PIECE_KINDS if kind in piece]
    if len(kinds) != 1:
        return f"it should hold one of {', '.join(PIECE_KINDS)}"
    kind = kinds[0]
    if kind == "data" and "event" in piece and not isinstance(piece["event"], str):
        return "event should be text"
    if kind in ("sse", "text", "base64") and not isinstance(piece[kind], str):
        return f"{kind} should be text"
    if kind == "base64":
        try:
            base64.b64decode(piece["base64"], validate=True)
        except ValueError:
            return "base64 is not valid base64"
    return None


def exchange_count(count: int) -> str:
    """'1 recorded exchange', '3 recorded exchanges'."""
    return f"{count} recorded exchange{'s' if count != 1 else ''}"


def speed_text(speed: float) -> str:
    """'at the recorded pace', '10× faster than recorded', 'as fast as possible'."""
    if speed <= 0 or math.isinf(speed):
        return "as fast as possible"
    if speed == 1:
        return "at the recorded pace"
    return f"at {speed:g}× the recorded pace"


# -- recording -----------------------------------------------------------------------------


def _secrets(request: httpx2.Request) -> set[str]:
    """The key, however this request carries it; too short a string could match anything."""
    found = {os.environ.get(KEY_VARIABLE, "").strip(), request.headers.get("x-api-key", "").strip()}
    authorization = request.headers.get("authorization", "").strip()
    found |= {authorization, authorization.partition(" ")[2].strip()}
    return {s for s in found if len(s) >= 8}


def _redact(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):  # "Bearer sk-…" before "sk-…"
            value = value.replace(secret, masked(secret))
        return value
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    return value


_DELTA_FIELDS = ("text", "thinking", "partial_json")


def _mask_deltas(pieces: Any, secrets: set[str]) -> None:
    """Mask each secret in streamed model text, also where it is split across deltas (in place).

    The deltas of one content block are joined, each occurrence found, and the masked form
    put in the delta where the secret begins; the rest of the secret's characters go.
    """
    streams: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for piece in pieces if isinstance(pieces, list) else []:
        data = piece.get("data") if isinstance(piece, dict) else None
        if not isinstance(data, dict) or data.get("type") != "content_block_delta":
            continue
        delta = data.get("delta")
        for name in _DELTA_FIELDS:
            if isinstance(delta, dict) and isinstance(delta.get(name), str):
                streams.setdefault((repr(data.get("index")), name), []).append(delta)
    for (_, name), deltas in streams.items():
        for secret in sorted(secrets, key=len, reverse=True):
            joined = "".join(d[name] for d in deltas)
            if secret in joined:
                _cut_out(deltas, name, joined, secret)


def _cut_out(deltas: list[dict[str, Any]], name: str, joined: str, secret: str) -> None:
    starts, at = [], joined.find(secret)
    while at != -1:
        starts.append(at)
        at = joined.find(secret, at + len(secret))
    offset = 0
    for delta in deltas:
        text, out = delta[name], []
        for position in range(offset, offset + len(text)):
            inside = next((s for s in starts if s <= position < s + len(secret)), None)
            if inside is None:
                out.append(text[position - offset])
            elif inside == position:
                out.append(masked(secret))
        offset += len(text)
        delta[name] = "".join(out)


def _error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)[:500]}


def _proxy_for(url: httpx2.URL) -> str | None:
    """The environment's proxy for ``url`` (the SDK's own client honours these too)."""
    import urllib.request

    if urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


class _Body:
    """A response body as it arrives, cut into the pieces a cassette line holds."""

    def __init__(self, headers: httpx2.Headers) -> None:
        self.sse = headers.get("content-type", "").startswith("text/event-stream")
        encoding = headers.get("content-encoding", "identity").lower()
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "x-gzip", "deflate") else None
        self.binary = encoding not in ("identity", "", "gzip", "x-gzip", "deflate")
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._raw: list[tuple[float, bytes]] = []
        self._text: list[str] = []
        self._buffer = ""
        self._last = 0.0
        self.pieces: list[dict[str, Any]] = []

    def feed(self, chunk: bytes, t: float) -> None:
        self._raw.append((t, chunk))
        self._last = t
        if self.binary:
            return
        try:
            data = self._zlib.decompress(chunk) if self._zlib is not None else chunk
            text = self._decoder.decode(data)
        except (zlib.error, UnicodeDecodeError):
            self.binary = True
            return
        if not self.sse:
            self._text.append(text)
            return
        self._buffer = (self._buffer + text).replace("\r\n", "\n")
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            self.pieces.append(_sse_piece(block, t))

    def finish(self) -> list[dict[str, Any]]:
        if self.binary:
            return [{"t": t, "base64": base64.b64encode(c).decode("ascii")} for t, c in self._raw if c]
        if self.sse:
            return self.pieces + ([{"t": self._last, "sse": self._buffer, "tail": True}] if self._buffer else [])
        text = "".join(self._text)
        if not text:
            return []
        try:
            return [{"t": self._last, "json": json.loads(text)}]
        except ValueError:
            return [{"t": self._last, "text": text}]


def _sse_piece(block: str, t: float) -> dict[str, Any]:
    """One SSE event: its name and parsed JSON data, or verbatim when it is anything else."""
    event, data, other = None, [], False
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event" and colon and event is None:
            event = value
        elif name == "data" and colon:
            data.append(value)
        else:
            other = True
    if data and not other:
        try:
            parsed = json.loads("\n".join(data))
        except ValueError:
            pass
        else:
            return {"t": t, **({"event": event} if event is not None else {}), "data": parsed}
    return {"t": t, "sse": block}


def _since(started: float) -> float:
    return round(time.monotonic() - started, 4)


class Recorder(httpx2.BaseTransport):
    """Sends requests through the real transport and writes each exchange to the cassette."""

    replaying = False

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.name = str(path)
        self.path = resolve(path)
        self._lock = threading.Lock()
        self._transports: dict[str | None, httpx2.HTTPTransport] = {}
        check_target(self.path, self.name, "demo.jsonl")
        if overwrite or not self.path.exists() or _blank(self.path):
            self.count = 0
            self._start_file()
        else:
            try:
                self.count = len(read(self.path, self.name))
            except UsageError as error:  # never append to what is not a sound cassette
                raise UsageError(
                    f"{error} To record into it anyway, starting afresh: `%qwen record {self.name} --overwrite`."
                ) from None
            try:  # appending must work now, not fail later inside a streaming answer
                self.path.open("a", encoding="utf-8").close()
            except OSError as exc:
                raise write_failed(self.name, self.path, exc) from None

    @property
    def footer(self) -> str:
        return f"● recorded to {self.name}"

    def describe(self) -> str:
        return f"recording to {self.name} ({exchange_count(self.count)} in it)"

    def _start_file(self) -> None:
        try:
            self.path.write_text(json.dumps(header(), ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise write_failed(self.name, self.path, exc) from None

    def _transport(self, url: httpx2.URL) -> httpx2.HTTPTransport:
        proxy = _proxy_for(url)
        with self._lock:
            transport = self._transports.get(proxy)
            if transport is None:
                # The SDK's own defaults: its connection limits, and TCP keepalive so a long
                # silent thinking phase does not lose the connection.
                options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
                for name, value in (("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5), ("TCP_KEEPIDLE", 60)):
                    if hasattr(socket, name):
                        options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
                transport = httpx2.HTTPTransport(
                    proxy=proxy, limits=anthropic.DEFAULT_CONNECTION_LIMITS, socket_options=options
                )
                self._transports[proxy] = transport
            return transport

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        secrets = _secrets(request)
        method, path, body = describe_request(request)
        exchange: dict[str, Any] = {"method": method, "path": path}
        # An identity body can be recorded as it arrives (and served as it was).
        request.headers["accept-encoding"] = "identity"
        try:
            response = self._transport(request.url).handle_request(request)
        except Exception as exc:
            exchange.update(status=None, end="error", at=_since(started), error=_error_of(exc), request=body, body=[])
            self.write(exchange, secrets)
            raise
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        tape = _Tee(self, response, {**exchange, "status": response.status_code, "at": _since(started),
                                     "headers": kept, "request": body}, started, secrets)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=tape, extensions=response.extensions
        )

    def write(self, exchange: dict[str, Any], secrets: set[str]) -> None:
        """Append one exchange with the key masked; refuse (and write nothing) if a line still held it."""
        secrets = secrets | {s for s in [os.environ.get(KEY_VARIABLE, "").strip()] if len(s) >= 8}
        exchange = _redact(exchange, secrets)
        _mask_deltas(exchange.get("body"), secrets)
        line = json.dumps(exchange, ensure_ascii=False, separators=(",", ":"))
        if any(secret in line for secret in secrets):
            raise CassetteError(
                f"record: this exchange would have put the API key in {self.name}, so it was not recorded."
            )
        with self._lock:
            try:
                if not self.path.exists() or not self.path.stat().st_size:
                    self._start_file()
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            except (OSError, UsageError) as exc:  # a full disk, a file made read-only meanwhile
                raise CassetteError(
                    f"record: this exchange could not be written to {self.name} ({safe_text(exc)}); "
                    "the answer stays on screen, but the cassette lacks it. Free space or fix the file, then re-run."
                ) from None
            self.count += 1

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


class _Tee(httpx2.SyncByteStream):
    """The real response stream, passed on chunk by chunk while each chunk is recorded."""

    def __init__(
        self, recorder: Recorder, response: httpx2.Response, exchange: dict[str, Any], started: float, secrets: set[str]
    ) -> None:
        self._recorder, self._inner, self._exchange = recorder, response.stream, exchange
        self._started, self._secrets = started, secrets
        self._body = _Body(response.headers)
        if self._body.binary and "content-encoding" in response.headers:
            exchange["headers"]["content-encoding"] = response.headers["content-encoding"]
        self._done = self._broken = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._body.feed(chunk, _since(self._started))
                yield chunk
        except Exception as exc:
            self._finish("error", exc)
            raise
        except BaseException:  # an interrupt: close() records what came
            self._broken = True
            raise
        self._finish("complete")

    def close(self) -> None:
        try:
            if not self._done and not self._broken and self._exchange["status"] >= 400:
                # The SDK closes a response it will retry without reading it; an error body
                # is short and already on its way, so keep it for a faithful replay.
                try:
                    for chunk in self._inner:
                        self._body.feed(chunk, _since(self._started))
                except Exception as exc:
                    self._finish("error", exc)
                else:
                    self._finish("complete")
            self._finish("closed")
        finally:
            self._inner.close()

    def _finish(self, end: str, exc: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._exchange["end"] = end
        if exc is not None:
            self._exchange["error"] = _error_of(exc)
        self._exchange["body"] = self._body.finish()
        self._recorder.write(self._exchange, self._secrets)


# -- replaying -------------------------------------------------------------------------------


class Player(httpx2.BaseTransport):
    """Answers requests from a cassette, at the recorded pace divided by ``speed``; no network."""

    replaying = True

    def __init__(self, path: str | Path, speed: float = 1.0) -> None:
        self.name = str(path)
        self.path = resolve(path)
        self.speed = speed
        numbered = _read_numbered(self.path, self.name)
        self.exchanges = [exchange for _, exchange in numbered]
        self._lines = {id(exchange): number for number, exchange in numbered}
        self._queues: dict[str, list[dict[str, Any]]] = {}
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
        return httpx2.Response(exchange["status"], headers=headers, stream=_Replay(self, exchange, started, request))


_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json",
               "signature_delta": "signature"}
_BLOCK_TEXT = {"text": "text", "thinking": "thinking"}


def _integer(value: Any) -> bool:
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

    model = {
        "message": types.Message,
        "message_start": types.RawMessageStartEvent,
        "message_delta": types.RawMessageDeltaEvent,
        "content_block_start": types.RawContentBlockStartEvent,
        "content_block_delta": types.RawContentBlockDeltaEvent,
        "content_block_stop": types.RawContentBlockStopEvent,
    }.get(kind)
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
        return f"its type {_short(kind, 40)} is not a Messages stream event"
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


def _stream_problem(exchange: dict[str, Any]) -> str | None:
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
            return f"event {number} ({_short(piece.get('event'), 40)}): {problem}"
        kind = piece["data"].get("type")
        if kind == "message_start":
            started, blocks = True, len(piece["data"]["message"]["content"])
        blocks += kind == "content_block_start"
    if complete and not started and not any("sse" in p or "base64" in p or "text" in p for p in pieces):
        return "its end: no message_start came"
    return None


def _replayed_error(exchange: dict[str, Any], request: httpx2.Request) -> Exception:
    """The transport error recorded for this exchange, raised again."""
    error = exchange.get("error") or {}
    kind = getattr(httpx2, str(error.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, httpx2.TransportError)):
        kind = httpx2.ReadError
    return kind(str(error.get("message") or "recorded connection failure"), request=request)


def _piece_bytes(piece: dict[str, Any]) -> bytes:
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

    def __init__(self, player: Player, exchange: dict[str, Any], started: float, request: httpx2.Request) -> None:
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


def open_cassette(mode: str, path: str, *, speed: float = 1.0, overwrite: bool = False) -> Recorder | Player:
    """A ``Recorder`` or ``Player`` for ``path``; a ``UsageError`` when the file will not do."""
    if not path:
        raise UsageError(
            f"cassette_mode is {mode!r} but no cassette file is set: use `%qwen {mode} FILE` "
            "or `%config QwenMagics.cassette = 'FILE'`."
        )
    return Recorder(path, overwrite=overwrite) if mode == "record" else Player(path, speed)
