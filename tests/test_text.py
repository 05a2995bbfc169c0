"""Masking the key and making control characters visible."""

from __future__ import annotations

import pytest

from qwen_magic._text import mask_key, masked, visible_controls

KEY = "sk-0123456789abcdef"


def test_every_occurrence_of_the_key_is_masked() -> None:
    text = f"{KEY} and again {KEY}."
    out = mask_key(text, KEY)
    assert KEY not in out
    assert out.count(masked(KEY)) == 2
    assert masked(KEY) == "sk-…cdef"


def test_the_environment_key_is_used_and_short_values_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    assert KEY not in mask_key(f"echo {KEY}")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "the")
    assert mask_key("the cat") == "the cat"


@pytest.mark.parametrize("code", [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])
def test_every_control_but_newline_and_tab_is_made_visible(code: int) -> None:
    out = visible_controls(f"a{chr(code)}b")
    assert chr(code) not in out
    assert out.startswith("a") and out.endswith("b")


def test_newline_tab_and_ordinary_text_pass_unchanged() -> None:
    text = "line 1\n\tline 2 — ünïcode ✓"
    assert visible_controls(text) is text
