"""One answer as it arrives: its parts, usage and timing, independent of how it is painted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Usage:
    """Token counts of one request, as the service reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_sdk(cls, usage: object) -> Usage:
        """Read the SDK's ``Usage``, or its JSON as a dict (missing cache fields count as zero)."""
        get: Callable[[str], Any] = usage.get if isinstance(usage, dict) else lambda name: getattr(usage, name, 0)
        return cls(
            input_tokens=get("input_tokens") or 0,
            output_tokens=get("output_tokens") or 0,
            cache_read=get("cache_read_input_tokens") or 0,
            cache_write=get("cache_creation_input_tokens") or 0,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )


@dataclass
class Answer:
    """The assistant's side of one turn, complete or not."""

    model: str
    text: str = ""
    thinking: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    stop_reason: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    interrupted: bool = False
    cassette: str | None = None  # "▶ replayed from demo.jsonl" / "● recorded to …" for the footer
    replayed: bool = False  # the answer came from a cassette, not from the service
    request_id: str | None = None  # the service's id of the request (its ``request-id`` header)
    call_input: int = 0  # characters of tool-call input that arrived (an -o value streams as one)
    # With tools (``_turn.converse``): this turn's earlier answers, each of which called
    # tools and keeps the user content that answered them (``tool_results``).
    rounds: list[Answer] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the answer ended normally (not failed, not interrupted)."""
        return self.error is None and not self.interrupted and self.finished_at is not None

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The ``tool_use`` blocks of a finished answer."""
        return [b for b in self.blocks if b.get("type") == "tool_use"]

    @property
    def total_usage(self) -> Usage | None:
        """Usage summed over the turn's tool rounds and this answer."""
        reported = [a.usage for a in (*self.rounds, self) if a.usage is not None]
        return sum(reported[1:], reported[0]) if reported else None

    def next_round(self, tool_results: list[dict[str, Any]]) -> None:
        """Keep this answer, answered by ``tool_results``, as a round; start the next one afresh."""
        done = replace(self, rounds=[], tool_results=tool_results)
        self.__dict__.update(Answer(self.model, rounds=[*self.rounds, done], cassette=self.cassette, replayed=self.replayed).__dict__)

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from sending the request to the first thinking or text token."""
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens per second while tokens flowed."""
        if self.usage is None or self.first_token_at is None or self.finished_at is None:
            return None
        seconds = self.finished_at - self.first_token_at
        return self.usage.output_tokens / seconds if seconds > 0 else None

    def history_content(self) -> list[dict[str, Any]]:
        """The content to resend as the assistant turn: text and tool calls only (see ``_RESENT``)."""
        if self.blocks and self.complete:
            kept = []
            for block in self.blocks:
                fields = _RESENT.get(block.get("type"))
                if fields is None or (block["type"] == "text" and not str(block.get("text", "")).strip()):
                    continue
                kept.append({name: block[name] for name in fields if name in block})
            return kept
        # A partial answer is kept as the text that was shown.
        return [{"type": "text", "text": self.text}] if self.text.strip() else []


# The fields of each block type an assistant turn may resend. The service refuses thinking,
# citations and block types of features it lacks (``server_tool_use`` …), and one refused
# block in history would fail every later cell of the conversation.
_RESENT: dict[Any, tuple[str, ...]] = {"text": ("type", "text"), "tool_use": ("type", "id", "name", "input")}
