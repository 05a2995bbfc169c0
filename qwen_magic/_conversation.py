"""Conversations across cells: their history, and the request each new cell sends.

Each ``%%qwen`` cell is a user turn and its answer the assistant turn. Re-running the cell
that produced the *latest* turn replaces that turn instead of stacking a duplicate. A
cell is recognised by the id the frontend sends with the execute request (JupyterLab
and Notebook 7 do); without one (terminal IPython, some runners) by its source, with
trailing blank lines and spaces not counted (``same_source``).

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

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ._answer import Answer, Usage
from ._blocks import from_answer
from ._cache import MARKER, PrefixIndex, TokenEstimator, estimate_prompt, media_floor, place_markers
from ._calls import tool_lines
from ._context import clock
from ._media import detach_media, is_inline, source_data
from ._prompt import prompt_text

if TYPE_CHECKING:
    from ._blocks import Block, Message, Request
    from ._context_build import Context

DEFAULT_CHAT = "default"


@dataclass
class Turn:
    """A user prompt and the answer it got."""

    prompt: list[Block]
    answer: Answer
    cell_id: str | None = None
    source: str | None = None
    context: Context | None = None  # the notebook context sent first in ``prompt``, if any
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
    keep_media_turns: int | None = None  # the media policy's K (see ``_cache``; None: all media kept)


@dataclass
class Conversation:
    """One named line of turns, with an optional system prompt."""

    name: str = DEFAULT_CHAT
    system: str | None = None
    system_cache: bool = False  # ``%%qwen --system --cache`` marked the system prompt
    turns: list[Turn] = field(default_factory=list)
    spent: Usage = field(default_factory=Usage)  # every request's usage, replaced turns included
    requests: int = 0
    media_floor: int = 0  # turns before it resend no inline media (the policy in ``_cache``)
    last_sent: float | None = None  # time.monotonic() of the last request built
    # The history's messages, built once per turn: (turn, its first message, the message its
    # prompt joined) per turn, and the index of the messages.
    _built: list[tuple[Turn, int, Message | None]] = field(default_factory=list, repr=False)
    _media_turns: list[int] = field(default_factory=list, repr=False)  # built turns with inline media
    _media_chars: list[int] = field(default_factory=lambda: [0], repr=False)  # their base64, running total
    _built_floor: int = field(default=0, repr=False)
    _index: PrefixIndex = field(default_factory=PrefixIndex, repr=False)
    _plain: list[Message] = field(default_factory=list, repr=False)  # the last request, unmarked
    started: int = 0  # the capture clock at creation or reset: the first turn's context starts after it

    def reset(self) -> None:
        """Forget the turns and the system prompt."""
        self.system = None
        self.system_cache = False
        self.turns.clear()
        self.media_floor = 0
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
        return source is not None and last.source is not None and same_source(source, last.source)

    def messages(self, keep_media_turns: int | None = None) -> list[Message]:
        """The history as Messages API turns, without thinking and without empty answers.

        Inline (base64) media of turns before ``media_floor`` is replaced by a one-line
        placeholder (``keep_media_turns`` moves the floor by the policy in ``_cache``;
        None keeps everything). URL media is always kept. The list is new; its messages
        are the history's own objects, built once per turn: do not change them.
        """
        self._advance_floor(keep_media_turns)
        return list(self._sync().messages)

    def _advance_floor(self, keep_media_turns: int | None) -> tuple[int, int] | None:
        """Apply the media policy for the next request.

        If it drops media, the first block that changes (the old media boundary), else None.
        """
        before = self.media_floor
        self._sync()
        idle = None if self.last_sent is None else time.monotonic() - self.last_sent
        self.media_floor = media_floor(
            before, self._media_turns, len(self.turns), keep_media_turns, idle, self._media_chars
        )
        if self.media_floor == before:
            return None
        floor, self.media_floor = self.media_floor, before
        changed = self._stable()
        self.media_floor = floor
        return changed

    def _sync(self) -> PrefixIndex:
        """The index of the history's messages, brought up to date with ``turns`` and ``media_floor``."""
        built, index, floor = self._built, self._index, self.media_floor
        keep = len(built)
        # Turns are only appended, popped (a re-run) or cleared: check from the end.
        while keep and (keep > len(self.turns) or self.turns[keep - 1] is not built[keep - 1][0]):
            keep -= 1
        if floor != self._built_floor:
            keep = min(keep, floor, self._built_floor)
        if keep < len(built):
            start, joined_into = built[keep][1], built[keep][2]
            index.truncate(start)
            if joined_into is not None:  # the turn's prompt had joined the previous turn's tool results
                index.truncate(start - 1)
                index.append(joined_into)
            del built[keep:]
            del self._media_turns[bisect.bisect_left(self._media_turns, keep) :]
            del self._media_chars[len(self._media_turns) + 1 :]
        self._built_floor = floor
        for i in range(keep, len(self.turns)):
            turn = self.turns[i]
            old = i < floor
            start = len(index.messages)
            last = index.messages[-1] if index.messages else None
            inline = 0  # base64 characters of the turn's inline media
            # The final answer's calls were never answered (the loop answers a round's calls
            # and starts another): resent, they would fail every later request.
            content: list[Block] = [b for b in from_answer(turn.answer.history_content()) if b["type"] != "tool_use"]
            if content or turn.answer.rounds:
                inline = _inline_chars(turn.prompt)
                _append(index, "user", detach_media(turn.prompt) if old else turn.prompt)
                for calls, results in _answered_rounds(turn.answer.rounds):
                    index.append({"role": "assistant", "content": calls})
                    inline += _inline_chars(results)
                    index.append({"role": "user", "content": detach_media(results) if old else results})
                if content:
                    index.append({"role": "assistant", "content": content})
            joined_into = last if start and index.messages[start - 1] is not last else None
            built.append((turn, start, joined_into))
            if inline:
                self._media_turns.append(i)
                self._media_chars.append(self._media_chars[-1] + inline)
        return index

    def request(self, prompt: list[Block], options: Options) -> Request:
        """The keyword arguments for ``client.messages.stream`` / ``create``.

        Applies the media policy (which may move ``media_floor``) and places cache markers
        on copies of the few messages that carry them.
        """
        changed = self._advance_floor(options.keep_media_turns)
        index = self._sync()
        messages = _say(list(index.messages), "user", prompt)
        request: Request = {
            "model": options.model,
            "max_tokens": options.max_tokens,
            "messages": messages,
            # Always explicit: some Qwen models think unless told not to.
            "thinking": (
                {"type": "enabled", "budget_tokens": options.thinking_budget}
                if options.thinking
                else {"type": "disabled"}
            ),
        }
        if self.system:
            request["system"] = (
                [{"type": "text", "text": self.system, "cache_control": MARKER.copy()}]
                if self.system_cache
                else self.system
            )
        if options.temperature is not None:
            # SDK 2.x has no keyword for it; the service reads it from the body.
            request["extra_body"] = {"temperature": options.temperature}
        # On a drop, the boundary before the first replaced item is what earlier requests cached.
        self.last_sent = time.monotonic()
        return self._marked(request, options, changed)

    def _stable(self, messages: list[Message] | None = None) -> tuple[int, int] | None:
        """The first inline media block a later drop will replace (the media boundary closes before it)."""
        index = self._index
        built, floor = self._built, self.media_floor
        start = len(index.messages)
        if floor < len(built):
            start = built[floor][1] - (built[floor][2] is not None)
        found = index.first_inline(start)
        if found is None and messages is not None:
            for m in range(max(start, len(index.messages) - 1), len(messages)):
                for b, block in enumerate(messages[m]["content"]):
                    if is_inline(block):
                        return (m, b)
        return found

    def remark(self, request: Request, options: Options) -> Request:
        """A tool round's follow-up ``request`` (the last one sent plus new messages), marked afresh."""
        sent = len(self._plain)
        return self._marked({**request, "messages": [*self._plain, *request["messages"][sent:]]}, options)

    def _marked(self, request: Request, options: Options, stable: tuple[int, int] | None = None) -> Request:
        """``request`` with the cache policy's markers: the one place they are placed (on copies)."""
        self._plain = request["messages"]
        stable = stable or self._stable(self._plain)
        return place_markers(request, options.cache, options.estimator, index=self._index, stable=stable)

    def called(self) -> list[str]:
        """The tools the history (as last built) has called, each once."""
        return self._index.called()

    def estimate(self, request: Request, estimator: TokenEstimator) -> float:
        """Estimated prompt tokens of a request this conversation built (the history is measured once)."""
        return estimate_prompt(request, estimator, self._index if request["messages"] else None)

    def record(self, turn: Turn) -> None:
        """Keep a finished (or partial) turn; an answer with no content leaves nothing."""
        if turn.answer.history_content() or turn.answer.rounds:
            self.turns.append(turn)


    def transcript(self) -> str:
        """The conversation as readable markdown (``%qwen history``'s plain text)."""
        parts = []
        for kind, text in self._sections():
            if kind == "thinking":
                parts.append("> *Thinking:*\n>\n" + "\n".join("> " + line for line in text.splitlines()))
            elif kind == "cells":
                parts.append("\n".join(f"- {line}" for line in text.splitlines()))
            else:
                parts.append(text)
        return "\n\n".join(parts)

    def transcript_bundle(self) -> dict[str, str]:
        """``%qwen history``'s output: each part rendered on its own, so an answer cut inside a code
        block keeps its fence to itself, and thinking and context lines are shown as they are, as
        they are live (markdown would drop their backslashes and read ``*`` as emphasis)."""
        from ._markdown import compact, render_html, text_html
        from ._markdown._render import MARKDOWN_CLASS
        from ._text import mask_key, visible_controls

        pieces = []
        for kind, text in self._sections():
            if kind == "thinking":
                pieces.append(
                    '<blockquote><p><em>Thinking:</em></p><div style="white-space:pre-wrap">'
                    f"{text_html(mask_key(text))}</div></blockquote>"
                )
            elif kind == "cells":
                pieces.append("<ul>" + "".join(f"<li>{text_html(line)}</li>" for line in mask_key(text).splitlines()) + "</ul>")
            else:
                pieces.append(render_html(mask_key(text)))
        body = compact("".join(pieces))
        return {"text/html": f'<div class="{MARKDOWN_CLASS}">{body}</div>', "text/plain": visible_controls(mask_key(self.transcript()))}

    def _sections(self) -> list[tuple[str, str]]:
        """The transcript in order: ``("markdown", …)`` parts (ours, the user's and the model's),
        ``("thinking", text)`` and ``("cells", lines)`` of plain text."""
        sections = [("markdown", f"### Conversation `{self.name}` — {len(self.turns)} turn(s)")]
        if self.system:
            sections += [("markdown", "**System:**"), ("markdown", self.system)]
        for i, turn in enumerate(self.turns, 1):
            answer = turn.answer
            if turn.context is not None:
                sections += [("markdown", f"*{turn.context.summary()}*"), ("cells", "\n".join(turn.context.lines()))]
            sections += [("markdown", f"**You ({i}):**"), ("markdown", prompt_text(turn.own_prompt))]
            for done in answer.rounds:
                if done.thinking:
                    sections.append(("thinking", done.thinking))
                sections += [("markdown", f"**Qwen ({done.model}), calling tools:**"), ("markdown", done.text)]
                sections.append(("markdown", "\n".join(tool_lines(done))))
            if answer.thinking:
                sections.append(("thinking", answer.thinking))
            mark = (
                ""
                if answer.complete
                else " *(partial: " + ("interrupted" if answer.interrupted else "the answer did not finish") + ")*"
            )
            if answer.stop_reason == "max_tool_rounds":
                mark = " *(stopped: the tool round limit was reached)*"
            sections += [("markdown", f"**Qwen ({answer.model}){mark}:**"), ("markdown", answer.text)]
        if not self.turns and not self.system:
            sections.append(("markdown", "*(empty)*"))
        return [(kind, text) for kind, text in sections if text.strip()]


