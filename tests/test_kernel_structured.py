"""``%%qwen -o NAME --schema TYPE`` / ``--json`` through a real kernel against the local server."""

from __future__ import annotations

import io
import json

import pytest
from fake_dashscope import Status, Stream, ToolCall
from helpers import assert_usage_error, assert_valid_history, notes, ok, run_terminal
from kernel_harness import shown
from structured_responders import value_reply

pytestmark = pytest.mark.kernel

DEFINITIONS = '''
import dataclasses, enum, json
from typing import Literal, Optional
from typing_extensions import TypedDict
from pydantic import BaseModel

class City(BaseModel):
    name: str
    population: int

@dataclasses.dataclass
class Point:
    x: float
    y: float

class Movie(TypedDict):
    title: str
    year: int

class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"

class Plain:
    def __init__(self, a):
        self.a = a

calls = []

def lookup(city: str) -> int:
    """Population of a city."""
    calls.append(city)
    return 2_100_000

def shown(name):
    value = globals()[name]
    print(json.dumps({"type": type(value).__name__, "repr": repr(value)}))
'''


@pytest.fixture
def qk(fresh):
    forget = "\nfor _n in ('cities', 'value', 'data', 'table'):\n    globals().pop(_n, None)\n_qm._forcing = None\n"
    run = fresh.run(DEFINITIONS + forget)
    assert run.status == "ok", run.error_text
    return fresh


def stored(qk, name: str) -> dict:
    run = qk.run(f"shown({name!r})")
    assert run.status == "ok", run.error_text
    return json.loads(run.stdout)


def defined(qk, name: str) -> bool:
    return qk.run(f"print({name!r} in globals())").stdout.strip() == "True"


def tool_lines(run) -> list[str]:
    return [data["text/plain"] for data in run.marked("qwen-tool")]


def answer(value, *, wrapped: bool = True, **stream) -> Stream:
    return Stream(tool_calls=[ToolCall("answer", {"value": value} if wrapped else value)], **stream)


# (TYPE, value sent by the model, type name stored, its repr)
KINDS = [
    (
        '"list[City]"',
        [{"name": "Paris", "population": "2102650"}, {"name": "Lima", "population": 9751717}],
        "list",
        "[City(name='Paris', population=2102650), City(name='Lima', population=9751717)]",
    ),
    ("Point", {"x": 1, "y": "2.5"}, "Point", "Point(x=1.0, y=2.5)"),
    ("Movie", {"title": "Alien", "year": "1979"}, "dict", "{'title': 'Alien', 'year': 1979}"),
    ("Mood", "sad", "Mood", "<Mood.SAD: 'sad'>"),
    ("int", "42", "int", "42"),
    ("str", "bonjour", "str", "'bonjour'"),
    ("float", 3, "float", "3.0"),
    ("bool", True, "bool", "True"),
    ("Literal['yes','no']", "no", "str", "'no'"),
    ('"dict[str, float]"', {"a": 1, "b": "2.5"}, "dict", "{'a': 1.0, 'b': 2.5}"),
    ('"tuple[int, int]"', [3, "4"], "tuple", "(3, 4)"),
    ("Optional[City]", None, "NoneType", "None"),
    ("Optional[City]", {"name": "Oslo", "population": 709037}, "City", "City(name='Oslo', population=709037)"),
    ('"list[Mood]"', ["happy", "sad"], "list", "[<Mood.HAPPY: 'happy'>, <Mood.SAD: 'sad'>]"),
]


@pytest.mark.parametrize(("spec", "sent", "kind", "expected"), KINDS, ids=[f"{k[0]}-{k[2]}" for k in KINDS])
def test_each_kind_of_type_arrives_as_a_tool_call_and_is_stored_converted(qk, spec, sent, kind, expected):
    wrapped = spec not in ("Point", "Movie", '"dict[str, float]"', "City")
    qk.server.queue(answer(sent, wrapped=wrapped, json_chunk=4))
    run = qk.run(f"%%qwen -o value --schema {spec}\nGive me one.")
    ok(run)
    assert stored(qk, "value") == {"type": kind, "repr": expected}
    (request,) = qk.server.requests
    assert request.body["tool_choice"] == {"type": "tool", "name": "answer"}
    (tool,) = request.body["tools"]
    assert tool["name"] == "answer" and tool["input_schema"]["type"] == "object"
    assert ("value" in tool["input_schema"].get("properties", {})) == wrapped
    spelled = spec.strip('"')
    instruction = request.body["messages"][-1]["content"][-1]["text"]
    assert f"a value of type {spelled}" in instruction and "`answer`" in instruction
    (note,) = notes(run)
    assert note.startswith("Stored a") and note.endswith(" in value") and spelled in note


