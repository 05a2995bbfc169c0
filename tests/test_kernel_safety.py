"""Issue 13 in a real kernel: the key never leaves, bad paths and settings are short errors, odd tool calls."""

from __future__ import annotations

import json
import re

import kernel_harness
import pytest
from fake_dashscope import Stream, ToolCall
from helpers import assert_usage_error
from kernel_harness import is_markdown

pytestmark = pytest.mark.kernel


def sent_text(kernel) -> str:
    return json.dumps(kernel.server.requests[-1].body, ensure_ascii=False)


def plain_text(run) -> str:
    """Every output's plain text, notes and answer alike, in one string."""
    return " ".join(run.data("text/plain"))


# -- the key -----------------------------------------------------------------------------------


def test_a_value_holding_the_key_is_masked_in_what_is_sent_with_a_note(fresh):
    key = fresh.server.api_key
    fresh.run("import os\nsettings = {'region': 'cn', 'key': os.environ['DASHSCOPE_API_KEY']}")
    run = fresh.run("%%qwen\nIs anything wrong with {settings}?")
    assert run.status == "ok", run.error_text
    assert key not in sent_text(fresh)
    assert "sk-…agic" in sent_text(fresh) and "'region': 'cn'" in sent_text(fresh)
    assert "The API key was masked in what was sent ({settings} held it)" in plain_text(run)


def test_a_value_without_the_key_gets_no_note(fresh):
    fresh.run("plain = 'nothing secret'")
    run = fresh.run("%%qwen\nRead {plain}")
    assert "masked" not in plain_text(run)


def test_a_system_prompt_value_holding_the_key_is_masked(fresh):
    fresh.run("import os\ncfg = os.environ['DASHSCOPE_API_KEY']")
    run = fresh.run("%%qwen --system\nYou know {cfg}.")
    assert "masked in what was sent" in plain_text(run)
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
    assert "The API key was masked in what was sent" in plain_text(run)


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


# -- files, paths and cassettes -------------------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path):
    import os
    import socket

    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "stdin.mp4").symlink_to("/dev/stdin")
    (tmp_path / "plain.txt").write_text("x")
    yield tmp_path
    sock.close()


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("folder.png", "is a folder"),
        ("pipe.png", "pipe (FIFO)"),
        ("sock.png", "socket"),
        ("zero.png", "character device"),
        ("stdin.mp4", "not a regular file"),
    ],
)
def test_media_paths_that_are_not_regular_files_are_short_errors(fresh, odd_files, name, needle):
    before = len(fresh.server.requests)
    run = fresh.run(f"%%qwen\nLook at {odd_files / name}", timeout=15)
    text = assert_usage_error(run, name)
    assert needle in text or "not a regular file" in text, text
    assert len(fresh.server.requests) == before


def test_path_values_naming_devices_are_short_errors(fresh, odd_files):
    fresh.run(f"from pathlib import Path\nzero, stdin = Path({str(odd_files / 'zero.png')!r}), Path({str(odd_files / 'stdin.mp4')!r})")
    assert_usage_error(fresh.run("%%qwen\nLook at {zero}", timeout=15), "character device")
    assert_usage_error(fresh.run("%%qwen\nLook at {stdin}", timeout=15), "not a regular file")


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("{dir}", ["is a folder", "give a file name"]),
        ("{dir}/missing/sub/x.ipynb", ["does not exist", "mkdir -p"]),
        ("{dir}/plain.txt/x.ipynb", ["is not a folder"]),
        ("/proc/qwen-test.ipynb", ["Cannot write", "Choose a place"]),
    ],
)
def test_export_to_a_bad_place_is_a_short_error(fresh, odd_files, target, needles):
    fresh.run("%%qwen\nHi")
    path = target.format(dir=odd_files)
    if path == str(odd_files):
        path = str(odd_files / "folder.png") + ".ipynb"
        (odd_files / "folder.png.ipynb").mkdir()
    run = fresh.run(f"%qwen export {path} --force")
    assert_usage_error(run, *needles)


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("{dir}", ["is a folder", "demo.jsonl"]),
        ("{dir}/pipe.png", ["pipe (FIFO)"]),
        ("{dir}/zero.png", ["character device"]),
        ("{dir}/missing/x.jsonl", ["does not exist"]),
        ("/proc/qwen-test.jsonl", ["Cannot write", "Choose a place"]),
    ],
)
def test_record_to_a_bad_place_is_a_short_error(fresh, odd_files, target, needles):
    run = fresh.run(f"%qwen record {target.format(dir=odd_files)}", timeout=15)
    assert_usage_error(run, *needles)
    assert fresh.run("%qwen record").status == "ok"
    assert "No cassette" in plain_text(fresh.run("%qwen record"))


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("{dir}", ["is a folder"]),
        ("{dir}/pipe.png", ["pipe (FIFO)"]),
        ("{dir}/zero.png", ["character device"]),
        ("{dir}/stdin.mp4", ["not a regular file"]),
        ("{dir}/plain.txt", ["not a qwen-magic cassette"]),
    ],
)
def test_replay_from_a_bad_place_is_a_short_error(fresh, odd_files, target, needles):
    run = fresh.run(f"%qwen replay {target.format(dir=odd_files)}", timeout=15)
    assert_usage_error(run, *needles)


