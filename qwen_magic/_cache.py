"""Where prompt-cache markers go, when old inline media leave the history, and what caching saved.

DashScope caches only prefixes a request marks with ``cache_control`` (at least 1024
tokens; a write costs 125% of the input price, a hit 10%; the service keeps the last 4
markers and looks back 20 blocks from each; an entry lives 5 minutes, refreshed on a hit).

Markers (``QwenMagics.cache``):

- ``off``: no markers, not even explicit ``--cache`` ones.
- ``manual``: only what ``--cache`` marks (a cell's content, or with ``--system`` the
  system prompt).
- ``auto`` (default): the explicit marks, plus: the last block of every request (the next
  turn reads it), the last block of the previous turn's prompt (what the previous request
  wrote: read even when more than 20 blocks have been added since, beyond the lookback),
  the *media boundary* (below) and the system prompt. Automatic marks go only where the
  prefix they close is estimated at 1024 tokens or more; the estimate is calibrated
  against the token counts the service reports. At most 4: the last block, explicit marks
  (newest first), the previous turn's, the media boundary, the system prompt.

Markers are placed on copies of the few messages and blocks that carry them; every other
message of the request is the history's own object, shared and never changed. The
history's messages are built once per turn (``PrefixIndex``, with running sizes for the
1024-token test), so a cell's own work does not grow with the length of the chat.

Old inline media (``keep_media_turns`` = K, ``media_floor``). Resending an image costs
its tokens (≈1,000 for a plot; 1 MB of base64 for a photo) with every request. Dropping
it (a one-line placeholder instead) changes the prompt at that image, so everything after
it, S tokens, is written again: 1.25 × S instead of 0.1 × S, once. Kept in a warm cache
the same image costs 0.1 × 1,000 = 100 token-equivalents a request. Dropping pays back
only after 1.15 × S / 100 requests; S is at least the K newest turns (with images,
≥ 3 × 1,250 tokens), so ≥ 43 requests — longer than anyone waits while images pile up.
Dropping one image a turn (the old rule) paid the 1.15 × S rewrite *every* turn, which is
why a chat of inline plots cost more with caching than without. So:

- the newest K turns always resend their inline media;
- older inline media stay while the cache is warm, until K more turns with inline media
  have piled up beyond the newest K, or their base64 passes 4 MiB; then all of them are
  replaced at once (one rewrite per K image turns instead of one per turn). A request
  carries at most 2K + 1 turns of inline media (its own, the K newest, K waiting), under
  twice the K + 1 of dropping each at once, and never more than 4 MiB beyond them: with
  1 MB photos at the default K = 3, 7 images, 9.4 MB instead of 5.4 MB;
- when the cache has gone cold (more than 5 minutes since the conversation's last
  request), the whole prompt is written afresh anyway: old media leave then, for free;
- K = 0 keeps inline media with their own cell only, as before.

The media boundary marker closes the prefix before the first inline item that a drop will
replace: it stays byte-stable between drops, each request refreshes it, and the request
that drops reads it instead of rewriting from the system prompt.
"""

from __future__ import annotations

import bisect
import copy
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ._media import is_inline

if TYPE_CHECKING:
    from anthropic.types import CacheControlEphemeralParam, TextBlockParam

    from ._blocks import Block, Message, Request

MIN_TOKENS = 1024
MAX_MARKERS = 4
MARKER: CacheControlEphemeralParam = {"type": "ephemeral"}
MODES = ("auto", "manual", "off")
TTL = 300.0  # seconds a cache entry lives without a hit
WAITING_CHARS = 4 * 1024 * 1024  # base64 of old inline media that may wait for a batch

Position = tuple[int, int]  # (message index, block index); message -1 is the system prompt


@dataclass
class TokenEstimator:
    """Characters-per-token, learned from what the service counts."""

    chars_per_token: float = 3.5
    media_tokens: int = 1000

    def block(self, block: Block) -> float:
        """Estimated tokens of one content block."""
        chars, media = measure(block)
        return chars / self.chars_per_token + media * self.media_tokens

    def tokens(self, chars: int, media: int) -> float:
        """Estimated tokens of ``chars`` characters and ``media`` image units."""
        return chars / self.chars_per_token + media * self.media_tokens

    def calibrate(self, estimated: float, reported: int) -> None:
        """Move the ratio toward what the service counted for a whole prompt."""
        if estimated <= 0 or reported <= 0:
            return
        observed = self.chars_per_token * estimated / reported
        self.chars_per_token = min(8.0, max(0.5, 0.5 * self.chars_per_token + 0.5 * observed))


