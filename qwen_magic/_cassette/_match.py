"""Matching: a request's key (its body normalised), and what differs when the cassette holds no match."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

import httpx2

from ._file import FIRST_FIELDS, IGNORED_FIELDS

if TYPE_CHECKING:
    from ._file import Exchange

# Request bodies here are JSON as a client sent it or a cassette file holds it: any shape,
# so ``Any``; every function checks the types it relies on (``isinstance``) before using them.

# -- normalising requests ------------------------------------------------------------------


def normalise(body: Any) -> Any:
    """The request body as matching sees it (see the package docstring)."""
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


def shorten(value: Any, limit: int = 60) -> str:
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
    return shorten(value)


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
        return shorten(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    given = block.get("source")
    source = given if isinstance(given, dict) else {}
    if kind in ("image", "video") and source.get("type") == "url":
        return f"[{kind} {source.get('url')}]"
    if kind in ("image", "video"):
        return f"[{kind} {source.get('media_type')} sha256 {str(source.get('sha256', ''))[:10]}]"
    if kind == "tool_use":
        return f"[call {block.get('id')} {block.get('name')}({shorten(block.get('input'), 200)})]"
    if kind == "tool_result":
        return f"[result of {block.get('tool_use_id')}: {shorten(block.get('content'), 200)}]"
    return shorten(block, 200)


def _text_of(content: Any) -> str:
    return " ".join(_block_text(b) for b in content) if isinstance(content, list) else shorten(content)


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
            return shorten(_text_of(message.get("content")), 50)
    return ""


def miss_message(name: str, exchanges: list[Exchange], now: tuple[str, str, Any]) -> str:
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