@pytest.mark.parametrize("name", ["__builtins__", "__name__", "class", "None", "In", "Out", "_", "_i3", "_12", "get_ipython", "2x", "a-b", "ﬁle"])
def test_output_names_that_cannot_be_assigned_are_refused(fresh, name):
    before = len(fresh.server.requests)
    run = fresh.run(f"%%qwen -o {name}\nHi")
    assert_usage_error(run, "-o/--output")
    assert len(fresh.server.requests) == before
    assert fresh.run("print(type(__builtins__).__name__ in ('module', 'dict'))").stdout.strip() == "True"


def test_ordinary_output_names_still_work(fresh):
    for name in ("answer", "match", "résumé", "_private"):
        fresh.run(f"%%qwen -o {name}\nHi")
        assert fresh.run(f"print({name}.startswith('Echo'))\ndel {name}").stdout.strip() == "True", name


def test_values_whose_repr_breaks_are_short_errors(fresh):
    fresh.run(
        "class Loud(Exception):\n"
        "    def __str__(self): raise RuntimeError('no')\n"
        "class A:\n    def __repr__(self): raise ValueError('broken')\n"
        "class B:\n    def __repr__(self): return 3\n"
        "class C:\n    def __repr__(self): raise Loud()\n"
        "a, b, c = A(), B(), C()\n"
    )
    for name, needle in (("a", "ValueError: broken"), ("b", "non-string"), ("c", "Loud")):
        assert_usage_error(fresh.run(f"%%qwen\nWhat is {{{name}}}?"), f"{{{name}}}", needle)


HOSTILE = 'Hi <img src=x onerror="alert(1)"> [a](javascript:alert(2)) <script>alert(3)</script>'


def test_a_replayed_hostile_answer_is_shown_exactly_as_the_live_one(fresh, tmp_path):
    cassette = tmp_path / "hostile.jsonl"
    fresh.run(f"%qwen record {cassette}")
    fresh.server.queue(Stream(text=HOSTILE, chunk=4))
    live = fresh.run("%%qwen\nSay something hostile")
    fresh.run("%qwen record --stop")
    fresh.run("%qwen reset")
    fresh.run(f"%qwen replay {cassette} --speed 0")
    replayed = fresh.run("%%qwen\nSay something hostile")
    fresh.run("%qwen replay --stop")
    assert replayed.status == "ok", replayed.error_text
    assert replayed.markdown == live.markdown  # the same text, through the same rendering path
    shown = ["".join(kernel_harness.shown(o["data"]) for o in run.outputs if is_markdown(o.get("data", {}))) for run in (live, replayed)]
    assert shown[0] == shown[1]
    assert "Hi" in shown[0] and not re.search(r"<img[^>]*onerror|<script|javascript:", shown[0])


