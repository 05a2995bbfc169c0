"""The context builder and the bounded capture, without a kernel: the budget's rules hold for any cells."""

from __future__ import annotations

import base64
import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_magic._context import INTRO, Bounded, Cell, skipped
from qwen_magic._context_build import _plain, build

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
KEY = "sk-property-test-key-000111"

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
big = st.one_of(text, st.integers(0, 60_000).map(lambda n: ("0123456789abcdef\n" * (n // 17 + 1))[:n]))


@st.composite
def cells(draw: st.DrawFn) -> list[Cell]:
    out = []
    for number in range(1, draw(st.integers(0, 12)) + 1):
        source = draw(st.one_of(text, st.just(f"key = {KEY!r}"))) or "pass"
        cell = Cell(number, number + 100, source)
        for stream in (cell.stdout, cell.stderr):
            printed = draw(big)
            if printed:
                for start in range(0, len(printed), 700):  # written in pieces, as a program would
                    stream.add(printed[start : start + 700])
        if draw(st.booleans()):
            cell.result = draw(big)
        if draw(st.booleans()):
            cell.error_name, cell.error = "ValueError", "Traceback (most recent call last):\nValueError: " + draw(text)
        for _ in range(draw(st.integers(0, 3))):
            cell.images.append(("image/png", PNG))
            cell.images_seen += 1
        out.append(cell)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells(), st.integers(0, 4000), st.integers(0, 5))
def test_the_budget_rules_hold_for_any_cells(cells: list[Cell], tokens: int, images: int) -> None:
    context = build(cells, tokens=tokens, images=images, chars_per_token=3.5, upto=99, key=KEY)
    if not cells or tokens == 0:
        assert context is None
        return
    assert context is not None
    entries = context.entries
    kept = [e.cell for e in entries]
    # Newest first: what is kept is the newest cells, what is dropped the oldest, in order.
    assert context.dropped + kept == cells
    # Once a cell keeps only its source, every older kept cell does too.
    forms = [e.form for e in entries]
    if "source" in forms:
        assert all(form == "source" for form in forms[: len(forms) - forms[::-1].index("source")])
    texts = [b["text"] for b in context.blocks if b["type"] == "text"]
    if entries:
        # Within the budget: what the model reads, intro and notes included.
        assert sum(len(t) for t in texts) <= tokens * 3.5
    else:
        assert texts == [INTRO + f"\n[Left out for the context budget: {_span(cells)} ({_cells(len(cells))}).]"]
    # At most ``images`` images, each right after its own cell's text block.
    image_blocks = [b for b in context.blocks if b["type"] == "image"]
    assert len(image_blocks) <= images and context.figures == len(image_blocks)
    for entry, block_text in zip(entries, texts if entries else [], strict=True):
        assert block_text.endswith(entry.text)
        assert block_text.startswith(INTRO) == (entry is entries[0])
    # Nothing is cut silently: the manifest names every cut, and the text the model reads says so.
    summary = context.summary()
    for entry in entries:
        if entry.form == "source" and (entry.cell.stdout.total or entry.cell.result is not None or entry.cell.error):
            assert "left out for the context budget" in entry.text
            assert f"{entry.cell.label} source only" in summary
        for cut in entry.cuts:
            assert f"{entry.cell.label} {cut}" in summary
        if "cut from the middle" in entry.text.replace(entry.cell.source, ""):
            assert entry.cuts or entry.cell.stdout.cut or entry.cell.stderr.cut
    if context.dropped:
        assert f"{_span(context.dropped)} left out" in summary
        assert f"Left out for the context budget: {_span(context.dropped)}" in texts[0]
    # The key never leaves masked text.
    assert all(KEY not in t for t in texts)


@given(cells())
@settings(max_examples=100, deadline=None)
def test_with_room_enough_everything_is_sent_whole(cells: list[Cell]) -> None:
    small = [c for c in cells if c.stdout.total + c.stderr.total + len(c.result or "") < 2000]
    context = build(small, tokens=1_000_000, images=100, chars_per_token=3.5, upto=1, key=KEY)
    if not small:
        return
    assert context is not None and not context.dropped and "cut:" not in context.summary()
    for entry in context.entries:
        assert entry.form == "whole"
        assert _plain(entry.cell.stdout.text()).rstrip("\n").replace(KEY, "sk-…0111") in entry.text


@given(st.lists(st.text(max_size=3000), max_size=60), st.integers(1, 500), st.integers(1, 500))
@settings(max_examples=300, deadline=None)
def test_bounded_keeps_the_exact_head_and_tail_and_counts_the_rest(writes: list[str], head: int, tail: int) -> None:
    bounded = Bounded(head, tail)
    for piece in writes:
        if len(piece) > 100:
            bounded.add(piece)
        else:
            bounded.parts.append(piece)  # the fast path of the stream stand-in
    whole = "".join(writes)
    bounded.fold()
    assert bounded.total == len(whole)
    assert bounded.head == whole[:head]
    if len(whole) > head:
        assert bounded.tail == whole[head:][-tail:]
    assert bounded.cut == max(0, len(whole) - head - tail)
    shown = bounded.text()
    if bounded.cut:
        assert shown.startswith(bounded.head) and shown.endswith(bounded.tail) and "cut from the middle" in shown
    else:
        assert shown == whole


def test_skipped_cells() -> None:
    assert skipped("%%qwen\nHi") and skipped("\n  %qwen context") and skipped("%qwen")
    assert skipped("# qwen: skip\nsecret = 1") and skipped("#qwen:skip") and skipped("# QWEN: SKIP because")
    assert not skipped("x = 1\n# qwen: skip") and not skipped("%qwenfoo") and not skipped("print('%%qwen')")
    assert not skipped("%%time\n%qwen")


def test_cut_markers_say_how_much(tmp_path) -> None:
    cell = Cell(1, 7, "print(big)")
    cell.stdout.add("x" * 41_000)
    context = build([cell], tokens=700, images=0, chars_per_token=3.5, upto=1)
    assert context is not None
    assert re.search(r"In \[7\] output 41 kB → \d+ (B|kB)", context.summary())
    assert re.search(r"\[… \d+ kB cut from the middle …\]", context.blocks[0]["text"])


def _span(cells: list[Cell]) -> str:
    return cells[0].label if len(cells) == 1 else f"{cells[0].label}–[{cells[-1].count}]"


def _cells(n: int) -> str:
    return f"{n} older cell{'s' if n != 1 else ''}"


def test_capture_in_an_in_process_shell_keeps_what_each_cell_did(capsys) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from qwen_magic import _context

    shell = InteractiveShell.instance()
    capture = _context.Capture(shell)
    capture.install()
    try:
        shell.run_cell("import sys\nfor p in (10, 50, 100):\n    print(f'\\r{p}%', end='', file=sys.stderr)\nprint('done')", store_history=True)
        shell.run_cell("# qwen: skip\nprint('private')", store_history=True)
        shell.run_cell("%qwen context", store_history=True)  # not a registered magic here: still never captured
        shell.run_cell("{'a': 1}", store_history=True)
        shell.run_cell("total = (1 +", store_history=True)
        png = {"image/png": PNG, "text/plain": "<Figure>"}
        for _ in range(_context.MAX_IMAGES + 5):
            shell.run_cell(f"get_ipython().display_pub.publish({png!r})", store_history=True)
    finally:
        capture.uninstall()
    assert "private" in capsys.readouterr().out  # the user still saw everything
    first, result, syntax, *figures = capture.cells
    assert syntax.error_name == "SyntaxError" and f'"In [{syntax.count}]", line 1' in (syntax.error or "")
    assert first.stdout.text() == "done\n"
    context = build([first], tokens=1000, images=0, chars_per_token=3.5, upto=0)
    assert context is not None and "Printed to stderr:\n```text\n100%\n```" in context.blocks[0]["text"]
    assert result.result == "{'a': 1}" and result.stdout.total == 0  # Out is the result, not printed text
    assert len(figures) == _context.MAX_IMAGES + 5
    assert sum(len(c.images) for c in figures) == _context.MAX_IMAGES  # memory stays bounded
    assert all(c.images for c in figures[-_context.MAX_IMAGES :]) and not figures[0].images
    assert all(c.images_seen == 1 and c.shown.text() == "<Figure>\n" for c in figures)
    assert [c.number for c in capture.cells] == sorted(c.number for c in capture.cells)
    assert sys.stdout is not None and not isinstance(sys.stdout, _context._Tee)


class _KernelStream:
    """An ipykernel-6-like stream: one buffer, sent under the current parent header when flushed."""

    def __init__(self) -> None:
        self.parent_header: dict[str, str] = {"msg_id": "one"}
        self.buffer: list[str] = []
        self.sent: list[tuple[str, str]] = []
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.buffer.append(text)
        return len(text)

    def _flush_buffer(self) -> str:
        data, self.buffer = "".join(self.buffer), []
        return data

    def flush(self) -> None:
        data = self._flush_buffer()
        if data:
            self.sent.append((self.parent_header["msg_id"], data))


class _KernelStream7(_KernelStream):
    """An ipykernel-7-like stream: a buffer per parent message."""

    def write(self, text: str) -> int:
        self.writes += 1
        self.buffer.append((self.parent_header["msg_id"], text))  # type: ignore[arg-type]
        return len(text)

    def _flush_buffers(self):  # type: ignore[no-untyped-def]
        buffers: dict[str, str] = {}
        for parent, text in self.buffer:  # type: ignore[misc]
            buffers[parent] = buffers.get(parent, "") + text
        self.buffer = []
        for parent, data in buffers.items():
            yield {"msg_id": parent}, data

    def flush(self) -> None:
        for parent, data in self._flush_buffers():
            self.sent.append((parent["msg_id"], data))


@pytest.mark.parametrize("kind", [_KernelStream, _KernelStream7], ids=["ipykernel-6", "ipykernel-7"])
def test_kernel_streams_are_read_where_they_flush_for_the_running_cell_only(monkeypatch, kind) -> None:
    from types import SimpleNamespace

    from qwen_magic import _context

    out, err = kind(), kind()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    callbacks: dict[str, list] = {"pre_run_cell": [], "post_run_cell": []}
    events = SimpleNamespace(
        register=lambda name, f: callbacks[name].append(f), unregister=lambda name, f: callbacks[name].remove(f)
    )
    shell = SimpleNamespace(events=events, kernel=object(), execution_count=5)
    capture = _context.Capture(shell)
    capture.install()
    assert type(out).__dict__.keys() & vars(out).keys()  # the flush method is wrapped on the instance
    callbacks["pre_run_cell"][0](SimpleNamespace(raw_cell="print('x')", store_history=True))
    assert sys.stdout is out  # no stand-in: nothing is added to each write
    print("in the cell")
    if kind is _KernelStream7:  # ipykernel 7 keeps other requests' output apart (comms, other cells' threads)
        out.parent_header = {"msg_id": "other"}
        print("not this cell")
        out.parent_header = {"msg_id": "one"}
    callbacks["post_run_cell"][0](SimpleNamespace(execution_count=5, error_in_exec=None, error_before_exec=None))
    print("after the cell")
    out.flush()
    (cell,) = capture.cells
    assert cell.stdout.text() == "in the cell\n", kind
    shown = "in the cell\nnot this cell\nafter the cell\n" if kind is _KernelStream7 else "in the cell\nafter the cell\n"
    assert "".join(text for _, text in out.sent) == shown  # everything still reaches the frontend
    capture.uninstall()
    assert not (type(out).__dict__.keys() & vars(out).keys())
