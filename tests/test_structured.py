"""``--schema``/``--json`` without a kernel: parsing TYPE, schemas, JSON in text, the streamed view."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import json
import re
import types
from typing import Annotated, Any, Literal, NewType, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass
from structured_responders import sample
from typing_extensions import TypedDict

from qwen_magic._structured import (
    JsonIndenter,
    Target,
    ValueView,
    check,
    describe_value,
    from_text,
    json_in_text,
    parse_target,
    rendering,
)


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


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Plain:
    def __init__(self, a: Any) -> None:
        self.a = a


called: list[str] = []


def make() -> type:
    called.append("make")
    return int


NAMESPACE: dict[str, Any] = {
    "City": City,
    "Point": Point,
    "Movie": Movie,
    "Color": Color,
    "Plain": Plain,
    "make": make,
    "Literal": Literal,
    "Optional": Optional,
    "models": types.SimpleNamespace(City=City, _secret=City),
    "five": 5,
    "typing": __import__("typing"),
    "UserId": NewType("UserId", int),
    "Cities": list[City],
    "Positive": Annotated[int, Field(gt=0)],
}


class Trip(BaseModel):
    to: City
    on: datetime.date
    note: str | None = None


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


NAMESPACE |= {"Trip": Trip, "Level": Level}
EXPECTED_LATE = {
    "Trip": Trip(to=City(name="Oslo", population=1), on=datetime.date(2024, 5, 1)),
    "Level": Level.HIGH,
}


def target(spec: str) -> Target:
    result = parse_target(spec, False, "x", NAMESPACE)
    assert result is not None
    return result


# (TYPE, a JSON value the model might send, the converted value)
KINDS = [
    ("City", {"name": "Paris", "population": "2100000"}, City(name="Paris", population=2_100_000)),
    ("Point", {"x": 1, "y": "2.5"}, Point(1.0, 2.5)),
    ("Movie", {"title": "Alien", "year": 1979}, {"title": "Alien", "year": 1979}),
    ("Color", "green", Color.GREEN),
    ("int", "42", 42),
    ("str", "hello", "hello"),
    ("float", 3, 3.0),
    ("bool", "true", True),
    ("Literal['yes', 'no']", "no", "no"),
    ("list[City]", [{"name": "Lima", "population": 1}], [City(name="Lima", population=1)]),
    ("dict[str, float]", {"a": 1, "b": "2.5"}, {"a": 1.0, "b": 2.5}),
    ("tuple[int, int]", [1, "2"], (1, 2)),
    ("tuple[int, ...]", [1, "2", 3], (1, 2, 3)),
    ("tuple[City, ...]", [], ()),
    ("typing.Tuple[str, ...]", ["a"], ("a",)),
    ("Optional[City]", None, None),
    ("City | None", {"name": "Oslo", "population": 3}, City(name="Oslo", population=3)),
    ("models.City", {"name": "Quito", "population": 4}, City(name="Quito", population=4)),
    ("list[Literal['a', 'b']]", ["a", "b", "a"], ["a", "b", "a"]),
    ("dict[str, list[Point]]", {"p": [{"x": 0, "y": 0}]}, {"p": [Point(0.0, 0.0)]}),
    ("Trip", {"to": {"name": "Oslo", "population": 1}, "on": "2024-05-01"}, None),
    ("set[str]", ["a", "b", "a"], {"a", "b"}),
    ("list[tuple[str, int]]", [["a", 1], ["b", "2"]], [("a", 1), ("b", 2)]),
    ("typing.List[City]", [{"name": "Lima", "population": 1}], [City(name="Lima", population=1)]),
    ("UserId", "7", 7),
    ("Cities", [], []),
    ("Positive", "3", 3),
    ("Level", 2, None),
    ("Literal[-1, 0, True]", -1, -1),
    ("Literal[Color.RED]", "red", Color.RED),
    ("Literal[Color.RED, Color.GREEN, 'other']", "green", Color.GREEN),
    ("Literal[Color.RED, 'other']", "other", "other"),
    ("list[Literal[Level.HIGH]]", [2], [Level.HIGH]),
    ("Movie | None", {"title": "Up", "year": 2009}, {"title": "Up", "year": 2009}),
]


@pytest.mark.parametrize(("spec", "data", "expected"), KINDS, ids=[k[0] for k in KINDS])
def test_each_kind_of_type_validates_and_converts(spec, data, expected):
    expected = EXPECTED_LATE.get(spec, expected)
    t = target(spec)
    ok, value = check(t, data)
    assert ok, value
    assert value == expected and type(value) is type(expected)
    # The tool input is always an object: wrapped as {"value": …} when the type is not one.
    schema = t.input_schema()
    assert schema["type"] == "object"
    assert t.wrapped == (schema.get("required") == ["value"] and list(schema["properties"]) == ["value"])
    assert "$defs" not in json.dumps(schema) and '"title": "' not in json.dumps(schema)
    # A value built from the schema alone validates: the schema says what the validator wants.
    ok, _ = check(t, sample(schema)["value"] if t.wrapped else sample(schema))
    assert ok



class Node(BaseModel):
    name: str
    children: list[Node] = []


class Chain(BaseModel):
    label: str
    next: Chain | None = None


class Folder(BaseModel):
    title: str
    files: list[File] = []


class File(BaseModel):
    path: str
    size: int = 0
    parent: Folder | None = None


Folder.model_rebuild()
NAMESPACE["Node"] = Node
NODE = Node(name="a", children=[Node(name="b", children=[Node(name="c")])])
RECORDS: dict[str, Any] = {
    "City": City(name="Lima", population=1),
    "Trip": Trip(to=City(name="Oslo", population=2), on=datetime.date(2024, 5, 1)),
    "Node": NODE,
    "Chain": Chain(label="x", next=Chain(label="y")),
    "Folder": Folder(title="t", files=[File(path="p", parent=Folder(title="u"))]),
}
SHAPES: list[tuple[str, Any]] = [
    ("{}", lambda v: v),
    ("list[{}]", lambda v: [v, v]),
    ("Optional[{}]", lambda v: v),
    ("{} | None", lambda v: None),
    ("dict[str, {}]", lambda v: {"k": v}),
    ("tuple[{}, int]", lambda v: (v, 1)),
    ("list[list[{}]]", lambda v: [[v]]),
    ("dict[str, list[Optional[{}]]]", lambda v: {"k": [v, None]}),
    ("DataFrame[{}]", lambda v: [v]),
]


def _pointer(document: Any, ref: str) -> Any:
    """What a local ``#/a/b`` reference points at in ``document`` (KeyError when nothing)."""
    assert ref.startswith("#/"), ref
    for part in ref[2:].split("/"):
        document = document[part.replace("~1", "/").replace("~0", "~")]
    return document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [*([node["$ref"]] if "$ref" in node else []), *(r for v in node.values() for r in _refs(v))]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("record", list(RECORDS))
