"""The cell's text becomes the user turn's content blocks."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

Block = dict[str, Any]


def build_prompt(text: str, namespace: dict[str, Any] | None = None) -> list[Block]:
    """Content blocks for the cell text; an empty cell is a ``UsageError``."""
    text = text.strip()
    if not text:
        raise UsageError("The cell is empty: write a question below the %%qwen line.")
    return [{"type": "text", "text": text}]


def prompt_text(blocks: list[Block]) -> str:
    """The readable text of a user turn (media shown as placeholders)."""
    parts = []
    for block in blocks:
        if block.get("type") == "text":
            parts.append(block["text"])
        elif block.get("type") in ("image", "video"):
            source = block.get("source", {})
            where = source.get("url") or source.get("media_type", "inline")
            parts.append(f"[{block['type']}: {where}]")
    return "\n".join(parts)
