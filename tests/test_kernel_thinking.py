"""Thinking, the control panel and the usage footer, as a frontend receives them."""

from __future__ import annotations

import json
import re

import pytest
from fake_dashscope import Stream
from helpers import assert_usage_error, run_terminal

pytestmark = pytest.mark.kernel

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("False", "", {"type": "disabled"}),
        ("True", "", {"type": "enabled", "budget_tokens": 4096}),
        ("False", "--thinking", {"type": "enabled", "budget_tokens": 4096}),
        ("True", "--no-thinking", {"type": "disabled"}),
        ("False", "--budget 1500", {"type": "enabled", "budget_tokens": 1500}),
        ("True", "--budget 999", {"type": "enabled", "budget_tokens": 999}),
        ("False", "--thinking --budget 2500", {"type": "enabled", "budget_tokens": 2500}),
        ("True", "--no-thinking --budget 2500", {"type": "disabled"}),
    ],
)
def test_thinking_field_for_every_combination_of_flags_and_defaults(fresh, setting, flags, expected):
    fresh.run(f"%config QwenMagics.thinking = {setting}")
    run = fresh.run(f"%%qwen {flags}\nThink?")
    assert run.status == "ok", run.error_text
    assert fresh.server.requests[-1].body["thinking"] == expected


def test_budget_default_comes_from_the_setting_and_max_tokens_is_independent(fresh):
    fresh.run("%qwen config thinking=on thinking_budget=8000 max_tokens=1000")
    fresh.run("%%qwen\nThink hard")
    body = fresh.server.requests[-1].body
    # DashScope: the budget caps thinking, max_tokens the answer; no budget < max_tokens rule.
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert body["max_tokens"] == 1000
    bad = fresh.run("%%qwen --budget 0\nHi")
    assert_usage_error(bad, "--budget")


def test_thinking_streams_open_then_collapses_above_the_answer(fresh):
    thinking = "Let me weigh <this> & that carefully. " * 60
    fresh.server.queue(Stream(thinking=thinking, text="**Answer.**", chunk=20, delay=0.003))
    run = fresh.run("%%qwen --thinking\nQuestion")
    live = [
        m["content"]["data"]["text/html"]
        for m in run.of("display_data", "update_display_data")
        if "qwen-thinking" in m["content"]["data"].get("text/html", "")
    ]
    assert any("<details class=\"qwen-thinking\" open>" in h for h in live), "thinking should stream open"
    status, *outputs = run.outputs
    assert status["data"] == {"text/plain": ""}  # the live status line has emptied
    first = outputs[0]["data"]["text/html"]
    assert first.startswith('<details class="qwen-thinking">')  # collapsed once the answer started
    assert "Let me weigh &lt;this&gt; &amp; that" in first  # escaped, complete
    assert first.count("Let me weigh") == 60
    assert outputs[1]["data"]["text/plain"] == "**Answer.**"  # the answer comes after it
    assert "<strong>Answer.</strong>" in outputs[1]["data"]["text/html"]
    # Thinking stays cheap: the live view shows a window, not the whole text each time.
    assert max(len(h) for h in live[:-1]) < 2 * len(thinking)


def test_thinking_is_kept_in_history_but_never_resent(fresh):
    fresh.server.queue(Stream(thinking="secret chain of thought", text="Visible answer"))
    fresh.run("%%qwen --thinking\nFirst")
    history = fresh.run("%qwen history").markdown
    assert "secret chain of thought" in history
    fresh.run("%%qwen\nSecond")
    sent = json.dumps(fresh.server.requests[-1].body)
    assert "secret chain of thought" not in sent and '"thinking", "thinking"' not in sent
    assert fresh.server.requests[-1].body["messages"][1]["content"] == [{"type": "text", "text": "Visible answer"}]


