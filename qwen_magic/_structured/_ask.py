"""Asking for a value: the answer tool, JSON in text, validation, repair, and the loop around the turn's rounds."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._answer import Answer
from .._blocks import from_answer
from .._errors import InvalidValue, QwenError, ServiceError
from .._tools import ArgumentMismatch, Tool, Toolbox
from .._turn import converse
from ._show import ValueView, deliver, describe_value, note, short_errors
from ._target import Target

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import TextBlockParam, ToolChoiceParam, ToolParam

    from .._blocks import Message, Request
    from .._view import View


TOOL_NAME = "answer"
SHOWN_ERRORS = 3  # validation errors quoted when the cell fails
SENT_ERRORS = 10  # validation errors sent back to the model in a repair


# -- asking -------------------------------------------------------------------------------


def instruction(target: Target, tool_name: str, with_tools: bool) -> TextBlockParam:
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
        self.reached = 0  # calls of this round that reached ``call``

    @staticmethod
    def _no_function() -> None:  # a Tool has a function; this one is never called
        return None

    def definition(self) -> ToolParam:
        what = "any JSON value" if self.target.spelling == "JSON" else f"a {self.target.spelling}"
        return {
            "name": self.name,
            "description": f"Give the final answer: {what}. Call this once, with the complete value.",
            "input_schema": self.target.input_schema(),
        }

    def call(self, arguments: dict[str, Any]) -> Any:
        self.reached += 1
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

    def settled_after(self, done: Answer, tools: Toolbox | None) -> bool:
        """``settled``, once the calls of the round ``done`` that never reached ``call`` are counted.

        The tool loop answers a call of an unknown tool, or with arguments that are not one
        JSON object, without calling this tool; each is still an answer that gave no value,
        so it spends a repair like an invalid one.
        """
        missed = []
        for made in done.tool_calls:
            name = made.get("name")
            if tools and name in tools:
                continue  # one of the user's tools: --tools rounds keep their own limit
            if name != self.name:
                missed.append(f"called {name!r} instead of the tool `{self.name}`")
            elif self.reached:
                self.reached -= 1
            else:
                missed.append(f"the input of `{self.name}` was not one JSON object")
        self.reached = 0
        if missed:
            self.failures += len(missed)
            self.errors = missed
        return self.settled()


def check(target: Target, data: Any) -> tuple[bool, Any]:
    """``(True, value)`` for data that validates, else ``(False, ["where: what", …])``.

    ``{"value": X}`` that does not fit is read as ``X`` when ``X`` fits: a model that wraps
    its answer out of habit, or writes the tool's shape as text, is not sent back for it
    (while ``--json`` keeps ``{"value": 5}`` as the dict it is).
    """
    ok, result = _validated(target, data)
    if not ok and isinstance(data, dict) and set(data) == {"value"}:
        unwrapped, value = _validated(target, data["value"])
        if unwrapped:
            return True, value
    return ok, result


def _validated(target: Target, data: Any) -> tuple[bool, Any]:
    """``check`` without the unwrapping: any exception a validator raises is a problem with the value."""
    from pydantic import ValidationError

    try:
        return True, target.validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item.get("loc", ())) or "(the value)"
            given = json.dumps(item.get("input"), ensure_ascii=False, default=repr)
            given = given if len(given) <= 60 else given[:59] + "…"
            problems.append(f"{where}: {item.get('msg', 'invalid')} (got {given})")
        return False, problems
    except Exception as exc:  # a validator of the user's type that raises TypeError, KeyError …
        return False, [f"(the value): the type's validation raised {type(exc).__name__}" + (f": {exc}" if str(exc) else "")]


_FENCE = re.compile(
    r"^[ ]{0,3}(?P<fence>(?P<char>[`~])(?P=char){2,})(?!(?P=char))[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)^[ ]{0,3}(?P=fence)(?P=char)*[ \t]*$",
    re.M | re.S,
)  # a closing fence is at least as long as the opening one, as in CommonMark


def json_in_text(text: str) -> tuple[bool, Any]:
    """The JSON value a text answer gives: ``(True, value)``, or ``(False, why not)``.

    The rule: the whole text, if it is JSON; else the last fenced block tagged ``json``
    (or untagged) that holds valid JSON, so a command block after the value does not hide it.
    Anything else — JSON inline in a sentence, a ```python block — is not taken, so prose
    that merely mentions braces never becomes the value. Line ends (CRLF) and a leading
    byte order mark do not matter.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    stripped = text.strip()
    if not stripped:
        return False, "the answer was empty"
    try:
        return True, json.loads(stripped)
    except ValueError:
        pass
    blocks = [m["body"] for m in _FENCE.finditer(text) if m["info"].strip().lower() in ("", "json")]
    if not blocks:
        return False, "the answer held no JSON value (neither JSON alone nor a ```json block)"
    problem = ""
    for body in reversed(blocks):
        try:
            return True, json.loads(body)
        except ValueError as exc:
            problem = problem or f"the last ```json block is not valid JSON ({exc})"
    return False, problem


