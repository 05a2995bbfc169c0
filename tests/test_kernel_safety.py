"""Issue 13 in a real kernel: the key never leaves, bad paths and settings are short errors, odd tool calls."""

from __future__ import annotations

import json

import pytest
from fake_dashscope import Stream

pytestmark = pytest.mark.kernel


def sent_text(kernel) -> str:
    return json.dumps(kernel.server.requests[-1].body, ensure_ascii=False)


def notes(run) -> str:
    return " ".join(run.data("text/plain"))


# -- the key -----------------------------------------------------------------------------------


def test_a_value_holding_the_key_is_masked_in_what_is_sent_with_a_note(fresh):
    key = fresh.server.api_key
    fresh.run("import os\nsettings = {'region': 'cn', 'key': os.environ['DASHSCOPE_API_KEY']}")
    run = fresh.run("%%qwen\nIs anything wrong with {settings}?")
    assert run.status == "ok", run.error_text
    assert key not in sent_text(fresh)
    assert "sk-…agic" in sent_text(fresh) and "'region': 'cn'" in sent_text(fresh)
    assert "The API key was masked in what was sent ({settings} held it)" in notes(run)


def test_a_value_without_the_key_gets_no_note(fresh):
    fresh.run("plain = 'nothing secret'")
    run = fresh.run("%%qwen\nRead {plain}")
    assert "masked" not in notes(run)


def test_a_system_prompt_value_holding_the_key_is_masked(fresh):
    fresh.run("import os\ncfg = os.environ['DASHSCOPE_API_KEY']")
    run = fresh.run("%%qwen --system\nYou know {cfg}.")
    assert "masked in what was sent" in notes(run)
    fresh.run("%%qwen\nHi")
    assert fresh.server.api_key not in sent_text(fresh)


def test_explain_masks_the_key_in_the_traceback_and_the_cell(fresh):
    failed = fresh.run("import os\nraise ValueError('bad key ' + os.environ['DASHSCOPE_API_KEY'])")
    assert failed.status == "error"
    fresh.server.queue(Stream(text="Check the key."))
    run = fresh.run("%qwen explain")
    assert run.status == "ok", run.error_text
    assert fresh.server.api_key not in sent_text(fresh)
    assert "ValueError: bad key sk-…agic" in sent_text(fresh)
    assert "The API key was masked in what was sent" in notes(run)


def test_an_answer_echoing_the_key_is_masked_in_history_and_export(fresh, tmp_path):
    key = fresh.server.api_key
    fresh.server.queue(Stream(text=f"Your key is {key}, keep it safe.", thinking=f"They sent {key}.", chunk=3))
    fresh.run("%%qwen --thinking\nWhat is my key?")
    history = fresh.run("%qwen history")
    shown = "".join(history.data("text/markdown")) + "".join(history.data("text/plain"))
    assert key not in shown and "Your key is sk-…agic" in shown
    path = tmp_path / "out.ipynb"
    fresh.run(f"%qwen export {path}")
    written = path.read_text()
    assert key not in written and "sk-…agic" in written