@pytest.mark.parametrize("form", ["bare", "fenced"])
@pytest.mark.parametrize(("spec", "sent", "kind", "expected"), KINDS, ids=[f"{k[0]}-{k[2]}" for k in KINDS])
def test_each_kind_of_type_arrives_as_json_text_too(qk, spec, sent, kind, expected, form):
    text = json.dumps(sent, ensure_ascii=False)
    if form == "fenced":
        text = f"Here is the value you asked for.\n\n```json\n{json.dumps(sent, indent=2)}\n```\n\nAnything else?"
    qk.server.queue(Stream(text=text, chunk=6))
    run = qk.run(f"%%qwen -o value --schema {spec}\nGive me one.")
    ok(run)
    assert stored(qk, "value") == {"type": kind, "repr": expected}
    assert len(qk.server.requests) == 1
    (note,) = notes(run)
    assert note.startswith("Stored a") and note.endswith(" in value")


def test_the_value_streams_as_a_json_block_then_a_table_and_a_note(qk):
    cities = [{"name": n, "population": 1000 * i} for i, n in enumerate(["Paris", "Lima", "Oslo", "Quito"])]
    qk.server.queue(answer(cities, json_chunk=3, delay=0.02))
    run = qk.run('%%qwen -o cities --schema "list[City]"\nFour cities.')
    ok(run)
    # While it streamed: the live output was a growing json code block, re-indented one record a line.
    # (An open code block's window is markdown written in the kernel, as the finished block is.)
    live = [shown(m["content"]["data"]) for m in run.of("display_data", "update_display_data")]
    growing = [h for h in live if "qwen-markdown" in h and ("<pre" in h or "```json" in h) and "Paris" in h and "Quito" not in h]
    assert growing, live
    assert '"value": [\n    {"name": "Paris", "population": 0},\n' in run.markdown
    assert run.markdown.rstrip().endswith("```")
    # Then the value as a table (escaped) and the note.
    (table,) = run.marked('class="qwen-value"')
    assert "<th>name</th><th>population</th>" in table["text/html"] and "<td>Quito</td>" in table["text/html"]
    assert table["text/plain"].startswith("[City(name='Paris', population=0)")
    assert notes(run) == ["Stored a list[City] of 4 items in cities"]
    assert tool_lines(run) == []
    order = [o["data"].get("text/plain", "") for o in run.outputs if "data" in o]
    assert order.index(table["text/plain"]) > max(i for i, t in enumerate(order) if "```json" in t)


def test_a_bare_json_text_answer_is_taken(qk):
    qk.server.queue(Stream(text='[{"name": "Paris", "population": 2102650}]', chunk=5))
    run = qk.run('%%qwen -o cities --schema "list[City]"\nOne city.')
    ok(run)
    assert stored(qk, "cities")["repr"] == "[City(name='Paris', population=2102650)]"
    assert len(qk.server.requests) == 1
    assert notes(run) == ["Stored a list[City] of 1 item in cities"]


def test_fenced_json_among_prose_is_taken_the_last_block_wins(qk):
    text = (
        "A first try:\n\n```json\n{\"name\": \"Lima\", \"population\": 1}\n```\n\nCorrected:\n\n"
        "```json\n{\"name\": \"Oslo\", \"population\": 709037}\n```\n\n"
        "```python\nprint('not this')\n```\nHope that helps."
    )
    qk.server.queue(Stream(text=text, chunk=9))
    run = qk.run("%%qwen -o value --schema City\nOne city.")
    ok(run)
    assert stored(qk, "value")["repr"] == "City(name='Oslo', population=709037)"
    assert "Corrected:" in run.markdown  # the prose stays on screen
    # The JSON text is the turn's answer in the history.
    qk.server.queue(Stream(text="Sure."))
    ok(qk.run("%%qwen\nNow add its country."))
    messages = qk.server.requests[-1].body["messages"]
    assert messages[1] == {"role": "assistant", "content": [{"type": "text", "text": text}]}
    assert_valid_history(messages)