def measure(block: Block) -> tuple[int, int]:
    """A block's size for the estimate: characters of text, and image units (a video is 2)."""
    kind = block["type"]
    if kind == "image":
        return 0, 1
    if kind == "video":
        return 0, 2
    if block["type"] == "text":
        return len(block.get("text", "")), 0
    if block["type"] == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return len(content), 0
        # The SDK allows more kinds of block in a result than are ever put there: measured alike.
        sizes = [measure(cast("Block", item)) for item in content if isinstance(item, dict)]
        return sum(c for c, _ in sizes), sum(m for _, m in sizes)
    return len(json.dumps({k: v for k, v in block.items() if k != "cache_control"}, default=str)), 0


def _content(message: Message) -> list[Block]:
    # A request built elsewhere (a test, a cassette) may give a message as plain text.
    content = cast("list[Block] | str", message["content"])
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def with_marker(block: Block) -> Block:
    """A copy of ``block`` carrying a cache marker."""
    return cast("Block", {**block, "cache_control": MARKER.copy()})


def without_marker(block: Block) -> Block:
    """A copy of ``block`` without its cache marker."""
    return cast("Block", {k: v for k, v in block.items() if k != "cache_control"})


def _markable(block: Block) -> bool:
    return block["type"] not in ("thinking", "redacted_thinking") and not (
        block["type"] == "text" and not block.get("text")
    )


def _last_markable(blocks: list[Block], before: int | None = None) -> int | None:
    for index in range((len(blocks) if before is None else before) - 1, -1, -1):
        if _markable(blocks[index]):
            return index
    return None


def mark(blocks: list[Block]) -> list[Block]:
    """``blocks`` with an explicit marker on the last one that can carry it (``--cache``)."""
    blocks = copy.deepcopy(blocks)  # a deep copy keeps a ``MediaBlock``'s label
    index = _last_markable(blocks)
    if index is not None:
        block = blocks[index]
        if block["type"] != "thinking" and block["type"] != "redacted_thinking":  # always (for mypy: those have no marker)
            block["cache_control"] = MARKER.copy()
    return blocks


class PrefixIndex:
    """Messages with running sizes, explicit marks and inline media positions; appended to.

    The conversation keeps one for its history, so the sizes the 1024-token test needs and
    the positions the policies look for are computed once per message, not once per cell.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._chars = [0]  # characters before message m
        self._media = [0]
        self.explicit: list[Position] = []  # user blocks carrying a --cache mark
        self.inline: list[Position] = []  # base64 images and videos
        self.calls: list[tuple[int, str]] = []  # (message, tool name) of every tool_use

    def append(self, message: Message) -> None:
        """Add a message at the end."""
        m = len(self.messages)
        chars = media = 0
        for b, block in enumerate(_content(message)):
            c, u = measure(block)
            chars, media = chars + c, media + u
            if "cache_control" in block and message["role"] == "user":
                self.explicit.append((m, b))
            if is_inline(block):
                self.inline.append((m, b))
            if block["type"] == "tool_use":
                self.calls.append((m, block.get("name", "")))
        self.messages.append(message)
        self._chars.append(self._chars[-1] + chars)
        self._media.append(self._media[-1] + media)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` messages."""
        del self.messages[length:], self._chars[length + 1 :], self._media[length + 1 :]
        del self.explicit[bisect.bisect_left(self.explicit, (length, 0)) :]
        del self.inline[bisect.bisect_left(self.inline, (length, 0)) :]
        del self.calls[bisect.bisect_left(self.calls, (length, "")) :]

    def called(self) -> list[str]:
        """The tools called in these messages, each once, in order of first call."""
        return list(dict.fromkeys(name for _, name in self.calls))

    def before(self, m: int) -> tuple[int, int]:
        """Characters and image units of the messages before ``m``."""
        return self._chars[m], self._media[m]

    def first_inline(self, start: int) -> Position | None:
        """The first inline media block in message ``start`` or later."""
        i = bisect.bisect_left(self.inline, (start, 0))
        return self.inline[i] if i < len(self.inline) else None


