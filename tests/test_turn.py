"""The turn loop outside a kernel: interrupts at any point, cut streams, stop reasons, history repair."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from fake_dashscope import Stream, ToolCall
from helpers import assert_valid_history, text

from qwen_magic import _turn
from qwen_magic._answer import Answer
from qwen_magic._conversation import Conversation, Options, Turn
from qwen_magic._errors import ConnectionFailed, Interrupted
from qwen_magic._footer import footer_text
from qwen_magic._tools import offered

OPTIONS = Options(model="qwen3.6-plus", max_tokens=100, cache="off")


class Interrupting:
    """A view that raises KeyboardInterrupt on its ``at``-th call (every method counts); None: never."""

    def __init__(self, ticks: list[int]) -> None:
        self.ticks = ticks  # shared by the views of one turn: [calls left before the interrupt]

    def _tick(self) -> None:
        self.ticks[0] -= 1
        if self.ticks[0] == 0:
            raise KeyboardInterrupt

    def start(self, answer: Answer) -> None:
        self._tick()

    def thinking(self, delta: str) -> None:
        self._tick()

    def text(self, delta: str) -> None:
        self._tick()

    def finish(self, answer: Answer) -> None:
        self._tick()

    def show(self, bundle: Any) -> Any:
        self._tick()
        return lambda repainted: self._tick()


def ask(server, chat: Conversation, tools: Any, view: Any = None, *, stream: bool = True) -> Answer:
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    answer: Answer | None = None
    original = _turn.view_for
    _turn.view_for = lambda shell: view  # type: ignore[assignment]
    try:
        answer = _turn.take_turn(
            chat, [text("Go")], OPTIONS, client=client, tools=tools, shell=None, tally=_turn.Tally(),
            max_rounds=8, stream=stream, answer_images="off",
        )  # fmt: skip
    finally:
        _turn.view_for = original  # type: ignore[assignment]
    return answer


def next_messages(chat: Conversation) -> list[dict[str, Any]]:
    """The messages the next cell would send: they must be valid whatever the last turn went through."""
    messages = chat.request([text("next")], OPTIONS)["messages"]
    assert_valid_history(messages)
    assert "tool_use" not in {b["type"] for b in messages[-1]["content"]}
    return messages


def adder(calls: list[Any], interrupt_at: int | None = None) -> dict[str, Any]:
    def add(a: int, b: int) -> int:
        """Add."""
        calls.append((a, b))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return a + b

    return {"add": add}


def two_rounds(server) -> None:
    server.reset()
    calls = [ToolCall("add", {"a": 1, "b": 2}, id="t1"), ToolCall("add", {"a": 3, "b": 4}, id="t2")]
    server.queue(Stream(text="Let me add.", chunk=4, tool_calls=calls), Stream(text="The sums are 3 and 7.", chunk=4))


class InterruptingRead(Interrupting):
    """Counts ``idle`` too: called from inside the HTTP layer's read (``_stream._resting``), where paints happen."""

    def idle(self) -> float:
        self._tick()
        return 0.0


@pytest.mark.parametrize("stream", [True, False])
def test_an_interrupt_at_any_paint_is_short_and_leaves_a_valid_history(server, stream):
    """Ctrl-C at each view call in turn (the start, every delta, every paint inside a read, the final paint,
    each panel, the footer)."""
    at = 1
    while True:
        two_rounds(server)
        chat, calls = Conversation(), []
        tools = offered("add", adder(calls))
        try:
            answer = ask(server, chat, tools, InterruptingRead([at]), stream=stream)
        except Interrupted as exc:
            answer = chat.turns[-1].answer if chat.turns else None
            assert "Interrupted" in str(exc) and len(str(exc)) < 300
        else:
            assert answer.text == "The sums are 3 and 7." and calls == [(1, 2), (3, 4)]
            break
        messages = next_messages(chat)
        if answer is not None and answer.text:
            assert answer.text in json.dumps(messages)  # the partial answer is kept
        at += 1
    assert at > 8  # every call of both rounds was interrupted once


def test_an_interrupt_inside_a_tool_answers_every_call(server):
    for interrupt_at in (1, 2):
        two_rounds(server)
        chat, calls = Conversation(), []
        with pytest.raises(Interrupted):
            ask(server, chat, offered("add", adder(calls, interrupt_at)), Interrupting([0]))
        results = next_messages(chat)[2]["content"]
        assert [b["tool_use_id"] for b in results if b["type"] == "tool_result"] == ["t1", "t2"]


