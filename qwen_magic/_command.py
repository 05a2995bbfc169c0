"""What the user typed, checked and carried out: ``%qwen`` subcommands, ``key=value`` settings,
flag and setting types, and the cell flags' work around a turn (``--code``, ``-o``, ``%qwen explain``).

The magic parses and calls these; the turn itself is ``_turn``'s. What they show goes
through ``_tables``.
"""

from __future__ import annotations

import argparse
import keyword
import math
import re
import shlex
import sys
import unicodedata
from typing import TYPE_CHECKING, Any, Protocol

from IPython.core.error import UsageError
from traitlets import Float, HasTraits, TraitError, TraitType

from ._conversation import Options
from ._ipython import MagicArgumentParser
from ._tables import masked_note, note, preformatted
from ._text import mask_key

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ._blocks import Block
    from ._cache import TokenEstimator
    from ._context import Capture, Cell
    from ._context_build import Context

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


def _parser() -> argparse.ArgumentParser:
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


def coerce(trait: TraitType[Any, Any], value: str) -> object:
    """Convert a typed string to the trait's type, with friendly booleans."""
    lowered = value.lower()
    if type(trait).__name__ in ("Bool", "CBool") and lowered in ("on", "off", "yes", "no"):
        return lowered in ("on", "yes")
    if type(trait).__name__ == "Unicode":
        return value.strip("'\"")
    return trait.from_string(value)


class FiniteFloat(Float[float, float]):
    """A float setting that refuses NaN and infinities; ``inf_means`` names what +inf means where it is allowed."""

    def __init__(self, *args: Any, inf_means: str | None = None, **kwargs: Any) -> None:
        self.inf_means = inf_means
        super().__init__(*args, **kwargs)

    def validate(self, obj: HasTraits | None, value: object) -> float:
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


class CellSettings(Protocol):
    """The settings a cell's flags override (``QwenMagics`` traits)."""

    model: str
    max_tokens: int
    thinking: bool
    thinking_budget: int
    cache: str
    keep_media_turns: int
    estimator: TokenEstimator


def options(args: argparse.Namespace, settings: CellSettings) -> Options:
    """A turn's options: the cell's flags where given, the settings elsewhere (``--budget`` implies thinking)."""
    thinking = settings.thinking if args.thinking is None else args.thinking
    if args.budget is not None and args.thinking is None:
        thinking = True
    return Options(
        model=args.model or settings.model,
        max_tokens=args.max_tokens or settings.max_tokens,
        thinking=thinking,
        thinking_budget=args.budget or settings.thinking_budget,
        temperature=args.temperature,
        cache=settings.cache,
        estimator=settings.estimator,
        keep_media_turns=settings.keep_media_turns,
    )


def configure(settings: HasTraits, assignments: list[str]) -> None:
    """``%qwen config key=value …``: set each setting through its trait; a ``UsageError`` says what is wrong."""
    known = settings.class_trait_names(config=True)
    for key, value in parse_assignments(assignments):
        if key not in known:
            raise UsageError(f"%qwen config: unknown setting {key!r}; known: {', '.join(sorted(known))}.")
        trait = settings.traits()[key]
        try:
            setattr(settings, key, coerce(trait, value))
        except (TraitError, ValueError) as exc:
            raise UsageError(f"%qwen config: {key}={value!r} is not valid: {exc}") from None


def system_text(blocks: list[Block]) -> str | None:
    """``%%qwen --system``: the cell's blocks as the system prompt's text (None when empty); text only."""
    texts = [block["text"] for block in blocks if block["type"] == "text"]
    if len(texts) != len(blocks):
        raise UsageError("A system prompt holds text only: put images and video in an ordinary %%qwen cell.")
    return "\n".join(texts) or None


def deliver(text: str, shell: InteractiveShell, *, code: bool, output: str | None) -> None:
    """``--code`` and ``--output``: hand the answer's text (or its main code block) back to the notebook."""
    if code:
        from ._analysis import main_code_block

        block = main_code_block(text)
        if block is None:
            note("The answer has no code block, so no cell was added.")
        else:
            text = block
            if mask_key(block) != block:  # a new cell is saved with the notebook: the key stays out of it
                block = mask_key(block)
                note("The answer's code held the API key; it is masked in the new cell: "
                     "read the key from os.environ['DASHSCOPE_API_KEY'] instead.")
            # A new cell below in a notebook, the next prompt prefilled in a terminal; never run.
            shell.set_next_input(block, replace=False)
            note(f"The answer's code ({len(block.splitlines())} lines) was put in a new cell below; "
                 "review it, then run it.")
    if output:
        shell.user_ns[output] = text
        note(f"Stored the answer's {'code' if code else 'text'} in `{output}`.")


def explain_question(shell: InteractiveShell, capture: Capture) -> tuple[list[Block], Cell | None] | None:
    """``%qwen explain``: the question about the last exception and the captured cell that raised it.

    None, after a note saying why, when there is nothing to explain or the error was %qwen's own.
    """
    from ._analysis import explain_prompt, last_error
    from ._errors import QwenError

    error = last_error(shell)
    etype = getattr(sys, "last_type", None)
    if error is None:
        note("Nothing to explain yet: no cell has raised an exception in this session.")
        return None
    if etype is not None and issubclass(etype, (UsageError, QwenError)):
        note("The last error came from %qwen itself (its message says what to do). Run the failing "
             "cell again, then %qwen explain.")
        return None
    # The captured cell (its source, what it printed, its traceback) when the error came from one.
    cell = capture.failed(getattr(sys, "last_value", None))
    if cell is not None:
        from ._context_build import explain_parts

        traceback_text, source, printed = explain_parts(cell)
    else:
        (traceback_text, source), printed = error, ""
    note(f"Explaining {etype.__name__ if etype else 'the last error'}…")
    question = explain_prompt(traceback_text, source, printed)
    sent = mask_key(question).encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates: escaped
    question = question.encode("utf-8", "backslashreplace").decode("utf-8")
    if sent != question:
        masked_note(["the traceback or the cell"])
    return [{"type": "text", "text": sent}], cell


def forget_captured(capture: Capture) -> None:
    """``%qwen context clear``: forget the cells captured so far."""
    count = len(capture.cells)
    capture.clear()
    note(f"Forgot {count} captured cell(s): the next %%qwen cell sends only cells run from now on.")


def show_context(context: Context | None, chat: str, *, on: bool) -> None:
    """``%qwen context``: what the next cell of conversation ``chat`` would send (``on``: the context setting)."""
    state = "" if on else " (context is off: only %%qwen --context would send it)"
    if context is None:
        note(f"No notebook context to send: no cell has run since conversation `{chat}`'s last turn{state}.")
        return
    preformatted(f"{context.summary()}{state}\n\n{context.preview()}")
