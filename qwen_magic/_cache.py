"""Where prompt-cache markers go, and what caching saved.

DashScope caches only prefixes a request marks with ``cache_control`` (at least 1024
tokens; a write costs 125% of the input price, a hit 10%; the service keeps the last 4
markers). Policies (``QwenMagics.cache``):

- ``off``: no markers, not even explicit ``--cache`` ones.
- ``manual``: only what ``--cache`` marks (a cell's content, or with ``--system`` the
  system prompt).
- ``auto`` (default): the explicit marks, plus the service's recommended pattern: the
  last block of every request (so the next turn reads what this one wrote), the last
  block of the previous turn's prompt (what the previous request wrote: read even when
  more than 20 blocks have been added since, beyond the service's lookback), and the
  system prompt. Automatic marks go only where the prefix they close is estimated at
  1024 tokens or more; the estimate is calibrated against the token counts the service
  reports. At most 4 markers: the request's last block first, then explicit marks
  (newest first), then the previous turn's, then the system prompt.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

MIN_TOKENS = 1024
MAX_MARKERS = 4
MARKER = {"type": "ephemeral"}
MODES = ("auto", "manual", "off")


@dataclass
class TokenEstimator:
    """Characters-per-token, learned from what the service counts."""

    chars_per_token: float = 3.5
    media_tokens: int = 1000

    def block(self, block: dict[str, Any]) -> float:
        """Estimated tokens of one content block."""
        kind = block.get("type")
        if kind in ("image", "video"):
            return self.media_tokens * (2 if kind == "video" else 1)
        if kind == "text":
            chars = len(block.get("text", ""))
        elif kind == "tool_result":
            content = block.get("content", "")
            chars = len(content if isinstance(content, str) else json.dumps(content))
        else:
            chars = len(json.dumps({k: v for k, v in block.items() if k != "cache_control"}, default=str))
        return chars / self.chars_per_token

    def calibrate(self, estimated: float, reported: int) -> None:
        """Move the ratio toward what the service counted for a whole prompt."""
        if estimated <= 0 or reported <= 0:
            return
        observed = self.chars_per_token * estimated / reported
        self.chars_per_token = min(8.0, max(0.5, 0.5 * self.chars_per_token + 0.5 * observed))


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _markable(block: dict[str, Any]) -> bool:
    return block.get("type") not in ("thinking", "redacted_thinking") and not (
        block.get("type") == "text" and not block.get("text")
    )


def _last_markable(blocks: list[dict[str, Any]]) -> int | None:
    for index in range(len(blocks) - 1, -1, -1):
        if _markable(blocks[index]):
            return index
    return None


def mark(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``blocks`` with an explicit marker on the last one that can carry it (``--cache``)."""
    blocks = copy.deepcopy(blocks)
    index = _last_markable(blocks)
    if index is not None:
        blocks[index]["cache_control"] = dict(MARKER)
    return blocks


def place_markers(request: dict[str, Any], mode: str, estimator: TokenEstimator) -> dict[str, Any]:
    """A copy of ``request`` with cache markers placed by ``mode``; the input is not changed.

    Explicit marks arrive as ``cache_control`` already on blocks (``mark``); they are kept
    except in ``off`` mode.
    """
    request = copy.deepcopy(request)
    system = request.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    messages = request["messages"]
    explicit_system = False
    explicit: list[int] = []
    for m, message in enumerate(messages):
        message["content"] = _content(message)
        for block in message["content"]:
            if block.pop("cache_control", None) is not None and message["role"] == "user":
                explicit.append(m)
    for block in system_blocks:
        explicit_system |= block.pop("cache_control", None) is not None
    if mode == "off":
        return _with_system(request, system_blocks, marked=False)

    # Running token totals: the prefix a marker on block (m, b) closes. m == -1 is the system.
    prefix: dict[tuple[int, int], float] = {}
    total = 0.0
    for b, block in enumerate(system_blocks):
        total += estimator.block(block)
        prefix[(-1, b)] = total
    for m, message in enumerate(messages):
        for b, block in enumerate(message["content"]):
            total += estimator.block(block)
            prefix[(m, b)] = total

    def last_of(m: int) -> tuple[int, int] | None:
        if m == -1:
            return (-1, len(system_blocks) - 1) if system_blocks else None
        b = _last_markable(messages[m]["content"])
        return None if b is None else (m, b)

    def long_enough(position: tuple[int, int] | None) -> bool:
        return position is not None and prefix[position] >= MIN_TOKENS

    user_turns = [m for m, message in enumerate(messages) if message["role"] == "user"]
    chosen: list[tuple[int, int]] = []

    def choose(position: tuple[int, int] | None) -> None:
        if position is not None and position not in chosen and len(chosen) < MAX_MARKERS:
            chosen.append(position)

    automatic = mode == "auto"
    if automatic and long_enough(last_of(len(messages) - 1)):
        choose(last_of(len(messages) - 1))
    for m in sorted(set(explicit), reverse=True):
        choose(last_of(m))
    if explicit_system:
        choose(last_of(-1))
    if automatic and len(user_turns) >= 2 and long_enough(last_of(user_turns[-2])):
        choose(last_of(user_turns[-2]))
    if automatic and long_enough(last_of(-1)):
        choose(last_of(-1))

    for m, b in chosen:
        target = system_blocks if m == -1 else messages[m]["content"]
        target[b]["cache_control"] = dict(MARKER)
    return _with_system(request, system_blocks, marked=any(m == -1 for m, _ in chosen))


def _with_system(request: dict[str, Any], blocks: list[dict[str, Any]], *, marked: bool) -> dict[str, Any]:
    # The service needs a list of blocks to carry a marker; a plain string otherwise.
    if not blocks:
        request.pop("system", None)
    elif marked or len(blocks) > 1:
        request["system"] = blocks
    else:
        request["system"] = blocks[0]["text"]
    return request


def estimate_prompt(request: dict[str, Any], estimator: TokenEstimator) -> float:
    """Estimated tokens of a request's whole prompt (system and messages)."""
    system = request.get("system")
    total = 0.0
    if isinstance(system, str):
        total += len(system) / estimator.chars_per_token
    elif system:
        total += sum(estimator.block(block) for block in system)
    for message in request["messages"]:
        total += sum(estimator.block(block) for block in _content(message))
    return total


def equivalents(input_tokens: int, cache_write: int, cache_read: int) -> tuple[float, float]:
    """Input-token equivalents with caching, and what the same prompts cost without it."""
    return input_tokens + 1.25 * cache_write + 0.1 * cache_read, float(input_tokens + cache_write + cache_read)


def cost_text(input_tokens: int, cache_write: int, cache_read: int) -> str:
    """'≈ 1,234 input-token equivalents (62% saved by caching)' — or the plain count."""
    paid, uncached = equivalents(input_tokens, cache_write, cache_read)
    if not cache_write and not cache_read:
        return f"≈ {paid:,.0f} input-token equivalents"
    saved = 1 - paid / uncached if uncached else 0.0
    verb = "saved" if saved >= 0 else "extra"
    return f"≈ {paid:,.0f} input-token equivalents ({abs(saved):.0%} {verb} by caching)"
