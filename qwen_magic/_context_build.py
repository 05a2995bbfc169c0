"""The notebook as context, sent: the captured cells a conversation has not seen, as a turn's blocks.

Building (``build``) turns the cells a conversation has not seen yet into content blocks
within a budget (``context_tokens``, estimated like every prompt; ``context_images``):
newest cells are kept first; an output longer than its share is cut in the middle with a
marker saying how much went; once a cell does not fit whole, it and every older cell
keep their source only; what still does not fit is left out, with a one-line note.
Nothing is cut silently: ``Context.manifest()`` names every cut, and the text the model
reads says so too. The cells come from ``_context.Capture``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _text
from ._context import (
    INTRO,
    MAX_CELLS,
    MAX_IMAGE_BASE64,
    MIN_OUTPUT_CHARS,
    NOTE_RESERVE,
    OUTPUT_SHARE,
    SOURCE_CHARS,
    Bounded,
    Cell,
)
from ._context_text import joined, middle, plain, sendable, size
from ._text import mask_key

if TYPE_CHECKING:
    from anthropic.types import TextBlockParam

    from ._blocks import MediaBlockParam

# -- building a turn's context -----------------------------------------------------------


@dataclass
class Entry:
    """One cell as sent: its text block's text, its images, and what was cut."""

    cell: Cell
    text: str
    images: list[tuple[str, str]]
    form: str  # "whole", "cut" (an output cut to fit), "source" (source only)
    cuts: list[str] = field(default_factory=list)  # e.g. "stdout 41 kB → 2 kB"
    images_left: int = 0


@dataclass
class Context:
    """The context one turn sends: the blocks, and a manifest of what was included and cut."""

    blocks: list[TextBlockParam | MediaBlockParam]
    entries: list[Entry]
    dropped: list[Cell]
    tokens: float
    upto: int
    key: str | None = field(default=None, repr=False)  # masked in the manifest too (None: the key in the environment)
    forgotten: int = 0  # cells run before these that the capture no longer kept

    @property
    def figures(self) -> int:
        return sum(len(e.images) for e in self.entries)

    @property
    def errors(self) -> int:
        return sum(1 for e in self.entries if e.cell.error_name)

    def cut_notes(self) -> list[str]:
        notes = []
        for entry in self.entries:
            label = entry.cell.label
            notes += [f"{label} {cut}" for cut in entry.cuts]
            if entry.form == "source":
                notes.append(f"{label} source only")
            if entry.images_left:
                notes.append(f"{label} {entry.images_left} image{'s' * (entry.images_left > 1)} left out")
            if entry.cell.images_bad:
                notes.append(f"{label} {_plural(entry.cell.images_bad, 'unreadable image')} left out")
        if self.dropped:
            notes.append(f"{_span(self.dropped)} left out")
        if self.forgotten:
            notes.append(f"{_plural(self.forgotten, 'older cell')} no longer kept (only the latest {MAX_CELLS})")
        return notes

    def summary(self) -> str:
        """``Context: In [3]–[7] · 5 cells · 1 figure · 1 error · ≈2,300 tokens (cut: …)``."""
        cells = [e.cell for e in self.entries]
        parts = [f"Context: {_span(cells or self.dropped)}", _plural(len(cells), "cell")]
        if self.figures:
            parts.append(_plural(self.figures, "figure"))
        if self.errors:
            parts.append(_plural(self.errors, "error"))
        parts.append(f"≈{self.tokens:,.0f} tokens")
        notes = self.cut_notes()
        return " · ".join(parts) + (f" (cut: {'; '.join(notes)})" if notes else "")

    def lines(self) -> list[str]:
        """One line per cell: what was included."""
        out = []
        for entry in self.entries:
            cell = entry.cell
            first = next((line for line in cell.source.splitlines() if line.strip()), "").strip()
            what = ["source"]
            if entry.form != "source":
                what += [name for name, kept in _outputs(cell) if kept]
                if entry.images:
                    what.append(_plural(len(entry.images), "image"))
            if entry.cuts:
                what.append("cut: " + ", ".join(entry.cuts))
            if entry.form == "source" and _outputs(cell):
                what.append("outputs left out")
            if cell.images_bad:
                what.append(f"{_plural(cell.images_bad, 'unreadable image')} left out")
            first = _text.visible_controls(mask_key(sendable(first), self.key))  # masked before it is shortened
            out.append(f"{cell.label} {_short(first, 60)} — {', '.join(what)}")
        for cell in self.dropped:
            out.append(f"{cell.label} — left out (over the budget)")
        return out

    def manifest_bundle(self) -> dict[str, str]:
        """The collapsed one-line manifest as static HTML (every piece escaped) with a plain-text fallback."""
        from ._markdown import text_html  # each $ and \\ alone: a cell's first line is code (f"${x}")

        items = "".join(f"<li>{text_html(line)}</li>" for line in self.lines())
        summary = text_html(self.summary())
        return {
            "text/html": (
                '<details class="qwen-context" style="color:#888;font-size:0.85em;margin:0.2em 0">'
                f"<summary>{summary}</summary>"
                f'<ul style="margin:0.2em 0 0.2em 1.2em;padding:0">{items}</ul></details>'
            ),
            "text/plain": self.summary(),
        }

    def preview(self) -> str:
        """What is sent, as text: the blocks in order, images as named placeholders."""
        parts = []
        for block in self.blocks:
            if block["type"] == "text":
                parts.append(block["text"])
            else:
                from ._media import describe

                parts.append(describe(block))
        from ._text import visible_controls  # shown in a terminal too: no escape sequence may act

        return visible_controls("\n\n".join(parts))


