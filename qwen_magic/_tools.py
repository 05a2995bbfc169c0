"""Tools: the notebook's own functions, marked, offered to the model with their schemas.

``%%qwen --tools f,g`` offers ``f`` and ``g`` from the user's namespace; ``--tools`` alone
offers every function marked with ``@qwen_magic.tool``. A tool's JSON schema comes from
the anthropic SDK's function-tool helper (pydantic: signature, type hints, docstring
parameter descriptions), tidied into a self-contained schema (``$defs`` inlined, titles
dropped). The SDK and pydantic are imported only when tools are offered. Only functions
offered in the cell can run; nothing else the model writes is executed.

Calling them, and showing a call, is ``_calls``; the rounds of a turn are ``_turn``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from IPython.core.error import UsageError

if TYPE_CHECKING:
    import pydantic
    from anthropic.lib.tools import BetaFunctionTool
    from anthropic.types import ToolParam

    from ._blocks import Message

F = TypeVar("F", bound=Callable[..., Any])
JsonSchema = dict[str, Any]  # JSON from pydantic: its values are any JSON

_MARK = "__qwen_magic_tool__"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the Messages API accepts as a tool name

HOW_TO_MARK = """\
--tools without names offers the functions marked with @qwen_magic.tool, and there are none. Mark one:

    import qwen_magic

    @qwen_magic.tool
    def get_weather(city: str) -> str:
        ...

