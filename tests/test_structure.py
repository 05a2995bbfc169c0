"""The magic only parses and delegates: every ``%qwen`` subcommand has a short handler, no method is long."""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import qwen_magic
from qwen_magic import _command, _magic

SUBCOMMANDS = ("help", "panel", "usage", "config", "history", "reset", "explain", "export", "tools", "record", "replay", "context")


def test_every_subcommand_the_parser_knows_has_a_handler() -> None:
    assert set(_magic._LINE_COMMANDS) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert callable(getattr(_magic.QwenMagics, _magic._LINE_COMMANDS[name]))
    with pytest.raises(UsageError, match="unknown command"):
        _command.parse_line("nonsense")


def test_no_method_of_the_magics_is_long() -> None:
    tree = ast.parse(inspect.getsource(_magic.QwenMagics))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.end_lineno is not None
    }
    assert lengths and max(lengths.values()) <= 40, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


MAX_MODULE_LINES = 500


def test_no_module_of_the_package_is_long() -> None:
    root = Path(qwen_magic.__file__).parent
    modules = sorted(root.rglob("*.py"))
    lengths = {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules
    }
    assert len(modules) > 20 and any("/" in name for name in lengths)  # subpackages are counted too
    long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not long, long


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_a_token_count_flag_refuses_what_is_not_a_positive_whole_number(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of tokens"):
        _command.tokens(value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.1", "2", "abc"])
def test_the_temperature_flag_refuses_what_is_outside_0_to_2(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at least 0 and below 2"):
        _command.temperature(value)


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("4096", 4096)])
def test_a_token_count_flag_takes_a_positive_whole_number(value: str, expected: int) -> None:
    assert _command.tokens(value) == expected
    assert _command.temperature("0") == 0.0 and _command.temperature("1.99") == 1.99