@pytest.mark.parametrize(("shape", "build"), SHAPES, ids=[s for s, _ in SHAPES])
def test_every_tool_schema_is_valid_and_its_references_resolve(shape, build, record):
    pytest.importorskip("pandas")
    from jsonschema import Draft202012Validator

    t = parse_target(shape.format(record), False, "x", NAMESPACE | RECORDS | {k: type(v) for k, v in RECORDS.items()})
    assert t is not None
    schema = t.input_schema()
    Draft202012Validator.check_schema(schema)
    for ref in _refs(schema):
        assert isinstance(_pointer(schema, ref), dict), ref  # every reference points at a definition
    # A real value, dumped as the model would send it, is valid against the tool schema and validates back.
    value = build(RECORDS[record])
    data = t.adapter.dump_python(value, mode="json", by_alias=True)
    Draft202012Validator(schema).validate({"value": data} if t.wrapped else data)
    assert check(t, data)[0]


def test_objects_are_not_wrapped_and_other_types_are():
    assert not target("City").wrapped and not target("dict[str, int]").wrapped and not target("Movie").wrapped
    assert target("list[City]").wrapped and target("int").wrapped and target("Optional[City]").wrapped
    assert target("Color").input_schema()["properties"]["value"] == {"enum": ["red", "green"], "type": "string"}


def test_quotes_around_the_type_are_dropped():
    assert target('"dict[str, float]"').type == dict[str, float]
    assert target("'list[City]'").spelling == "list[City]"


def test_typing_names_need_no_import():
    t = parse_target("list[Optional[Literal['a', 'b']]]", False, "x", {})
    assert t is not None and check(t, ["a", None]) == (True, ["a", None])


def test_json_takes_any_value():
    t = parse_target(None, True, "data", {})
    assert t is not None and t.spelling == "JSON" and t.wrapped
    for value in [1, "s", None, [1, {"a": [True]}], {"k": 2.5}]:
        assert check(t, value) == (True, value)