def test_replaying_a_damaged_cassette_is_a_short_error(fresh, tmp_path):
    cassette = tmp_path / "cut.jsonl"
    fresh.run(f"%qwen record {cassette}")
    fresh.run("%%qwen\nHello")
    fresh.run("%qwen record --stop")
    data = cassette.read_bytes()
    cassette.write_bytes(data[: len(data) - 40])
    assert_usage_error(fresh.run(f"%qwen replay {cassette}"), "line 2", "cut short", "Record the cassette again")
    cassette.write_bytes(data.replace(b'"body":[', b'"body":{"x":[', 1).replace(b']}\n', b']}}\n'))
    text = assert_usage_error(fresh.run(f"%qwen replay {cassette}"), "line 2")
    assert "body" in text


# -- bad settings --------------------------------------------------------------------------------


def float_settings(kernel) -> list[str]:
    code = (
        "from traitlets import Float\n"
        "print(' '.join(n for n, t in _qm.traits(config=True).items() if isinstance(t, Float)))"
    )
    return kernel.run(code).stdout.split()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_config_refuses_nan_and_infinities_for_every_float_setting(fresh, value):
    names = float_settings(fresh)
    assert {"timeout", "replay_speed"} <= set(names)
    for name in names:
        before = fresh.run(f"print(repr(_qm.{name}))").stdout
        run = fresh.run(f"%qwen config {name}={value}")
        if name == "replay_speed" and value in ("inf", "Infinity"):
            assert run.status == "ok", run.error_text  # documented: inf = no waiting
            fresh.run(f"_qm.{name} = {before}")
            continue
        assert_usage_error(run, name, "must be")
        assert fresh.run(f"print(repr(_qm.{name}))").stdout == before


@pytest.mark.parametrize("value", ["float('nan')", "float('inf')", "-float('inf')"])
def test_percent_config_refuses_nan_and_infinities(fresh, value):
    for name in float_settings(fresh):
        before = fresh.run(f"print(repr(_qm.{name}))").stdout
        run = fresh.run(f"%config QwenMagics.{name} = {value}")
        if name == "replay_speed" and value == "float('inf')":
            fresh.run(f"_qm.{name} = {before}")
            continue
        assert run.status == "error" or "must be" in run.stderr, (name, value)
        assert "must be" in run.error_text + run.stderr, (name, value)
        assert fresh.run(f"print(repr(_qm.{name}))").stdout == before


@pytest.mark.parametrize("flag", ["--temperature nan", "--temperature inf", "--temperature -inf"])
def test_cell_flags_refuse_nan_and_infinities(fresh, flag):
    before = len(fresh.server.requests)
    assert_usage_error(fresh.run(f"%%qwen {flag}\nHi"), "--temperature")
    assert len(fresh.server.requests) == before


@pytest.mark.parametrize("speed", ["nan", "-inf", "-1"])
def test_replay_speed_flag_refuses_nan(fresh, speed):
    assert "--speed" in fresh.run(f"%qwen replay --speed {speed}").stderr


def test_the_404_message_never_suggests_the_model_that_failed(fresh):
    from fake_dashscope import Status

    fresh.run("%qwen config max_retries=0")
    for model in ("qwen3.6-plus", "qwen3.7-plus"):
        fresh.server.queue(Status(404, "not_found_error", f"The model `{model}` does not exist."))
        run = fresh.run(f"%%qwen -m {model}\nHi")
        text = run.error_text + run.stderr
        assert "404" in text and f"model={model}`" not in text and f"-m {model}`" not in text, text
        assert "%qwen config model=" in text


# -- odd tool calls ---------------------------------------------------------------------------------

TOOL_DEFINITIONS = '''
import json
calls = []

def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    calls.append(["add", a, b])
    return a + b
'''

ODD_CALLS = [
    ("bad name", ToolCall("get weather!", {"a": 1, "b": 2}), "no tool named 'get weather!'"),
    ("long name", ToolCall("x" * 65, {"a": 1, "b": 2}), "no tool named"),
    ("empty name", ToolCall("", {}), "no tool named ''"),
    ("unicode name", ToolCall("天气", {}), "no tool named '天气'"),
    ("string input", ToolCall("add", "a=1, b=2"), "must be one JSON object"),
    ("list input", ToolCall("add", [1, 2]), "must be one JSON object"),
    ("number input", ToolCall("add", 12), "must be one JSON object"),
    ("truncated JSON", ToolCall("add", None, raw='{"a": 1, "b": '), "must be one JSON object"),
    ("not JSON", ToolCall("add", None, raw="{a: 1, b: 2}"), "must be one JSON object"),
    ("words", ToolCall("add", None, raw="add one and two"), "must be one JSON object"),
    ("trailing garbage", ToolCall("add", None, raw='{"a": 1, "b": 2}}'), "must be one JSON object"),
    ("NaN", ToolCall("add", None, raw='{"a": NaN, "b": 2}'), "must be one JSON object"),
    ("JSON list", ToolCall("add", None, raw="[1, 2]"), "must be one JSON object"),
    ("JSON string", ToolCall("add", None, raw='"a and b"'), "must be one JSON object"),
]


