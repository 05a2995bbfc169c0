"""What a frontend receives from ``%%qwen`` in a real kernel: streaming, conversation, options."""

from __future__ import annotations

import json

import pytest
from fake_dashscope import Stream
from helpers import assert_usage_error, run_terminal
from kernel_harness import is_markdown

pytestmark = pytest.mark.kernel

RICH = (
    "# Plan\n\nSome *intro* text with `code` and a [link](https://qwen.ai).\n\n"
    "## Steps\n\n1. first\n2. second\n   - nested\n\n"
    "```python\ndef f(x):\n    return x * 2  # 中文注释\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n"
    "> quoted 🙂 line\n\n"
    "结尾：你好，世界！🎉\n"
) * 3


def test_answer_streams_as_markdown_and_ends_as_plain_markdown_output(fresh):
    fresh.server.queue(Stream(text=RICH, chunk=7, delay=0.002))
    run = fresh.run("%%qwen\nExplain the plan")
    assert run.status == "ok", run.error_text
    answers = [o for o in run.outputs if is_markdown(o.get("data", {}))]
    assert "".join(o["data"]["text/plain"] for o in answers) == RICH
    assert "".join(o["data"]["text/plain"] for o in answers) == RICH  # text/plain is the answer, not a repr
    assert run.of("update_display_data"), "the answer should have been painted while it streamed"
    everything = json.dumps([o.get("data") for o in run.outputs], ensure_ascii=False)
    assert "waiting" not in everything and "⏳" not in everything
    assert "Traceback" not in everything
    footer = run.data("text/plain")[-1]
    assert "qwen3.6-plus" in footer and " in · " in footer


def test_request_carries_model_thinking_off_and_the_prompt(fresh):
    run = fresh.run("%%qwen\nHello there")
    assert run.markdown == "Echo: Hello there"
    body = fresh.server.requests[-1].body
    assert body["model"] == "qwen3.6-plus"
    assert body["thinking"] == {"type": "disabled"}
    assert body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    headers = fresh.server.requests[-1].headers
    assert fresh.server.api_key in (headers.get("x-api-key", "") + headers.get("authorization", ""))


def test_next_cell_continues_the_conversation(fresh):
    fresh.run("%%qwen\nFirst question")
    run = fresh.run("%%qwen\nSecond question")
    assert run.markdown == "Echo: Second question"
    messages = fresh.server.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [{"type": "text", "text": "Echo: First question"}]


def test_rerunning_the_same_cell_replaces_the_latest_turn(fresh):
    fresh.run("%%qwen\nOne", cell_id="cell-a")
    fresh.run("%%qwen\nTwo", cell_id="cell-b")
    fresh.run("%%qwen\nTwo, edited", cell_id="cell-b")
    messages = fresh.server.requests[-1].body["messages"]
    assert [m["content"][0]["text"] for m in messages] == ["One", "Echo: One", "Two, edited"]
    history = fresh.run("%qwen history").markdown
    assert "Two, edited" in history and "Echo: Two\n" not in history


def test_without_cell_ids_identical_source_is_a_rerun_and_new_source_a_new_turn(fresh):
    fresh.run("%%qwen\nSame")
    fresh.run("%%qwen\nSame")
    assert len(fresh.server.requests[-1].body["messages"]) == 1
    fresh.run("%%qwen\nDifferent")
    assert len(fresh.server.requests[-1].body["messages"]) == 3


def test_system_prompt_is_set_without_a_request(fresh):
    before = len(fresh.server.requests)
    run = fresh.run("%%qwen --system\nYou are a terse tutor.")
    assert len(fresh.server.requests) == before
    assert "nothing was sent" in run.data("text/plain")[0]
    fresh.run("%%qwen\nHi")
    assert fresh.server.requests[-1].body["system"] == "You are a terse tutor."


def test_named_chats_are_independent_and_new_starts_fresh(fresh):
    fresh.run("%%qwen\nMain thread")
    fresh.run("%%qwen --chat side\nSide thread")
    assert len(fresh.server.requests[-1].body["messages"]) == 1
    fresh.run("%%qwen\nMain again")
    assert len(fresh.server.requests[-1].body["messages"]) == 3
    fresh.run("%%qwen --new\nFresh start")
    assert len(fresh.server.requests[-1].body["messages"]) == 1


def test_reset_forgets_the_conversation(fresh):
    fresh.run("%%qwen\nRemember me")
    fresh.run("%qwen reset")
    fresh.run("%%qwen\nWho am I?")
    assert len(fresh.server.requests[-1].body["messages"]) == 1