def test_an_invalid_tool_answer_is_repaired_on_the_second_round(qk):
    qk.server.queue(
        answer([{"name": "Paris", "population": "lots"}]),
        answer([{"name": "Paris", "population": 2102650}]),
    )
    run = qk.run('%%qwen -o cities --schema "list[City]"\nOne city.')
    ok(run)
    assert stored(qk, "cities")["repr"] == "[City(name='Paris', population=2102650)]"
    first, second = qk.server.requests
    assert second.body["tool_choice"] == first.body["tool_choice"] == {"type": "tool", "name": "answer"}
    (result,) = [b for b in second.body["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert "0.population: Input should be a valid integer" in result["content"] and '"lots"' in result["content"]
    assert_valid_history(second.body["messages"])
    assert notes(run) == ["Stored a list[City] of 1 item in cities"]
    (refused,) = tool_lines(run)  # the refused value is shown with why; the accepted one is not repeated
    assert refused.startswith("🔧 answer(value=[{'name': 'Paris', 'population': 'lots'}]) ⚠ Error: the arguments")
    # The next cell continues a valid history: call, error, call, acceptance, then the new prompt.
    qk.server.queue(Stream(text="Added."))
    ok(qk.run("%%qwen\nNow add Lima."))
    messages = qk.server.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "Received: a list[City] of 1 item" in json.dumps(messages[-1]["content"][0])
    assert messages[-1]["content"][-1] == {"type": "text", "text": "Now add Lima."}
    assert_valid_history(messages)


def test_an_invalid_text_answer_is_repaired_with_a_user_message(qk):
    qk.server.queue(Stream(text="It is Paris, with about two million people."), answer(7))
    run = qk.run("%%qwen -o value --schema int\nHow many?")
    ok(run)
    assert stored(qk, "value") == {"type": "int", "repr": "7"}
    second = qk.server.requests[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": [{"type": "text", "text": "It is Paris, with about two million people."}]}
    repair = second[-1]["content"][0]["text"]
    assert "no JSON value" in repair and "`answer`" in repair
    assert notes(run)[0].startswith("No valid value yet (the answer held no JSON value")
    assert notes(run)[0].endswith("asking again: repair 1 of 2.")
    assert_valid_history(second)


def test_failure_after_max_repairs_assigns_nothing_and_keeps_the_history_valid(qk):
    ok(qk.run("value = 'before'\n%qwen config max_repairs=1"))
    qk.server.queue(
        answer([{"name": "Paris"}]),
        Stream(text='```json\n[{"name": "Lima", "population": "many"}]\n```'),
    )
    run = qk.run('%%qwen -o value --schema "list[City]"\nOne city.')
    assert run.status == "error"
    assert "Traceback" not in run.error_text
    message = run.error_text
    assert "qwen:" in message and "no valid list[City] after 2 answers (1 repair allowed)" in message
    assert "0.population: Input should be a valid integer" in message and "value was not assigned" in message
    assert stored(qk, "value") == {"type": "str", "repr": "'before'"}
    assert len(qk.server.requests) == 2
    assert not notes(run)
    qk.server.queue(Stream(text="Sorry."))
    ok(qk.run("%%qwen\nNever mind."))
    assert_valid_history(qk.server.requests[-1].body["messages"])


def test_with_no_repairs_the_first_bad_answer_fails(qk):
    ok(qk.run("%qwen config max_repairs=0"))
    qk.server.queue(Stream(text="no idea"))
    run = qk.run("%%qwen -o value --json\nAnything.")
    assert run.status == "error" and "no valid JSON after 1 answer" in run.error_text
    assert len(qk.server.requests) == 1 and not defined(qk, "value")


def test_json_takes_any_value(qk):
    qk.server.queue(answer({"a": [1, 2.5, None, True], "b": "é"}))
    run = qk.run("%%qwen -o data --json\nSome JSON.")
    ok(run)
    assert stored(qk, "data") == {"type": "dict", "repr": "{'a': [1, 2.5, None, True], 'b': 'é'}"}
    assert notes(run) == ["Stored JSON (a dict of 2 items) in data"]
    assert qk.server.requests[0].body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"value": {}},
        "required": ["value"],
    }


def test_a_refused_forced_tool_choice_falls_back_to_auto_for_the_session(qk):
    qk.server.queue(
        Status(400, "invalid_request_error", "tool_choice type 'tool' is not supported for this model"),
        answer(5),
    )
    run = qk.run("%%qwen -o value --schema int\nA number.")
    ok(run)
    assert stored(qk, "value")["repr"] == "5"
    first, second = qk.server.requests
    assert first.body["tool_choice"]["type"] == "tool" and second.body["tool_choice"] == {"type": "auto"}
    assert first.body["messages"] == second.body["messages"]
    assert any("refused a forced tool_choice" in n for n in notes(run))
    qk.server.queue(answer(6))
    ok(qk.run("%%qwen -o value --schema int\nAnother."))
    assert qk.server.requests[-1].body["tool_choice"] == {"type": "auto"}  # remembered
    qk.server.queue(answer(7))
    ok(qk.run("%%qwen -m qwen3.7-max -o value --schema int\nAnother."))
    assert qk.server.requests[-1].body["tool_choice"]["type"] == "tool"  # another model is tried


@pytest.mark.parametrize("message", ["bad image", "image too large", "Range of input length should be [1, 98304]", "tools.0.input_schema: invalid"])
def test_a_400_that_is_not_about_forcing_fails_as_it_is_and_forcing_stays_on(qk, message):
    qk.server.queue(Status(400, "invalid_request_error", message))
    run = qk.run("%%qwen -o value --schema int\nA number.")
    assert run.status == "error" and f"400: the service refused the request: {message}" in run.error_text
    assert not defined(qk, "value")
    assert len(qk.server.requests) == 1 and not any("tool_choice" in n for n in notes(run))
    qk.server.queue(answer(6))
    ok(qk.run("%%qwen -o value --schema int\nAnother."))
    assert qk.server.requests[-1].body["tool_choice"] == {"type": "tool", "name": "answer"}  # not remembered as refused


def test_tools_run_first_then_the_value_is_asked_for(qk):
    qk.server.queue(
        Stream(text="Looking up.", tool_calls=[ToolCall("lookup", {"city": "Paris"})]),
        answer([{"name": "Paris", "population": 2100000}]),
    )
    run = qk.run('%%qwen --tools lookup -o cities --schema "list[City]"\nPopulation of Paris?')
    ok(run)
    assert qk.run("print(calls)").stdout.strip() == "['Paris']"
    assert stored(qk, "cities")["repr"] == "[City(name='Paris', population=2100000)]"
    first, second = qk.server.requests
    assert first.body["tool_choice"] == {"type": "any"}
    (line,) = tool_lines(run)
    assert line.startswith("🔧 lookup(city='Paris') → 2100000")
    assert [t["name"] for t in first.body["tools"]] == ["lookup", "answer"]
    assert "When you have what you need from the other tools" in first.body["messages"][-1]["content"][-1]["text"]
    assert_valid_history(second.body["messages"])


def test_the_answer_tool_gets_another_name_when_a_tool_is_called_answer(qk):
    ok(qk.run("def answer(q: str) -> str:\n    '''Answer.'''\n    return 'x'"))
    qk.server.queue(Stream(tool_calls=[ToolCall("answer_2", {"value": 3})]))
    ok(qk.run("%%qwen --tools answer -o value --schema int\nN?"))
    assert [t["name"] for t in qk.server.requests[0].body["tools"]] == ["answer", "answer_2"]
    assert stored(qk, "value")["repr"] == "3"


def test_thinking_chat_cache_and_no_stream_work_with_a_schema(qk):
    qk.server.queue(Stream(thinking="Paris is big.", tool_calls=[ToolCall("answer", {"value": 2})]))
    run = qk.run("%%qwen --thinking --chat side --cache -o value --schema int\nHow many?")
    ok(run)
    assert "qwen-thinking" in "".join(run.data("text/html"))
    body = qk.server.requests[0].body
    assert body["thinking"]["type"] == "enabled"
    assert any("cache_control" in b for b in body["messages"][-1]["content"])
    qk.server.queue(Stream(tool_calls=[ToolCall("answer", {"name": "Lima", "population": 3})]))
    ok(qk.run("%%qwen --no-stream --chat side -o value --schema City\nAnd one city?"))
    assert stored(qk, "value")["repr"] == "City(name='Lima', population=3)"
    body = qk.server.requests[1].body
    assert body.get("stream") is not True and len(body["messages"]) == 3
    assert qk.run("%qwen history --chat side").status == "ok"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-o value --schema Citty", "'Citty' is not defined"),
        ("-o value --schema Plain", "cannot be described as a JSON schema"),
        ("-o value --schema lookup", "is a function value, not a type"),
        ('-o value --schema "lookup()"', "only names, attributes and subscripts"),
        ("--schema City", "--schema needs -o NAME"),
        ("--json", "--json needs -o NAME"),
        ("-o value --json --schema City", "cannot go together"),
        ("-o value --code --schema City", "cannot go together"),
        ("--system -o value --schema Citty", "--system sets the system prompt and sends nothing"),
        ("--system -o value --json", "drop -o/--schema/--json"),
        ("--system -o value", "no answer to store"),
    ],
)
def test_bad_types_and_flags_are_usage_errors_before_anything_is_sent(qk, line, message):
    run = qk.run(f"%%qwen {line}\nAnything.")
    assert_usage_error(run, message)
    assert qk.server.requests == [] and qk.run("print(calls)").stdout.strip() == "[]"


