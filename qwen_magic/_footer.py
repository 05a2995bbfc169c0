"""What frames a painted answer: the usage footer and provenance under it, the thinking above it."""

from __future__ import annotations

import html
from typing import Any

from ._answer import Answer
from ._cache import cost_text
from ._publish import Bundle


def thinking_bundle(thinking: str, *, live: bool, seconds: float | None = None, window: int = 0) -> Bundle:
    """Thinking in a ``<details>`` block: open with its latest lines while live, closed after."""
    from ._markdown import text_html  # markdown-it and nh3 load in the warm-up, not with %load_ext

    shown = thinking[-window:] if live and window and len(thinking) > window else thinking
    prefix = "…" if len(shown) < len(thinking) else ""
    if live:
        summary = f"Thinking… ({len(thinking):,} characters)"
    else:
        took = f" for {seconds:.1f} s" if seconds is not None else ""
        summary = f"Thought{took} ({len(thinking):,} characters) — click to read"
    body = text_html(prefix + shown)
    return {
        "text/html": (
            f'<details class="qwen-thinking"{" open" if live else ""}>'
            f'<summary style="color:#888;cursor:pointer">{html.escape(summary)}</summary>'
            '<div style="white-space:pre-wrap;color:#777;font-size:0.9em;'
            f'border-left:3px solid #ddd;padding-left:0.8em;margin:0.3em 0">{body}</div></details>'
        ),
        "text/plain": f"[{summary}]",
    }


def footer_text(answer: Answer) -> str:
    """One line of usage and timing under a finished answer, summed over its tool rounds."""
    if answer.tool_calls and answer.complete:  # a round that called tools: the calls follow it
        return f"🔧 {answer.model} calls " + ", ".join(call["name"] for call in answer.tool_calls)
    parts = [answer.model]
    if answer.cassette:
        parts.append(answer.cassette)
    if calling := sum(1 for done in answer.rounds if done.tool_calls):  # (not a structured answer's text repairs)
        parts.append(f"{calling} tool round{'s' if calling != 1 else ''}")
    if (u := answer.total_usage) is not None:
        parts += [f"{u.input_tokens:,} in", f"{u.output_tokens:,} out"]
        parts.append(f"cache {u.cache_read:,} read / {u.cache_write:,} written")
        parts.append(cost_text(u.input_tokens, u.cache_write, u.cache_read))
    if answer.time_to_first_token is not None:
        parts.append(f"{answer.time_to_first_token:.2f} s to first token")
    if answer.tokens_per_second:
        parts.append(f"{answer.tokens_per_second:.0f} tok/s")
    if answer.stop_reason == "max_tokens":
        parts.append("⚠ cut at max_tokens: raise it with --max-tokens N or %qwen config max_tokens=N")
    elif answer.stop_reason == "max_tool_rounds":
        parts.append(
            "⚠ stopped at max_tool_rounds, the last calls not run: raise it with %qwen config max_tool_rounds=N"
        )
    elif answer.stop_reason not in (None, "end_turn", "tool_use"):
        parts.append(f"stopped: {answer.stop_reason}")
    elif answer.interrupted and answer.rounds and not answer.text:
        parts.append("interrupted")
    elif answer.interrupted and answer.thinking and not answer.text:
        parts.append(f"interrupted while thinking, {len(answer.thinking):,} characters of thinking kept")
    elif answer.interrupted:
        parts.append(f"interrupted after {_arrived(answer)}")
    elif answer.error is not None:
        parts.append(f"failed after {_arrived(answer)}" if answer.text or answer.call_input else "no answer")
    elif answer.stop_reason is not None and not answer.text.strip() and not answer.tool_calls:
        # A whole answer without text leaves no turn behind: say so, or it vanishes silently.
        parts.append("⚠ the answer has no text" + ("" if answer.rounds else "; the conversation does not keep this turn"))
    return " · ".join(parts)


def provenance(answer: Answer) -> dict[str, Any]:
    """Which model wrote the answer, and how: the metadata of its final output."""
    from ._version import __version__

    u = answer.total_usage
    usage = (
        {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
         "cache_read_input_tokens": u.cache_read, "cache_creation_input_tokens": u.cache_write}
        if u is not None else {}
    )  # fmt: skip
    return {
        "qwen_magic": {
            "version": __version__,
            "model": answer.model,
            "request_id": answer.request_id,
            "stop_reason": answer.stop_reason,
            "usage": usage,
            "replayed": answer.replayed,
        }
    }


def footer_bundle(answer: Answer) -> Bundle:
    """The usage line as static output that survives saving."""
    from ._markdown import text_html  # the model's name, a cassette's or a stop reason may hold dollars

    text = footer_text(answer)
    return {
        "text/html": f'<div class="qwen-usage" style="color:#888;font-size:0.85em">{text_html(text)}</div>',
        "text/plain": text,
    }


def _arrived(answer: Answer) -> str:
    """How much of a cut answer had arrived: its text, or else a tool call's input (an -o value)."""
    if answer.text or not answer.call_input:
        return f"{len(answer.text):,} characters"
    return f"{answer.call_input:,} characters of a tool call's input"
