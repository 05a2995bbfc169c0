"""The type ``--schema TYPE`` names: parsed with ``ast``, resolved without running anything, its schema."""

from __future__ import annotations

import ast
import builtins
import enum
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

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
        """The answer tool's ``input_schema``.

        A wrapped schema's ``$defs`` (recursive types keep theirs) move to the root, where
        their ``#/$defs/…`` references point.
        """
        if not self.wrapped:
            return self.schema
        value = {key: part for key, part in self.schema.items() if key != "$defs"}
        wrapper: dict[str, Any] = {"type": "object", "properties": {"value": value}, "required": ["value"]}
        if "$defs" in self.schema:
            wrapper["$defs"] = self.schema["$defs"]
        return wrapper

    def validate(self, data: Any) -> Any:
        """The validated, converted value (lax mode); raises pydantic's ``ValidationError``."""
        return self.adapter.validate_python(data, strict=False)

    def result(self, value: Any) -> Any:
        """What ``NAME`` gets: the value, or a DataFrame of its rows."""
        if not self.frame:
            return value
        import pandas as pd

        rows = self.adapter.dump_python(value, mode="python", by_alias=True)
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
    assert spec is not None  # neither --json nor a missing spec got here
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
            f"--schema {spelling!r} is {a_or_an(type(value).__name__)} value, not a type. Give a class (a pydantic "
            "model, dataclass, TypedDict or Enum), a builtin such as int or str, or a container such as list[City]."
        )
    return _target(spelling, value)


@dataclass
class _FrameOf:
    row: Any


def _target(spelling: str, kind: Any, **extra: Any) -> Target:
    """A ``Target`` with its adapter and schema; a type pydantic cannot describe is a ``UsageError``."""
    from pydantic import TypeAdapter

    from .._tools import tidy_schema

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
    # The rows are dumped by alias: the columns are the names a dump gives (serialization aliases).
    from .._tools import tidy_schema

    dumped = tidy_schema(target.adapter.json_schema(mode="serialization")).get("items", {})
    target.columns = list(dumped.get("properties") or items["properties"])
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
            return _subscript(base, argument)
        except Exception as exc:
            raise UsageError(f"--schema {spelling!r}: {ast.unparse(node)!r} is not a type ({exc}).") from None
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, namespace, spelling) for e in node.elts)
    if isinstance(node, ast.List):  # Callable[[int], str]: refused later, as not expressible
        return [_evaluate(e, namespace, spelling) for e in node.elts]
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
        return node.value  # Literal["a", 1, None]
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return ...  # tuple[int, ...]
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


def _subscript(base: Any, argument: Any) -> Any:
    """``base[argument]``; a ``Literal`` of Enum members also takes their values.

    Its schema lists the values (``"red"`` for ``Color.RED``), which pydantic alone would
    refuse as not the member: the model could never give a valid answer.
    """
    made = base[argument]
    members = argument if isinstance(argument, tuple) else (argument,)
    if typing.get_origin(made) is not typing.Literal or not any(isinstance(m, enum.Enum) for m in members):
        return made
    from pydantic import BeforeValidator

    return typing.Annotated[made, BeforeValidator(functools.partial(_member, members))]


def _member(members: tuple[Any, ...], value: Any) -> Any:
    """The Enum member among ``members`` whose value ``value`` is, else ``value`` as it is."""
    for member in members:
        if isinstance(member, enum.Enum) and type(value) is type(member.value) and value == member.value:
            return member
    return value


def a_or_an(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