def from_text(target: Target, text: str) -> tuple[bool, Any]:
    """The validated value a text answer gives, or the problems with it.

    Besides JSON: for a string type (``str``, a ``Literal`` or ``Enum`` of strings) a
    one-line answer is the string itself — ``positive`` needs no quotes to be a value, and
    ``42`` is the string ``"42"`` when a number does not fit.
    """
    found, data = json_in_text(text)
    problems = [data]
    if found:
        valid, result = check(target, data)
        if valid:
            return True, result
        problems = result
    line = text.strip().strip("`\"'").strip()
    if line and "\n" not in line and target.type is not Any:
        valid, value = check(target, line)
        if valid and isinstance(value, (str, enum.Enum)):
            return True, value
    return False, problems


def refuses_forcing(error: ServiceError, answer: Answer) -> bool:
    """Whether ``error`` refuses the forced ``tool_choice``: a 400 naming it, before anything arrived.

    Any other 400 (an image too large, a context too long) fails the cell as it is, and
    forcing stays on.
    """
    about = str(error).lower().replace(" ", "_")
    return error.status == 400 and not answer.rounds and not answer.text and "tool_choice" in about


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
    request: Request,
    answer: Answer,
    tools: Toolbox | None,
    *,
    forcing: Forcing,
    max_repairs: int,
    views: Callable[[], View],
    max_rounds: int,
    remark: Callable[[Request], Request] | None = None,
    **loop: Any,
) -> Any:
    """Ask until a valid value comes (or the repairs run out): the tool loop with the answer tool.

    ``loop``: the rest of ``converse``'s options (stream, usage, tool count), passed on as
    they are. ``request`` already ends with the prompt and its instruction. On return the turn's
    rounds in ``answer`` hold every attempt, so the history replays them; the result is
    what ``NAME`` gets. Raises ``InvalidValue`` when no valid value came.
    """
    name = tool_name_for(tools)
    tool = AnswerTool(target, name, output, max_repairs)
    toolbox = Toolbox({**(tools or {}), name: tool})
    thinks = request["thinking"]["type"] == "enabled"
    key = (request["model"], thinks)
    forced = key not in forcing.refused
    base = request["messages"]

    def choice() -> ToolChoiceParam:
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
                remark=remark,
                until=lambda: tool.settled_after(answer.rounds[-1], tools),
                **loop,
            )
        except ServiceError as error:
            if not (forced and refuses_forcing(error, answer)):
                raise
            forced = False
            forcing.refused.add(key)
            which = f"{key[0]} with thinking" if thinks else key[0]
            note(
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
            note(f"No valid value yet ({short_errors(tool.errors)}); asking again: repair {tool.failures} of {max_repairs}.")
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
        messages: list[Message] = list(base)
        for done in answer.rounds:
            messages += [
                {"role": "assistant", "content": from_answer(done.history_content())},
                {"role": "user", "content": from_answer(done.tool_results)},
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
        self, client: anthropic.Anthropic, request: Request, answer: Answer, tools: Toolbox | None, **loop: Any
    ) -> None:
        try:
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
        except QwenError as error:
            if not isinstance(error, InvalidValue):  # which says so itself
                unassigned(error, self.output)
            raise

    def deliver(self, namespace: dict[str, Any]) -> None:
        """Store the value (only ever a valid one: ``obtain`` raised otherwise) and show it."""
        deliver(namespace, self.output, self.target, self.value)


def unassigned(error: QwenError, output: str) -> None:
    """Add to ``error``'s message that ``output`` was not assigned.

    Part of the value may already be on screen above the error: without a word, the
    variable's old value is easily taken for the new one.
    """
    text = str(error).rstrip()
    end = "" if text.endswith((".", "!", "?", "…")) else "."
    error.args = (f"{text}{end} {output} was not assigned (it keeps any value it had before).",)
