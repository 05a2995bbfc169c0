"""One turn of a conversation: send the prompt, stream every round, run the tools, keep the turn.

The magic hands a turn its plain inputs (the conversation, the prompt, the options, a
client, the tools offered, where to paint) and gets the ``Answer`` back; nothing here
calls up into the magic. In order, ``take_turn``:

1. builds the request (``Conversation.request``: history, media policy, cache markers);
2. streams it into a fresh view (``_stream.run``), counting every request and its usage
   in the ``Tally`` and the conversation, and calibrating the token estimator;
3. while the answer calls tools, runs them (``_calls.call_tool``), shows each call, and
   sends the results back as the next round, re-marked by the conversation
   (``Conversation.remark``), so the cache policy is applied in one place;
4. records the turn in the conversation, also when it failed or was interrupted.

``converse`` is the round loop alone; ``--schema``/``--json`` (``_structured.ValueLoop``)
wraps it, so a turn's ``loop`` is either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from IPython.display import display

from ._answer import Answer, Usage
from ._blocks import calls_of, from_answer, sdk_arguments, to_answer
from ._calls import CheckedClient, Outcome, call_bundle, call_tool, make_acceptable, result_content, sendable
from ._conversation import Conversation, Options, Turn
from ._errors import Interrupted
from ._media import show_preview
from ._tools import Toolbox, history_calls, placeholder_tools
from ._view import View

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import ToolUseBlockParam

    from ._blocks import Block, Request
    from ._context_build import Context


# Stop reasons after which every call is whole: some compatible services end a calling
# answer with ``end_turn``; its calls are run as if it said ``tool_use``.
_CALLS_COMPLETE = ("tool_use", "end_turn", "stop_sequence")


def view_for(shell: Any) -> View:
    """A notebook painter under a kernel, a terminal one otherwise."""
    if getattr(shell, "kernel", None) is not None:
        from ._view import NotebookView

        return NotebookView()
    from ._terminal import terminal_view

    return terminal_view()


@dataclass
class Tally:
    """Requests sent and tokens used in a session."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)


class Loop(Protocol):
    """How a turn's rounds run: ``converse``, or a loop around it (``_structured.ValueLoop``)."""

    def __call__(
        self, client: anthropic.Anthropic, request: Request, answer: Answer, tools: Toolbox | None, **rounds: Any
    ) -> None: ...


def take_turn(
    chat: Conversation,
    prompt: list[Block],
    options: Options,
    *,
    client: anthropic.Anthropic,
    tools: Toolbox | None,
    shell: Any,
    tally: Tally,
    max_rounds: int,
    stream: bool = True,
    loop: Loop | None = None,
    context: Context | None = None,
    cell_id: str | None = None,
    source: str | None = None,
    upto: int = 0,
    answer_images: str,
    cassette: str | None = None,
    replayed: bool = False,
) -> Answer:
    """Ask ``prompt`` (``context`` blocks first) as the next turn of ``chat``; stream and record it.

    Above the answer go the context's manifest and a preview of what the model is shown.
    The turn is recorded whatever happens; errors propagate after that.
    """
    own = prompt
    prompt = [*context.blocks, *prompt] if context is not None else prompt
    request = chat.request(prompt, options)
    if context is not None:
        display(context.manifest_bundle(), raw=True)
    show_preview(own)  # what the model is shown, above its answer
    answer = Answer(model=options.model, cassette=cassette, replayed=replayed)

    def count(sent: Request, reply: Answer) -> None:
        tally.requests += 1
        chat.requests += 1
        if reply.usage is not None:
            u = reply.usage
            tally.usage = tally.usage + u
            chat.spent = chat.spent + u
            estimator = options.estimator
            estimator.calibrate(chat.estimate(sent, estimator), u.input_tokens + u.cache_read + u.cache_write)

    from ._markdown import image_policy  # markdown-it and nh3 load in the warm-up, not with %load_ext

    try:
        with image_policy(answer_images, own):
            (loop or converse)(
                client,
                request,
                answer,
                tools,
                views=lambda: view_for(shell),
                max_rounds=max_rounds,
                stream=stream,
                on_reply=count,
                remark=lambda follow_up: chat.remark(follow_up, options),
                called=chat.called(),
            )
    except KeyboardInterrupt:  # outside a request or a tool: a paint, a footer, between rounds
        raise _interrupted(answer) from None
    finally:
        chat.record(Turn(prompt, answer, cell_id, source, context=context, upto=upto))
    return answer


def _interrupted(answer: Answer) -> Interrupted:
    """Mark ``answer`` interrupted: as history it keeps its text, not calls that were never answered."""
    answer.interrupted = True
    answer.finished_at = answer.finished_at or time.monotonic()
    kept = f"the {len(answer.text):,} characters above are kept" if answer.text else "the answer so far is kept"
    rounds = f" with its {len(answer.rounds)} tool round(s)" if answer.rounds else ""
    error = Interrupted(
        f"Interrupted: the turn stopped; {kept}{rounds}, and tool calls that were not run are left out, "
        "so the conversation can go on."
    )
    answer.error = str(error)
    return error


