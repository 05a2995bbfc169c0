"""Parsing the ``%qwen`` line magic's subcommands and ``key=value`` settings."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

LINE_HELP = """\
%qwen                      show the control panel (text settings outside a notebook)
%qwen panel                the same
%qwen config [key=value …] show the settings, or set some (validated)
%qwen history [--chat N]   the conversation so far, readable
%qwen reset [--chat N|--all]  forget a conversation (or all of them)
%qwen usage                tokens used this session, per conversation and in total
%qwen explain [options]    explain the last exception and suggest a fix (takes the
                           %%qwen options, e.g. --code to get the fixed cell below)
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
    explain = commands.add_parser("explain", add_help=False)
    explain.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def parse_line(line: str) -> argparse.Namespace:
    """Parse ``%qwen`` arguments; a bad subcommand or flag is a ``UsageError``."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%qwen: {exc}") from None
    if not words:
        return argparse.Namespace(command="panel")
    if words[0] not in ("help", "panel", "usage", "config", "history", "reset", "explain"):
        raise UsageError(f"%qwen: unknown command {words[0]!r}.\n{LINE_HELP}")
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