def test_a_stream_that_ends_without_message_stop_is_a_cut_answer(server):
    cut = Stream(text="The answer is: forty", chunk=4)
    cut.garble_after, cut.garbage = 3, '{"type": "ping"}'
    server.queue(cut)
    chat = Conversation()
    with pytest.raises(ConnectionFailed, match="ended before the answer finished"):
        ask(server, chat, None, Interrupting([0]))
    answer = chat.turns[-1].answer
    assert not answer.complete and answer.text == "The answer is: fo"[: len(answer.text)]
    assert "failed after" in footer_text(answer)
    assert "partial" in chat.transcript()
    next_messages(chat)


def test_a_cut_stream_with_a_whole_tool_call_does_not_run_it(server):
    cut = Stream(text="calling", chunk=100, tool_calls=[ToolCall("add", {"a": 1, "b": 2}, id="t1")])
    cut.garble_after, cut.garbage = 1, '{"type": "ping"}'
    server.queue(cut)
    chat, calls = Conversation(), []
    with pytest.raises(ConnectionFailed):
        ask(server, chat, offered("add", adder(calls)), Interrupting([0]))
    assert calls == []
    next_messages(chat)


@pytest.mark.parametrize("stop_reason", ["end_turn", "stop_sequence"])
def test_whole_calls_are_run_whatever_the_stop_reason_that_ended_them(server, stop_reason):
    call = ToolCall("add", {"a": 1, "b": 2}, id="t1")
    server.queue(Stream(text="calling", tool_calls=[call], stop_reason=stop_reason), Stream(text="3."))
    chat, calls = Conversation(), []
    answer = ask(server, chat, offered("add", adder(calls)), Interrupting([0]))
    assert calls == [(1, 2)] and answer.text == "3."
    assert server.requests[-1].body["messages"][-1]["content"][0]["content"] == "3"


@pytest.mark.parametrize(
    ("stop_reason", "told"),
    [
        ("max_tokens", "stopped (max_tokens) before the call was complete"),
        ("pause_turn", "stopped (pause_turn) without asking for the result"),
    ],
)
def test_calls_not_run_are_told_why_truthfully(server, stop_reason, told):
    call = ToolCall("add", {"a": 1, "b": 2}, id="t1")
    server.queue(Stream(text="calling", tool_calls=[call], stop_reason=stop_reason))
    chat, calls = Conversation(), []
    answer = ask(server, chat, offered("add", adder(calls)), Interrupting([0]))
    assert calls == [] and answer.stop_reason == stop_reason
    assert told in answer.rounds[0].tool_results[0]["content"]
    assert stop_reason in footer_text(answer)
    next_messages(chat)


# -- history that must never reach the service as it is -------------------------------------------