@pytest.fixture
def adder(fresh):
    run = fresh.run(TOOL_DEFINITIONS)
    assert run.status == "ok", run.error_text
    return fresh


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize(("label", "call", "needle"), ODD_CALLS, ids=[c[0] for c in ODD_CALLS])
def test_an_odd_tool_call_is_answered_with_an_error_and_the_next_cells_are_accepted(adder, stream, label, call, needle):
    call.id = "odd1"
    adder.server.queue(Stream(tool_calls=[call, ToolCall("add", {"a": 2, "b": 3}, id="good")]), Stream(text="Done."))
    flag = "" if stream else " --no-stream"
    run = adder.run(f"%%qwen --tools add{flag}\nAdd things")
    assert run.status == "ok", run.error_text + run.stderr
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr, run.stderr
    assert json.loads(adder.run("print(json.dumps(calls))").stdout) == [["add", 2, 3]]
    follow_up = adder.server.requests[-1]
    assert follow_up.status == 200
    results = {b["tool_use_id"]: b["content"] for b in follow_up.body["messages"][2]["content"]}
    assert needle in results["odd1"] and results["good"] == "5"
    assert "Done." in run.markdown
    for cell in ("%%qwen\nAnd now?", "%%qwen --tools add\nAgain?", f"%%qwen{flag}\nOnce more"):
        adder.server.queue(Stream(text="Fine."))
        after = adder.run(cell)
        assert after.status == "ok", (cell, after.error_text + after.stderr)
        assert adder.server.requests[-1].status == 200
    history = adder.server.requests[-1].body["messages"]
    recorded = next(b for m in history for b in m["content"] if isinstance(b, dict) and b.get("id") == "odd1")
    assert isinstance(recorded["input"], dict) and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", recorded["name"])


def test_the_fake_service_refuses_invalid_names_and_inputs_in_history(server):
    import anthropic

    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    for name, arguments in (("get weather!", {}), ("add", "text"), ("add", [1])):
        messages = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": name, "input": arguments}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
        ]
        tools = [{"name": "add", "input_schema": {"type": "object"}}]
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="qwen3.6-plus", max_tokens=10, messages=messages, tools=tools)


# -- terminal reruns ----------------------------------------------------------------------------------


@pytest.mark.parametrize("again", ["%%qwen\nSame\n", "%%qwen\nSame\n\n\n", "\n%%qwen\nSame  \n \n", "%%qwen \nSame"])
def test_a_recalled_cell_with_other_trailing_blank_lines_is_a_rerun(fresh, again):
    fresh.run("%%qwen\nFirst")
    fresh.run("%%qwen\nSame")
    fresh.run(again)  # no cell id, as in terminal IPython
    assert [m["role"] for m in fresh.server.requests[-1].body["messages"]] == ["user", "assistant", "user"]
    fresh.run("%%qwen\nSame, edited")
    assert len(fresh.server.requests[-1].body["messages"]) == 5


def test_code_holding_the_key_goes_masked_into_the_new_cell(fresh):
    key = fresh.server.api_key
    fresh.server.queue(Stream(text=f"```python\nclient = make('{key}')\n```\n"))
    run = fresh.run("%%qwen --code\nWrite the client")
    (payload,) = run.reply["payload"]
    assert key not in payload["text"] and "make('sk-…agic')" in payload["text"]
    # The answer itself was already masked as it streamed: what it shows is what the cell gets.
    assert key not in run.markdown and "make('sk-…agic')" in run.markdown