def media_floor(
    floor: int,
    media_turns: list[int],
    turns: int,
    keep: int | None,
    idle: float | None,
    sizes: list[int] | None = None,
) -> int:
    """The first history turn whose inline media is still resent, for the next request.

    ``media_turns``: the (sorted) turns carrying inline media; ``sizes``: the running total
    of their base64 characters (``sizes[j]``: the first j such turns; None: not limited);
    ``turns``: how many the history holds; ``idle``: seconds since the conversation's last
    request (None: never sent). See the module docstring for why old media leave in batches.
    """
    if keep is None:
        return 0
    newest = max(0, turns - keep)  # turns before this one are old
    if newest <= floor:
        return floor
    first, last = bisect.bisect_left(media_turns, floor), bisect.bisect_left(media_turns, newest)
    waiting = last - first
    heavy = sizes is not None and sizes[last] - sizes[first] > WAITING_CHARS
    cold = idle is not None and idle >= TTL
    if waiting > keep or (waiting and (heavy or cold)):
        return newest
    return floor


def place_markers(
    request: Request,
    mode: str,
    estimator: TokenEstimator,
    *,
    index: PrefixIndex | None = None,
    stable: Position | None = None,
) -> Request:
    """``request`` with cache markers placed by ``mode``; the input and its messages are not changed.

    Explicit marks arrive as ``cache_control`` on user blocks (``mark``) and on system
    blocks; they are kept except in ``off`` mode. ``index`` holds the request's first
    messages (the history, with their explicit marks and no automatic ones); without it,
    every ``cache_control`` in the request counts as explicit. ``stable``: the first block
    the next media drop will change (the media boundary is the markable block before it).
    """
    messages = request["messages"]
    if index is None:
        index = PrefixIndex()
        for message in messages:
            index.append(message)
    known = index

    def starts_with(base: int) -> bool:
        return not base or (base <= len(messages) and messages[base - 1] is known.messages[base - 1])

    base = len(index.messages)
    if not starts_with(base):
        base -= 1  # the new prompt joined the history's last message (tool results)
    if not starts_with(base):  # a request not built on this index: measure it all
        index = PrefixIndex()
        for message in messages:
            index.append(message)
        base = len(messages)
    tail = PrefixIndex()  # the new prompt and this turn's tool rounds: a few messages
    for message in messages[base:]:
        tail.append(message)
    explicit = [p for p in index.explicit if p[0] < base] + [(base + m, b) for m, b in tail.explicit]

    system = request.get("system")
    system_blocks: list[TextBlockParam] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    explicit_system = any("cache_control" in block for block in system_blocks)
    system_chars = sum(measure(block)[0] for block in system_blocks)

    def prefix(position: Position) -> float:
        """Estimated tokens up to and including the block at ``position``."""
        m, b = position
        if m == -1:
            chars, media = sum(measure(block)[0] for block in system_blocks[: b + 1]), 0
        else:
            chars, media = index.before(m) if m < base else _sum(index.before(base), tail.before(m - base))
            chars, media = _sum((chars + system_chars, media), _measure_all(_content(messages[m])[: b + 1]))
        return estimator.tokens(chars, media)

    def last_of(m: int, before: int | None = None) -> Position | None:
        if m == -1:
            return (-1, len(system_blocks) - 1) if system_blocks else None
        b = _last_markable(_content(messages[m]), before)
        return None if b is None else (m, b)

    def closing(position: Position) -> Position | None:
        """The last markable block before ``position`` (the prefix that ends there)."""
        m, b = position
        found = last_of(m, b)
        while found is None and m > 0:
            m -= 1
            found = last_of(m)
        return found

    def long_enough(position: Position | None) -> bool:
        return position is not None and prefix(position) >= MIN_TOKENS

    chosen: list[Position] = []

    def choose(position: Position | None) -> None:
        if position is not None and position not in chosen and len(chosen) < MAX_MARKERS:
            chosen.append(position)

    if mode != "off":
        automatic = mode == "auto"
        last = last_of(len(messages) - 1) if messages else None
        if automatic and long_enough(last):
            choose(last)
        for m in sorted({m for m, _ in explicit}, reverse=True):
            choose(last_of(m))
        if explicit_system:
            choose(last_of(-1))
        if automatic:
            previous = _previous_user(messages)
            if previous is not None and long_enough(last_of(previous)):
                choose(last_of(previous))
            boundary = closing(stable) if stable is not None else None
            if long_enough(boundary):
                choose(boundary)
            if long_enough(last_of(-1)):
                choose(last_of(-1))

    # Copy only what changes: messages that gain a marker or lose an explicit one.
    wanted = {position for position in chosen if position[0] >= 0}
    marked_before = set(explicit)
    out = list(messages)
    for m in sorted({m for m, _ in wanted | marked_before}):
        blocks = _content(messages[m])
        new_blocks = list(blocks)
        for b, block in enumerate(blocks):
            if (m, b) in wanted:
                new_blocks[b] = with_marker(block)
            elif "cache_control" in block and (m, b) in marked_before:
                new_blocks[b] = without_marker(block)
        out[m] = {**messages[m], "content": new_blocks}
    result: Request = {**request, "messages": out}
    system_marked = any(m == -1 for m, _ in chosen)
    if not system_blocks:
        result.pop("system", None)
    elif system_marked or explicit_system or len(system_blocks) > 1:
        plain = [cast("TextBlockParam", without_marker(block)) for block in system_blocks]
        if system_marked:
            plain[-1]["cache_control"] = MARKER.copy()
        # The service needs a list of blocks to carry a marker; a plain string otherwise.
        result["system"] = plain if system_marked or len(plain) > 1 else plain[0]["text"]
    return result