def test_a_table_in_a_picture_becomes_a_dataframe(qk):
    pytest.importorskip("pandas")
    PIL = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    PIL.new("RGB", (40, 20), "white").save(buffer, format="PNG")
    ok(qk.run(f"import io\nfrom PIL import Image\nreceipt = Image.open(io.BytesIO({buffer.getvalue()!r}))"))
    rows = [{"name": "Paris", "population": 2102650}, {"name": "Lima", "population": "9751717"}]
    qk.server.queue(answer(rows))
    run = qk.run("%%qwen -o table --schema DataFrame[City]\nRead the table in {receipt}.")
    ok(run)
    check = qk.run("print(type(table).__name__, list(table.columns), table['population'].tolist())")
    assert check.stdout.strip() == "DataFrame ['name', 'population'] [2102650, 9751717]"
    content = qk.server.requests[0].body["messages"][-1]["content"]
    assert [b["type"] for b in content] == ["text", "image", "text", "text"]
    assert notes(run) == ["Stored a DataFrame[City] of 2 rows × 2 columns in table"]
    assert "<table" in "".join(run.data("text/html")) and "Lima" in "".join(run.data("text/html"))


def test_the_lesson_responder_fills_any_schema(qk):
    qk.server.responder = value_reply
    try:
        ok(qk.run('%%qwen -o value --schema "dict[str, list[Point]]"\nSome points.'))
        assert stored(qk, "value")["repr"].startswith("{'paris': [Point(x=12.5, y=12.5)")
    finally:
        qk.server.responder = None