def _outputs(cell: Cell) -> list[tuple[str, bool]]:
    kinds = [
        ("stdout", cell.stdout.total > 0),
        ("stderr", cell.stderr.total > 0),
        ("display", cell.shown.total > 0),
        ("Out", cell.result is not None),
        (cell.error_name or "error", cell.error is not None),
    ]
    return [(name, True) for name, present in kinds if present]


def build(
    cells: list[Cell],
    *,
    tokens: int,
    images: int,
    chars_per_token: float,
    upto: int,
    key: str | None = None,
    forgotten: int = 0,
) -> Context | None:
    """The blocks for ``cells`` (oldest first) within ``tokens`` and ``images``; None when there are none.

    ``forgotten`` counts the cells run before these that the capture no longer keeps (``MAX_CELLS``).
    """
    if not cells or tokens <= 0:  # a budget of 0 sends nothing, not even a note
        return None
    lost = f"\n[{_plural(forgotten, 'older cell')} ran before these, no longer kept (only the latest {MAX_CELLS}).]" if forgotten else ""
    budget = tokens * chars_per_token
    share = max(MIN_OUTPUT_CHARS, int(budget * OUTPUT_SHARE))
    entries: list[Entry] = []
    dropped: list[Cell] = []
    used = float(len(INTRO) + len(lost) + NOTE_RESERVE)  # the intro and the notes of what was left out count too
    images_left = images
    reduced = False  # once a cell is cut to its source, every older one is too
    for cell in reversed(cells):
        if dropped:
            dropped.append(cell)
            continue
        entry = None
        if not reduced:
            entry = _whole(cell, share, key)
            if used + len(entry.text) > budget:
                room = int(budget - used - len(_render(cell, {}, key, source_only=True))) // max(1, len(_outputs(cell)))
                entry = _whole(cell, min(share, room), key) if room >= MIN_OUTPUT_CHARS else None
                if entry is not None and used + len(entry.text) > budget:
                    entry = None
        if entry is None:
            reduced = True
            entry = Entry(cell, _render(cell, {}, key, source_only=True), [], "source", _source_cut(cell))
            if used + len(entry.text) > budget:
                dropped.append(cell)
                continue
        if entry.form != "source" and cell.images:
            kept = cell.images[-images_left:] if images_left > 0 else []
            kept = [(t, d) for t, d in kept if len(d) <= MAX_IMAGE_BASE64]
            entry.images = kept
            entry.images_left = cell.images_seen - len(kept)
            images_left -= len(kept)
        entry.text = mask_key(entry.text, key)
        used += len(entry.text)
        entries.append(entry)
    entries.reverse()
    dropped.reverse()
    if not entries and not dropped:
        return None
    intro = INTRO + lost
    if dropped:
        intro += f"\n[Left out for the context budget: {_span(dropped)} ({_plural(len(dropped), 'older cell')}).]"
    blocks: list[TextBlockParam | MediaBlockParam] = []
    for index, entry in enumerate(entries):
        text = f"{intro}\n\n{entry.text}" if index == 0 else entry.text
        blocks.append({"type": "text", "text": text})
        for number, (media_type, data) in enumerate(entry.images, 1):
            blocks.append(_image(entry.cell, number, media_type, data))
    if not entries and len(intro) <= budget:  # a budget too small even for the note sends nothing; the manifest says so
        blocks.append({"type": "text", "text": intro})
    text_chars = sum(len(b["text"]) for b in blocks if b["type"] == "text")
    return Context(blocks, entries, dropped, text_chars / chars_per_token, upto, key, forgotten)


