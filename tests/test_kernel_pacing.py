"""Between repaints the stream rests and reads what waited at once: fewer wake-ups, nothing shown late."""

from __future__ import annotations

import re
import sys

import pytest
from fake_dashscope import Stream
from kernel_harness import shown

pytestmark = pytest.mark.kernel

PACE = 0.01  # seconds between deltas: a service's pace, where a wake-up per delta is most of the CPU
CHUNK = 8
LAG = 0.1  # a paint shows every delta that left the server this long before it was received

SWITCHES = """\
import pathlib, threading
_qwen_switches = lambda: int(next(
    line.split()[1] for line in pathlib.Path(f"/proc/self/task/{threading.main_thread().native_id}/status")
    .read_text().splitlines() if line.startswith("voluntary_ctxt_switches")))
"""

BARE = """\
import anthropic, os
with anthropic.Anthropic(api_key=os.environ["DASHSCOPE_API_KEY"], base_url=os.environ["DASHSCOPE_BASE_URL"]).messages.stream(
    model="qwen3.6-plus", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]) as _s:
    for _ in _s:
        pass
"""


def code_lines(lines: int) -> str:
    return "```python\n" + "".join(f"x_{n} = {n}  # line {n}\n" for n in range(lines)) + "```\n"


def switches_during(kernel, code: str) -> int:
    before = int(kernel.run("print(_qwen_switches())").stdout)
    run = kernel.run(code)
    assert run.status == "ok", run.error_text
    return int(kernel.run("print(_qwen_switches())").stdout) - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts context switches in /proc (Linux)")
def test_deltas_between_repaints_are_read_together_not_each_with_a_wake_up(fresh):
    """A blocking read per delta is a wake-up of the kernel's main thread per delta; resting between
    repaints lets the deltas wait in the socket and be read at once, and painting when all of them
    are read (before the read that would wait) needs no reading on to catch the next."""
    text = code_lines(130)  # ~2,400 characters: ~300 deltas over 1.5 s
    assert fresh.run(SWITCHES).status == "ok"
    fresh.server.queue(Stream(text=text, chunk=CHUNK, delay=PACE / 2))
    bare = switches_during(fresh, BARE)
    fresh.server.queue(Stream(text=text, chunk=CHUNK, delay=PACE / 2))
    qwen = switches_during(fresh, "%%qwen --new\nwrite code")
    deltas = len(text) / CHUNK
    assert bare >= 0.8 * deltas  # the bare SDK wakes for each one
    # Paints happen where all that came is read, then a rest until the next: a few wake-ups a paint
    # (~55 here over ~8 paints; reading on for a while after each rest instead took ~80).
    assert qwen <= 0.2 * deltas, (qwen, bare, deltas)


def test_every_repaint_shows_what_arrived_before_it(fresh):
    """Resting never hides a delta from the next paint: each window holds the text sent until shortly before."""
    text = code_lines(150)
    fresh.server.queue(Stream(text=text, chunk=CHUNK, delay=PACE, clock=True))
    run = fresh.run("%%qwen --new\nwrite code")
    assert run.status == "ok", run.error_text
    request = fresh.server.requests[-1]
    first = request.first_delta_at
    lags = []
    for message in run.of("display_data", "update_display_data"):
        data = message["content"]["data"]
        # Whole lines only: a window's last line may be cut ("x_13 = 13  # line 1") and still end in "\n".
        if "text/plain" in data or not (lines := re.findall(r"x_(\d+) = \1  # line \1\n", shown(data))):
            continue  # not a live window
        upto = text.index(f"# line {lines[-1]}\n") + len(f"# line {lines[-1]}\n")
        # The next line was not whole yet: when did its last delta leave the server?
        nxt = text.find("\n", upto) + 1
        left = first + (-(-nxt // CHUNK) - 1) * PACE if nxt else float("inf")
        lags.append(message["received_at"] - left)
    assert len(lags) >= 5
    assert max(lags) <= LAG, [round(lag, 3) for lag in lags]


def test_the_first_text_after_long_thinking_shows_at_once(fresh):
    """While thinking the stream rests only briefly: the answer's first text is never held back."""
    fresh.server.queue(Stream(thinking="Let me think. " * 300, text="Answer: yes.", chunk=CHUNK, delay=PACE / 5, clock=True))
    run = fresh.run("%%qwen --new\nthink")
    assert run.status == "ok", run.error_text
    first = fresh.server.requests[-1].first_delta_at
    shown_at = next(
        m["received_at"] for m in run.of("display_data", "update_display_data")
        if "Answer" in shown(m["content"]["data"])
    )
    assert shown_at - first <= LAG
