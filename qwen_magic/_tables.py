"""What the magic shows under a cell besides the answer: short notes, markdown (the
``%qwen config`` and ``%qwen usage`` tables, history, tool schemas) and the context preview.

Notes and markdown carry ``text/plain`` with control characters shown, not obeyed: that is
what a terminal prints, and the text may hold model output or what a tool returned.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from ._answer import Usage
from ._cache import equivalents, saving_text
from ._ipython import display
from ._text import current_key, masked, visible_controls


def note(text: str) -> None:
    """A short informational line under the cell."""
    display(
        {
            "text/html": f'<div class="qwen-note" style="color:#888;font-size:0.9em">{_text_html(text)}</div>',
            "text/plain": visible_controls(text),
        },
        raw=True,
    )


def masked_note(where: list[str]) -> None:
    """Say that the API key was found in what is about to be sent, and masked there."""
    if where:
        note(f"The API key was masked in what was sent ({', '.join(where)} held it): the service sees only "
             f"{masked(current_key() or '')}.")


def markdown_out(text: str) -> None:
    """Markdown (possibly holding model text) as sanitized HTML, plain text for terminals."""
    from ._markdown import markdown_bundle

    # text/plain is what a terminal prints: its control characters are shown, not obeyed.
    display({**markdown_bundle(text), "text/plain": visible_controls(text)}, raw=True)


def preformatted(text: str) -> None:
    """Text shown as it is laid out (``%qwen context``'s preview), wrapped in a notebook."""
    display(
        {
            "text/html": '<pre class="qwen-context-preview" style="white-space:pre-wrap;font-size:0.85em">'
            f"{html.escape(text)}</pre>",
            "text/plain": text,
        },
        raw=True,
    )


def settings_table(settings: Mapping[str, object], helps: Mapping[str, str], base_url: str) -> str:
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


def _text_html(text: str) -> str:
    """``text`` escaped, each ``$`` and ``\\`` in an element of its own: a note often quotes the
    model or a value, and MathJax would pair their dollars."""
    from ._markdown import text_html  # markdown-it and nh3 load in the warm-up, not with %load_ext

    return text_html(text)