or name the functions to offer: %%qwen --tools f,g"""


# -- marking and offering ---------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    name: str | None
    description: str | None


@overload
def tool(func: F, /) -> F: ...


@overload
def tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...


def tool(func: F | None = None, /, *, name: str | None = None, description: str | None = None) -> F | Callable[[F], F]:
    """Mark a function to be offered to Qwen by ``%%qwen --tools`` (with no names).

    ``@qwen_magic.tool`` or ``@qwen_magic.tool(name="weather", description="…")``. The
    function is returned unchanged; its schema is built when a cell offers it.
    """
    if name is not None and not TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r}: use 1 to 64 letters, digits, '_' or '-'.")

    def mark(f: F) -> F:
        try:
            setattr(f, _MARK, _Mark(name, description))
        except (AttributeError, TypeError):
            raise TypeError(f"@qwen_magic.tool cannot mark {f!r}; wrap it in a def.") from None
        return f

    return mark if func is None else mark(func)


@dataclass
class Tool:
    """A function offered to the model under ``name``, with its schema."""

    name: str
    func: Callable[..., Any]
    sdk: BetaFunctionTool[Any] | None = field(repr=False)  # schema and validation (None: a tool of its own)

    def definition(self) -> ToolParam:
        """The entry for the request's ``tools``."""
        assert self.sdk is not None
        with _quiet_defaults():
            spec = self.sdk.to_dict()
        schema = tidy_schema(dict(spec["input_schema"]))
        if "additionalProperties" not in schema and _takes_any_keyword(self.func):
            schema["additionalProperties"] = True  # ``**kwargs``: say so, or the model reads "no arguments"
        if spec.get("description"):
            return {"name": self.name, "description": spec["description"], "input_schema": schema}
        return {"name": self.name, "input_schema": schema}

    def schema(self) -> JsonSchema:
        """The JSON schema of the tool's arguments."""
        return dict(self.definition()["input_schema"])

    def call(self, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments`` against the schema, then call; a mismatch raises ``ArgumentMismatch``."""
        import pydantic

        assert self.sdk is not None
        try:
            return self.sdk.call(arguments)
        except ValueError as exc:
            # The SDK reports a mismatch as ValueError from pydantic's ValidationError; the
            # function's own errors are told apart by where they were raised.
            cause = exc.__cause__
            if _raised_inside(exc, self.func) or not isinstance(cause, pydantic.ValidationError):
                raise
            if _raised_inside(cause, self.func):
                raise cause from None
            raise ArgumentMismatch(_validation_text(cause)) from None


@contextlib.contextmanager
def _quiet_defaults() -> Iterator[None]:
    """Build a schema without pydantic's warning for a default that is not JSON (``when=object()``).

    The default is left out of the schema, which is all the warning says; it has no place
    in the cell's output.
    """
    from pydantic.json_schema import PydanticJsonSchemaWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        yield


def _takes_any_keyword(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class ArgumentMismatch(Exception):
    """The model's arguments do not match the tool's schema (the function was not called)."""


def _raised_inside(error: BaseException, func: Callable[..., Any]) -> bool:
    """Whether ``error`` was raised while ``func``'s own code ran (not by the argument check)."""
    target = func.func if isinstance(func, functools.partial) else func
    code = getattr(inspect.unwrap(getattr(target, "__func__", target)), "__code__", None)
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _validation_text(error: pydantic.ValidationError) -> str:
    """pydantic's errors as ``where: what`` lines, without its URLs."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item.get("loc", ())) or "(arguments)"
        lines.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(lines)


class Toolbox(dict[str, Tool]):
    """The tools one cell offers, by name."""

    def definitions(self) -> list[ToolParam]:
        return [t.definition() for t in self.values()]


def offered(spec: str | None, namespace: dict[str, Any]) -> Toolbox | None:
    """The tools ``--tools spec`` offers: None without the flag; names, or the marked functions."""
    if spec is None:
        return None
    names = [n.strip() for n in spec.split(",") if n.strip()]
    found: list[tuple[str, Any]] = []
    if names:
        for name in dict.fromkeys(names):
            if name not in namespace and callable(getattr(builtins, name, None)):
                raise UsageError(f"--tools: {name!r} is a Python builtin, not a function of the notebook; {_WRAP}")
            if name not in namespace:
                raise UsageError(
                    f"--tools: {name!r} is not defined in the notebook; define it first or check the spelling."
                )
            found.append((name, namespace[name]))
    else:
        found = _marked(namespace)
        if not found:
            raise UsageError(HOW_TO_MARK)
    toolbox = Toolbox()
    for name, value in found:
        made = _make(name, value)
        if made.name in toolbox:
            raise UsageError(f"--tools: two functions would both be called {made.name!r}; give one another name.")
        toolbox[made.name] = made
    return toolbox


_WRAP = "wrap it in a def with type hints and a docstring, e.g. def size(items: list) -> int: return len(items)"


def _builtin(value: Any) -> str:
    """How to name a function written in C: Python's own builtin, or one from a module."""
    return "a Python builtin" if getattr(builtins, getattr(value, "__name__", ""), None) is value else "a built-in function"


def _partial_function(partial: functools.partial[Any]) -> Callable[..., Any]:
    """A def standing in for ``partial``: the parameters it leaves open, its function's name, hints and docstring."""

    @functools.wraps(partial.func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return partial(*args, **kwargs)

    call.__signature__ = inspect.signature(partial)  # type: ignore[attr-defined]
    return call


def _marked(namespace: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(name, function)`` for each marked function, once per function (its own name preferred)."""
    by_id: dict[int, tuple[str, Any]] = {}
    for name, value in list(namespace.items()):
        if name.startswith("_") or not callable(value):
            continue
        # getattr_static: looking must not run a property or __getattr__ of the user's objects.
        if not isinstance(inspect.getattr_static(value, _MARK, None), _Mark):
            continue
        if id(value) not in by_id or name == getattr(value, "__name__", None):
            by_id[id(value)] = (name, value)
    return list(by_id.values())


def _make(name: str, value: Any) -> Tool:
    """Build the tool for one offered value; anything that cannot be a tool is a ``UsageError``."""
    if not callable(value):
        raise UsageError(f"--tools: {name!r} is not a function (it is a {type(value).__name__} value).")
    if inspect.isclass(value):
        raise UsageError(f"--tools: {name!r} is a class; offer a function that does what you need with it.")
    mark = inspect.getattr_static(value, _MARK, None)
    mark = mark if isinstance(mark, _Mark) else _Mark(None, None)
    func = value
    if isinstance(value, functools.partial):
        func = _partial_function(value)
    elif inspect.isroutine(value) and not hasattr(inspect.unwrap(value), "__code__"):  # written in C
        raise UsageError(f"--tools: {name!r} is {_builtin(value)}, which has no signature to describe; {_WRAP}")
    elif not inspect.isroutine(value):
        func = value.__call__  # a callable object: its __call__ describes it
    if inspect.iscoroutinefunction(inspect.unwrap(func)):
        raise UsageError(f"--tools: {name!r} is an async function; offer a plain def that runs it.")
    tool_name = mark.name or name
    if not TOOL_NAME.match(tool_name):
        raise UsageError(
            f"--tools: {tool_name!r} cannot be a tool name (1 to 64 letters, digits, '_' or '-'); "
            'give it one with @qwen_magic.tool(name="...").'
        )
    import anthropic  # noqa: F401  (first: importing anthropic.lib.tools on its own is a circular import)
    from anthropic.lib.tools import BetaFunctionTool

    try:
        with _quiet_defaults():
            sdk = BetaFunctionTool(func, name=tool_name, description=mark.description)
        made = Tool(tool_name, func, sdk)
        schema = made.schema()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--tools: {name!r} cannot be described as a tool: {reason}") from None
    if schema.get("type") != "object":
        raise UsageError(
            f"--tools: {name!r} cannot be described as a tool: the model passes named arguments, "
            "so *args and positional-only parameters cannot be filled; take a list parameter instead."
        )
    return made


# -- schemas ------------------------------------------------------------------------------

_LITERAL_KEYS = ("default", "enum", "const", "examples")  # values, not schemas: never rewritten


def tidy_schema(schema: JsonSchema) -> JsonSchema:
    """``schema`` without pydantic's titles and with ``$defs`` inlined (recursive ones stay).

    Not every backend resolves ``$ref``; an inlined schema reads the same to any of them.
    """
    defs: dict[str, Any] = schema.get("$defs", {})
    kept: dict[str, Any] = {}

    def walk(node: Any, inside: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, inside) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            target = ref[8:]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if target in inside:  # recursive: keep the reference, and the definition once
                if target not in kept:
                    kept[target] = None
                    kept[target] = walk(defs[target], inside)
                return walk(rest, inside) | {"$ref": ref}
            return walk(defs[target], inside | {target}) | walk(rest, inside)
        tidy: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$defs" or (key == "title" and isinstance(value, str)):
                continue
            if key in _LITERAL_KEYS:
                tidy[key] = value
            elif key in ("properties", "patternProperties") and isinstance(value, dict):
                tidy[key] = {name: walk(sub, inside) for name, sub in value.items()}
            else:
                tidy[key] = walk(value, inside)
        return tidy

    result: JsonSchema = walk(schema, frozenset())
    if kept:
        result["$defs"] = kept
    return result


def _type_text(schema: JsonSchema) -> str:
    """A short readable type: ``string``, ``integer | null``, ``"a" | "b"``, ``array of number``."""
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    if "anyOf" in schema:
        return " | ".join(_type_text(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_text(schema['items'])}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type_text(schema['additionalProperties'])}"
    if kind == "object" and schema.get("properties"):
        return "object {" + ", ".join(schema["properties"]) + "}"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(kind) if kind else "any"


def describe(toolbox: Toolbox) -> str:
    """``%qwen tools``: each tool's description, a parameter table and its JSON definition."""
    lines = [f"### Tools offered: {len(toolbox)}"]
    for made in toolbox.values():
        definition = made.definition()
        schema = made.schema()
        description = definition.get("description") or "*(no description: add a docstring)*"
        lines += ["", f"#### `{made.name}`", "", description, ""]
        properties = schema.get("properties", {})
        if properties:
            lines += ["| parameter | type | required | description |", "|---|---|---|---|"]
            required = set(schema.get("required", []))
            for name, sub in properties.items():
                default = json.dumps(sub.get("default"), ensure_ascii=False)
                need = "yes" if name in required else f"no (default `{default}`)"
                cells = [f"`{name}`", f"`{_type_text(sub)}`", need, sub.get("description", "")]
                lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        else:
            lines.append("*(any named arguments)*" if schema.get("additionalProperties") is True else "*(no parameters)*")
        lines += ["", "```json", json.dumps(definition, indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines)


# -- what history needs offered ---------------------------------------------------------------


def history_calls(messages: list[Message]) -> list[str]:
    """The names of the tools called anywhere in ``messages``."""
    names = []
    for message in messages:
        if message["role"] == "assistant" and isinstance(message["content"], list):
            names += [b["name"] for b in message["content"] if b["type"] == "tool_use"]
    return list(dict.fromkeys(names))


def placeholder_tools(names: list[str]) -> list[ToolParam]:
    """Stand-ins for tools the history called but this cell does not offer (the API wants them defined)."""
    description = "Offered in an earlier cell; not offered now."
    return [{"name": name, "description": description, "input_schema": {"type": "object"}} for name in names]
