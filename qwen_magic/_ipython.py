"""Typed names for the untyped parts of IPython the package uses, declared in one place.

IPython ships ``py.typed`` but leaves ``display``, ``update_display``, ``get_ipython``,
the ``magic_arguments`` decorators, the magic markers, ``Magics.__init__`` and
``shell.events`` unannotated, so under a strict type checker every call of them is an
error and every method they decorate loses its type. Each name here is IPython's own
object, unchanged at run time (``cast`` only tells the checker what it is; ``Magics`` is
re-declared for the checker alone), so behaviour and speed are IPython's. The signatures
cover the arguments this package passes; a new use that passes others fails type
checking here, in one place, instead of needing an ignore at each call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from IPython.core import display_functions as _display
from IPython.core import getipython as _getipython
from IPython.core import magic as _magic
from IPython.core import magic_arguments as _arguments

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = [
    "MagicArgumentParser",
    "Magics",
    "argument",
    "display",
    "events",
    "get_ipython",
    "line_cell_magic",
    "magic_arguments",
    "parse_argstring",
    "update_display",
]

F = TypeVar("F", bound=Callable[..., Any])


class Decorator(Protocol):
    """A decorator that returns the function it was given, with its type."""

    def __call__(self, func: F, /) -> F: ...


class _Argument(Protocol):
    def __call__(self, *names: str, **options: Any) -> Decorator: ...


class _Display(Protocol):
    def __call__(
        self,
        *objs: object,
        raw: bool = ...,
        display_id: str | None = ...,
        metadata: Mapping[str, object] | None = ...,
    ) -> object: ...


class Events(Protocol):
    """A shell's event manager (``shell.events``): callbacks for ``pre_run_cell`` and the others."""

    def register(self, event: str, function: Callable[..., object]) -> None: ...

    def unregister(self, event: str, function: Callable[..., object]) -> None: ...


class _UpdateDisplay(Protocol):
    def __call__(
        self, obj: object, *, display_id: str, raw: bool = ..., metadata: Mapping[str, object] | None = ...
    ) -> None: ...


if TYPE_CHECKING:

    class Magics(_magic.Magics):
        """IPython's ``Magics`` with its constructor and ``shell`` typed."""

        shell: InteractiveShell | None

        def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None: ...

else:
    Magics = _magic.Magics

magic_arguments = cast("Callable[[str], Decorator]", _arguments.magic_arguments)
argument = cast("_Argument", _arguments.argument)
parse_argstring = cast("Callable[[Callable[..., Any], str], argparse.Namespace]", _arguments.parse_argstring)
MagicArgumentParser = cast("type[argparse.ArgumentParser]", _arguments.MagicArgumentParser)
line_cell_magic = cast("Decorator", _magic.line_cell_magic)
display = cast("_Display", _display.display)
update_display = cast("_UpdateDisplay", _display.update_display)
get_ipython = cast("Callable[[], InteractiveShell | None]", _getipython.get_ipython)


def events(shell: InteractiveShell) -> Events:
    """``shell.events``, typed."""
    return cast("Events", shell.events)