def calling(*ids: str, text_: str = "calling") -> Answer:
    answer = Answer("m", text=text_, stop_reason="tool_use", finished_at=1.0)
    answer.blocks = [{"type": "text", "text": text_}] + [
        {"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids
    ]
    return answer


def result(i: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": i, "content": "r"}


@pytest.mark.parametrize(
    "results",
    [
        [],  # no result at all
        [result("t1")],  # one of two
        [result("t2"), result("t1")],  # out of order
        [result("t1"), result("t2"), result("t9")],  # one for a call that was never made
        [text("image follows"), result("t1"), result("t2")],  # not first in the message
        [result("t1"), result("t1"), result("t2")],  # twice
    ],
)
def test_a_round_whose_calls_are_not_all_answered_is_repaired_before_sending(results):
    answer = calling("t1", "t2")
    answer.next_round(results)
    answer.text, answer.blocks, answer.finished_at = "final", [{"type": "text", "text": "final"}], 2.0
    chat = Conversation()
    chat.record(Turn([text("ask")], answer))
    messages = next_messages(chat)
    assert "final" in json.dumps(messages)


def test_a_final_answer_with_unanswered_calls_keeps_its_text_only():
    chat = Conversation()
    chat.record(Turn([text("ask")], calling("t1", text_="I will call f.")))
    messages = next_messages(chat)
    assert messages[1]["content"] == [text("I will call f.")]


def test_only_block_types_the_service_accepts_are_resent():
    answer = Answer("m", text="hi", finished_at=1.0)
    answer.blocks = [
        {"type": "thinking", "thinking": "secret", "signature": "s"},
        {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "hi", "citations": [{"type": "char_location"}]},
        {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
        {"type": "document", "source": {}},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": 1}, "caller": "x"},
        {"type": None},
        {},
    ]
    assert answer.history_content() == [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": 1}},
    ]


def test_calls_that_reuse_an_id_each_get_their_own_result(server):
    same = [ToolCall("add", {"a": 1, "b": 2}, id="t1"), ToolCall("add", {"a": 3, "b": 4}, id="t1")]
    again = [ToolCall("add", {"a": 5, "b": 6}, id="t1")]  # the next round reuses it too
    server.queue(Stream(text="a", tool_calls=same), Stream(text="b", tool_calls=again), Stream(text="done"))
    chat, calls = Conversation(), []
    ask(server, chat, offered("add", adder(calls)), Interrupting([0]))
    assert calls == [(1, 2), (3, 4), (5, 6)]
    messages = next_messages(chat)
    ids = [b["id"] for m in messages for b in m["content"] if b["type"] == "tool_use"]
    assert len(set(ids)) == len(ids) == 3
    results = [b["content"] for m in messages for b in m["content"] if b["type"] == "tool_result"]
    assert results == ["3", "7", "11"]


@pytest.mark.parametrize("reply", [Stream(text=""), Stream(text="  \n "), Stream(thinking="hm", text="")])
def test_an_answer_without_text_says_so_in_the_footer(server, reply):
    server.queue(reply)
    chat = Conversation()
    answer = ask(server, chat, None, Interrupting([0]))
    assert "⚠ the answer has no text; the conversation does not keep this turn" in footer_text(answer)
    assert chat.turns == []


def test_an_interrupt_while_thinking_says_the_turn_is_not_kept(server):
    server.queue(Stream(thinking="thinking hard " * 50, text="never", chunk=5))
    chat = Conversation()
    with pytest.raises(Interrupted, match="characters of thinking kept on screen only") as info:
        ask(server, chat, None, Interrupting([4]))
    assert "Run the cell again" in str(info.value) and chat.turns == []


# -- %qwen history --------------------------------------------------------------------------------


def test_history_shows_each_part_as_it_was_shown_live():
    """An answer cut inside a code block keeps its fence to itself; thinking is text, as it is live."""
    from html_readers import typeset, visible_text

    chat = Conversation()
    cut = Answer("m", text="Start:\n\n```python\nx = 1", finished_at=1.0, interrupted=True)
    chat.record(Turn([text("first")], cut))
    thinking = r"Match \d+\.\d+ then 2*3*4 costs \$5, or $6 and $7"
    chat.record(Turn([text("second $5 and $6")], Answer("m", text="**Done** at $5.", thinking=thinking, finished_at=2.0)))
    bundle = chat.transcript_bundle()
    html = bundle["text/html"]
    assert "<strong>Done</strong>" in html and "**You (2):**" not in visible_text(html)
    assert thinking in visible_text(html)
    assert typeset(html) == []
    assert "second $5 and $6" in visible_text(html)
    assert bundle["text/plain"] == chat.transcript()
    assert "```python\nx = 1" in chat.transcript() and "> " + thinking in chat.transcript()


class InterruptingInput(Interrupting):
    """Interrupts at the ``at``-th event of a tool call's input (an -o value streams as one)."""

    def event(self, data: dict[str, Any]) -> None:
        if data.get("type") == "content_block_delta" and data["delta"].get("type") == "input_json_delta":
            self._tick()


def test_an_interrupt_while_a_call_s_input_streams_says_what_had_arrived(server):
    server.queue(Stream(tool_calls=[ToolCall("add", {"a": 1, "b": 22222}, id="t1")], json_chunk=3))
    chat = Conversation()
    with pytest.raises(Interrupted, match=r"\d+ characters of a tool call's input had arrived"):
        ask(server, chat, offered("add", adder([])), InterruptingInput([3]))
    answer = chat.turns[-1].answer if chat.turns else None
    cut = Answer("m", call_input=9, interrupted=True, finished_at=1.0)
    assert "interrupted after 9 characters of a tool call's input" in footer_text(cut)
    assert answer is None or not answer.complete


def test_only_rounds_that_called_tools_count_as_tool_rounds():
    """A structured answer's text repair is a round of its own, but no tool round."""
    answer = Answer("m", text="42", finished_at=3.0)
    answer.rounds = [Answer("m", text="not json", finished_at=1.0), calling("t1")]
    assert " · 1 tool round · " in footer_text(answer) + " · "
    answer.rounds = [Answer("m", text="not json", finished_at=1.0)]
    assert "tool round" not in footer_text(answer)
