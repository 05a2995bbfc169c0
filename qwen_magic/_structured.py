"""Answers as Python objects: ``%%qwen -o NAME --schema TYPE`` and ``--json``.

One job: turn a model answer into a validated Python value for ``NAME``.

- **The type.** ``TYPE`` is parsed with ``ast`` and resolved against the notebook's
  namespace (then builtins, then ``typing``): names, ``.attributes`` and ``[subscripts]``
  only (plus constants inside ``Literal[...]`` and ``X | Y``), never a call, so
  ``--schema "make()"`` runs nothing. ``DataFrame[Row]`` (bare ``DataFrame``: rows of any
  fields) asks for a list of ``Row`` records and stores a pandas DataFrame.
- **The schema.** pydantic's ``TypeAdapter(TYPE).json_schema()``, made self-contained
  (``$defs`` inlined, as for tools), wrapped as ``{"value": …}`` when it is not an object:
  a tool's input must be an object.
- **How it is asked.** One tool, ``answer``, whose input is that schema, and a line at the
  end of the prompt asking to call it. ``tool_choice`` forces the call (``any`` when the
  cell also offers ``--tools``, so they run first); if the service refuses forcing (a 400
  before anything arrived) the request is sent again with ``auto``, and forcing is not
  tried again for that model (with or without thinking) in this session. With ``--tools``,
  a prose ending after the tools ran is asked once for the value, not counted as a repair.
- **JSON in text.** A model that answers in text is taken at its word by one rule: the
  whole text if it is JSON, else the *last* fenced block tagged ``json`` or untagged
  (and, for a string type, a one-line answer as the string).
- **Validation and repair.** pydantic in lax mode (``"3"`` fits an ``int``). A value that
  does not validate, or no value, goes back to the model with the errors (as the tool
  result, or as a user message after a text answer) at most ``max_repairs`` times; then
  ``InvalidValue`` fails the cell quoting the first errors, and ``NAME`` is not assigned.
- **In the cell.** The tool input streams as a growing ```json block (``ValueView``
  re-indents it as it comes); the value is then shown compactly (a table for records and
  DataFrames, else its repr) with a note: ``Stored a list[City] of 12 items in cities``.
"""

from __future__ import annotations

import ast
import builtins
import enum
import html
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.display import display

from ._answer import Answer
from ._errors import InvalidValue, ServiceError
from ._tools import ArgumentMismatch, Tool, Toolbox
from ._turn import converse

if TYPE_CHECKING:
    import anthropic

    from ._view import Bundle, View

Block = dict[str, Any]

TOOL_NAME = "answer"
SHOWN_ERRORS = 3  # validation errors quoted when the cell fails
SENT_ERRORS = 10  # validation errors sent back to the model in a repair
TABLE_ROWS = 20  # rows of a records table shown in the cell
REPR_CHARS = 2_000  # characters of a value's repr shown in the cell


# -- the type ------------------------------------------------------------------------------


class _Frame:
    """``DataFrame`` in a type expression when the namespace does not define it."""


_FRAME = _Frame()


@dataclass
class Target:
    """What ``-o NAME --schema TYPE`` (or ``--json``) asks for, and how to check it."""

    spelling: str  # as the user wrote it: "list[City]", "DataFrame[Row]", "JSON"
    type: Any  # what pydantic validates: the type, list[Row] for a frame, Any for --json
    frame: bool = False  # store a pandas DataFrame built from the validated rows
    columns: list[str] = field(default_factory=list)  # a frame's columns, from the row type
    schema: dict[str, Any] = field(default_factory=dict)  # the value's JSON schema, self-contained
    adapter: Any = field(default=None, repr=False)

    @property
    def wrapped(self) -> bool:
        """Whether the tool input is ``{"value": …}`` (the value's schema is not an object)."""
        return self.schema.get("type") != "object"

    def input_schema(self) -> dict[str, Any]:
        """The answer tool's ``input_schema``."""
        if not self.wrapped:
            return self.schema
        return {"type": "object", "properties": {"value": self.schema}, "required": ["value"]}

    def validate(self, data: Any) -> Any:
        """The validated, converted value (lax mode); raises pydantic's ``ValidationError``."""
        return self.adapter.validate_python(data, strict=False)

    def result(self, value: Any) -> Any:
        """What ``NAME`` gets: the value, or a DataFrame of its rows."""
        if not self.frame:
            return value
        import pandas as pd

        rows = self.adapter.dump_python(value, mode="python")
        columns = self.columns or list(dict.fromkeys(key for row in rows for key in row))
        return pd.DataFrame(rows, columns=columns)