def test_invalid_values_say_where_and_what():
    ok, problems = check(target("list[City]"), [{"name": "Paris", "population": "many"}, {"name": 3}])
    assert not ok
    assert problems[0].startswith("0.population: Input should be a valid integer")
    assert '(got "many")' in problems[0]
    assert any(p.startswith("1.name:") for p in problems) and any(p.startswith("1.population:") for p in problems)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Citty", "'Citty' is not defined in the notebook"),
        ("list[Citty]", "'Citty' is not defined"),
        ("five", "is an int value, not a type"),
        ("make", "is a function value, not a type"),
        ("make()", "only names, attributes and subscripts"),
        ("list[make()]", "only names, attributes and subscripts"),
        ("City.__class__", "private attribute '__class__'"),
        ("models._secret", "private attribute '_secret'"),
        ("models.Town", "has no attribute 'Town'"),
        ("models", "is a SimpleNamespace value, not a type"),
        ("Plain", "cannot be described as a JSON schema"),
        ("list[Plain]", "cannot be described as a JSON schema"),
        ("typing.Callable[[int], int]", "cannot be described as a JSON schema: Cannot generate a JsonSchema"),
        ("collections.OrderedDict", "'collections' is not defined"),
        ("Callable[[int], int]", "cannot be described as a JSON schema"),
        ("Callable[..., int]", "cannot be described as a JSON schema"),
        ("...", "is an ellipsis value, not a type"),
        ("int[str]", "is not a type"),
        ("lambda: int", "only names, attributes and subscripts"),
        ("list[", "is not a type expression"),
        ("DataFrame[int]", "rows of a DataFrame must be records"),
    ],
)
def test_bad_types_are_usage_errors_naming_them(spec, message):
    with pytest.raises(UsageError) as raised:
        parse_target(spec, False, "x", NAMESPACE)
    assert message in str(raised.value)
    assert "--schema" in str(raised.value)
    assert not called  # nothing in the expression ever ran


def test_flags_need_an_output_and_exclude_each_other():
    with pytest.raises(UsageError, match="--schema needs -o NAME"):
        parse_target("City", False, None, NAMESPACE)
    with pytest.raises(UsageError, match="--json needs -o NAME"):
        parse_target(None, True, None, NAMESPACE)
    with pytest.raises(UsageError, match="cannot go together"):
        parse_target("City", True, "x", NAMESPACE)
    assert parse_target(None, False, "x", NAMESPACE) is None


def test_dataframe_of_records():
    pd = pytest.importorskip("pandas")
    t = target("DataFrame[City]")
    assert t.frame and t.columns == ["name", "population"] and t.wrapped
    valid, rows = check(t, [{"name": "Lima", "population": "9"}, {"name": "Oslo", "population": 1}])
    assert valid
    frame = t.result(rows)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["name", "population"]
    assert frame["population"].tolist() == [9, 1]
    # pandas' own class works too, and a bare DataFrame takes the columns the model gives.
    assert parse_target("pd.DataFrame[Point]", False, "x", {"pd": pd, "Point": Point}).columns == ["x", "y"]
    bare = parse_target("DataFrame", False, "x", {})
    assert bare.frame and list(bare.result(check(bare, [{"a": 1, "b": 2}])[1]).columns) == ["a", "b"]
    assert describe_value(t, frame) == "a DataFrame[City] of 2 rows × 2 columns"
    shown = rendering(t, frame)
    assert "<table" in shown["text/html"] and "Lima" in shown["text/html"]


class Aliased(BaseModel):
    full_name: str = Field(alias="fullName")
    age: int
    born: datetime.date | None = Field(default=None, validation_alias="bornOn", serialization_alias="born")


@pydantic_dataclass
class AliasedPoint:
    x_pos: float = Field(alias="x")
    y_pos: float = Field(alias="y")


class AliasedMovie(TypedDict):
    title: Annotated[str, Field(alias="Title")]
    year: int


@pytest.mark.parametrize(
    ("row", "sent", "expected"),
    [
        (Aliased, {"fullName": "Ann", "age": 3, "bornOn": "2020-01-02"}, {"fullName": "Ann", "age": 3, "born": datetime.date(2020, 1, 2)}),
        (AliasedPoint, {"x": 1, "y": "2.5"}, {"x": 1.0, "y": 2.5}),
        (AliasedMovie, {"Title": "Up", "year": "2009"}, {"Title": "Up", "year": 2009}),
    ],
)
def test_a_dataframe_of_records_with_aliases_fills_every_column(row, sent, expected):
    pytest.importorskip("pandas")
    t = parse_target("DataFrame[Row]", False, "x", {"Row": row})
    assert t is not None and t.columns == list(expected)
    valid, rows = check(t, [sent])
    assert valid, rows
    assert t.result(rows).to_dict("records") == [expected]