def test_a_value_with_a_lone_surrogate_is_a_short_error_saying_why(fresh):
    fresh.run("odd = 'report\\udcff.txt'")
    before = len(fresh.server.requests)
    assert_usage_error(fresh.run("%%qwen\nWhat is {odd}?"), "{odd}", "lone surrogate")
    assert len(fresh.server.requests) == before


def test_tool_results_go_out_without_the_key_and_encodable(fresh):
    fresh.run(
        "import os\n"
        "def env() -> str:\n    \"\"\"The environment.\"\"\"\n    return 'key=' + os.environ['DASHSCOPE_API_KEY'] + ' name=a\\udcffb'\n"
    )
    fresh.server.queue(Stream(tool_calls=[ToolCall("env", {}, id="e1")]), Stream(text="Seen."))
    run = fresh.run("%%qwen --tools env\nLook")
    assert run.status == "ok", run.error_text + run.stderr
    result = fresh.server.requests[-1].body["messages"][2]["content"][0]["content"]
    assert result == "key=sk-…agic name=a\\udcffb"
    assert fresh.server.api_key not in json.dumps(run.outputs, ensure_ascii=False)


def test_explain_sends_a_traceback_with_a_lone_surrogate(fresh):
    assert fresh.run("raise ValueError('bad \\udcff byte')").status == "error"
    fresh.server.queue(Stream(text="Decode it."))
    run = fresh.run("%qwen explain")
    assert run.status == "ok", run.error_text + run.stderr
    assert "ValueError: bad \\\\udcff byte" in sent_text(fresh)


def test_a_service_error_echoing_the_key_shows_it_masked(fresh):
    from fake_dashscope import Status

    fresh.run("%qwen config max_retries=0")
    fresh.server.queue(Status(400, "invalid_request_error", f"Bad key {fresh.server.api_key} here"))
    run = fresh.run("%%qwen\nHi")
    text = run.error_text + run.stderr
    assert fresh.server.api_key not in text and "Bad key sk-…agic here" in text


def test_replaying_damaged_events_says_which_and_what(fresh, tmp_path):
    cassette = tmp_path / "events.jsonl"
    fresh.run(f"%qwen record {cassette}")
    fresh.server.queue(Stream(text="Hello there", chunk=3))
    fresh.run("%%qwen\nHi")
    fresh.run("%qwen record --stop")
    head, line = cassette.read_text().splitlines()
    damages = {
        "text int": lambda e: [p["data"]["delta"].__setitem__("text", 5) for p in e["body"] if p.get("event") == "content_block_delta"],
        "start list": lambda e: e["body"][0].__setitem__("data", [1, 2]),
        "no start": lambda e: e.__setitem__("body", [p for p in e["body"] if p.get("event") != "message_start"]),
        "bad index": lambda e: [p["data"].__setitem__("index", 9) for p in e["body"] if p.get("event") == "content_block_stop"],
        "usage text": lambda e: [p["data"]["usage"].__setitem__("output_tokens", "many") for p in e["body"] if p.get("event") == "message_delta"],
    }
    for name, damage in damages.items():
        exchange = json.loads(line)
        damage(exchange)
        cassette.write_text(head + "\n" + json.dumps(exchange) + "\n")
        fresh.run("%qwen reset")
        fresh.run(f"%qwen replay {cassette} --speed 0")
        run = fresh.run("%%qwen\nHi")
        fresh.run("%qwen replay --stop")
        text = run.error_text + run.stderr
        assert run.status == "error" and "Traceback" not in text and len(text) < 600, (name, text)
        assert "line 2: the recorded answer is damaged at" in text and "Record the cassette again" in text, (name, text)
    assert fresh.run("%%qwen\nStill there?").status == "ok"


def test_recording_onto_a_damaged_cassette_says_how_to_start_afresh(fresh, tmp_path):
    cassette = tmp_path / "cut.jsonl"
    fresh.run(f"%qwen record {cassette}")
    fresh.run("%%qwen\nHello")
    fresh.run("%qwen record --stop")
    cassette.write_bytes(cassette.read_bytes()[:-30])
    assert_usage_error(fresh.run(f"%qwen record {cassette}"), "line 2", "--overwrite")
    assert fresh.run(f"%qwen record {cassette} --overwrite").status == "ok"
    fresh.run("%qwen record --stop")