def same_source(a: str, b: str) -> bool:
    """Whether two runs' sources are the same cell: trailing blanks and line-end spaces do not count.

    Terminal IPython ends a cell at two empty lines, which become part of its source, while
    the same cell recalled from history (Up, then Esc-Enter) comes back without them.
    """
    return _cell_text(a) == _cell_text(b)


def _cell_text(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _answered_rounds(rounds: list[Answer]) -> Iterator[tuple[list[Block], list[Block]]]:
    """Each tool round as history: its assistant content, and the results answering its calls first.

    The loop answers every call of a round; should a round still hold a call without a
    result (or a result without its call), the unmatched blocks are left out rather than
    sent, and a round left with no call at all is dropped, so roles still alternate.
    """
    for done in rounds:
        content, results = from_answer(done.history_content()), from_answer(done.tool_results)
        asked = [b["id"] for b in content if b["type"] == "tool_use"]
        answered = [b["tool_use_id"] for b in results if b["type"] == "tool_result"]
        if asked and asked == answered and [b["type"] for b in results[: len(asked)]] == ["tool_result"] * len(asked):
            yield content, results
            continue
        both = set(asked) & set(answered)
        if not both:
            continue
        kept: list[Block] = []
        calls: list[str] = []  # each answered id once, in the order called
        for block in content:
            if block["type"] == "tool_use":
                if block["id"] not in both or block["id"] in calls:
                    continue
                calls.append(block["id"])
            kept.append(block)
        first: dict[str, Block] = {}
        for block in results:
            if block["type"] == "tool_result":
                first.setdefault(block["tool_use_id"], block)
        yield kept, [first[i] for i in calls] + [b for b in results if b["type"] != "tool_result"]


def _inline_chars(blocks: list[Block]) -> int:
    return sum(len(source_data(b["source"])) for b in blocks if is_inline(b))


Role = Literal["user", "assistant"]


def _append(index: PrefixIndex, role: Role, content: list[Block]) -> None:
    """``_say`` for the index: after a message of the same role (tool results) the content joins it."""
    if index.messages and index.messages[-1]["role"] == role:
        joined: Message = {"role": role, "content": [*index.messages[-1]["content"], *content]}
        index.truncate(len(index.messages) - 1)
        index.append(joined)
    else:
        index.append({"role": role, "content": content})


def _say(messages: list[Message], role: Role, content: list[Block]) -> list[Message]:
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

    def existing(self, name: str | None) -> Conversation:
        """The conversation a command reads or forgets (history, reset, export): the default one,
        or one a cell has used. A mistyped name is an error, not a new, empty conversation."""
        name = name or DEFAULT_CHAT
        if name != DEFAULT_CHAT and name not in self:
            from IPython.core.error import UsageError

            known = ", ".join(sorted(self)) or DEFAULT_CHAT
            raise UsageError(f"No conversation is named {name!r} (these are: {known}); a %%qwen --chat {name} cell starts it.")
        return self[name]

    def clear(self) -> None:
        """Forget every conversation; new ones see only cells run from now on."""
        super().clear()
        self.origin = clock()