def parse_target(spec: str | None, as_json: bool, output: str | None, namespace: dict[str, Any]) -> Target | None:
    """The target of ``--schema spec`` / ``--json``, checked before anything is sent; None without them."""
    if spec is None and not as_json:
        return None
    flag = "--json" if as_json else "--schema"
    if spec is not None and as_json:
        raise UsageError("--schema and --json cannot go together: --json takes any JSON value, --schema a type.")
    if output is None:
        example = '%%qwen -o cities --schema "list[City]"' if spec is not None else "%%qwen -o data --json"
        raise UsageError(f"{flag} needs -o NAME, the variable that gets the value: e.g. {example}")
    if as_json:
        return _target("JSON", Any)
    spelling = spec.strip()
    if len(spelling) >= 2 and spelling[0] == spelling[-1] and spelling[0] in "'\"":
        spelling = spelling[1:-1].strip()  # IPython keeps the quotes of "dict[str, float]"
    try:
        tree = ast.parse(spelling, mode="eval")
    except SyntaxError:
        raise UsageError(
            f"--schema {spelling!r} is not a type expression; write e.g. City, list[City] or dict[str, float] "
            "(quote it when it has spaces)."
        ) from None
    value = _evaluate(tree.body, namespace, spelling)
    if isinstance(value, _FrameOf):
        return _frame_target(spelling, value.row)
    if value is _FRAME or _is_frame_class(value):
        return _frame_target(spelling, None)
    if not _is_type(value):
        raise UsageError(
            f"--schema {spelling!r} is {_a(type(value).__name__)} value, not a type. Give a class (a pydantic "
            "model, dataclass, TypedDict or Enum), a builtin such as int or str, or a container such as list[City]."
        )
    return _target(spelling, value)


@dataclass
class _FrameOf:
    row: Any


def _target(spelling: str, kind: Any, **extra: Any) -> Target:
    """A ``Target`` with its adapter and schema; a type pydantic cannot describe is a ``UsageError``."""
    from pydantic import TypeAdapter

    from ._tools import tidy_schema

    try:
        adapter = TypeAdapter(kind)
        schema = tidy_schema(adapter.json_schema())
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--schema {spelling!r} cannot be described as a JSON schema: {reason.rstrip('.')}. Use a pydantic model, a "
            "dataclass, a TypedDict, an Enum, builtins, Literal, or containers of these."
        ) from None
    return Target(spelling, kind, schema=schema, adapter=adapter, **extra)


def _frame_target(spelling: str, row: Any) -> Target:
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise UsageError(f"--schema {spelling!r} needs pandas: pip install pandas") from None
    if row is None:
        return _target(spelling, list[dict[str, Any]], frame=True)
    target = _target(spelling, list[row], frame=True)
    items = target.schema.get("items", {})
    if items.get("type") != "object" or not items.get("properties"):
        raise UsageError(
            f"--schema {spelling!r}: the rows of a DataFrame must be records with named fields (a pydantic "
            "model, dataclass or TypedDict), e.g. DataFrame[City]."
        )
    target.columns = list(items["properties"])
    return target


def _is_frame_class(value: Any) -> bool:
    return isinstance(value, type) and value.__name__ == "DataFrame" and value.__module__.startswith("pandas")


def _is_type(value: Any) -> bool:
    """Whether ``value`` can stand for a type: a class, a generic alias, a typing special form."""
    if value is None or value is Any or isinstance(value, type):
        return True
    if typing.get_origin(value) is not None or isinstance(value, types.UnionType):
        return True
    return type(value).__module__ in ("typing", "typing_extensions")  # Any, NewType, TypeVar …


