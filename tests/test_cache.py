"""The marker policy as a pure function, and the cost arithmetic."""

from __future__ import annotations

from qwen_magic._cache import TokenEstimator, cost_text, equivalents, mark, place_markers

LONG = "x" * 8000  # about 2,300 tokens at the starting estimate


def text(t: str) -> dict:
    return {"type": "text", "text": t}


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
