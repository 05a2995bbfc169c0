"""Parsing and checking what the user typed: ``%qwen`` subcommands, ``key=value`` settings, flag and setting types."""

from __future__ import annotations

import argparse
import keyword
import math
import re
import shlex
import unicodedata
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser
from traitlets import Float, TraitError

LINE_HELP = """\
%qwen                      show the control panel (text settings outside a notebook)
%qwen panel                the same
%qwen config [key=value …] show the settings, or set some (validated)
%qwen history [--chat N]   the conversation so far, readable
%qwen reset [--chat N|--all]  forget a conversation (or all of them)
%qwen usage                tokens used this session, per conversation and in total
%qwen export F.ipynb [--chat N] [--force]  write a conversation as a new notebook
%qwen explain [options]    explain the last exception and suggest a fix (takes the
                           %%qwen options, e.g. --code to get the fixed cell below)
%qwen tools [f,g]          the tools %%qwen --tools [f,g] would offer, with their schemas
%qwen record FILE [--overwrite]  record every request and its answer to a cassette (appends)
%qwen record [--stop]      what is being recorded, or stop recording
%qwen replay FILE [--speed X]  answer from a cassette, no network (X=10: ten times faster,
                           0: no waiting); %qwen replay [--speed X|--stop]: status, pace, stop
%qwen context [--chat N]   the notebook context the next %%qwen cell would send (nothing is sent)
%qwen context clear        forget the cells captured so far
%qwen help                 this text, plus the %%qwen cell options
"""


def _parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%qwen", add_help=False)
    commands = parser.add_subparsers(dest="command", parser_class=MagicArgumentParser)
    for name in ("help", "panel", "usage"):
        commands.add_parser(name, add_help=False)
    config = commands.add_parser("config", add_help=False)
    config.add_argument("assignments", nargs="*", metavar="key=value")
    history = commands.add_parser("history", add_help=False)
    history.add_argument("--chat", default=None)
    reset = commands.add_parser("reset", add_help=False)
    reset.add_argument("--chat", default=None)
    reset.add_argument("--all", action="store_true")
    export = commands.add_parser("export", add_help=False)
    export.add_argument("file")
    export.add_argument("--chat", default=None)
    export.add_argument("--force", action="store_true")
    tools = commands.add_parser("tools", add_help=False)
    tools.add_argument("names", nargs="*", metavar="f,g")
    record = commands.add_parser("record", add_help=False)
    record.add_argument("file", nargs="?")
    record.add_argument("--overwrite", action="store_true")
    record.add_argument("--stop", action="store_true")
    replay = commands.add_parser("replay", add_help=False)
    replay.add_argument("file", nargs="?")
    replay.add_argument("--speed", type=_speed, default=None)
    replay.add_argument("--stop", action="store_true")
    context = commands.add_parser("context", add_help=False)
    context.add_argument("action", nargs="?", choices=["clear"])
    context.add_argument("--chat", default=None)
    return parser


def _speed(value: str) -> float:
    """A replay speed: a number ≥ 0, or ``inf``."""
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if not speed >= 0:
        raise argparse.ArgumentTypeError(f"--speed takes a number ≥ 0 (1 = as recorded, 0 or inf = no waiting), not {value!r}")
    return speed


def tokens(value: str) -> int:
    """The argument type of a count of tokens (``--budget``, ``--max-tokens``): a positive whole number."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of tokens, not {value!r}.")
    return number


def temperature(value: str) -> float:
    """The argument type of ``--temperature``: at least 0 and below 2 (so never NaN or infinite)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 2:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 2, not {value!r}.")
    return number


def parse_line(line: str) -> argparse.Namespace:
    """Parse ``%qwen`` arguments; a bad subcommand or flag is a ``UsageError``."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%qwen: {exc}") from None
    if not words:
        return argparse.Namespace(command="panel")
    if words[0] not in ("help", "panel", "usage", "config", "history", "reset", "explain", "export", "tools", "record", "replay", "context"):
        raise UsageError(f"%qwen: unknown command {words[0]!r}.\n{LINE_HELP}")
    if words[0] == "explain":
        # The cell magic's own parser reads the rest (argparse's REMAINDER drops a leading --flag).
        return argparse.Namespace(command="explain", rest=words[1:])
    return _parser().parse_args(words)


def parse_assignments(words: list[str]) -> list[tuple[str, str]]:
    """``["model=qwen-plus", "thinking=on"]`` → ``[("model", "qwen-plus"), …]``."""
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"%qwen config: expected key=value, got {word!r}.")
        pairs.append((key.strip(), value.strip()))
    return pairs


def coerce(trait: Any, value: str) -> Any:
    """Convert a typed string to the trait's type, with friendly booleans."""
    lowered = value.lower()
    if type(trait).__name__ in ("Bool", "CBool") and lowered in ("on", "off", "yes", "no"):
        return lowered in ("on", "yes")
    if type(trait).__name__ == "Unicode":
        return value.strip("'\"")
    return trait.from_string(value)


class FiniteFloat(Float):  # type: ignore[type-arg]
    """A float setting that refuses NaN and infinities; ``inf_means`` names what +inf means where it is allowed."""

    def __init__(self, *args: Any, inf_means: str | None = None, **kwargs: Any) -> None:
        self.inf_means = inf_means
        super().__init__(*args, **kwargs)

    def validate(self, obj: Any, value: Any) -> float:
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not (self.inf_means and value > 0))):
            allowed = f"a number, or inf for {self.inf_means}" if self.inf_means else "a finite number"
            raise TraitError(f"{self.name} must be {allowed}, not {value!r}")
        return float(super().validate(obj, value))


# Names IPython keeps for itself: a value stored there is overwritten, or breaks the shell.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii", "_ih", "_oh", "_dh"})


def check_output_name(name: str | None) -> None:
    """A ``UsageError`` unless ``-o NAME`` names a variable the answer can be stored in and read back."""
    if name is None:
        return
    if not name.isidentifier() or keyword.iskeyword(name) or name in ("True", "False", "None"):
        raise UsageError(f"-o/--output needs a Python variable name, not {name!r}.")
    if unicodedata.normalize("NFKC", name) != name:  # Python reads the name in its NFKC form
        raise UsageError(f"-o/--output: write {name!r} as {unicodedata.normalize('NFKC', name)!r}.")
    if (name.startswith("__") and name.endswith("__")) or name in _IPYTHON_NAMES or re.fullmatch(r"_i?\d+", name):
        raise UsageError(f"-o/--output: {name!r} is a name Python or IPython keeps for itself; choose another.")


def same_cell_text(source: str | None) -> str | None:
    """A cell's text as it identifies the cell: blank lines at its ends and spaces at line ends do not count.

    Terminal IPython recalls a cell (Up, then Esc-Enter) without the blank line that ran it.
    """
    if source is None:
        return None
    return "\n".join(line.rstrip() for line in source.splitlines()).strip("\n")