def _lookup(name: str, namespace: dict[str, Any], spelling: str) -> Any:
    if name in namespace:
        return namespace[name]
    if hasattr(builtins, name):
        return getattr(builtins, name)
    if name in typing.__all__:  # Optional, Literal, Any … without an import
        return getattr(typing, name)
    if name == "DataFrame":
        return _FRAME
    raise UsageError(
        f"--schema {spelling!r}: {name!r} is not defined in the notebook; define it (or import it) first, "
        "or check the spelling."
    )


def _evaluate(node: ast.expr, namespace: dict[str, Any], spelling: str) -> Any:
    """The value of a type expression: names, attributes, subscripts; never a call."""
    if isinstance(node, ast.Name):
        return _lookup(node.id, namespace, spelling)
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise UsageError(f"--schema {spelling!r}: private attribute {node.attr!r} is not allowed.")
        base = _evaluate(node.value, namespace, spelling)
        try:
            return getattr(base, node.attr)
        except Exception:
            raise UsageError(
                f"--schema {spelling!r}: {ast.unparse(node.value)!r} has no attribute {node.attr!r}."
            ) from None
    if isinstance(node, ast.Subscript):
        base = _evaluate(node.value, namespace, spelling)
        argument = _evaluate(node.slice, namespace, spelling)
        if base is _FRAME or _is_frame_class(base):
            return _FrameOf(argument)
        try:
            return base[argument]
        except Exception as exc:
            raise UsageError(f"--schema {spelling!r}: {ast.unparse(node)!r} is not a type ({exc}).") from None
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, namespace, spelling) for e in node.elts)
    if isinstance(node, ast.List):  # Callable[[int], str]: refused later, as not expressible
        return [_evaluate(e, namespace, spelling) for e in node.elts]
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
        return node.value  # Literal["a", 1, None]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value  # Literal[-1]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # int | None
        left, right = _evaluate(node.left, namespace, spelling), _evaluate(node.right, namespace, spelling)
        try:
            return left | right
        except Exception:
            pass
        try:
            return typing.Union[left, right]  # noqa: UP007 - classes without __or__
        except Exception as exc:
            raise UsageError(f"--schema {spelling!r}: {ast.unparse(node)!r} is not a type ({exc}).") from None
    raise UsageError(
        f"--schema {spelling!r}: only names, attributes and subscripts make a type (e.g. City, list[City], "
        f"dict[str, float], Literal['a', 'b']); {ast.unparse(node)!r} is not allowed."
    )


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# -- asking -------------------------------------------------------------------------------


def instruction(target: Target, tool_name: str, with_tools: bool) -> Block:
    """The line appended to the prompt that says how to answer."""
    what = "any JSON value" if target.spelling == "JSON" else f"a value of type {target.spelling}"
    wrap = ' as {"value": …}' if target.wrapped else ""
    first = "When you have what you need from the other tools, give" if with_tools else "Give"
    return {
        "type": "text",
        "text": (
            f"{first} your answer as {what}: call the tool `{tool_name}` once with it{wrap}, following its "
            "input schema exactly."
        ),
    }


def tool_name_for(tools: Toolbox | None) -> str:
    """``answer``, or a name no offered tool has."""
    name, n = TOOL_NAME, 1
    while tools and name in tools:
        n += 1
        name = f"{TOOL_NAME}_{n}"
    return name