def test_footer_shows_the_usage_the_server_reported(fresh):
    usage = {"input_tokens": 1234, "output_tokens": 56, "cache_read_input_tokens": 2048, "cache_creation_input_tokens": 77}
    fresh.server.queue(Stream(text="Short answer.", usage=usage))
    run = fresh.run("%%qwen\nHi")
    footer = run.outputs[-1]["data"]
    assert WIDGET not in footer  # settled into static output for saved notebooks
    text = footer["text/plain"]
    for figure in ("1,234 in", "56 out", "cache 2,048 read / 77 written", "s to first token"):
        assert figure in text, text
    assert "qwen-usage" in footer["text/html"]
    # While streaming, the footer was a live widget with a text fallback.
    assert any(WIDGET in m["content"]["data"] for m in run.of("display_data"))


def test_footer_says_when_the_answer_was_cut(fresh):
    fresh.server.queue(Stream(text="An answer that stops", stop_reason="max_tokens"))
    run = fresh.run("%%qwen --max-tokens 5\nHi")
    assert "cut at max_tokens" in run.outputs[-1]["data"]["text/plain"]
    assert "--max-tokens" in run.outputs[-1]["data"]["text/plain"]


def _comm_update(kernel, model_id: str, state: dict) -> None:
    """Send a widget state change the way a browser's widget manager does."""
    content = {"comm_id": model_id, "data": {"method": "update", "state": state, "buffer_paths": []}}
    msg = kernel.client.session.msg("comm_msg", content)
    kernel.client.shell_channel.send(msg)


def test_panel_controls_are_the_settings_both_ways(fresh):
    run = fresh.run("%qwen")
    bundle = run.outputs[0]["data"]
    assert WIDGET in bundle and "HBox(" not in bundle["text/plain"] and "model qwen3.6-plus" in bundle["text/plain"]
    ids = fresh.run(
        "_p = _qm._panels[-1]\n"
        "print(_p.thinking.model_id, _p.budget.model_id, _p.model.model_id, _p.max_tokens.model_id)"
    ).stdout.split()
    thinking_id, budget_id, model_id, max_tokens_id = ids
    # A click in the browser reaches the setting...
    _comm_update(fresh, thinking_id, {"value": True})
    _comm_update(fresh, budget_id, {"value": 3072})
    _comm_update(fresh, model_id, {"value": "qwen3.7-plus"})
    _comm_update(fresh, max_tokens_id, {"value": 900})
    fresh.run("%%qwen\nAfter the panel change")
    body = fresh.server.requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 3072}
    assert (body["model"], body["max_tokens"]) == ("qwen3.7-plus", 900)
    # ...and a setting changed elsewhere shows in the panel.
    fresh.run("%qwen config thinking=off model=qwen-plus")
    state = fresh.run("print(_p.thinking.value, _p.model.value, _p.budget.disabled)").stdout.split()
    assert state == ["False", "qwen-plus", "True"]


def test_panel_totals_update_when_an_answer_ends_and_new_conversation_button(fresh):
    fresh.run("_p = (get_ipython().run_line_magic('qwen', 'panel') or _qm._panels[-1])")
    usage = {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 0}
    fresh.server.queue(Stream(text="One.", usage=usage))
    first = fresh.run("%%qwen\nFirst")
    # The panel's static fallback (nbconvert, GitHub) follows the totals too.
    fallbacks = [m["content"]["data"].get("text/plain", "") for m in first.of("update_display_data")]
    assert any("Session: 1 requests" in text for text in fallbacks), fallbacks
    totals = fresh.run("print(_p.totals.value)").stdout
    assert "300 cache read" in totals and "cache hit ratio 75%" in totals
    assert re.search(r"\b\d+ requests", totals)
    fresh.run("_p.new.click()")
    fresh.run("%%qwen\nAfter reset")
    assert len(fresh.server.requests[-1].body["messages"]) == 1


def test_terminal_fallbacks_print_text(tmp_path):
    out = run_terminal(
        tmp_path,
        "server.queue(Stream(thinking='pondering', text='The answer.'))\n"
        "shell.run_line_magic('qwen', '')\n"
        "shell.run_cell_magic('qwen', '--thinking', 'Hello')\n",
    )
    assert "Qwen: model qwen3.6-plus · thinking off" in out.stdout
    assert "Thinking: pondering" in out.stdout and "The answer." in out.stdout
    assert "HBox" not in out.stdout and "Widget" not in out.stdout
    assert re.search(r"\d+ in · \d+ out · cache 0 read / 0 written", out.stdout)
