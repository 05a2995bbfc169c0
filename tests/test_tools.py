"""Tools without a kernel: schemas, offering, validation, results, painting, history."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
from typing import Literal, Optional

import pydantic
import pytest
from helpers import run_python
from IPython.core.error import UsageError

import qwen_magic
from qwen_magic._answer import Answer, Usage
from qwen_magic._calls import MAX_RESULT_CHARS, Outcome, call_bundle, call_tool, result_content, result_outcome
from qwen_magic._conversation import Conversation, Options, Turn
from qwen_magic._tools import Toolbox, describe, offered, tidy_schema


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


class Box(pydantic.BaseModel):
    """A box."""

    width: int
    height: int = pydantic.Field(1, description="The height.")


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree] = []


def every_type(
    name: str,
    count: int,
    ratio: float,
    flag: bool,
    maybe: Optional[str] = None,  # noqa: UP045 (Optional is one of the forms to support)
    union: int | None = None,
    mode: Literal["fast", "slow"] = "fast",
    items: list[int] | None = None,
    table: dict[str, float] | None = None,
    color: Color = Color.RED,
    point: Point | None = None,
    box: Box | None = None,
) -> str:
    """Exercise every supported type.

    A longer paragraph that also goes into the description.

    Args:
        name: The name to use.
        count: How many times.
        mode: How to go about it.
    """
    return "ok"


def schema_of(func, name: str = "f") -> dict:
    return offered(name, {name: func})[name].definition()["input_schema"]


def test_every_listed_type_has_a_json_schema():
    schema = schema_of(every_type)
    props = schema["properties"]
    assert schema["type"] == "object" and schema["required"] == ["name", "count", "ratio", "flag"]
    assert props["name"] == {"type": "string", "description": "The name to use."}
    assert props["count"] == {"type": "integer", "description": "How many times."}
    assert props["ratio"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["maybe"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["union"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["mode"] == {
        "type": "string",
        "enum": ["fast", "slow"],
        "default": "fast",
        "description": "How to go about it.",
    }
    assert props["items"]["anyOf"][0] == {"type": "array", "items": {"type": "integer"}}
    assert props["table"]["anyOf"][0] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["color"] == {"type": "string", "enum": ["red", "blue"], "default": "red"}
    point = props["point"]["anyOf"][0]
    assert point == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number", "default": 0.0}},
        "required": ["x"],
    }
    box = props["box"]["anyOf"][0]
    assert box["description"] == "A box." and box["properties"]["height"]["description"] == "The height."
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text  # self-contained, no noise


def test_description_comes_from_the_docstring_in_any_common_style():
    def google(city: str, days: int = 1) -> str:
        """Forecast for a city.

        Args:
            city: City name, e.g. Paris.
            days: Days ahead.
        """
        return ""

    def numpy_style(city: str) -> str:
        """Forecast.

        Parameters
        ----------
        city : str
            City name.
        """
        return ""

    def rest(city: str) -> str:
        """Forecast.

        :param city: City name.
        """
        return ""

    definition = offered("google", {"google": google})["google"].definition()
    assert definition["description"] == "Forecast for a city."
    assert definition["input_schema"]["properties"]["city"]["description"] == "City name, e.g. Paris."
    assert definition["input_schema"]["properties"]["days"]["description"] == "Days ahead."
    for func in (numpy_style, rest):
        assert schema_of(func)["properties"]["city"]["description"] == "City name."
    assert "description" not in offered("f", {"f": lambda x: x})["f"].definition()  # none rather than ""


def test_recursive_models_keep_their_definition():
    def grow(tree: Tree) -> int:
        return 0

    schema = schema_of(grow)
    assert schema["properties"]["tree"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert set(schema["$defs"]) == {"Tree"}


def test_tidy_schema_leaves_properties_named_title_and_literal_values_alone():
    schema = {
        "title": "F",
        "type": "object",
        "properties": {"title": {"title": "Title", "type": "string", "default": {"title": "kept"}}},
    }
    assert tidy_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string", "default": {"title": "kept"}}},
    }


# -- offering ----------------------------------------------------------------------------------


def test_the_decorator_marks_without_changing_the_function():
    def plain(x: int) -> int:
        return x + 1

    assert qwen_magic.tool(plain) is plain and plain(1) == 2
    named = qwen_magic.tool(name="weather", description="Weather now.")(lambda city: city)
    toolbox = offered("", {"plain": plain, "w": named, "other": len, "_hidden": qwen_magic.tool(lambda: 1)})
    assert list(toolbox) == ["plain", "weather"]
    assert toolbox["weather"].definition()["description"] == "Weather now."
    with pytest.raises(ValueError, match="tool name"):
        qwen_magic.tool(name="no spaces allowed")


def test_bare_tools_offers_each_marked_function_once_under_its_own_name():
    @qwen_magic.tool
    def area(w: float, h: float) -> float:
        return w * h

    assert list(offered("", {"alias": area, "area": area, "x": 3})) == ["area"]


def test_bare_tools_without_marked_functions_says_how_to_mark():
    with pytest.raises(UsageError, match=r"@qwen_magic\.tool") as info:
        offered("", {"f": lambda: 1})
    assert "--tools f,g" in str(info.value)


@pytest.mark.parametrize(
    ("namespace", "spec", "needle"),
    [
        ({}, "missing", "'missing' is not defined"),
        ({"n": 3}, "n", "'n' is not a function"),
        ({"K": Box}, "K", "is a class"),
        ({"variadic": lambda *args: args}, "variadic", "cannot be described as a tool"),
        ({"é": lambda: 1}, "é", "cannot be a tool name"),
        ({}, "len", "'len' is a Python builtin, not a function of the notebook; wrap it in a def"),
        ({"size": len}, "size", "'size' is a Python builtin, which has no signature to describe; wrap it in a def"),
        ({"sq": math.sqrt}, "sq", "'sq' is a built-in function, which has no signature to describe; wrap it"),
        ({"up": str.upper}, "up", "'up' is a built-in function"),
        ({"push": [].append}, "push", "'push' is a built-in function"),
    ],
)
def test_what_cannot_be_offered_is_a_usage_error_naming_it(namespace, spec, needle):
    with pytest.raises(UsageError, match=needle):
        offered(spec, namespace)


def test_async_functions_are_refused():
    async def later(x: int) -> int:
        return x

    with pytest.raises(UsageError, match="async"):
        offered("later", {"later": later})


def test_methods_and_callable_objects_are_offered_by_the_name_given():
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            """Add k."""
            self.n += k
            return self.n

        def __call__(self, word: str) -> str:
            return word.upper()

    counter = Counter()
    toolbox = offered("add, shout", {"add": counter.add, "shout": counter})
    assert call_tool(toolbox, {"name": "add", "input": {"k": 2}}).text == "2"
    assert call_tool(toolbox, {"name": "shout", "input": {"word": "hi"}}).text == "HI"
    assert counter.n == 2


def test_a_partial_is_offered_with_the_parameters_it_leaves_open():
    def scale(factor: int, value: float, *, unit: str = "m") -> str:
        """Scale a value."""
        if value < 0:
            raise ValueError("negative")
        return f"{factor * value} {unit}"

    namespace = {"double": functools.partial(scale, 2), "inches": functools.partial(scale, unit="in")}
    toolbox = offered("double,inches", namespace)
    double, inches = (toolbox[name].definition() for name in ("double", "inches"))
    assert double["description"] == "Scale a value."
    assert list(double["input_schema"]["properties"]) == ["value", "unit"] and double["input_schema"]["required"] == ["value"]
    assert inches["input_schema"]["properties"]["unit"]["default"] == "in"
    assert call_tool(toolbox, {"id": "1", "name": "double", "input": {"value": 1.5}}).text == "3.0 m"
    assert call_tool(toolbox, {"id": "2", "name": "inches", "input": {"factor": 2, "value": 1}}).text == "2.0 in"
    raised = call_tool(toolbox, {"id": "3", "name": "double", "input": {"value": -1}})
    assert raised.text == "Error: double raised ValueError: negative"  # the function's own error, not a mismatch
    mismatch = call_tool(toolbox, {"id": "4", "name": "double", "input": {"factor": 3, "value": 1}})
    assert "do not match the schema" in mismatch.text


def test_keyword_catch_alls_are_offered_as_taking_any_named_argument():
    def anything(**options) -> str:
        """Take anything."""
        return json.dumps(options)

    def typed(a: int, **more: int) -> int:
        return a + sum(more.values())

    toolbox = offered("anything,typed", {"anything": anything, "typed": typed})
    assert toolbox["anything"].schema() == {"type": "object", "properties": {}, "additionalProperties": True}
    assert toolbox["typed"].schema()["additionalProperties"] == {"type": "integer"}
    assert "*(any named arguments)*" in describe(toolbox)
    assert call_tool(toolbox, {"id": "1", "name": "anything", "input": {"k": 1}}).text == '{"k": 1}'


def test_a_default_that_is_not_json_is_left_out_without_a_warning(recwarn):
    def when(x: int, at: object = object()) -> int:
        return x

    schema = offered("when", {"when": when})["when"].schema()
    assert schema["required"] == ["x"] and "default" not in schema["properties"]["at"]
    assert not recwarn.list


def test_no_flag_offers_nothing():
    assert offered(None, {"f": qwen_magic.tool(lambda: 1)}) is None


# -- validation and failures -----------------------------------------------------------------


def test_arguments_are_validated_and_converted_before_the_call():
    seen = []

    def place(point: Point, color: Color, box: Box, count: int) -> str:
        seen.append((point, color, box, count))
        return "placed"

    toolbox = offered("place", {"place": place})
    good = {"point": {"x": 1}, "color": "blue", "box": {"width": 2}, "count": "3"}
    assert call_tool(toolbox, {"name": "place", "input": good}).text == "placed"
    assert seen == [(Point(1.0, 0.0), Color.BLUE, Box(width=2, height=1), 3)]


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        ({"point": {"x": "far"}, "color": "red", "box": {"width": 1}, "count": 1}, ["point.x", "valid number"]),
        ({"point": {"x": 1}, "color": "green", "box": {"width": 1}, "count": 1}, ["color", "'red' or 'blue'"]),
        ({"point": {"x": 1}, "color": "red", "box": {"width": 1}}, ["count", "Missing required argument"]),
        ({"point": {"x": 1}, "color": "red", "box": {"width": 1}, "count": 1, "extra": 1}, ["extra", "Unexpected"]),
    ],
)
def test_mismatched_arguments_are_told_to_the_model_and_the_function_is_not_called(arguments, needles):
    calls = []

    def place(point: Point, color: Color, box: Box, count: int) -> None:
        calls.append(1)

    outcome = call_tool(offered("place", {"place": place}), {"name": "place", "input": arguments})
    assert not outcome.ok and calls == []
    assert outcome.text.startswith("Error: the arguments do not match the schema of place, so it was not called")
    for needle in needles:
        assert needle in outcome.text
    assert "errors.pydantic.dev" not in outcome.text


def test_an_exception_inside_the_tool_is_reported_by_type_and_message_not_traceback():
    def fragile(x: int) -> int:
        raise ValueError("x must be even")

    def checks(x: int) -> int:
        Box(width="wide")  # the function's own validation fails: that is the function raising
        return x

    toolbox = offered("fragile,checks", {"fragile": fragile, "checks": checks})
    outcome = call_tool(toolbox, {"name": "fragile", "input": {"x": 1}})
    assert (outcome.ok, outcome.text) == (False, "Error: fragile raised ValueError: x must be even")
    raised = call_tool(toolbox, {"name": "checks", "input": {"x": 1}})
    assert raised.text.startswith("Error: checks raised ValidationError:") and "Traceback" not in raised.text


class Unreadable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def bad_figure(x: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1, 1))
    axes.set_title(r"$\frac{1}{$")  # mathtext that fails only when the figure is drawn
    plt.close(figure)
    return figure


def empty_image(x: int):
    from PIL import Image

    return Image.new("RGB", (0, 0))


def unreadable(x: int):
    raise Unreadable


def exits(x: int):
    import sys

    sys.exit(3)


class Halt(BaseException):
    pass


def custom_base(x: int):
    raise Halt("stop here")


@pytest.mark.parametrize(
    ("func", "needles"),
    [
        (bad_figure, ["bad_figure ran, but its result could not be sent: ValueError"]),
        (empty_image, ["empty_image ran, but its result could not be sent: ValueError", "empty image"]),
        (lambda x: [empty_image(x)], ["could not be sent"]),
        (unreadable, ["unreadable raised Unreadable: <message unreadable: RuntimeError>"]),
        (exits, ["exits raised SystemExit: 3", "the kernel went on"]),
        (custom_base, ["custom_base raised Halt: stop here"]),
    ],
)
def test_whatever_goes_wrong_in_a_call_is_an_error_result_not_a_failed_cell(func, needles):
    name = getattr(func, "__name__", "f").replace("<lambda>", "f")
    outcome = call_tool(offered(name, {name: func}), {"id": "t1", "name": name, "input": {"x": 1}})
    assert not outcome.ok and outcome.text.startswith("Error: ")
    for needle in needles:
        assert needle in outcome.text
    assert "⚠" in call_bundle({"id": "t1", "name": name, "input": {"x": 1}}, outcome)["text/plain"]


def test_an_unknown_tool_is_answered_with_the_names_on_offer():
    toolbox = offered("f", {"f": lambda: 1})
    outcome = call_tool(toolbox, {"name": "rm_rf", "input": {}})
    assert not outcome.ok and outcome.text == "Error: there is no tool named 'rm_rf'. Available tools: f."
    assert "none in this cell" in call_tool(None, {"name": "f", "input": {}}).text


# -- results -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text, not quoted", "plain text, not quoted"),
        ({"a": [1, 2.5, None, True]}, '{"a":[1,2.5,null,true]}'),
        ("", ""),
        (None, "null"),
        (Point(1, 2), '{"x":1,"y":2}'),
        (Box(width=3), '{"width":3,"height":1}'),
        (Color.BLUE, '"blue"'),
        ((1, "二"), '[1,"二"]'),
        (object, repr(object)),
    ],
)
def test_results_are_strings_as_they_are_else_json_else_repr(value, text):
    assert result_outcome(value).text == text


def test_long_results_are_cut_at_the_documented_limit():
    outcome = result_outcome("x" * (MAX_RESULT_CHARS + 500))
    assert outcome.text.startswith("x" * MAX_RESULT_CHARS)
    assert outcome.text.endswith("[500 more characters cut; the limit is 20,000]")
    assert len(result_outcome(list(range(10_000))).text) < MAX_RESULT_CHARS + 100


def test_images_become_image_blocks_after_the_tool_results():
    from PIL import Image

    image = Image.new("RGB", (8, 4), "red")
    outcome = result_outcome([image, image], "draw")
    assert outcome.text == "[2 images: sent after the tool results, labelled 'draw']"
    assert [b["source"]["media_type"] for b in outcome.images] == ["image/png", "image/png"]
    calls = [{"id": "t1", "name": "draw", "input": {}}, {"id": "t2", "name": "note", "input": {}}]
    content = result_content(calls, {"t1": outcome, "t2": Outcome("fine")})
    assert [b["type"] for b in content] == ["tool_result", "tool_result", "text", "image", "text", "image"]
    assert content[0] == {"type": "tool_result", "tool_use_id": "t1", "content": outcome.text}
    assert "returned by draw (tool_use_id t1)" in content[2]["text"]


def test_a_matplotlib_figure_is_an_image():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1, 1))
    axes.plot([0, 1], [1, 0])
    assert result_outcome(figure).images[0]["source"]["media_type"] == "image/png"
    assert result_outcome(axes).images
    plt.close(figure)


def test_a_call_without_an_outcome_is_answered_as_not_run():
    content = result_content([{"id": "t1", "name": "f", "input": {}}], {})
    assert content == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "Not run: the tool loop stopped before this call."}
    ]


def test_the_call_panel_escapes_everything_and_has_a_text_fallback():
    call = {"id": "t", "name": "f", "input": {"html": "<img src=x onerror=alert(1)>"}}
    running = call_bundle(call, None)
    assert "running" in running["text/plain"] and "<img src=x" not in running["text/html"]
    done = call_bundle(call, Outcome("<script>alert(1)</script>" + "y" * 5000))
    assert "<script>" not in done["text/html"] and "&lt;script&gt;" in done["text/html"]
    assert done["text/html"].startswith('<details class="qwen-tool">')
    assert done["text/plain"].startswith("🔧 f(html='<img src=x onerror=alert(1)>') → <script>")
    assert len(done["text/plain"]) < 200 and len(done["text/html"]) < 3000  # a preview, not the whole result


def test_describe_lists_parameters_and_the_json_definition():
    text = describe(offered("every_type", {"every_type": every_type}))
    assert "#### `every_type`" in text and "Exercise every supported type." in text
    assert '| `mode` | `"fast" \\| "slow"` | no (default `"fast"`) | How to go about it. |' in text
    assert '"name": "every_type"' in text
    assert describe(Toolbox()).startswith("### Tools offered: 0")


# -- a turn with tool rounds in the conversation ------------------------------------------------


def tool_round(text: str, call_id: str, usage: int) -> tuple[Answer, list[dict]]:
    answer = Answer("m", text=text, thinking="secret", usage=Usage(usage, 1), stop_reason="tool_use", finished_at=1.0)
    answer.blocks = [
        {"type": "thinking", "thinking": "secret", "signature": ""},
        {"type": "text", "text": text},
        {"type": "tool_use", "id": call_id, "name": "f", "input": {"k": 1}},
    ]
    return answer, [{"type": "tool_result", "tool_use_id": call_id, "content": "r"}]


def test_a_turn_with_rounds_replays_every_round_without_thinking():
    answer, results = tool_round("first", "t1", 10)
    answer.next_round(results)
    assert answer.rounds[0].text == "first" and answer.text == "" and answer.usage is None
    answer.text, answer.usage, answer.finished_at = "final", Usage(5, 2), 2.0
    answer.blocks = [{"type": "text", "text": "final"}]
    assert answer.total_usage == Usage(15, 3)
    chat = Conversation()
    chat.record(Turn([{"type": "text", "text": "ask"}], answer))
    messages = chat.messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "first"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": 1}},
    ]
    assert messages[2]["content"] == results
    assert "secret" not in json.dumps(messages)
    assert "🔧 `f(k=1)` → r" in chat.transcript()


def test_a_turn_that_stopped_after_its_results_joins_the_next_prompt():
    answer, results = tool_round("", "t1", 10)
    answer.next_round(results)
    answer.interrupted, answer.error, answer.finished_at = True, "Interrupted", 3.0
    chat = Conversation()
    chat.record(Turn([{"type": "text", "text": "ask"}], answer))
    assert len(chat.turns) == 1  # the tools ran: the turn is kept though the final answer is empty
    request = chat.request([{"type": "text", "text": "next"}], Options(model="m", max_tokens=10, cache="off"))
    messages = request["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [*results, {"type": "text", "text": "next"}]
    assert chat.turns[0].answer.rounds[0].tool_results == results  # the stored history is not changed


def test_the_tool_decorator_is_exported_cheaply():
    code = (
        "import sys, qwen_magic\n"
        "assert 'tool' in dir(qwen_magic)\n"
        "f = qwen_magic.tool(lambda x: x)\n"
        "print([m for m in ('anthropic', 'pydantic') if m in sys.modules])\n"
    )
    out = run_python("-c", code)
    assert out.stdout.strip() == "[]"