class AnswerTool(Tool):
    """The tool the model gives its answer with: its input is validated, never run as code."""

    def __init__(self, target: Target, name: str, output: str, max_repairs: int) -> None:
        super().__init__(name, self._no_function, None)
        self.target = target
        self.output = output
        self.max_repairs = max_repairs
        self.value: Any = None
        self.received = False
        self.failures = 0
        self.errors: list[str] = []  # the latest problems, "where: what"

    @staticmethod
    def _no_function() -> None:  # a Tool has a function; this one is never called
        return None

    def definition(self) -> dict[str, Any]:
        what = "any JSON value" if self.target.spelling == "JSON" else f"a {self.target.spelling}"
        return {
            "name": self.name,
            "description": f"Give the final answer: {what}. Call this once, with the complete value.",
            "input_schema": self.target.input_schema(),
        }

    def call(self, arguments: dict[str, Any]) -> Any:
        if self.received:
            return "Already received: the first valid value was kept."
        data = arguments
        if self.target.wrapped:
            if "value" not in arguments:
                return self._reject(['value: Field required (the input must be {"value": …})'])
            data = arguments["value"]
        ok, result = check(self.target, data)
        if not ok:
            return self._reject(result)
        self.value, self.received = result, True
        return f"Received: {describe_value(self.target, self.target.result(result))}; stored in `{self.output}`."

    def _reject(self, errors: list[str]) -> Any:
        self.failures += 1
        self.errors = errors
        raise ArgumentMismatch("; ".join(errors[:SENT_ERRORS]))

    def settled(self) -> bool:
        """A valid value came (stop), or no more repairs are allowed."""
        return self.received or self.failures > self.max_repairs


def check(target: Target, data: Any) -> tuple[bool, Any]:
    """``(True, value)`` for data that validates, else ``(False, ["where: what", …])``.

    ``{"value": X}`` where no wrapper was asked for is read as ``X`` when only ``X`` fits:
    a model that wraps every answer out of habit is not sent back for it.
    """
    from pydantic import ValidationError

    try:
        return True, target.validate(data)
    except ValidationError as error:
        if not target.wrapped and isinstance(data, dict) and set(data) == {"value"}:
            try:
                return True, target.validate(data["value"])
            except ValidationError:
                pass
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item.get("loc", ())) or "(the value)"
            given = json.dumps(item.get("input"), ensure_ascii=False, default=repr)
            given = given if len(given) <= 60 else given[:59] + "…"
            problems.append(f"{where}: {item.get('msg', 'invalid')} (got {given})")
        return False, problems


_FENCE = re.compile(
    r"^[ ]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^[ ]{0,3}(?P=fence)[ \t]*$",
    re.M | re.S,
)


def json_in_text(text: str) -> tuple[bool, Any]:
    """The JSON value a text answer gives: ``(True, value)``, or ``(False, why not)``.

    The rule: the whole text, if it is JSON; else the last fenced block tagged ``json``
    (or untagged). Anything else — JSON inline in a sentence, a ```python block — is not
    taken, so prose that merely mentions braces never becomes the value.
    """
    stripped = text.strip()
    if not stripped:
        return False, "the answer was empty"
    try:
        return True, json.loads(stripped)
    except ValueError:
        pass
    blocks = [m for m in _FENCE.finditer(text) if m["info"].strip().lower() in ("", "json")]
    if not blocks:
        return False, "the answer held no JSON value (neither JSON alone nor a ```json block)"
    body = blocks[-1]["body"]
    try:
        return True, json.loads(body)
    except ValueError as exc:
        return False, f"the last ```json block is not valid JSON ({exc})"


def from_text(target: Target, text: str) -> tuple[bool, Any]:
    """The validated value a text answer gives, or the problems with it.

    Besides JSON: for a string type (``str``, a ``Literal`` or ``Enum`` of strings) a
    one-line answer is the string itself — ``positive`` needs no quotes to be a value.
    """
    found, data = json_in_text(text)
    if not found:
        line = text.strip().strip("`\"'").strip()
        if line and "\n" not in line and target.type is not Any:
            valid, value = check(target, line)
            if valid and isinstance(value, (str, enum.Enum)):
                return True, value
        return False, [data]
    if target.wrapped and isinstance(data, dict) and set(data) == {"value"}:
        data = data["value"]  # the tool's shape, written out
    return check(target, data)


@dataclass
class Forcing:
    """``(model, thinking)`` pairs for which the service refused a forced ``tool_choice`` this session.

    Thinking is part of the key: some services refuse forcing only while the model thinks.
    """

    refused: set[tuple[str, bool]] = field(default_factory=set)