# -- JSON in text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"a": 1}]', [{"a": 1}]),
        ('  \n{"a": 1}\n', {"a": 1}),
        ("42", 42),
        ('"text"', "text"),
        ('Here it is:\n\n```json\n{"a": 1}\n```\n', {"a": 1}),
        ('Draft:\n```json\n{"a": 1}\n```\nFixed:\n```json\n{"a": 2}\n```\nDone.', {"a": 2}),
        ('```\n[1, 2]\n```', [1, 2]),
        ('~~~json\n{"a": 3}\n~~~', {"a": 3}),
        ('```JSON\n{"a": 4}\n```\nThen code:\n```python\nprint({"a": 5})\n```', {"a": 4}),
        ('````json\n{"s": "```"}\n````', {"s": "```"}),
        ('```json\r\n{"a": 6}\r\n```\r\n', {"a": 6}),
        ('Here:\n```json\n{"a": 7}\n`````\nDone.', {"a": 7}),
        ('\ufeff{"a": 8}', {"a": 8}),
        ('\ufeffHere:\n```json\n{"a": 9}\n```', {"a": 9}),
        ('```json\n{"a": 10}\n```\nRun:\n```\npip install x\n```', {"a": 10}),
        ('```json\n{"a": 11}\n```\nNot this:\n```json\n{"a": 12,}\n```', {"a": 11}),
        ('~~~~json\n{"a": 13}\n~~~~~', {"a": 13}),
    ],
)
def test_json_in_text_takes_the_text_alone_or_the_last_json_block(text, expected):
    assert json_in_text(text) == (True, expected)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ('The answer is {"a": 1}.', "held no JSON value"),
        ('```python\n{"a": 1}\n```', "held no JSON value"),
        ('Look:\n```json\n{"a": 1,}\n```', "not valid JSON"),
        ('~~~~json\n{"a": 1}\n~~~\n~~~~', "not valid JSON"),  # a shorter fence does not close the block
        ('```json\n{"a": 1}\n~~~', "held no JSON value"),  # nor one of the other character
    ],
)
def test_json_in_text_refuses_what_the_rule_does_not_cover(text, why):
    found, reason = json_in_text(text)
    assert not found and why in reason


def test_a_one_line_text_is_the_value_of_a_string_type_only():
    assert from_text(target("Literal['yes', 'no']"), "no\n") == (True, "no")
    assert from_text(target("Color"), "`green`") == (True, Color.GREEN)
    assert from_text(target("str"), "Paris") == (True, "Paris")
    assert not from_text(target("Color"), "It is green.")[0]
    assert not from_text(target("str"), "Paris\nLima")[0]
    assert not from_text(target("int"), "forty-two")[0]
    assert not from_text(parse_target(None, True, "d", {}), "no JSON here")[0]


@pytest.mark.parametrize("line", ["42", "true", "null", "3.5", "-1", "[1, 2]", "{}"])
def test_a_one_line_text_that_is_json_of_another_type_is_still_the_string(line):
    assert from_text(target("str"), line) == (True, line)
    assert from_text(target("str"), f"`{line}`\n") == (True, line)
    assert from_text(target("Color"), line)[0] is False  # not one of its strings


def test_json_that_fits_wins_over_the_line():
    assert from_text(target("Optional[str]"), "null") == (True, None)
    assert from_text(target("str"), '"quoted"') == (True, "quoted")
    assert from_text(target("Literal['1', '2']"), "2") == (True, "2")
    assert from_text(target("int | str"), "42") == (True, 42)
    assert from_text(target("str"), "Paris\nLima") == (False, ["the answer held no JSON value (neither JSON alone nor a ```json block)"])
    found, problems = from_text(target("int"), "[1]")
    assert not found and problems[0].startswith("(the value): Input should be a valid integer")


def test_text_in_the_tool_shape_is_unwrapped():
    t = target("list[int]")
    assert from_text(t, '{"value": [1, "2"]}') == (True, [1, 2])
    assert from_text(target("dict[str, int]"), '{"value": 1}') == (True, {"value": 1})
    assert from_text(target("dict[str, int]"), '{"value": {"a": 1}}') == (True, {"a": 1})
    assert check(target("City"), {"value": {"name": "Lima", "population": 2}}) == (True, City(name="Lima", population=2))
    assert not check(target("City"), {"value": {"name": "Lima"}})[0]
    # --json takes the text at its word: {"value": 5} is that dict, not 5.
    assert from_text(parse_target(None, True, "d", {}), '{"value": 5}') == (True, {"value": 5})
    assert from_text(target("Optional[dict[str, int]]"), '{"value": 5}') == (True, {"value": 5})
    assert from_text(target("Optional[list[int]]"), '{"value": [5]}') == (True, [5])


