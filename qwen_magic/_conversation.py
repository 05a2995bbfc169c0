"""Conversations across cells: their history, and the request each new cell sends.

Each ``%%qwen`` cell is a user turn and its answer the assistant turn. Re-running the cell
that produced the *latest* turn replaces that turn instead of stacking a duplicate. A
cell is recognised by the id the frontend sends with the execute request (JupyterLab
and Notebook 7 do); without one (terminal IPython, some runners) by its exact source.

An answer that failed before any text arrived leaves no turn behind. A partial answer
(interrupted, or cut by an error mid-stream) is kept as context, marked as partial in
``%qwen history``, so a follow-up such as "continue" works; re-run the cell to replace it.

A turn whose answer called tools replays every round: the assistant's text and
``tool_use`` blocks, the user message of ``tool_result``s, …, then the final answer. Its
rounds are kept even when the final answer failed (the tools ran). A turn that stopped
after its tool results (interrupted, or at the round limit) has no final answer: the next
prompt joins that user message, so roles still alternate and every ``tool_use`` is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._answer import Answer, Usage
from ._cache import MARKER, TokenEstimator, place_markers
from ._context import clock
from ._media import detach_media
from ._prompt import Block, prompt_text
from ._tools import tool_lines

DEFAULT_CHAT = "default"


@dataclass
class Turn:
    """A user prompt and the answer it got."""

    prompt: list[Block]
    answer: Answer
    cell_id: str | None = None
    source: str | None = None
    context: Any = None  # the notebook context sent first in ``prompt`` (a ``_context.Context``), if any
    upto: int = 0  # the capture clock when sent: the next turn's context starts after it

    @property
    def own_prompt(self) -> list[Block]:
        """The prompt without the notebook context in front of it."""
        return self.prompt[len(self.context.blocks) :] if self.context is not None else self.prompt


@dataclass
class Options:
    """Everything about one request that is not the conversation itself."""

    model: str
    max_tokens: int
    thinking: bool = False
    thinking_budget: int = 2048
    temperature: float | None = None
    cache: str = "auto"  # the cache policy: auto, manual or off (see ``_cache``)
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    keep_media_turns: int | None = None  # turns whose inline media is resent (None: all)


@dataclass
class Conversation:
    """One named line of turns, with an optional system prompt."""

    name: str = DEFAULT_CHAT
    system: str | None = None
    system_cache: bool = False  # ``%%qwen --system --cache`` marked the system prompt
    turns: list[Turn] = field(default_factory=list)
    spent: Usage = field(default_factory=Usage)  # every request's usage, replaced turns included
    requests: int = 0
    started: int = 0  # the capture clock at creation or reset: the first turn's context starts after it

    def reset(self) -> None:
        """Forget the turns and the system prompt."""
        self.system = None
        self.system_cache = False
        self.turns.clear()
        self.started = clock()

    def context_mark(self) -> int:
        """The capture clock after which cells are new to this conversation."""
        return self.turns[-1].upto if self.turns else self.started

    def is_rerun(self, cell_id: str | None, source: str | None) -> bool:
        """Whether this cell produced the latest turn (so running it again replaces it)."""
        if not self.turns:
            return False
        last = self.turns[-1]
        if cell_id is not None and last.cell_id is not None:
            return cell_id == last.cell_id
        return source is not None and source == last.source

    def messages(self, keep_media_turns: int | None = None) -> list[dict[str, Any]]:
        """The history as Messages API turns, without thinking and without empty answers.

        Inline (base64) media is resent with the latest ``keep_media_turns`` turns only;
        in older turns a one-line placeholder stands for it. URL media is always kept.
        """
        messages: list[dict[str, Any]] = []
        for index, turn in enumerate(self.turns):
            content = turn.answer.history_content()
            if content or turn.answer.rounds:
                old = keep_media_turns is not None and len(self.turns) - index > keep_media_turns
                _say(messages, "user", detach_media(turn.prompt) if old else turn.prompt)
                for done in turn.answer.rounds:
                    messages.append({"role": "assistant", "content": done.history_content()})
                    results = done.tool_results
                    messages.append({"role": "user", "content": detach_media(results) if old else results})
                if content:
                    messages.append({"role": "assistant", "content": content})
        return messages

    def request(self, prompt: list[Block], options: Options) -> dict[str, Any]:
        """The keyword arguments for ``client.messages.stream`` / ``create``."""
        request: dict[str, Any] = {
            "model": options.model,
            "max_tokens": options.max_tokens,
            "messages": _say(self.messages(options.keep_media_turns), "user", prompt),
            # Always explicit: some Qwen models think unless told not to.
            "thinking": (
                {"type": "enabled", "budget_tokens": options.thinking_budget}
                if options.thinking
                else {"type": "disabled"}
            ),
        }
        if self.system:
            request["system"] = (
                [{"type": "text", "text": self.system, "cache_control": dict(MARKER)}]
                if self.system_cache
                else self.system
            )
        if options.temperature is not None:
            # SDK 2.x has no keyword for it; the service reads it from the body.
            request["extra_body"] = {"temperature": options.temperature}
        return place_markers(request, options.cache, options.estimator)

    def record(self, turn: Turn) -> None:
        """Keep a finished (or partial) turn; an answer with no content leaves nothing."""
        if turn.answer.history_content() or turn.answer.rounds:
            self.turns.append(turn)


    def transcript(self) -> str:
        """The conversation as readable markdown."""
        lines = [f"### Conversation `{self.name}` — {len(self.turns)} turn(s)"]
        if self.system:
            lines += ["", "**System:**", "", self.system]
        for i, turn in enumerate(self.turns, 1):
            answer = turn.answer
            if turn.context is not None:
                lines += ["", f"*{turn.context.summary()}*", "", *(f"- {line}" for line in turn.context.lines())]
            lines += ["", f"**You ({i}):**", "", prompt_text(turn.own_prompt), ""]
            for done in answer.rounds:
                if done.thinking:
                    lines += ["> *Thinking:*", ">", "\n".join("> " + line for line in done.thinking.splitlines()), ""]
                lines += [f"**Qwen ({done.model}), calling tools:**", "", done.text, "", *tool_lines(done), ""]
            if answer.thinking:
                quoted = "\n".join("> " + line for line in answer.thinking.splitlines())
                lines += ["> *Thinking:*", ">", quoted, ""]
            mark = (
                ""
                if answer.complete
                else " *(partial: " + ("interrupted" if answer.interrupted else "the answer did not finish") + ")*"
            )
            if answer.stop_reason == "max_tool_rounds":
                mark = " *(stopped: the tool round limit was reached)*"
            lines += [f"**Qwen ({answer.model}){mark}:**", "", answer.text]
        if not self.turns and not self.system:
            lines += ["", "*(empty)*"]
        return "\n".join(lines)


def _say(messages: list[dict[str, Any]], role: str, content: list[Block]) -> list[dict[str, Any]]:
    """Append a message to ``messages``; after one of the same role (tool results) it joins that one."""
    if messages and messages[-1]["role"] == role:
        messages[-1] = {"role": role, "content": [*messages[-1]["content"], *content]}
    else:
        messages.append({"role": role, "content": content})
    return messages


class Chats(dict[str, Conversation]):
    """Named conversations, created on first use."""

    def __init__(self) -> None:
        super().__init__()
        self.origin = clock()  # a new conversation's context starts after this: load, or forgetting all

    def __missing__(self, name: str) -> Conversation:
        chat = self[name] = Conversation(name, started=self.origin)
        return chat

    def clear(self) -> None:
        """Forget every conversation; new ones see only cells run from now on."""
        super().clear()
        self.origin = clock()