def converse(
    client: anthropic.Anthropic,
    request: Request,
    answer: Answer,
    tools: Toolbox | None,
    *,
    views: Callable[[], View],
    max_rounds: int,
    stream: bool = True,
    on_reply: Callable[[Request, Answer], None] | None = None,
    remark: Callable[[Request], Request] | None = None,
    called: list[str] | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Stream ``request`` into ``answer``; while the answer calls tools, run them and stream on.

    Each round streams into a fresh view from ``views``; ``on_reply(request, answer)`` sees
    every request sent and its answer; ``remark`` places cache markers on each follow-up
    request (so every round reads what the one before it wrote); ``called``: the tools the
    history has called, if the caller keeps count (else the messages are scanned). On return
    ``answer`` is the turn's last answer and ``answer.rounds`` holds the earlier ones, each
    with the tool results that answered it. ``until()``, asked after each round's calls ran,
    ends the turn with their results (``--schema``: the answer tool got its value).
    """
    from ._stream import run

    if tools:
        request = {**request, "tools": tools.definitions()}
    elif names := (called if called is not None else history_calls(request["messages"])):
        # The Messages API wants tools defined whenever history holds tool blocks.
        request = {**request, "tools": placeholder_tools(names), "tool_choice": {"type": "none"}}
    broken: dict[str, str] = {}  # tool_use id → its argument text, when that was not a JSON object
    if "tools" in request:
        # Duck-typed: it has all ``_stream.run`` uses of a client (``messages``, ``base_url``).
        client = cast("anthropic.Anthropic", CheckedClient(client, broken))
    rounds = 0
    while True:
        view = views()
        try:
            run(client, sdk_arguments(request), view, answer, stream=stream)
        finally:
            if on_reply is not None:
                on_reply(request, answer)
        calls = calls_of(answer.tool_calls)
        if not calls:
            return
        _unique_ids(calls, answer.rounds)
        refusal = final_reason = None  # why the calls are not run, and the turn's stop reason then
        if answer.stop_reason not in _CALLS_COMPLETE:
            why = "before the call was complete" if answer.stop_reason == "max_tokens" else "without asking for the result"
            refusal = f"Not run: the answer stopped ({answer.stop_reason}) {why}."
            final_reason = answer.stop_reason
        elif rounds >= max_rounds:
            refusal = f"Not run: the limit of {max_rounds} tool rounds for one cell was reached."
            final_reason = "max_tool_rounds"
        outcomes: dict[str, Outcome] = {}
        interrupted: str | None = None
        try:
            interrupted = _run_calls(calls, tools, view, refusal, outcomes, broken)
        finally:
            # Whatever happened, every tool_use is answered before anything else is sent,
            # and history holds only names and arguments the service accepts.
            for call in calls:
                make_acceptable(call, broken)
            answer.next_round(to_answer(result_content(calls, outcomes)))
        rounds += 1
        if interrupted is not None or refusal is not None or (until is not None and until()):
            answer.finished_at = time.monotonic()
            error = None
            if interrupted is not None:
                answer.interrupted = True
                error = Interrupted(
                    f"Interrupted while {interrupted} ran: the tool loop stopped; the calls that did not "
                    "finish were answered as interrupted, so the conversation can go on."
                )
                answer.error = str(error)
            else:
                answer.stop_reason = final_reason
            from ._footer import footer_bundle

            view.show(footer_bundle(answer))
            if error is not None:
                raise error
            return
        done = answer.rounds[-1]
        request = {
            **request,
            "messages": [
                *request["messages"],
                {"role": "assistant", "content": from_answer(done.history_content())},
                {"role": "user", "content": from_answer(done.tool_results)},
            ],
        }
        if remark is not None:
            request = remark(request)


def _unique_ids(calls: list[ToolUseBlockParam], rounds: list[Answer]) -> None:
    """Give a call whose id the turn already used a new one (in place), so each result answers one call.

    A model may reuse an id; results are matched by id, and the service refuses a history
    holding the same id twice.
    """
    seen = {call["id"] for done in rounds for call in done.tool_calls}
    for call in calls:
        base, n = call["id"], 1
        while call["id"] in seen:
            n += 1
            call["id"] = f"{base}_{n}"
        seen.add(call["id"])


def _run_calls(
    calls: list[ToolUseBlockParam],
    tools: Toolbox | None,
    view: View,
    refusal: str | None,
    outcomes: dict[str, Outcome],
    broken: dict[str, str] | None = None,
) -> str | None:
    """Run (or refuse) each call in order, painting it; return the name of an interrupted call."""
    painters: dict[str, Callable[[dict[str, str]], None]] = {}
    current = calls[0]
    try:
        for current in calls:
            painters[current["id"]] = view.show(call_bundle(current, None))
            bad_arguments = (broken or {}).get(current["id"])
            outcome = Outcome(refusal, ok=False) if refusal else call_tool(tools, current, bad_arguments)
            outcome.text = sendable(outcome.text)
            outcomes[current["id"]] = outcome
            painters[current["id"]](call_bundle(current, outcome))
    except KeyboardInterrupt:
        for call in calls:
            if call["id"] in outcomes:
                continue
            if call is current:
                outcome = Outcome("Error: the user interrupted this call; it did not finish.", ok=False)
            else:
                outcome = Outcome("Not run: the user interrupted an earlier call.", ok=False)
            outcomes[call["id"]] = outcome
            paint = painters.get(call["id"]) or view.show
            paint(call_bundle(call, outcome))
        return str(current.get("name", "a tool"))
    return None