# -- the streamed view ----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12), indent=st.booleans())
def test_the_indenter_keeps_any_json_intact_however_it_is_cut(value, cuts, indent):
    text = json.dumps(value, ensure_ascii=False, indent=2 if indent else None)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    indenter = JsonIndenter()
    out = "".join(indenter.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    assert json.loads(out) == value
    assert "```" not in out or "```" in text  # nothing but the JSON itself


def test_the_indenter_puts_one_record_per_line():
    out = JsonIndenter().feed('{"value":[{"name":"Paris","population":2},{"name":"Lima","population":3}]}')
    assert out.splitlines() == [
        "{",
        '  "value": [',
        '    {"name": "Paris", "population": 2},',
        '    {"name": "Lima", "population": 3}',
        "  ]",
        "}",
    ]


class _Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.finished = False

    def start(self, answer: Any) -> None: ...
    def thinking(self, delta: str) -> None: ...
    def text(self, delta: str) -> None:
        self.texts.append(delta)

    def finish(self, answer: Any) -> None:
        self.finished = True

    def show(self, bundle: Any) -> Any:
        return lambda _: None


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    """A raw stream event's JSON, as the stream loop hands it to ``view.event``."""
    return {"type": kind, **{k: vars(v) if isinstance(v, types.SimpleNamespace) else v for k, v in fields.items()}}


def test_the_view_streams_only_the_answer_tool_as_a_json_block():
    inner = _Recorder()
    view = ValueView(inner, "answer")
    view.text("Here:")
    view.event(_event("content_block_start", content_block=types.SimpleNamespace(type="tool_use", name="lookup")))
    view.event(_event("input_json", partial_json='{"q": 1}'))
    view.event(_event("content_block_stop"))
    view.event(_event("content_block_start", content_block=types.SimpleNamespace(type="tool_use", name="answer")))
    # Raw deltas are read; the SDK helper's input_json event repeating each one is not.
    for piece in ["", '{"val', 'ue": [1,', " 2]}"]:
        delta = types.SimpleNamespace(type="input_json_delta", partial_json=piece)
        view.event(_event("content_block_delta", index=1, delta=delta))
        view.event(_event("input_json", partial_json=piece))
    view.event(_event("message_delta", delta=types.SimpleNamespace(stop_reason="tool_use")))
    view.finish(types.SimpleNamespace())  # no content_block_stop: a cut stream still closes the block
    shown = "".join(inner.texts)
    assert shown.startswith("Here:\n\n```json\n") and shown.endswith("\n```\n") and inner.finished
    assert '"q"' not in shown
    assert json.loads(shown.split("```json\n")[1].rsplit("```", 1)[0]) == {"value": [1, 2]}


def test_a_list_of_records_renders_as_an_escaped_table_and_anything_else_as_its_repr():
    t = target("list[City]")
    value = [City(name="<img src=x onerror=alert(1)>", population=1)]
    shown = rendering(t, value)
    assert "<table" in shown["text/html"] and "<img" not in shown["text/html"] and "&lt;img" in shown["text/html"]
    assert shown["text/plain"] == repr(value)
    assert describe_value(t, value) == "a list[City] of 1 item"
    assert rendering(target("int"), 5)["text/html"] == '<pre class="qwen-value">5</pre>'
    assert describe_value(target("int"), 5) == "an int"
    assert describe_value(target("str"), "abc") == "a str of 3 characters"
    assert describe_value(target("Literal['abc', 'b']"), "abc") == "a Literal['abc', 'b']"
    assert describe_value(parse_target(None, True, "d", {}), {"a": 1}) == "JSON (a dict of 1 item)"


PROSE = st.text(alphabet=st.characters(blacklist_characters="`~", blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    value=JSON_VALUES,
    before=PROSE,
    after=PROSE,
    tag=st.sampled_from(["json", "", "JSON", " json "]),
    fence=st.sampled_from(["```", "~~~", "````"]),
    longer=st.integers(min_value=0, max_value=2),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    command=st.booleans(),
)
def test_a_json_block_among_any_prose_is_found(value, before, after, tag, fence, longer, newline, bom, command):
    closing = fence + fence[0] * longer  # CommonMark: a closing fence may be longer
    body = json.dumps(value, ensure_ascii=False, indent=1)
    text = f"{before}\n{fence}{tag}\n{body}\n{closing}\n{after}"
    if command:  # a command block after the value does not hide it
        text += "\n```\npip install pandas\n```\n"
    text = ("\ufeff" if bom else "") + text.replace("\n", newline)
    assert json_in_text(text) == (True, value)


TYPE_WORDS = st.sampled_from(
    ["City", "Node", "list", "dict", "str", "int", "Optional", "Literal", "make", "five", "models", "Plain", "x", "1", "'a'"]
)
TYPE_TEXT = st.recursive(
    TYPE_WORDS,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a}[{b}]", inner, inner),
        st.builds(lambda a, b: f"{a}[{b}, {b}]", inner, inner),
        st.builds(lambda a, b: f"{a}.{b}", inner, TYPE_WORDS),
        st.builds(lambda a, b: f"{a} | {b}", inner, inner),
        st.builds(lambda a: f"{a}()", inner),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(spec=st.one_of(TYPE_TEXT, st.text(max_size=30)))
def test_any_schema_text_gives_a_target_or_a_usage_error_and_runs_nothing(spec):
    try:
        result = parse_target(spec, False, "x", NAMESPACE)
    except UsageError as error:
        assert "--schema" in str(error)
    else:
        from jsonschema import Draft202012Validator

        assert result is not None and result.input_schema()["type"] == "object"
        schema = result.input_schema()
        Draft202012Validator.check_schema(schema)
        for ref in _refs(schema):
            assert isinstance(_pointer(schema, ref), dict), ref
    assert not called


# -- the fake server checks tool_choice as the service documents it ---------------------------


@pytest.mark.parametrize(
    ("choice", "tools", "refused"),
    [
        ({"type": "auto"}, None, None),
        ({"type": "tool", "name": "answer"}, ["answer"], None),
        ({"type": "any"}, ["answer", "lookup"], None),
        ({"type": "none"}, ["answer"], None),
        ({"type": "tool", "name": "other"}, ["answer"], "tool_choice.name: 'other' is not one of the tools"),
        ({"type": "any"}, None, "tool_choice: type 'any' needs tools"),
        ({"type": "required"}, ["answer"], "tool_choice.type: Input should be"),
    ],
)
def test_the_fake_server_validates_tool_choice(server, choice, tools, refused):
    import anthropic

    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    request: dict[str, Any] = {
        "model": "qwen3.6-plus",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": choice,
    }
    if tools:
        request["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in tools]
    if refused is None:
        assert client.messages.create(**request).stop_reason
    else:
        with pytest.raises(anthropic.BadRequestError, match=re.escape(refused)):
            client.messages.create(**request)


# What a value holds is shown, not typeset: MathJax pairs dollars in a page's text.
_DOLLARS = ["$5 to $10", "${price:.2f} (was ${old:.2f})", r"\(x\) and \[y\]", "$$a$$", r"C:\Users\$me"]


@pytest.mark.parametrize("spec", ["list[Item]", "DataFrame[Item]"])
def test_a_stored_value_s_table_shows_its_dollars_as_dollars(spec: str) -> None:
    from html_readers import typeset, visible_text

    from qwen_magic._structured._show import rendering

    class Item(BaseModel):
        name: str
        note: str

    target = parse_target(spec, False, "v", {"Item": Item})
    assert target is not None
    value = target.result(target.validate([{"name": text, "note": text + " ok"} for text in _DOLLARS]))
    html = rendering(target, value)["text/html"]
    assert typeset(html) == []
    for text in _DOLLARS:
        assert text in visible_text(html)


def test_a_note_quoting_a_value_shows_its_dollars_as_dollars(monkeypatch: pytest.MonkeyPatch) -> None:
    from html_readers import typeset, visible_text

    import qwen_magic._tables as tables
    from qwen_magic._structured._show import note

    shown: list[dict[str, str]] = []
    monkeypatch.setattr(tables, "display", lambda bundle, raw: shown.append(bundle))
    for text in _DOLLARS:
        note(f'No valid value yet (got "{text}"); asking again.')
    assert [typeset(b["text/html"]) for b in shown] == [[]] * len(_DOLLARS)
    assert all(text in visible_text(b["text/html"]) for text, b in zip(_DOLLARS, shown, strict=True))