def obtain(
    target: Target,
    output: str,
    client: anthropic.Anthropic,
    request: dict[str, Any],
    answer: Answer,
    tools: Toolbox | None,
    *,
    forcing: Forcing,
    max_repairs: int,
    views: Callable[[], View],
    max_rounds: int,
    stream: bool = True,
    on_reply: Callable[[dict[str, Any], Answer], None] | None = None,
    remark: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    called: list[str] | None = None,
) -> Any:
    """Ask until a valid value comes (or the repairs run out): the tool loop with the answer tool.

    ``request`` already ends with the prompt and its instruction. On return the turn's
    rounds in ``answer`` hold every attempt, so the history replays them; the result is
    what ``NAME`` gets. Raises ``InvalidValue`` when no valid value came.
    """
    name = tool_name_for(tools)
    tool = AnswerTool(target, name, output, max_repairs)
    toolbox = Toolbox({**(tools or {}), name: tool})
    thinks = (request.get("thinking") or {}).get("type") == "enabled"
    key = (request["model"], thinks)
    forced = key not in forcing.refused
    base = request["messages"]

    def choice() -> dict[str, Any]:
        if not forced:
            return {"type": "auto"}
        return {"type": "any"} if tools else {"type": "tool", "name": name}

    # Repairs after a text answer are rounds too; the tools keep their own limit on top.
    rounds = max_rounds + max_repairs + 1
    request = {**request, "tool_choice": choice()}
    nudged = False
    while True:
        try:
            converse(
                client,
                request,
                answer,
                toolbox,
                views=lambda: ValueView(views(), name),
                max_rounds=rounds,
                stream=stream,
                on_reply=on_reply,
                remark=remark,
                called=called,
                until=tool.settled,
            )
        except ServiceError as error:
            if not (forced and error.status == 400 and not answer.rounds and not answer.text):
                raise
            # Refused before anything arrived: most likely the forced tool_choice. Once per model.
            forced = False
            forcing.refused.add(key)
            which = f"{key[0]} with thinking" if thinks else key[0]
            _note(
                f"The service refused a forced tool_choice ({error}); asking again with tool_choice "
                f"auto and the instruction. Not forcing {which} again in this session."
            )
            answer.__dict__.update(Answer(answer.model, cassette=answer.cassette).__dict__)
            request = {**request, "tool_choice": choice()}
            continue
        if tool.received:
            return target.result(tool.value)
        if answer.stop_reason == "max_tool_rounds":
            raise InvalidValue(
                f"no value for {output}: the tool rounds ran out before the model gave one "
                f"(raise %qwen config max_tool_rounds=N). {output} was not assigned."
            )
        free = False  # with --tools, a prose ending after the tools ran is asked for the value once, free
        if tool.failures <= max_repairs:
            text = answer.text if answer.history_content() else ""
            ok, result = from_text(target, text) if text.strip() else (False, ["no value came"])
            if ok:
                return target.result(result)
            if answer.stop_reason == "max_tokens":
                result = ["the answer was cut at max_tokens before the value was complete (raise --max-tokens)"]
            elif tools and not nudged and not json_in_text(text)[0]:
                nudged = free = True
            if not free:
                tool.failures += 1
                tool.errors = result
        if tool.failures > max_repairs:
            attempts = tool.failures
            raise InvalidValue(
                f"no valid {target.spelling} after {attempts} answer{'s' if attempts != 1 else ''} "
                f"({max_repairs} repair{'s' if max_repairs != 1 else ''} allowed): "
                + "; ".join(tool.errors[:SHOWN_ERRORS])
                + (f"; … {len(tool.errors) - SHOWN_ERRORS} more" if len(tool.errors) > SHOWN_ERRORS else "")
                + f". {output} was not assigned; ask again more precisely, or raise %qwen config max_repairs=N."
            )
        if free:
            ask = f"Now give your answer: call the tool `{name}` with the value, following its input schema."
        else:
            _note(f"No valid value yet ({_short(tool.errors)}); asking again: repair {tool.failures} of {max_repairs}.")
            ask = (
                "That answer gave no valid value: " + "; ".join(tool.errors[:SENT_ERRORS]) + ". "
                f"Call the tool `{name}` with a corrected value that follows its input schema."
            )
        fresh = Answer(answer.model, rounds=answer.rounds, cassette=answer.cassette)
        if answer.history_content():
            answer.next_round([{"type": "text", "text": ask}])
        elif answer.rounds:  # the attempt ended with tool results: the request joins that message
            answer.rounds[-1].tool_results.append({"type": "text", "text": ask})
            answer.__dict__.update(fresh.__dict__)
        else:  # an empty first answer: nothing to answer, so the same request goes again
            answer.__dict__.update(fresh.__dict__)
            continue
        messages = list(base)
        for done in answer.rounds:
            messages += [
                {"role": "assistant", "content": done.history_content()},
                {"role": "user", "content": done.tool_results},
            ]
        request = {**request, "messages": messages, "tool_choice": choice()}
        if remark is not None:
            request = remark(request)


