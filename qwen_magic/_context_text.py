"""Captured text made safe to send: cleaned as a terminal leaves it, cut with no piece of the key left at the cut.

A cut breaks a key that ``mask_key`` would have matched whole, so every cut here masks first
and then drops what is left of a key the cut broke (``unbroken``). Used by the capture
(``_context``) for what it keeps and by the builder (``_context_build``) for what it sends.
"""

from __future__ import annotations

import base64
import binascii
import re

from ._text import current_key, mask_key, masked

CUT_SLACK = 16  # characters between a cut and a broken key's piece that still make it one (a split colour code)
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1
_SURROGATE = re.compile("[\ud800-\udfff]")


def image_data(value: object) -> tuple[str, str] | None:
    """A displayed image as (media type, base64), typed by its bytes; None for anything the service could not read."""
    from ._media import INLINE_IMAGE_TYPES, sniff_image

    if isinstance(value, str):
        encoded = "".join(value.split())
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None
    elif isinstance(value, bytes):
        raw = value
        encoded = base64.b64encode(raw).decode("ascii")
    else:
        return None
    media_type = sniff_image(raw)
    return (media_type, encoded) if media_type in INLINE_IMAGE_TYPES else None


def plain(text: str) -> str:
    """Text as a terminal would leave it: colours and cursor moves out, a line redrawn after ``\\r`` (a progress bar)
    only as it ended, other control characters out."""
    if "\x1b" in text:
        text = ANSI.sub("", text)
    if "\r" in text:
        text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    if _CONTROLS.search(text):
        text = _CONTROLS.sub("", text)
    return text


def sendable(text: str) -> str:
    """``text`` with every lone surrogate as U+FFFD: a request holding one cannot be encoded."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def middle(text: str, limit: int, key: str | None = None) -> str:
    """``text`` cut in the middle to about ``limit`` characters, with a marker; the key is masked before a cut.

    A text short enough is returned as it is: it is masked where it is sent (``%qwen explain`` says so then).
    """
    if len(text) <= limit:
        return text
    text = mask_key(text, key)
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 2)
    return joined(text[: keep // 2], text[len(text) - keep // 2 :], len(text) - keep, key)


def joined(head: str, tail: str, cut: int, key: str | None = None) -> str:
    """Two sides of a text with the marker for the ``cut`` characters between them; no piece of a key the cut broke."""
    head, tail = unbroken(head, tail, key)
    return f"{head}\n[… {size(cut)} cut from the middle …]\n{tail}"


def unbroken(head: str, tail: str, key: str | None = None) -> tuple[str, str]:
    """The two sides of a cut, masked, without what is left of a key the cut broke.

    A broken key no longer matches ``mask_key``, so its piece near the end of ``head`` (a prefix
    of the key) or the start of ``tail`` (a suffix) goes, with whatever is between it and the cut
    (the remains of a colour code the cut split), but for what the masked form shows anyway
    (``sk-`` and the last four characters).
    """
    head, tail = mask_key(head, key), mask_key(tail, key)
    key = key if key is not None else current_key()
    if not key:
        return head, tail
    front, back = masked(key).split("…")
    for n in range(len(key) - 1, len(front), -1):
        at = head.rfind(key[:n], max(0, len(head) - n - _slack(n)))
        if at >= 0:
            head = head[:at]
            break
    for n in range(len(key) - 1, len(back), -1):
        at = tail.find(key[-n:], 0, n + _slack(n))
        if at >= 0:
            tail = tail[at + n :]
            break
    return head, tail


def _slack(piece: int) -> int:
    """How far from a cut a key's piece may end and still be taken as broken by it: a short one only right at it."""
    return CUT_SLACK if piece >= 4 else 0


def size(chars: int) -> str:
    """A size for people: ``812 B``, ``2 kB``, ``41 kB``, ``1.2 MB`` (characters counted as bytes)."""
    if chars < 1000:
        return f"{chars} B"
    if chars < 1_000_000:
        return f"{chars / 1000:.0f} kB"
    return f"{chars / 1_000_000:.1f} MB"