def test_a_recorded_schema_cell_replays(qk, tmp_path):
    cassette = tmp_path / "values.jsonl"
    qk.server.queue(answer([{"name": "Oslo", "population": 709037}], json_chunk=5))
    ok(qk.run(f"%qwen record {cassette}"))
    ok(qk.run('%%qwen -o cities --schema "list[City]"\nOne city.'))
    ok(qk.run(f"%qwen record --stop\n%qwen reset\ndel cities\n%qwen replay {cassette} --speed 0"))
    try:
        run = qk.run('%%qwen -o cities --schema "list[City]"\nOne city.')
        ok(run)
        assert stored(qk, "cities")["repr"] == "[City(name='Oslo', population=709037)]"
        assert len(qk.server.requests) == 1  # the replay sent nothing
        assert "replayed from" in "".join(run.data("text/plain"))
    finally:
        qk.run("%qwen replay --stop")


def test_a_value_cut_at_max_tokens_is_asked_for_again(qk):
    qk.server.queue(
        Stream(tool_calls=[ToolCall("answer", {"value": [1, 2]})], stop_reason="max_tokens"),
        answer([1, 2, 3]),
    )
    run = qk.run('%%qwen -o value --schema "list[int]"\nCount to three.')
    ok(run)
    assert stored(qk, "value")["repr"] == "[1, 2, 3]"
    last = qk.server.requests[1].body["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]
    assert last[0]["content"].startswith("Not run: the answer stopped (max_tokens)")
    assert "cut at max_tokens" in last[1]["text"]
    assert_valid_history(qk.server.requests[1].body["messages"])


def test_forcing_refused_while_thinking_is_still_tried_without(qk):
    qk.server.queue(Status(400, "invalid_request_error", "tool_choice forces a tool: not with thinking"), answer(1))
    ok(qk.run("%%qwen --thinking -o value --schema int\nN?"))
    assert [r.body["tool_choice"]["type"] for r in qk.server.requests] == ["tool", "auto"]
    qk.server.queue(answer(2))
    ok(qk.run("%%qwen -o value --schema int\nN?"))
    assert qk.server.requests[-1].body["tool_choice"]["type"] == "tool"
    qk.server.queue(answer(3))
    ok(qk.run("%%qwen --thinking -o value --schema int\nN?"))
    assert qk.server.requests[-1].body["tool_choice"]["type"] == "auto"
    assert stored(qk, "value")["repr"] == "3"


def test_in_terminal_ipython_the_value_streams_as_plain_text(tmp_path):
    out = run_terminal(
        tmp_path,
        "server.queue(Stream(tool_calls=[ToolCall('answer', {'value': {'a': 1.5}})], json_chunk=2))\n"
        "shell.run_cell_magic('qwen', '-o d --schema \"dict[str, float]\"', 'Numbers')\n"
        "print('stored:', shell.user_ns['d'])\n",
    )
    assert '```json\n{\n  "value": {\n    "a": 1.5\n  }\n}\n```' in out.stdout
    assert "Stored a dict[str, float] of 1 item in d" in out.stdout and "stored: {'a': 1.5}" in out.stdout


def test_after_the_tools_a_prose_ending_is_asked_for_the_value_without_using_a_repair(qk):
    ok(qk.run("%qwen config max_repairs=0"))
    qk.server.queue(
        Stream(text="Looking up.", tool_calls=[ToolCall("lookup", {"city": "Lima"})]),
        Stream(text="Lima has about 2.1 million people."),
        answer([{"name": "Lima", "population": 2100000}]),
    )
    run = qk.run('%%qwen --tools lookup -o cities --schema "list[City]"\nPopulation of Lima?')
    ok(run)
    assert stored(qk, "cities")["repr"] == "[City(name='Lima', population=2100000)]"
    third = qk.server.requests[2].body["messages"]
    assert third[-2]["content"] == [{"type": "text", "text": "Lima has about 2.1 million people."}]
    assert third[-1]["content"][0]["text"].startswith("Now give your answer: call the tool `answer`")
    assert_valid_history(third)
    assert notes(run) == ["Stored a list[City] of 1 item in cities"]  # no repair was spent


def test_an_empty_answer_is_asked_again(qk):
    qk.server.queue(Stream(text="", stop_reason="end_turn"), answer(4))
    run = qk.run("%%qwen -o value --schema int\nN?")
    ok(run)
    assert stored(qk, "value")["repr"] == "4"
    first, second = qk.server.requests
    assert first.body["messages"] == second.body["messages"]
    assert any(n.startswith("No valid value yet (no value came)") for n in notes(run))


VALIDATOR_RAISES = """
from pydantic import field_validator

class Checked(BaseModel):
    a: int

    @field_validator("a")
    @classmethod
    def positive(cls, v):
        if v < 0:
            raise TypeError("negative")
        return v
"""

# Answers that never reach the answer tool's validation, or whose validation fails oddly: (TYPE, the answer).
ODD_ANSWERS = {
    "broken JSON": ('"list[int]"', Stream(tool_calls=[ToolCall("answer", None, raw='{"value": [1, 2')])),
    "not an object": ('"list[int]"', Stream(tool_calls=[ToolCall("answer", [1, 2, 3])])),
    "another tool name": ('"list[int]"', Stream(tool_calls=[ToolCall("final_answer", {"value": [3]})])),
    "an invalid tool name": ('"list[int]"', Stream(tool_calls=[ToolCall("give answer!", {"value": [3]})])),
    "validator raises": ("Checked", answer({"a": -1}, wrapped=False)),
    "validator raises on text": ("Checked", Stream(text='{"a": -1}')),
}


@pytest.mark.parametrize("repairs", [0, 1, 2])
@pytest.mark.parametrize("kind", list(ODD_ANSWERS))
def test_every_kind_of_failed_answer_spends_a_repair(qk, kind, repairs):
    spec, reply = ODD_ANSWERS[kind]
    ok(qk.run(VALIDATOR_RAISES + f"\nvalue = 'before'\n%qwen config max_repairs={repairs}"))
    qk.server.queue(*[reply] * 12)
    run = qk.run(f"%%qwen -o value --schema {spec}\nSome.")
    assert run.status == "error" and "Traceback" not in run.error_text, run.error_text
    attempts = repairs + 1
    assert len(qk.server.requests) == attempts
    assert f"after {attempts} answer" in run.error_text and "max_tool_rounds" not in run.error_text
    assert "value was not assigned" in run.error_text
    assert stored(qk, "value") == {"type": "str", "repr": "'before'"}
    qk.server.queue(Stream(text="Sorry."))
    ok(qk.run("%%qwen\nNever mind."))
    assert_valid_history(qk.server.requests[-1].body["messages"])


def test_a_validator_raising_any_exception_is_a_repair_quoting_it(qk):
    ok(qk.run(VALIDATOR_RAISES))
    qk.server.queue(Stream(text='{"a": -1}'), answer({"a": 2}, wrapped=False))
    run = qk.run("%%qwen -o value --schema Checked\nSome.")
    ok(run)
    assert stored(qk, "value")["repr"] == "Checked(a=2)"
    repair = qk.server.requests[1].body["messages"][-1]["content"][0]["text"]
    assert "the type's validation raised TypeError: negative" in repair


FAILURES = {
    "a 500": [Status(500, "api_error", "internal")],
    "a 400": [Status(400, "invalid_request_error", "image too large")],
    "an error event mid value": [Stream(tool_calls=[ToolCall("answer", {"value": list(range(50))})], error_after=10)],
    "a cut mid value": [Stream(tool_calls=[ToolCall("answer", {"value": list(range(50))})], cut_after=10)],
    "a 500 in a repair": [answer("x"), Status(500, "api_error", "internal")],
    "a cut mid text": [Stream(text="Counting: one, two, three, four, five, six.", chunk=3, cut_after=4)],
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_every_failure_says_the_variable_was_not_assigned(qk, kind):
    ok(qk.run("value = 'before'\n%qwen config max_retries=0"))
    qk.server.queue(*FAILURES[kind])
    run = qk.run('%%qwen -o value --schema "list[int]"\nNumbers.')
    assert run.status == "error" and "Traceback" not in run.error_text, run.error_text
    assert "value was not assigned (it keeps any value it had before)." in run.error_text
    assert stored(qk, "value") == {"type": "str", "repr": "'before'"}


def test_an_interrupted_value_says_the_variable_was_not_assigned(qk):
    ok(qk.run("value = 'before'"))
    qk.server.queue(Stream(tool_calls=[ToolCall("answer", {"value": list(range(300))})], json_chunk=3, delay=0.02))
    run = qk.run('%%qwen -o value --schema "list[int]"\nNumbers.', interrupt_after=1.0)
    assert run.status == "error" and "Interrupted" in run.error_text, run.error_text
    assert "value was not assigned (it keeps any value it had before)." in run.error_text
    assert stored(qk, "value") == {"type": "str", "repr": "'before'"}
    qk.server.wait_idle(10)
    qk.server.queue(Stream(text="Fine."))
    ok(qk.run("%%qwen\nAgain."))
    assert_valid_history(qk.server.requests[-1].body["messages"])


def test_a_recursive_type_is_asked_with_its_definitions_at_the_schema_root(qk):
    ok(qk.run("class Node(BaseModel):\n    name: str\n    children: list['Node'] = []"))
    qk.server.queue(answer([{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}]))
    run = qk.run('%%qwen -o value --schema "list[Node]"\nA tree.')
    ok(run)
    assert stored(qk, "value")["repr"].startswith("[Node(name='a', children=[Node(name='b'")
    schema = qk.server.requests[0].body["tools"][0]["input_schema"]
    assert set(schema) == {"type", "properties", "required", "$defs"} and "Node" in schema["$defs"]
    assert '"$defs":' not in json.dumps(schema["properties"])  # only references to them