@dataclass
class ValueLoop:
    """``converse``'s signature, asking for a value: call it like ``converse``, then ``deliver``."""

    target: Target
    output: str
    forcing: Forcing
    max_repairs: int
    value: Any = None

    def __call__(
        self, client: anthropic.Anthropic, request: dict[str, Any], answer: Answer, tools: Toolbox | None, **loop: Any
    ) -> None:
        self.value = obtain(
            self.target,
            self.output,
            client,
            request,
            answer,
            tools,
            forcing=self.forcing,
            max_repairs=self.max_repairs,
            **loop,
        )

    def deliver(self, namespace: dict[str, Any]) -> None:
        """Store the value (only ever a valid one: ``obtain`` raised otherwise) and show it."""
        deliver(namespace, self.output, self.target, self.value)


# -- showing ------------------------------------------------------------------------------


class JsonIndenter:
    """Re-indents JSON as it streams, two levels deep: one record or item per line."""

    DEPTH = 2

    def __init__(self) -> None:
        self._depth = 0
        self._string = self._escape = False

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for ch in chunk:
            if self._string:
                out.append(ch)
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._string = False
                continue
            if ch in " \t\r\n":
                continue
            if ch in "}]":
                self._depth -= 1
                if self._depth < self.DEPTH:
                    out.append("\n" + "  " * max(self._depth, 0))
                out.append(ch)
                continue
            if ch == '"':
                self._string = True
            out.append(ch)
            if ch in "{[":
                self._depth += 1
                if self._depth <= self.DEPTH:
                    out.append("\n" + "  " * self._depth)
            elif ch == ",":
                out.append("\n" + "  " * self._depth if self._depth <= self.DEPTH else " ")
            elif ch == ":":
                out.append(" ")
        return "".join(out)


class ValueView:
    """A view whose answer tool's input streams into the answer as a growing ```json block.

    Everything else goes to the wrapped view unchanged. The block is fed to the wrapped
    view as answer text, so it is painted (and bounded) like any streamed markdown; the
    answer's own text and blocks are untouched.
    """

    def __init__(self, inner: View, tool_name: str) -> None:
        self._inner = inner
        self._name = tool_name
        self._open: JsonIndenter | None = None
        self._wrote = False

    def start(self, answer: Answer) -> None:
        self._inner.start(answer)

    def thinking(self, delta: str) -> None:
        self._inner.thinking(delta)

    def text(self, delta: str) -> None:
        self._wrote = True
        self._inner.text(delta)

    def show(self, bundle: Bundle) -> Callable[[Bundle], None]:
        """Tool calls as usual, except the answer tool's: shown only when its value was refused.

        An accepted value is already on screen (the ```json block, then its rendering).
        """
        if not bundle.get("text/plain", "").startswith(f"🔧 {self._name}("):
            return self._inner.show(bundle)
        shown: list[Callable[[Bundle], None]] = []

        def paint(repainted: Bundle) -> None:
            if shown:
                shown[0](repainted)
            elif "⚠" in repainted.get("text/plain", ""):
                shown.append(self._inner.show(repainted))

        return paint

    def event(self, event: dict[str, Any]) -> None:
        """Other stream events (their JSON): a ``tool_use`` block of the answer tool opens, grows and closes.

        Its input arrives in raw ``content_block_delta`` events holding an ``input_json_delta``.
        """
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") == self._name:
                self._open = JsonIndenter()
                self.text(("\n\n" if self._wrote else "") + "```json\n")
        elif kind == "content_block_stop" and self._open is not None:
            self._close()
        elif self._open is not None:
            partial = None
            delta = event.get("delta") or {}
            if kind == "content_block_delta" and delta.get("type") == "input_json_delta":
                partial = delta.get("partial_json")
            piece = self._open.feed(partial) if partial else ""
            if piece:
                self._inner.text(piece)

    def _close(self) -> None:
        self._open = None
        self._inner.text("\n```\n")

    def finish(self, answer: Answer) -> None:
        if self._open is not None:
            self._close()
        self._inner.finish(answer)


