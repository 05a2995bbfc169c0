"""Untrusted text made harmless for where it goes: the API key masked, control characters made visible.

Model text, thinking, tool output and service messages may hold the user's key (a model
echoing a prompt that held it) or terminal control sequences (OSC 52 writes the clipboard,
OSC 0 sets the window title, CSI moves the cursor). Both helpers are pure and cheap; the
painters, the history, the export and the cassettes call them on what they show or write.
"""

from __future__ import annotations

import os
import re

KEY_VARIABLE = "DASHSCOPE_API_KEY"
MIN_KEY = 8  # shorter "keys" (test values, blanks) are not masked: they would mask ordinary words

# C0 controls but tab and newline, DEL, and the C1 range (ESC-less CSI/OSC in 8-bit form).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def current_key() -> str | None:
    """The key in the environment, when it is long enough to be worth masking."""
    key = os.environ.get(KEY_VARIABLE, "").strip()
    return key if len(key) >= MIN_KEY else None


def masked(key: str) -> str:
    """How a key is shown: its prefix and last four characters (``sk-…abcd``)."""
    head = key[:3] if key.startswith("sk-") else ""
    return f"{head}…{key[-4:]}"


def mask_key(text: str, key: str | None = None) -> str:
    """``text`` with every occurrence of the API key replaced by its masked form."""
    key = current_key() if key is None else key
    if not key or key not in text:
        return text
    return text.replace(key, masked(key))


def visible_controls(text: str) -> str:
    """``text`` with every control character but newline and tab shown as ``^X``/``<U+9B>``.

    Carriage returns go too: a lone ``\\r`` lets later text overwrite what the line showed.
    """
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(_show, text)


def _show(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:02X}>"
