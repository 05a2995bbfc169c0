"""The tables ``%qwen config`` and ``%qwen usage`` show, as markdown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._answer import Usage
from ._cache import equivalents, saving_text


def settings_table(settings: Mapping[str, Any], helps: Mapping[str, str], base_url: str) -> str:
    """Every setting with its value and meaning, and where requests go now."""
    rows = ["| setting | value | meaning |", "|---|---|---|"]
    for name in sorted(settings):
        help_text = helps[name].replace("|", "\\|")
        rows.append(f"| `{name}` | `{settings[name]!r}` | {help_text} |")
    rows.append(f"| *endpoint* | `{base_url}` | where requests go now |")
    return "\n".join(rows)


def usage_table(chats: Iterable[tuple[str, int, Usage]], requests: int, totals: Usage) -> str:
    """Token usage per conversation (name, requests, usage) and for the session, with what caching saved or cost."""
    rows = [
        "| conversation | requests | input | output | cache read | cache written | input-token equivalents "
        "| without caching | caching |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name, count, spent in chats:
        rows.append(_row(name, count, spent))
    rows.append(_row("**session**", requests, totals))
    rows.append("")
    rows.append("Input-token equivalents = input + 1.25 × cache written + 0.1 × cache read; the last column is "
                "what was saved by caching (or what it cost) against *without caching*, every prompt token at "
                "the full price. Caching costs more when what is written is not read again (each cell in a new "
                "conversation, or a prompt that changes near its start).")  # fmt: skip
    return "\n".join(rows)


def _row(name: str, requests: int, u: Usage) -> str:
    paid, uncached = equivalents(u.input_tokens, u.cache_write, u.cache_read)
    verdict = saving_text(u.input_tokens, u.cache_write, u.cache_read)
    if paid > uncached:
        verdict = f"**{verdict}**"
    return (
        f"| {name} | {requests} | {u.input_tokens:,} | {u.output_tokens:,} | {u.cache_read:,} "
        f"| {u.cache_write:,} | {paid:,.0f} | {uncached:,.0f} | {verdict} |"
    )
