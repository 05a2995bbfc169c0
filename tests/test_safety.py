"""Issue 13 without a kernel: the 404 suggestion, the file checks, float settings, odd tool calls."""

from __future__ import annotations

import re
from pathlib import Path

import anthropic
import httpx2
import pytest

from qwen_magic._client import KNOWN_MODELS, translate


def not_found(model: str) -> anthropic.NotFoundError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    body = {"type": "error", "error": {"type": "not_found_error", "message": f"The model `{model}` does not exist."}}
    return anthropic.NotFoundError("404", response=httpx2.Response(404, request=request), body=body)


@pytest.mark.parametrize("model", [*KNOWN_MODELS, "QWEN3.6-PLUS", " qwen3.6-plus", "qwen3.6-plsu", "gpt-4", "x"])
def test_the_404_message_suggests_a_listed_model_that_differs(model):
    text = str(translate(not_found(model), model=model, base_url="http://h"))
    suggested = set(re.findall(r"model=(\S+?)`", text)) | set(re.findall(r"`-m (\S+?)`", text))
    assert len(suggested) == 1, text
    (other,) = suggested
    assert other in KNOWN_MODELS and other.lower() != model.strip().lower(), text


def test_a_misspelt_model_gets_the_closest_listed_one():
    text = str(translate(not_found("qwen3.6-plsu"), model="qwen3.6-plsu", base_url="http://h"))
    assert "model=qwen3.6-plus`" in text


def test_a_cassette_write_that_fails_is_a_short_cassette_error(tmp_path, monkeypatch):
    from pathlib import Path

    from qwen_magic._cassette import CassetteError, Recorder

    recorder = Recorder(tmp_path / "c.jsonl")

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(CassetteError, match=r"could not be written to .*c\.jsonl \(\[Errno 28\] No space left on device\)"):
        recorder.write({"method": "POST", "path": "/v1/messages", "body": []}, set())


@pytest.mark.parametrize(
    ("text", "broken"),
    [
        ("", False), ("  ", False), ("{}", False), ('{"a": [1, {"b": null}]}', False), ('{"s": "line\nbreak"}', False),
        ('"text"', True), ("[1, 2]", True), ("12", True), ("null", True), ('{"a": 1', True), ('{"a": 1}}', True),
        ("{a: 1}", True), ('{"a": NaN}', True), ('{"a": Infinity}', True), ("[" * 10_000, True),
    ],
)
def test_argument_text_must_be_one_json_object(text, broken):
    from qwen_magic._calls import _arguments_problem

    assert _arguments_problem(text) is broken


@pytest.mark.parametrize(
    ("call", "broken", "expected"),
    [
        ({"id": "t", "name": "ok_name-1", "input": {"a": 1}}, {}, {"name": "ok_name-1", "input": {"a": 1}}),
        ({"id": "t", "name": "bad name", "input": {"a": 1}}, {}, {"name": "invalid_tool_name", "input": {"a": 1}}),
        ({"id": "t", "name": "x" * 65, "input": "s"}, {}, {"name": "invalid_tool_name", "input": {}}),
        ({"id": "t", "name": None, "input": [1]}, {}, {"name": "invalid_tool_name", "input": {}}),
        ({"id": "t", "name": "f", "input": {"a": 1}}, {"t": '{"a": 1'}, {"name": "f", "input": {}}),
    ],
)
def test_history_keeps_only_names_and_inputs_the_service_accepts(call, broken, expected):
    from qwen_magic._calls import make_acceptable

    make_acceptable(call, broken)
    assert {"name": call["name"], "input": call["input"]} == expected and call["id"] == "t"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_settings_refuse_nan_and_infinities(value):
    from traitlets import TraitError

    from qwen_magic._magic import QwenMagics

    magics = QwenMagics()
    with pytest.raises(TraitError, match="timeout must be a finite number"):
        magics.timeout = value
    if value == float("inf"):
        magics.replay_speed = value  # documented: no waiting
    else:
        with pytest.raises(TraitError, match="replay_speed must be"):
            magics.replay_speed = value
    magics.timeout, magics.replay_speed = 5, 0
    assert (magics.timeout, magics.replay_speed) == (5.0, 0.0)


def test_a_tiny_replay_speed_cannot_overflow_the_wait(tmp_path, monkeypatch):
    import time

    from qwen_magic._cassette import MAX_TIME, Player

    path = tmp_path / "c.jsonl"
    path.write_text('{"cassette": "qwen-magic", "version": 1}\n')
    slept: list[float] = []
    monkeypatch.setattr("qwen_magic._cassette._replay.time.sleep", slept.append)
    player = Player(path, speed=1e-300)
    player.wait(time.monotonic(), 1.0)
    assert slept == [MAX_TIME]


def test_open_regular_refuses_what_is_not_a_regular_file_without_blocking(tmp_path):
    import os

    from IPython.core.error import UsageError

    from qwen_magic._files import check_target, open_regular

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"abc")
    for name, needle in (("pipe", "pipe (FIFO)"), ("dir", "is a folder"), ("missing", "No such file")):
        with pytest.raises(UsageError, match=re.escape(needle)):
            open_regular(tmp_path / name, name)
    with pytest.raises(UsageError, match="character device"):
        open_regular(Path("/dev/zero"), "/dev/zero")
    file, size = open_regular(tmp_path / "file", "file")
    with file:
        assert (size, file.read(size + 1)) == (3, b"abc")
    check_target(tmp_path / "new.ipynb", "new.ipynb", "x.ipynb")
    for target, needle in (("dir", "is a folder"), ("pipe", "pipe"), ("no/x.ipynb", "does not exist"), ("file/x", "is not a folder")):
        with pytest.raises(UsageError, match=re.escape(needle)):
            check_target(tmp_path / target, target, "x.ipynb")


@pytest.mark.parametrize("how", ["stream", "raw events", "whole"])
def test_the_checked_client_never_lets_broken_arguments_reach_the_sdk(server, how):
    from fake_dashscope import Stream, ToolCall

    from qwen_magic._calls import CheckedClient

    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    broken: dict[str, str] = {}
    checked = CheckedClient(client, broken)
    server.queue(Stream(tool_calls=[ToolCall("f", None, id="bad", raw="{a: 1"), ToolCall("f", {"x": 1}, id="good")]))
    request = {"model": "qwen3.6-plus", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}],
               "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    if how == "stream":
        with checked.messages.stream(**request) as events:
            message = events.get_final_message()
        inputs = {b.id: b.input for b in message.content if b.type == "tool_use"}
    elif how == "raw events":
        with checked.messages.create(**request, stream=True) as events:
            kinds = [event.type for event in events]
        assert kinds.count("content_block_stop") == 2
        inputs = {"good": {"x": 1}, "bad": {}}
    else:
        message = checked.messages.create(**request)
        inputs = {b.id: b.input for b in message.content if b.type == "tool_use"}
    sent = '"{a: 1"' if how == "whole" else "{a: 1"  # a whole answer carries it as a JSON string
    assert broken == {"bad": sent} and inputs == {"bad": {}, "good": {"x": 1}}
    assert checked.base_url == client.base_url  # everything else is the client's own