def test_no_stream_temperature_model_and_max_tokens_options(fresh):
    run = fresh.run("%%qwen --no-stream --temperature 0.3 -m qwen3.7-max --max-tokens 77\nCalm answer")
    assert run.markdown == "Echo: Calm answer"
    painted = [m for m in run.of("display_data", "update_display_data") if is_markdown(m["content"]["data"])]
    assert len(painted) == 1  # the whole answer, painted once
    body = fresh.server.requests[-1].body
    assert body.get("stream") in (None, False)
    assert body["temperature"] == 0.3
    assert body["model"] == "qwen3.7-max"
    assert body["max_tokens"] == 77


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("%%qwen\n   \n", "empty"),
        ("%%qwen --bogus\nHi", "unrecognized arguments"),
        ("%%qwen --temperature 5\nHi", "temperature"),
        ("%%qwen --max-tokens 0\nHi", "max-tokens"),
    ],
)
def test_usage_errors_are_one_line_and_send_nothing(fresh, cell, expected):
    before = len(fresh.server.requests)
    run = fresh.run(cell)
    assert len(fresh.server.requests) == before
    assert_usage_error(run, expected)


def test_config_shows_sets_and_validates(fresh):
    shown = fresh.run("%qwen config").markdown
    for name in ("model", "region", "base_url", "max_tokens", "thinking", "thinking_budget", "timeout", "max_retries"):
        assert f"`{name}`" in shown
    fresh.run("%qwen config max_tokens=123 model=qwen-plus")
    fresh.run("%%qwen\nHi")
    body = fresh.server.requests[-1].body
    assert (body["max_tokens"], body["model"]) == (123, "qwen-plus")
    bad = fresh.run("%qwen config max_tokens=-5")
    assert_usage_error(bad, "max_tokens")
    unknown = fresh.run("%qwen config colour=blue")
    assert "unknown setting" in unknown.stderr
    fresh.run('%config QwenMagics.model = "qwen3.5-plus"')
    fresh.run("%%qwen\nHi again")
    assert fresh.server.requests[-1].body["model"] == "qwen3.5-plus"


def test_help_is_generated_from_magic_arguments(fresh):
    run = fresh.run("%qwen help")
    assert "--thinking" in run.stdout and "%qwen config" in run.stdout


def test_model_html_in_the_answer_is_sanitized(fresh):
    evil = 'Look <img src=x onerror="window.__pwned=1"> and [click](javascript:window.__pwned=1)\n'
    fresh.server.queue(Stream(text=evil))
    run = fresh.run("%%qwen\nBe evil")
    assert not run.data("text/markdown")  # no markdown for a frontend to render: kernel-rendered HTML
    rendered = "".join(run.data("text/html"))
    assert "onerror" not in rendered and "javascript:" not in rendered.lower() and "Look" in rendered
    assert "".join(run.data("text/plain")[:-1]) == evil  # the plain text keeps what the model said


def test_terminal_view_streams_plain_text_once(tmp_path):
    out = run_terminal(
        tmp_path,
        "server.queue(Stream(text='# Title\\n\\nBody text', chunk=3))\n"
        "shell.run_cell_magic('qwen', '', 'Hello')\n",
    )
    assert out.stdout.startswith("# Title\n\nBody text\n")
    assert out.stdout.count("Body text") == 1
    assert "qwen3.6-plus" in out.stdout.splitlines()[-1]


def test_a_cell_that_asks_twice_keeps_both_turns(fresh):
    run = fresh.run(
        "for _q in ('First of two', 'Second of two'):\n    get_ipython().run_cell_magic('qwen', '', _q)",
        cell_id="loop-cell",
    )
    assert run.status == "ok", run.error_text
    texts = [m["content"][0]["text"] for m in fresh.server.requests[-1].body["messages"]]
    assert texts == ["First of two", "Echo: First of two", "Second of two"]


@pytest.mark.parametrize("command", ["history --chat tpyo", "reset --chat tpyo", "export --chat tpyo {path}"])
def test_a_command_on_a_conversation_that_was_never_started_says_so(fresh, tmp_path, command):
    """A mistyped --chat is a short error naming the conversations there are, not a new, empty one."""
    fresh.run("%%qwen --chat work\nHello")
    run = fresh.run("%qwen " + command.format(path=tmp_path / "x.ipynb"))
    assert_usage_error(run, "tpyo", "work")
    assert "tpyo" not in fresh.run("%qwen usage").stdout + str(fresh.run("%qwen usage").markdown)
    assert not (tmp_path / "x.ipynb").exists()
