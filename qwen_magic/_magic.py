"""The ``%%qwen`` cell magic and ``%qwen`` line magic: declare the settings, parse, and delegate."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import magics_class
from traitlets import Bool, Enum, Int, TraitError, Unicode, observe, validate

from . import _command
from ._answer import Answer, Usage
from ._cache import MODES, TokenEstimator, mark
from ._client import KNOWN_MODELS, Endpoint, client_for, resolve_base_url
from ._context import Capture, clock
from ._conversation import DEFAULT_CHAT, Chats, Conversation
from ._ipython import Magics, argument, display, events, line_cell_magic, magic_arguments, parse_argstring
from ._prompt import build_prompt
from ._session import CassetteSession
from ._tables import markdown_out, masked_note, note, settings_table, usage_table
from ._tools import Toolbox, describe, offered
from ._turn import Tally, take_turn

if TYPE_CHECKING:
    from IPython.core.interactiveshell import ExecutionInfo, InteractiveShell
    from traitlets.utils.bunch import Bunch

    from ._blocks import Block
    from ._context import Cell
    from ._context_build import Context
    from ._structured import Forcing, Target, ValueLoop
    from ._widgets import Panel


# ``--tools f, g``, as ``%qwen tools f, g`` takes it: the names after each comma belong to the option.
_TOOLS_LIST = re.compile(r"(--tools(?:=|\s+))([\w.]+(?:\s*,\s*[\w.]+)+)")


def _tools_joined(line: str) -> str:
    """``line`` with a ``--tools`` list written with spaces after its commas made one argument."""
    return _TOOLS_LIST.sub(lambda m: m.group(1) + re.sub(r"\s+", "", m.group(2)), line)


@magics_class
class QwenMagics(Magics):
    """Ask Qwen models from notebook cells. Settings: ``%config QwenMagics.<name> = …``."""

    model = Unicode("qwen3.6-plus", help="Model to ask, e.g. qwen3.6-plus, qwen3.7-max.").tag(config=True)
    region = Enum(
        ["cn", "intl", "us"],
        default_value="cn",
        help="DashScope region: cn (Beijing), intl (Singapore), us (Virginia).",
    ).tag(config=True)
    base_url = Unicode("", help="Endpoint URL; overrides region. DASHSCOPE_BASE_URL overrides it.").tag(config=True)
    max_tokens = Int(4096, min=1, help="Most tokens an answer may have (thinking not included).").tag(config=True)
    thinking = Bool(False, help="Let the model think before answering.").tag(config=True)
    thinking_budget = Int(4096, min=1, help="Most tokens the model may spend thinking.").tag(config=True)
    timeout = _command.FiniteFloat(120.0, help="Seconds to wait for the service before giving up.").tag(config=True)
    cache = Enum(
        list(MODES),
        default_value="auto",
        help="Prompt caching: auto (markers placed for you), manual (only --cache), off.",
    ).tag(config=True)
    max_retries = Int(2, min=0, help="Retries of failed requests (rate limits, 5xx, lost connections).").tag(
        config=True
    )
    keep_media_turns = Int(
        3,
        min=0,
        help="K: inline images and videos are always resent with the next K cells; older ones wait until K more "
        "cells with inline media have passed, then all leave at once for a placeholder (sooner if they pass 4 MiB "
        "or the cache is cold), so the cached prefix changes once per K image cells. 0: only with their own cell.",
    ).tag(config=True)
    max_tool_rounds = Int(
        8, min=1, help="Most tool rounds (run the calls, send the results) in one cell with --tools."
    ).tag(config=True)
    max_repairs = Int(
        2, min=0, help="With --schema/--json: times an invalid value is sent back to the model to correct."
    ).tag(config=True)
    cassette = Unicode("", help="Cassette file (JSON lines) that cassette_mode records to or replays from.").tag(
        config=True
    )
    cassette_mode = Enum(
        ["off", "record", "replay"],
        default_value="off",
        help="off; record: every request and its answer also go to the cassette; replay: answers come from it, no network.",
    ).tag(config=True)
    answer_images = Enum(
        ["link", "show"],
        default_value="link",
        help="Images in answers: link (only hosts your prompt named load, others show as a link), show (load all).",
    ).tag(config=True)
    replay_speed = _command.FiniteFloat(1.0, min=0.0, inf_means="no waiting", help="Replay pace: 1 as recorded, 10 ten times faster, 0 or inf no waiting.").tag(
        config=True
    )
    context = Enum(
        ["auto", "off"],
        default_value="auto",
        help="auto: each %%qwen cell also sends the cells run since the conversation's last turn; off: only its own text.",
    ).tag(config=True)
    context_tokens = Int(6000, min=0, help="Most tokens (estimated) of notebook context one turn sends.").tag(config=True)
    context_images = Int(4, min=0, help="Most images (figures the cells displayed) one turn's context sends.").tag(
        config=True
    )

    @validate("timeout")
    def _positive_timeout(self, proposal: Bunch) -> float:
        value: float = proposal["value"]
        if value <= 0:
            raise TraitError("timeout must be a positive number of seconds")
        return value

    @validate("base_url")
    def _http_base_url(self, proposal: Bunch) -> str:
        url: str = proposal["value"].strip()
        if url and not url.startswith(("http://", "https://")):
            raise TraitError("base_url must start with http:// or https://")
        return url

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.chats = Chats()
        self.tally = Tally()  # the session's requests and usage, counted by each turn
        self.estimator = TokenEstimator()
        self._panels: list[Panel] = []
        self._cell: tuple[str | None, str | None] = (None, None)
        self._asked_in_cell = False
        self.cassettes = CassetteSession(self)
        self._forcing: Forcing | None = None  # --schema: models that refused a forced tool_choice
        forced = self.cassettes.replay_from_environment()
        if forced is not None:
            note(forced)
        self.capture = Capture(shell)
        if shell is not None:
            events(shell).register("pre_run_cell", self._remember_cell)
            self.capture.install()

    @property
    def _shell(self) -> InteractiveShell:
        """The shell the magics serve (``%load_ext`` always gives one)."""
        if self.shell is None:
            raise UsageError("QwenMagics has no IPython shell: load it with %load_ext qwen_magic.")
        return self.shell

    @property
    def totals(self) -> Usage:
        """The session's token usage (``%qwen usage``, the panel)."""
        return self.tally.usage

    @totals.setter
    def totals(self, usage: Usage) -> None:
        self.tally.usage = usage

    @property
    def requests(self) -> int:
        """Requests sent in this session."""
        return self.tally.requests

    @requests.setter
    def requests(self, count: int) -> None:
        self.tally.requests = count

    def new_conversation(self) -> None:
        """Start the default conversation afresh (the panel's button)."""
        self.chats[DEFAULT_CHAT].reset()

    def _remember_cell(self, info: ExecutionInfo) -> None:
        self._cell = (getattr(info, "cell_id", None), getattr(info, "raw_cell", None))
        self._asked_in_cell = False

    # -- %%qwen ------------------------------------------------------------------------

    @magic_arguments("%qwen")  # IPython adds one "%": usage reads "%%qwen [options]", the cell form
    @argument("-m", "--model", help="Model for this cell (default: QwenMagics.model).")
    @argument("--max-tokens", type=_command.tokens, help="Most tokens in this answer.")
    @argument("--thinking", action="store_true", default=None, help="Think before answering.")
    @argument("--no-thinking", dest="thinking", action="store_false", default=None, help="Do not think.")
    @argument("--budget", type=_command.tokens, help="Thinking budget in tokens (implies --thinking).")
    @argument("--temperature", type=_command.temperature, help="Sampling temperature, 0 to under 2.")
    @argument("--system", action="store_true", help="Make the cell the conversation's system prompt; sends nothing.")
    @argument("--cache", action="store_true", help="Mark this cell (or, with --system, the system prompt) for caching.")
    @argument("--new", action="store_true", help="Start a fresh conversation first.")
    @argument("--chat", default=DEFAULT_CHAT, help="Name of an independent conversation.")
    @argument("--no-stream", dest="stream", action="store_false", help="Wait for the whole answer.")
    @argument("--code", action="store_true", help="Put the answer's main code block in a new cell below (not run).")
    @argument("--context", action="store_true", default=None, help="Send the cells run since the last turn (when context is off).")
    @argument("--no-context", dest="context", action="store_false", default=None, help="Send only this cell's text.")
    @argument("-o", "--output", metavar="NAME", help="Store the answer's text (with --code, its code) in variable NAME.")
    @argument("--schema", metavar="TYPE", help='With -o: store the answer as a validated TYPE, e.g. "list[City]", DataFrame[Row].')
    @argument("--json", action="store_true", help="With -o: store the answer as parsed JSON (any JSON value).")
    @argument(
        "--tools",
        nargs="?",
        const="",
        metavar="F,G",
        help="Let Qwen call these notebook functions; alone, every function marked @qwen_magic.tool.",
    )
    @line_cell_magic
    def qwen(self, line: str, cell: str | None = None) -> None:
        """Ask Qwen: the cell is your message, the answer streams below as markdown.

        In line form, ``%qwen help`` lists the subcommands (config, history, reset, …).
        """
        if cell is None:
            self._line(line)
            return
        args = parse_argstring(self.qwen, _tools_joined(line))
        if args.system and (args.output is not None or args.schema is not None or args.json):
            raise UsageError("--system sets the system prompt and sends nothing, so there is no answer to store: drop -o/--schema/--json.")
        chat = self.chats[args.chat]
        if args.new:
            unseen = chat.context_mark()
            chat.reset()
            chat.started = unseen  # the fresh conversation still sees the cells this one had not been sent
        held_key: list[str] = []  # the {name}s whose values held the API key (masked before sending)
        if args.system:
            self._set_system(chat, cell, bool(args.cache))
            return
        _command.check_output_name(args.output)
        target = self._target(args)
        prompt = build_prompt(cell, self._shell.user_ns, held_key)
        masked_note(held_key)
        if args.cache:
            prompt = mark(prompt)
        cell_id, source = self._cell if self._cell[1] is not None else (None, f"%%qwen {line}\n{cell}")
        source = _command.same_cell_text(source)
        if self._asked_in_cell:  # a cell that asks several times (run_cell_magic in a loop) re-runs nothing
            cell_id, source = None, None
        self._asked_in_cell = True
        answer = self._ask(chat, prompt, args, cell_id, source, target)
        self._deliver(answer, args, target)

    def _set_system(self, chat: Conversation, cell: str, cache: bool) -> None:
        """``%%qwen --system``: the cell becomes the conversation's system prompt; nothing is sent."""
        held_key: list[str] = []
        blocks = build_prompt(cell, self._shell.user_ns, held_key) if cell.strip() else []
        masked_note(held_key)
        chat.system = _command.system_text(blocks)
        chat.system_cache = bool(cache and chat.system)
        note(
            f"System prompt of conversation `{chat.name}` set ({len(chat.system or ''):,} characters); "
            "nothing was sent. It applies from the next %%qwen cell."
        )

    def _target(self, args: argparse.Namespace) -> Target | None:
        """``--schema TYPE`` / ``--json``: what ``-o NAME`` gets, checked before anything is sent."""
        if args.schema is None and not args.json:
            return None
        if args.code:
            raise UsageError("--code and --schema/--json cannot go together: one stores code, the other a value.")
        from ._structured import parse_target

        return parse_target(args.schema, args.json, args.output, self._shell.user_ns)

    def notebook_context(self, chat: Conversation, wanted: bool | None = None, *, exclude: Cell | None = None) -> Context | None:
        """The cells ``chat`` has not seen yet, as a turn's context within the budget (None: nothing to send).

        ``wanted`` is the cell's ``--context``/``--no-context``; None follows the ``context`` setting.
        """
        if not (self.context == "auto" if wanted is None else wanted):
            return None
        from ._context_build import build

        mark = chat.context_mark()
        return build(
            self.capture.since(mark, exclude=exclude),
            forgotten=self.capture.forgotten_since(mark),
            tokens=self.context_tokens,
            images=self.context_images,
            chars_per_token=self.estimator.chars_per_token,
            upto=clock(),
        )

    def _ask(
        self,
        chat: Conversation,
        prompt: list[Block],
        args: argparse.Namespace,
        cell_id: str | None,
        source: str | None,
        target: Target | None = None,
        exclude: Cell | None = None,
    ) -> Answer:
        """Send ``prompt`` as the next turn of ``chat`` and stream the answer into the output."""
        options = _command.options(args, self)
        tools = offered(args.tools, self._shell.user_ns)
        if target is not None:
            from ._structured import instruction, tool_name_for

            prompt = [*prompt, instruction(target, tool_name_for(tools), bool(tools))]
        transport = self.cassettes.transport()  # recording or replaying: the cassette, opened on first use
        client = client_for(self.endpoint(), transport)  # a missing key stops here, before anything is sent
        if chat.is_rerun(cell_id, source):
            chat.turns.pop()
        upto = clock()
        loop = None if target is None else self._value_loop(target, args.output)
        try:
            answer = take_turn(
                chat, prompt, options, client=client, tools=tools, shell=self.shell, tally=self.tally,
                max_rounds=self.max_tool_rounds, stream=args.stream, loop=loop,
                context=self.notebook_context(chat, args.context, exclude=exclude), upto=upto,
                cell_id=cell_id, source=source, answer_images=self.answer_images,
                cassette=transport.footer if transport is not None else None,
                replayed=bool(getattr(transport, "replaying", False)),
            )  # fmt: skip
        finally:
            for panel in self._panels:
                panel.refresh()
        if loop is not None:
            loop.deliver(self._shell.user_ns)
        return answer

    def _value_loop(self, target: Target, output: str) -> ValueLoop:
        """The tool loop that asks for a value of ``target`` (``--schema``/``--json``), then stores it."""
        from ._structured import Forcing, ValueLoop

        self._forcing = self._forcing or Forcing()
        return ValueLoop(target, output, self._forcing, self.max_repairs)

    def _deliver(self, answer: Answer, args: argparse.Namespace, target: Target | None = None) -> None:
        """``--code`` and ``--output``: hand the answer back to the notebook (``--schema``/``--json``: ``_ask`` did)."""
        if target is None:
            _command.deliver(answer.text, self._shell, code=args.code, output=args.output)

    def _explain(self, line: str) -> None:
        args = parse_argstring(self.qwen, _tools_joined(line))
        _command.check_output_name(args.output)
        target = self._target(args)
        question = _command.explain_question(self._shell, self.capture)
        if question is not None:
            prompt, cell = question
            answer = self._ask(self.chats[args.chat], prompt, args, None, None, target, exclude=cell)
            self._deliver(answer, args, target)

    # -- cassettes ------------------------------------------------------------------------

    @observe("cassette", "cassette_mode")
    def _cassette_changed(self, _change: Bunch) -> None:
        cassettes = getattr(self, "cassettes", None)  # settings from config arrive before __init__ made it
        if cassettes is not None:
            cassettes.drop()

    def endpoint(self) -> Endpoint:
        """Where the next request goes."""
        return Endpoint(resolve_base_url(self.base_url, self.region), self.timeout, self.max_retries)

    # -- %qwen ----------------------------------------------------------------------------

    def _line(self, line: str) -> None:
        args = _command.parse_line(line)
        getattr(self, _LINE_COMMANDS[args.command])(args)

    def _help_command(self, args: argparse.Namespace) -> None:
        print(_command.LINE_HELP + "\n" + (self.qwen.__doc__ or ""))

    def _config_command(self, args: argparse.Namespace) -> None:
        _command.configure(self, args.assignments)
        settings = self.settings()
        helps = {name: self.traits()[name].help for name in settings}
        markdown_out(settings_table(settings, helps, self.endpoint().base_url))

    def _history_command(self, args: argparse.Namespace) -> None:
        display(self.chats.existing(args.chat).transcript_bundle(), raw=True)

    def _reset_command(self, args: argparse.Namespace) -> None:
        if args.all:
            self.chats.clear()
            note("All conversations were forgotten.")
        else:
            chat = self.chats.existing(args.chat)
            chat.reset()
            note(f"Conversation `{chat.name}` was forgotten; the next %%qwen cell starts afresh.")

    def _usage_command(self, args: argparse.Namespace) -> None:
        chats = [(name, chat.requests, chat.spent) for name, chat in self.chats.items()]
        markdown_out(usage_table(chats, self.requests, self.totals))

    def _export_command(self, args: argparse.Namespace) -> None:
        from ._export import export

        chat = self.chats.existing(args.chat)
        path = export(chat, args.file, overwrite=args.force)
        note(f"Conversation `{chat.name}` was written to {path} ({len(chat.turns)} turns).")

    def _explain_command(self, args: argparse.Namespace) -> None:
        self._explain(shlex.join(args.rest))

    def _tools_command(self, args: argparse.Namespace) -> None:
        markdown_out(describe(offered(",".join(args.names), self._shell.user_ns) or Toolbox()))

    def _cassette_command(self, args: argparse.Namespace) -> None:
        note(self.cassettes.command(args))

    def _panel_command(self, args: argparse.Namespace) -> None:
        from ._widgets import show_panel

        panel = show_panel(self, getattr(self.shell, "kernel", None) is not None, KNOWN_MODELS)
        if panel is not None:
            self._panels.append(panel)  # kept alive while the kernel lives; refreshed after each turn

    def _context_command(self, args: argparse.Namespace) -> None:
        """``%qwen context [--chat NAME]``: what the next cell would send; ``%qwen context clear``: forget the capture."""
        if args.action == "clear":
            _command.forget_captured(self.capture)
            return
        chat = self.chats[args.chat or DEFAULT_CHAT]
        _command.show_context(self.notebook_context(chat, True), chat.name, on=self.context == "auto")

    def settings(self) -> dict[str, object]:
        """The configurable settings and their current values."""
        return {name: getattr(self, name) for name in self.class_trait_names(config=True)}


# ``%qwen SUBCOMMAND``: the method of ``QwenMagics`` that runs it (``_command.parse_line`` parses it).
_LINE_COMMANDS = {
    "help": "_help_command",
    "config": "_config_command",
    "history": "_history_command",
    "reset": "_reset_command",
    "usage": "_usage_command",
    "export": "_export_command",
    "explain": "_explain_command",
    "tools": "_tools_command",
    "record": "_cassette_command",
    "replay": "_cassette_command",
    "context": "_context_command",
    "panel": "_panel_command",
}
