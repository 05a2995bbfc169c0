"""Every failure reaches the frontend as a short message; partial answers stay; the next cell works."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from fake_dashscope import Hang, Status, Stream
from helpers import assert_short_error

pytestmark = pytest.mark.kernel


def assert_next_cell_works(kernel) -> None:
    kernel.server.queue(Stream(text="Recovered."))
    run = kernel.run("%%qwen\nAre you there?")
    assert run.status == "ok", run.error_text
    assert run.markdown == "Recovered."
    roles = [m["role"] for m in kernel.server.requests[-1].body["messages"]]
    assert roles[-1] == "user" and all(a != b for a, b in itertools.pairwise(roles))


def test_missing_key_names_the_variable_and_sends_nothing(fresh):
    fresh.run("import os; del os.environ['DASHSCOPE_API_KEY']")
    before = len(fresh.server.requests)
    run = fresh.run("%%qwen\nHello")
    assert len(fresh.server.requests) == before
    assert "DASHSCOPE_API_KEY" in run.stderr and "%env" in run.stderr
    assert "Traceback" not in run.stderr + run.error_text


@pytest.mark.parametrize(
    ("reply", "needles"),
    [
        (Status(403, "authentication_error", "Invalid API-key provided."), ["403", "DASHSCOPE_API_KEY", "region"]),
        (Status(401, "authentication_error", "Unauthorized."), ["401", "DASHSCOPE_API_KEY"]),
        (Status(404, "not_found_error", "The model `qwen9` does not exist."), ["404", "qwen9", "%qwen config model"]),
        (
            Status(400, "invalid_request_error", "Range of max_tokens should be [1, 65536]"),
            ["400", "Range of max_tokens"],
        ),
        (Status(400, "invalid_request_error", "Arrearage"), ["arrears"]),
        (
            Status(400, "invalid_request_error", "messages.2: tool_use ids were found without tool_result blocks"),
            ["400", "tool_result", "%%qwen --new", "%qwen reset"],
        ),
        (Status(500, "api_error", "Internal error"), ["500", "Try again"]),
        (Status(529, "overloaded_error", "Overloaded"), ["529", "overloaded"]),
    ],
)
def test_service_errors_are_short_and_specific(fresh, reply, needles):
    fresh.run("%qwen config max_retries=0")
    fresh.server.queue(reply)
    run = fresh.run("%%qwen\nHello")
    assert_short_error(run, *needles)
    assert_next_cell_works(fresh)


def test_429_is_retried_by_the_sdk_then_reported(fresh):
    limited = Status(429, "rate_limit_error", "Requests rate limit exceeded", headers={"retry-after-ms": "5"})
    fresh.server.queue(limited, limited, limited)
    run = fresh.run("%%qwen\nHello")
    assert len(fresh.server.requests) == 3  # the first try and the SDK's two retries
    assert_short_error(run, "429", "rate limit")
    assert_next_cell_works(fresh)


def test_a_retry_that_succeeds_is_invisible(fresh):
    fresh.server.queue(Status(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "5"}))
    run = fresh.run("%%qwen\nHello")
    assert run.status == "ok" and run.markdown == "Echo: Hello"


def test_timeout_says_how_to_raise_the_limit(fresh):
    fresh.run("%qwen config timeout=0.5 max_retries=0")
    fresh.server.queue(Hang(3))
    run = fresh.run("%%qwen\nHello")
    assert_short_error(run, "in time", "timeout")
    assert_next_cell_works(fresh)


def test_refused_connection_names_the_endpoint(fresh):
    fresh.run("import os; os.environ['DASHSCOPE_BASE_URL'] = 'http://127.0.0.1:9'\n%qwen config max_retries=0")
    run = fresh.run("%%qwen\nHello")
    assert_short_error(run, "Could not reach", "127.0.0.1:9")


def test_connection_cut_mid_stream_keeps_the_partial_answer(fresh):
    fresh.run("%qwen config max_retries=0")
    fresh.server.queue(Stream(text="Partial answer that will be cut somewhere in the middle.", chunk=5, cut_after=4))
    run = fresh.run("%%qwen\nHello")
    assert_short_error(run, "connection", "broke")
    assert run.markdown == "Partial answer that "
    assert_next_cell_works(fresh)
    # The partial answer is kept as context, as documented.
    assert fresh.server.requests[-1].body["messages"][1]["content"][0]["text"] == "Partial answer that "


def test_error_event_mid_stream_keeps_the_partial_answer(fresh):
    fresh.server.queue(Stream(text="Half of an answer, then trouble.", chunk=5, error_after=3))
    run = fresh.run("%%qwen\nHello")
    assert_short_error(run, "overloaded_error", "Overloaded")
    assert run.markdown == "Half of an answ"
    assert_next_cell_works(fresh)


def test_interrupt_cancels_the_request_and_keeps_the_partial_answer(fresh):
    fresh.server.queue(Stream(text="word " * 400, chunk=5, delay=0.02))
    started = time.monotonic()
    run = fresh.run("%%qwen\nTalk for a long time", interrupt_after=1.0)
    assert time.monotonic() - started < 5
    assert_short_error(run, "Interrupted", "kept")
    assert run.markdown.startswith("word word")
    assert len(run.markdown) < 2000
    deadline = time.monotonic() + 3
    while not fresh.server.requests[-1].disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh.server.requests[-1].disconnected, "the stream should have been closed"
    history = fresh.run("%qwen history").markdown
    assert "interrupted" in history
    assert_next_cell_works(fresh)


def test_the_key_never_appears_in_any_output(fresh):
    key = fresh.server.api_key
    runs = [
        fresh.run("%%qwen\nHello"),
        fresh.run("%qwen config"),
        fresh.run("%qwen history"),
        fresh.run("%qwen"),
        fresh.run("_qm = get_ipython().magics_manager.registry['QwenMagics']; _qm"),
        fresh.run("print(_qm.chats, _qm.settings())"),
    ]
    runs.append(fresh.run("%qwen config max_retries=0"))
    fresh.server.queue(Status(403, "authentication_error", f"Invalid API-key provided: {key}"))
    runs.append(fresh.run("%%qwen\nHello"))
    for run in runs:
        assert key not in json.dumps(run.messages, default=str)