def describe_value(target: Target, value: Any) -> str:
    """``a list[City] of 12 items``, ``a DataFrame[Row] of 12 rows × 3 columns``, ``JSON (a dict of 2 items)``."""
    if target.frame:
        rows, columns = value.shape
        return f"a {target.spelling} of {rows:,} row{'s' if rows != 1 else ''} × {columns} columns"
    size = ""
    if isinstance(value, str) and target.type in (str, Any):  # not for a Literal or an Enum
        size = f" of {len(value):,} characters"
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        size = f" of {len(value):,} item{'s' if len(value) != 1 else ''}"
    if target.spelling == "JSON":
        return f"JSON ({_a(type(value).__name__)}{size})"
    return _a(target.spelling) + size


def deliver(namespace: dict[str, Any], output: str, target: Target, value: Any) -> None:
    """Assign ``value`` to ``output``; show it compactly and say what was stored."""
    namespace[output] = value
    display(rendering(target, value), raw=True)
    _note(f"Stored {describe_value(target, value)} in {output}")


def rendering(target: Target, value: Any) -> Bundle:
    """The value compactly: a table for a DataFrame or a list of records, else its repr."""
    text = _cut(_safe_repr(value))
    if target.frame:
        return {"text/html": _frame_html(value), "text/plain": text}
    records = _records(target, value)
    if records is not None:
        return {"text/html": _table_html(records), "text/plain": text}
    return {"text/html": f'<pre class="qwen-value">{html.escape(text)}</pre>', "text/plain": text}


def _records(target: Target, value: Any) -> list[dict[str, Any]] | None:
    """A list of records whose fields are all scalars, as JSON-ready dicts; else None."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    try:
        rows = target.adapter.dump_python(value, mode="json")
    except Exception:
        return None
    if not all(isinstance(row, dict) and row for row in rows):
        return None
    if any(isinstance(v, (dict, list)) for row in rows for v in row.values()):
        return None
    return rows


def _table_html(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows[:TABLE_ROWS]:
        cells = "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    more = len(rows) - TABLE_ROWS
    tail = f'<div style="color:#888">… {more:,} more rows</div>' if more > 0 else ""
    return f'<table class="qwen-value"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{tail}'


def _frame_html(frame: Any) -> str:
    shown = frame.head(TABLE_ROWS)
    more = len(frame) - len(shown)
    tail = f'<div style="color:#888">… {more:,} more rows</div>' if more > 0 else ""
    return shown.to_html(escape=True, classes="qwen-value", border=0) + tail


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} object: repr failed: {type(exc).__name__}>"


def _short(errors: list[str]) -> str:
    first = errors[0] if errors else "no value came"
    return first + (f"; {len(errors) - 1} more" if len(errors) > 1 else "")


def _cut(text: str) -> str:
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS] + f"… [{len(text) - REPR_CHARS:,} more characters]"


def _note(text: str) -> None:
    display(
        {
            "text/html": f'<div class="qwen-note" style="color:#888;font-size:0.9em">{html.escape(text)}</div>',
            "text/plain": text,
        },
        raw=True,
    )