def _image(cell: Cell, number: int, media_type: str, data: str) -> MediaBlockParam:
    from ._media import inline_block

    return inline_block("image", base64.b64decode(data), media_type, f"{cell.label} figure {number}")


def _whole(cell: Cell, limit: int, key: str | None) -> Entry:
    """The cell with every output cut to at most ``limit`` characters (in the middle)."""
    cuts = []
    texts: dict[str, str] = {}
    for name, stream in (("stdout", cell.stdout), ("stderr", cell.stderr), ("display", cell.shown)):
        if stream.total:
            texts[name] = _printed(stream, limit, key)
            if stream.total > len(stream.head) + len(stream.tail) or len(stream.head) + len(stream.tail) > limit:
                label = "output" if name == "stdout" else name  # what a cell printed is its output
                cuts.append(f"{label} {size(stream.total)} → {size(len(texts[name]))}")
    for name, label, full in (("Out", "Out", cell.result), ("error", "traceback", cell.error)):
        if full is not None:
            full = mask_key(_sent(full), key)
            texts[name] = middle(full, limit, key)
            if len(full) > limit:
                cuts.append(f"{label} {size(len(full))} → {size(len(texts[name]))}")
    form = "cut" if cuts else "whole"
    return Entry(cell, _render(cell, texts, key, source_only=False), [], form, _source_cut(cell) + cuts)


def _printed(stream: Bounded, limit: int, key: str | None) -> str:
    """What a stream printed as a terminal left it (``plain``), within ``limit``, the key masked even where cut."""
    head, tail, cut = stream.kept(limit)
    if not cut:
        return mask_key(_sent(head + tail), key)
    return joined(_sent(head), _sent(tail), cut, key)


def _sent(text: str) -> str:
    """Captured text as the model reads it: as a terminal left it, lone surrogates (no request encodes them) as U+FFFD."""
    return sendable(plain(text))


def _source_cut(cell: Cell) -> list[str]:
    """The cut of a source longer than ``SOURCE_CHARS``, named for the manifest."""
    chars = len(cell.source.rstrip())
    return [f"source {size(chars)} → {size(SOURCE_CHARS)}"] if chars > SOURCE_CHARS else []


def _render(cell: Cell, texts: dict[str, str], key: str | None, *, source_only: bool) -> str:
    """A cell as the model reads it: its label, source, then each output in a fence."""
    lines = [f"{cell.label}:", _fence(middle(sendable(cell.source.rstrip()), SOURCE_CHARS, key), "python")]
    if cell.images_bad:
        lines.append(f"[{_plural(cell.images_bad, 'displayed image')} could not be read: left out]")
    if source_only:
        if _outputs(cell):
            names = ", ".join(name for name, _ in _outputs(cell))
            lines.append(f"[its outputs ({names}) left out for the context budget]")
        return "\n".join(lines)
    titles = {"stdout": "Printed:", "stderr": "Printed to stderr:", "display": "Displayed:"}
    for name in ("stdout", "stderr", "display"):
        if name in texts:
            lines += [titles[name], _fence(texts[name].rstrip("\n"), "text")]
    if "Out" in texts:
        lines += [f"Out[{cell.count}]:", _fence(texts["Out"], "text")]
    if cell.images:
        lines.append(f"[{_plural(cell.images_seen, 'image')} displayed]")
    if "error" in texts:
        lines += [f"Raised {cell.error_name}:", _fence(texts["error"].rstrip("\n"), "text")]
    return "\n".join(lines)


def _fence(text: str, info: str) -> str:
    """``text`` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    ticks = "`" * (longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


def _span(cells: list[Cell]) -> str:
    if not cells:
        return "no cells"
    first, last = cells[0], cells[-1]
    if first is last:
        return first.label
    end = f"[{last.count}]" if last.count is not None else "[ ]"
    return f"{first.label}–{end}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain_parts(cell: Cell) -> tuple[str, str, str]:
    """The failing cell's traceback, source and what it printed, for ``%qwen explain``."""
    printed = []
    for name, stream in (("stdout", cell.stdout), ("stderr", cell.stderr)):
        if stream.total:
            printed.append(f"{name}:\n{_printed(stream, 3000, None).rstrip()}")
    return cell.error or "", cell.source.rstrip(), "\n".join(printed)