def _sum(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def _measure_all(blocks: list[Block]) -> tuple[int, int]:
    sizes = [measure(block) for block in blocks]
    return sum(c for c, _ in sizes), sum(u for _, u in sizes)


def _previous_user(messages: list[Message]) -> int | None:
    """The user message before the last one (the previous request's last block is there)."""
    seen = 0
    for m in range(len(messages) - 1, -1, -1):
        if messages[m]["role"] == "user":
            seen += 1
            if seen == 2:
                return m
    return None


def estimate_prompt(request: Request, estimator: TokenEstimator, index: PrefixIndex | None = None) -> float:
    """Estimated tokens of a request's whole prompt (system and messages).

    With ``index`` (the history the request starts with), only the messages after it are measured.
    """
    system = request.get("system")
    total = 0.0
    if isinstance(system, str):
        total += len(system) / estimator.chars_per_token
    elif system:
        total += sum(estimator.block(block) for block in system)
    messages = request["messages"]
    start = 0
    if index is not None and index.messages and len(messages) >= len(index.messages):
        # The index's last message is measured from the request: it may carry the prompt joined to it.
        start = len(index.messages) - 1
        total += estimator.tokens(*index.before(start))
    for message in messages[start:]:
        total += sum(estimator.block(block) for block in _content(message))
    return total


def equivalents(input_tokens: int, cache_write: int, cache_read: int) -> tuple[float, float]:
    """Input-token equivalents with caching, and what the same prompts cost without it."""
    return input_tokens + 1.25 * cache_write + 0.1 * cache_read, float(input_tokens + cache_write + cache_read)


def saving_text(input_tokens: int, cache_write: int, cache_read: int) -> str:
    """'saved 62% (13,000 tokens)' or 'cost 18% more (2,100 tokens)' against no caching; '–' without any."""
    paid, uncached = equivalents(input_tokens, cache_write, cache_read)
    if not cache_write and not cache_read:
        return "–"
    delta = uncached - paid
    share = abs(delta) / uncached if uncached else 0.0
    if delta >= 0:
        return f"saved {share:.0%} ({delta:,.0f} tokens)"
    return f"cost {share:.0%} more ({-delta:,.0f} tokens)"


def cost_text(input_tokens: int, cache_write: int, cache_read: int) -> str:
    """'≈ 1,234 input-token equivalents (62% saved by caching)' — or the plain count."""
    paid, uncached = equivalents(input_tokens, cache_write, cache_read)
    if not cache_write and not cache_read:
        return f"≈ {paid:,.0f} input-token equivalents"
    saved = 1 - paid / uncached if uncached else 0.0
    verb = "saved" if saved >= 0 else "extra"
    return f"≈ {paid:,.0f} input-token equivalents ({abs(saved):.0%} {verb} by caching)"
