"""The marker and media policies as pure functions, the history the conversation builds, the cost arithmetic."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
from helpers import strip, text
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_magic._answer import Answer
from qwen_magic._cache import (
    TTL,
    WAITING_CHARS,
    TokenEstimator,
    cost_text,
    equivalents,
    estimate_prompt,
    is_inline,
    mark,
    media_floor,
    place_markers,
    saving_text,
)
from qwen_magic._conversation import Conversation, Options, Turn, _say
from qwen_magic._media import detach_media
from qwen_magic._tools import history_calls

LONG = "x" * 8000  # about 2,300 tokens at the starting estimate


def request(*messages: list[dict], system: object = None) -> dict:
    roles = ["user", "assistant"]
    body = {
        "model": "qwen3.6-plus",
        "max_tokens": 10,
        "messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(messages)],
    }
    if system is not None:
        body["system"] = system
    return body


def marked(body: dict) -> list[tuple[int, int]]:
    out = []
    if isinstance(body.get("system"), list):
        out += [(-1, i) for i, b in enumerate(body["system"]) if "cache_control" in b]
    for m, message in enumerate(body["messages"]):
        out += [(m, b) for b, block in enumerate(message["content"]) if "cache_control" in block]
    return out


def test_auto_marks_last_block_previous_turn_and_system():
    body = request([text(LONG)], [text("answer")], [text("q2"), text("more")], system=LONG)
    out = place_markers(body, "auto", TokenEstimator())
    assert marked(out) == [(-1, 0), (0, 0), (2, 1)]
    assert body["system"] == LONG and "cache_control" not in body["messages"][0]["content"][0]  # input untouched


def test_auto_skips_short_prefixes_and_off_strips_explicit_marks():
    body = request(mark([text("short")]))
    assert marked(place_markers(body, "auto", TokenEstimator())) == [(0, 0)]  # explicit mark kept
    assert marked(place_markers(request([text("short")]), "auto", TokenEstimator())) == []
    assert marked(place_markers(body, "off", TokenEstimator())) == []


def test_manual_keeps_only_explicit_marks():
    body = request([text(LONG)], [text("a")], mark([text("b")]), [text("c")], [text("d")])
    assert marked(place_markers(body, "manual", TokenEstimator())) == [(2, 0)]


def test_at_most_four_markers_newest_first():
    turns = []
    for i in range(6):
        turns += [mark([text(LONG + str(i))]), [text("answer")]]
    body = request(*turns[:-1], system=[{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}])
    out = marked(place_markers(body, "auto", TokenEstimator()))
    assert len(out) == 4
    assert (10, 0) in out and (8, 0) in out and (6, 0) in out


def test_markers_skip_thinking_and_empty_blocks():
    thinking = {"type": "thinking", "thinking": "hmm", "signature": ""}
    body = request([text(LONG), thinking])
    assert marked(place_markers(body, "auto", TokenEstimator())) == [(0, 0)]


def test_an_explicit_mark_keeps_the_media_label_and_leaves_the_prompt_alone():
    from qwen_magic._media import describe, url_block

    prompt = [text("look"), url_block("image", "https://example.com/cat.png")]
    marked_prompt = mark(prompt)
    assert marked_prompt[-1]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in prompt[-1]
    assert describe(marked_prompt[-1]) == describe(prompt[-1]) == "[image: https://example.com/cat.png]"
    assert getattr(marked_prompt[-1], "label", "") == "https://example.com/cat.png"


def test_calibration_moves_toward_the_reported_count():
    estimator = TokenEstimator(chars_per_token=3.5)
    for _ in range(10):
        estimator.calibrate(estimated=8000 / estimator.chars_per_token, reported=2000)
    assert abs(estimator.chars_per_token - 4.0) < 0.05


def test_equivalents_and_cost_text():
    assert equivalents(100, 1000, 10000) == (100 + 1250 + 1000, 11100)
    assert "saved by caching" in cost_text(100, 0, 10000)
    assert "extra" in cost_text(0, 2000, 0)
    assert cost_text(500, 0, 0) == "≈ 500 input-token equivalents"


# -- the media policy ------------------------------------------------------------------------


def walk(keep: int | None, media: list[bool], idle: list[float] | None = None) -> list[int]:
    """The floor after each request of a chat whose turn i carries inline media if media[i]."""
    floor, floors = 0, []
    for n in range(len(media) + 1):  # request n is sent with n turns of history
        turns = [i for i in range(n) if media[i]]
        floor = media_floor(floor, turns, n, keep, None if idle is None else idle[n])
        floors.append(floor)
    return floors


@pytest.mark.parametrize("keep", [0, 1, 2, 3, 5])
def test_old_media_leave_in_batches_and_a_request_carries_at_most_2k_plus_1(keep):
    media = [True] * 40
    floors = walk(keep, media)
    changes = [n for n in range(1, len(floors)) if floors[n] != floors[n - 1]]
    assert changes, "media must leave at some point"
    for n in changes:
        assert floors[n] == n - keep  # everything before the newest K goes at once
    gaps = {b - a for a, b in itertools.pairwise(changes)}
    assert gaps == {keep + 1}  # one rewrite per K + 1 image turns (every turn when K = 0)
    for n, floor in enumerate(floors):
        carried = sum(media[floor:n]) + 1  # resent history media, plus the cell's own
        assert carried <= 2 * keep + 1


def test_text_turns_do_not_fill_the_batch_and_none_keeps_everything():
    media = [True, False, False, False, False, False, False, False, True, False]
    floors = walk(3, media)
    assert floors == [0] * len(floors)  # two image turns never exceed the batch of 3
    assert walk(None, [True] * 20) == [0] * 21


def test_heavy_waiting_media_leave_before_the_batch_is_full():
    media = [True] * 8
    small = [0, *itertools.accumulate([100_000] * 8)]
    heavy = [0, *itertools.accumulate([3_000_000] * 8)]  # 3 MB of base64 a turn: two pass 4 MiB
    floor_small = floor_heavy = 0
    floors_small, floors_heavy = [], []
    for n in range(9):
        turns = [i for i in range(n) if media[i]]
        floor_small = media_floor(floor_small, turns, n, 3, None, small)
        floor_heavy = media_floor(floor_heavy, turns, n, 3, None, heavy)
        floors_small.append(floor_small)
        floors_heavy.append(floor_heavy)
        assert heavy[max(0, n - 3)] - heavy[min(floor_heavy, max(0, n - 3))] <= WAITING_CHARS
    assert floors_small == [0, 0, 0, 0, 0, 0, 0, 4, 4]  # the count decides: 3 wait, the 4th sends them off
    assert floors_heavy == [0, 0, 0, 0, 0, 2, 2, 4, 4]  # 2 × 3 MB pass 4 MiB: they leave sooner


def test_a_cold_cache_lets_old_media_go_at_once():
    media = [True] * 6
    warm = walk(3, media, idle=[0.0] * 7)
    assert warm == [0] * 7
    cold = walk(3, media, idle=[0.0] * 5 + [TTL + 1, 0.0])
    assert cold[5] == 2 and cold[6] == 2  # at request 5 turns 0, 1 are old and the cache is cold


# -- the history the conversation builds ---------------------------------------------------


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def inline_image() -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def url_image() -> dict:
    return {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}


def make_turn(kind: str, i: int) -> Turn:
    prompt = [text(f"question {i} " + "words " * 40)]
    if kind == "inline":
        prompt.append(inline_image())
    elif kind == "url":
        prompt.append(url_image())
    elif kind == "marked":
        prompt = mark(prompt)
    answer = Answer(model="m", finished_at=1.0)
    if kind in ("tools", "stopped"):
        answer.text, answer.stop_reason = "calling", "tool_use"
        answer.blocks = [text("calling"), {"type": "tool_use", "id": f"t{i}", "name": f"f{i % 3}", "input": {}}]
        answer.next_round([{"type": "tool_result", "tool_use_id": f"t{i}", "content": "r"}, inline_image()])
        if kind == "stopped":  # the loop stopped after the results: no final answer
            answer.interrupted = True
            return Turn(prompt, answer)
    answer.text = f"answer {i} " + "words " * 60
    answer.blocks = [text(answer.text)]
    return Turn(prompt, answer)


def reference(chat: Conversation) -> list[dict]:
    """The history under ``chat.media_floor``, built from scratch the plain way."""
    messages: list[dict] = []
    for i, turn in enumerate(chat.turns):
        old = i < chat.media_floor
        content = turn.answer.history_content()
        if content or turn.answer.rounds:
            _say(messages, "user", detach_media(turn.prompt) if old else turn.prompt)
            for done in turn.answer.rounds:
                messages.append({"role": "assistant", "content": done.history_content()})
                messages.append({"role": "user", "content": detach_media(done.tool_results) if old else done.tool_results})
            if content:
                messages.append({"role": "assistant", "content": content})
    return messages


KINDS = ["text", "inline", "url", "tools", "stopped", "marked"]
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.sampled_from(KINDS), st.sampled_from(["auto", "manual", "off"])),
        st.tuples(st.just("rerun"), st.sampled_from(KINDS), st.just("auto")),
        st.tuples(st.just("keep"), st.sampled_from([None, 0, 1, 2, 3]), st.just("")),
        st.tuples(st.just("reset"), st.just(""), st.just("")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPERATIONS, st.booleans())
def test_the_incremental_history_equals_a_fresh_build_and_is_never_marked(operations, system):
    chat = Conversation(system=("You are terse. " * 400) if system else None)
    estimator, keep = TokenEstimator(), 3
    for n, (op, arg, mode) in enumerate(operations):
        if op == "keep":
            keep = arg
            continue
        if op == "reset":
            chat.reset()
            continue
        if op == "rerun" and chat.turns:
            chat.turns.pop()
        before = copy.deepcopy([(t.prompt, t.answer.blocks, [r.tool_results for r in t.answer.rounds]) for t in chat.turns])
        turn = make_turn(arg, n)
        request = chat.request(turn.prompt, Options("m", 10, cache=mode, estimator=estimator, keep_media_turns=keep))
        expected = _say(reference(chat), "user", turn.prompt)
        assert strip(request["messages"]) == strip(expected)
        if mode == "off":
            assert "cache_control" not in json.dumps(request)
        assert sum(json.dumps(m).count("cache_control") for m in request["messages"]) <= 4
        after = [(t.prompt, t.answer.blocks, [r.tool_results for r in t.answer.rounds]) for t in chat.turns]
        assert after == before  # marking never touches the stored history
        assert strip(chat.messages(keep)) == chat.messages(keep) or any(
            "cache_control" in json.dumps(t.prompt) for t in chat.turns
        )  # only explicit --cache marks are in the history's own messages
        chat.record(turn)
        assert strip(chat.messages(keep)) == strip(reference(chat))  # the new turn is built now: a rerun unbuilds it
        assert chat.called() == history_calls(reference(chat))  # kept count of, not scanned for
        if keep is not None:
            resent = [i for i, t in enumerate(chat.turns[:-1]) if i >= chat.media_floor and any(
                is_inline(b) for b in t.prompt + [b for r in t.answer.rounds for b in r.tool_results])]
            assert len(resent) <= 2 * keep  # plus the cell's own


def test_the_request_reuses_the_history_objects():
    chat = Conversation()
    for i in range(5):
        chat.record(make_turn("text", i))
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=3)
    first = chat.request([text("next " * 500)], options)
    second = chat.request([text("other " * 500)], options)
    shared = sum(a is b for a, b in zip(first["messages"], second["messages"], strict=False))
    assert shared >= len(first["messages"]) - 4  # only marked messages are copies


def test_a_drop_marks_the_prefix_the_earlier_requests_cached():
    chat = Conversation(system="Context. " * 1200)
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=1)
    boundaries = []
    for i in range(6):
        request = chat.request(make_turn("inline", i).prompt, options)
        floor = chat.media_floor
        marks = marked(request)
        boundaries.append((floor, marks))
        chat.record(make_turn("inline", i))
    # Turns 0 and 1 are resent until the third image turn waits: then both go at once (turn 3 asks).
    assert [floor for floor, _ in boundaries] == [0, 0, 0, 2, 2, 4]
    # Before the drop, a marker closes the prefix before the first image (turn 0's question);
    # the request that drops keeps it, so it reads what the earlier requests wrote there.
    assert (0, 0) in boundaries[2][1] and (0, 0) in boundaries[3][1]
    # After the drop the boundary is before turn 2's image (message 4, its question block).
    assert (4, 0) in boundaries[4][1]


def test_saving_text_says_saved_or_cost():
    assert saving_text(100, 0, 10000) == "saved 89% (9,000 tokens)"
    assert saving_text(0, 2000, 0) == "cost 25% more (500 tokens)"
    assert saving_text(500, 0, 0) == "–"


def test_a_conversation_of_heavy_images_keeps_at_most_4_mib_waiting():
    chat = Conversation()
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=3)
    big = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 1_500_000}}
    for i in range(12):
        turn = make_turn("text", i)
        turn.prompt.append(big)
        request = chat.request(turn.prompt, options)
        assert json.dumps(request).count('"base64"') <= 3 + 1 + 2  # two 1.5 MB items fit in 4 MiB, three do not
        chat.record(turn)


def test_a_cold_conversation_drops_waiting_media_at_the_next_cell():
    chat = Conversation()
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=3)
    for i in range(5):
        chat.request(make_turn("inline", i).prompt, options)
        chat.record(make_turn("inline", i))
    assert chat.media_floor == 0  # turns 0 and 1 wait: only 2 of a batch of 3
    chat.last_sent -= TTL + 1  # the cache has expired since the last request
    chat.request([text("next")], options)
    assert chat.media_floor == 2


def test_the_estimate_of_a_built_request_equals_measuring_it_whole():
    chat = Conversation(system="System. " * 300)
    estimator = TokenEstimator()
    options = Options("m", 10, cache="auto", estimator=estimator, keep_media_turns=3)
    for i, kind in enumerate(["inline", "tools", "stopped", "text"]):
        request = chat.request(make_turn(kind, i).prompt, options)
        assert abs(chat.estimate(request, estimator) - estimate_prompt(request, estimator)) < 1e-6
        chat.record(make_turn(kind, i))


def test_a_tool_round_is_marked_afresh_from_the_unmarked_request():
    chat = Conversation(system="System. " * 600)
    for i in range(3):
        chat.record(make_turn("text", i))
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=3)
    first = chat.request([text("use the tool " * 200)], options)
    n = len(first["messages"])
    assert marked(first)[-1] == (n - 1, 0)
    follow_up = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r " * 300}]},
        ],
    }
    second = chat.remark(follow_up, options)
    assert marked(second) == [(-1, 0), (n - 1, 0), (n + 1, 0)]  # system, the prompt round 1 wrote, the results
    assert len(marked(second)) <= 4
    assert "cache_control" not in json.dumps(chat.messages(3))  # nothing automatic stays in the history


def test_markers_on_a_request_the_index_was_not_built_for_are_still_right():
    chat = Conversation()
    for i in range(3):
        chat.record(make_turn("text", i))
    options = Options("m", 10, cache="auto", estimator=TokenEstimator(), keep_media_turns=3)
    chat.request([text("x " * 3000)], options)
    other = request([text(LONG)], [text("answer")], [text("q2"), text("more")], system=LONG)
    out = place_markers(other, "auto", TokenEstimator(), index=chat._index)
    assert marked(out) == [(-1, 0), (0, 0), (2, 1)]  # as without an index
