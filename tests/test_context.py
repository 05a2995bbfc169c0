"""The context builder and the bounded capture, without a kernel: the budget's rules hold for any cells."""

from __future__ import annotations

import base64
import os
import re
import sys
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qwen_magic._context import HEAD_CHARS as HEAD
from qwen_magic._context import INTRO, Bounded, Cell, skipped
from qwen_magic._context import SOURCE_CHARS as SOURCE
from qwen_magic._context import TAIL_CHARS as TAIL
from qwen_magic._context_build import build
from qwen_magic._context_text import plain, size

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
    # Within the budget, however small: what the model reads, intro and notes included.
    assert sum(len(t) for t in texts) <= tokens * 3.5
    if not entries:  # only the note of what was left out, when even that fits
        note = INTRO + f"\n[Left out for the context budget: {_span(cells)} ({_cells(len(cells))}).]"
        assert texts == ([note] if len(note) <= tokens * 3.5 else [])
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
        assert not texts or f"Left out for the context budget: {_span(context.dropped)}" in texts[0]
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
        assert plain(entry.cell.stdout.text()).rstrip("\n").replace(KEY, "sk-…0111") in entry.text


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


# -- what is sent is safe: the key in no piece, text that encodes, no escapes, bad images skipped -------------------

BAD_IMAGES = (
    "abc",  # not base64 (padding)
    "!!not base64!!",
    base64.b64encode(b"<html>not an image</html>").decode(),  # valid base64, no image format announces
    b"plain bytes",
)


def fragments(text: str, key: str = KEY) -> list[str]:
    """Every piece of six or more characters of ``key`` found in ``text`` (what the masked form shows is not one)."""
    return [key[i : i + 6] for i in range(len(key) - 5) if key[i : i + 6] in text]


def sent_and_shown(context) -> str:
    """Everything a turn sends or shows of its context: the blocks' text, the manifest, the preview."""
    blocks = [b["text"] for b in context.blocks if b["type"] == "text"]
    return "\n".join([*blocks, context.summary(), *context.lines(), *context.manifest_bundle().values(), context.preview()])


@pytest.mark.parametrize("stream", ["stdout", "stderr", "shown"])
def test_a_key_broken_by_a_kept_head_or_tail_leaves_no_piece_of_it(stream: str) -> None:
    for before in range(0, 70):
        for head, tail in ((40, 40), (HEAD, TAIL)):
            cell = Cell(1, 1, "print(K)")
            bounded = getattr(cell, stream)
            bounded.head_limit, bounded.tail_limit = head, tail
            bounded.add("a" * (head - before) + KEY + "b" * (tail + 50))  # the key across the head's end
            bounded.add("c" * 100 + KEY + "d" * max(0, tail - before - len(KEY) // 2))  # across the tail's start
            context = build([cell], tokens=100_000, images=0, chars_per_token=3.5, upto=1, key=KEY)
            assert context is not None and not fragments(sent_and_shown(context)), (before, head)


@pytest.mark.parametrize("output", ["stdout", "result", "error"])
def test_a_key_broken_by_a_budget_cut_leaves_no_piece_of_it(output: str) -> None:
    for before in range(230, 300):  # the cut at about 280 characters moves across the key
        cell = Cell(1, 1, "x")
        text = "a" * before + KEY + "b" * 2000
        if output == "stdout":
            cell.stdout.add(text)
        else:
            setattr(cell, output, text)
            cell.error_name = "ValueError" if output == "error" else None
        context = build([cell], tokens=400, images=0, chars_per_token=3.5, upto=1, key=KEY)
        assert context is not None and "cut from the middle" in context.blocks[0]["text"]
        assert not fragments(sent_and_shown(context)), before


def test_a_key_in_a_long_source_or_a_captured_result_is_masked_before_the_cut(monkeypatch) -> None:
    from qwen_magic._context_text import middle

    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    for offset in range(-40, 40):
        half = (SOURCE - 40) // 2
        cell = Cell(1, 1, "s" * (half + offset) + KEY + "t" * SOURCE)
        cell.result = middle("r" * (5950 + offset) + KEY + "q" * 9000, HEAD + TAIL)  # as the capture keeps it
        context = build([cell], tokens=100_000, images=0, chars_per_token=3.5, upto=1)  # the key from the environment
        assert context is not None and not fragments(sent_and_shown(context)), offset
        assert f"In [1] source {size(len(cell.source))} → 8 kB" in context.summary()  # the source's cut is named


def test_the_manifest_masks_a_key_in_a_cells_first_line_wherever_it_is_shortened() -> None:
    for before in range(0, 70, 3):
        cell = Cell(1, 1, "#" * before + f"KEY = {KEY!r}\nprint(KEY)")
        context = build([cell], tokens=100_000, images=0, chars_per_token=3.5, upto=1, key=KEY)
        assert context is not None and not fragments(sent_and_shown(context)), before
    assert "sk-…0111" in context.lines()[0] or "…" in context.lines()[0]


def test_a_malformed_image_is_left_out_and_named_and_others_are_typed_by_their_bytes() -> None:
    from qwen_magic._context import Capture

    capture = Capture(None)
    cell = Cell(1, 3, "show()")
    for bad in BAD_IMAGES:
        capture._keep(cell, {"image/png": bad, "text/plain": "<Figure>"})
    capture._keep(cell, {"image/jpeg": PNG})  # a PNG said to be a JPEG is sent as what it is
    assert cell.images == [("image/png", PNG)] and cell.images_bad == len(BAD_IMAGES)
    context = build([cell], tokens=100_000, images=4, chars_per_token=3.5, upto=1)
    assert context is not None
    assert [b["source"]["media_type"] for b in context.blocks if b["type"] == "image"] == ["image/png"]
    assert f"In [3] {len(BAD_IMAGES)} unreadable images left out" in context.summary()
    assert f"[{len(BAD_IMAGES)} displayed images could not be read: left out]" in context.blocks[0]["text"]


def test_surrogates_escapes_and_control_characters_never_reach_the_request() -> None:
    cell = Cell(1, 1, "raise ValueError('bad \udc80 char')  # \ud800")
    cell.stdout.add("x \ud800 y \x00 bell\x07 \x1b[31mred\x1b[0m \x9b2J\n")
    cell.result = "\x1b[1mbold\x1b[0m \udfff"
    cell.error_name, cell.error = "ValueError", "ValueError: \x1b[31mred text\x1b[0m and \x1b]0;title\x07 \udc80"
    context = build([cell], tokens=100_000, images=0, chars_per_token=3.5, upto=1)
    assert context is not None
    text = context.blocks[0]["text"]
    text.encode("utf-8")  # strict: a lone surrogate would raise
    sent_and_shown(context).encode("utf-8")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
    assert "x \ufffd y  bell red" in text and "bold \ufffd" in text and "ValueError: red text and  \ufffd" in text


pieces = st.one_of(
    text,
    st.just(KEY),
    st.integers(1, len(KEY) - 1).map(lambda n: KEY[:n] + "\x1b[0m" + KEY[n:]),  # whole again once cleaned
    st.sampled_from(["\ud800", "\udc80", "\x1b[31m", "\x1b]0;t\x07", "\x1b[0m", "\x00", "\x07", "\r", "\x9b"]),
    st.integers(0, 9000).map(lambda n: "z" * n),
)
outputs = st.lists(pieces, max_size=12).map("".join)


def _key_free(raw: str) -> bool:
    """Whether ``raw`` holds no piece of the key but in whole keys (which capture and build mask).

    A piece the output itself holds is the user's text, not a key a cut broke: shrinking a
    failure, hypothesis writes such pieces (``ropert``), which no masking could know.
    """
    from qwen_magic._context_text import plain
    from qwen_magic._text import mask_key

    return not fragments(mask_key(plain(raw), KEY))


@st.composite
def hostile_cells(draw: st.DrawFn) -> list[Cell]:
    from qwen_magic._context import Capture, _bounded

    capture = Capture(None)
    out = []
    for number in range(1, draw(st.integers(1, 6)) + 1):
        cell = Cell(number, number, draw(st.sampled_from(["x", f"K = {KEY!r}", "s" * 8000 + KEY, "\udc80"])))
        for stream in (cell.stdout, cell.stderr, cell.shown):
            stream.head_limit, stream.tail_limit = draw(st.integers(1, 3000)), draw(st.integers(1, 3000))
            writes = [draw(outputs) for _ in range(draw(st.integers(0, 3)))]
            assume(_key_free("".join(writes)))
            for written in writes:
                stream.add(written)
        with mock.patch.dict(os.environ, {"DASHSCOPE_API_KEY": KEY}):  # as the capture keeps them, key in hand
            if draw(st.booleans()):
                cell.result = _bounded(draw(outputs.filter(_key_free)), draw(st.integers(50, HEAD + TAIL)))
            if draw(st.booleans()):
                error = draw(outputs.filter(_key_free))
                cell.error_name, cell.error = "ValueError", _bounded(error, draw(st.integers(50, HEAD)))
        for _ in range(draw(st.integers(0, 3))):
            capture._keep(cell, {draw(st.sampled_from(["image/png", "image/jpeg"])): draw(st.sampled_from([PNG, *BAD_IMAGES]))})
        out.append(cell)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_cells(), st.integers(1, 6000), st.integers(0, 5), st.integers(0, 3))
def test_hostile_outputs_never_break_a_turn_leak_the_key_or_pass_the_budget(
    cells: list[Cell], tokens: int, images: int, forgotten: int
) -> None:
    context = build(cells, tokens=tokens, images=images, chars_per_token=3.5, upto=1, key=KEY, forgotten=forgotten)
    assert context is not None
    everything = sent_and_shown(context)
    everything.encode("utf-8")
    assert not fragments(everything)
    texts = [b["text"] for b in context.blocks if b["type"] == "text"]
    assert sum(len(t) for t in texts) <= tokens * 3.5
    for entry in context.entries:
        outputs_sent = entry.text.replace(entry.cell.source, "")
        assert "\x1b" not in outputs_sent and "\x07" not in outputs_sent


@pytest.fixture
def in_process():
    """An in-process shell (no kernel: display and tracebacks print through stdout) with a capture installed."""
    from IPython.core.interactiveshell import InteractiveShell

    from qwen_magic._context import Capture

    shell = InteractiveShell.instance()
    capture = Capture(shell)
    capture.install()
    yield shell, capture
    capture.uninstall()


def test_outside_a_kernel_a_display_is_kept_as_displayed_not_also_as_printed(in_process, capsys) -> None:
    shell, capture = in_process
    shell.run_cell("from IPython.display import display\ndisplay({'text/plain': 'shown thing'}, raw=True)\nprint('printed')")
    assert "shown thing" in capsys.readouterr().out  # the user still sees it
    (cell,) = capture.cells
    assert cell.shown.text() == "shown thing\n" and cell.stdout.text() == "printed\n"


def test_cells_beyond_the_latest_kept_are_named_as_forgotten_not_dropped_without_a_word(in_process) -> None:
    from qwen_magic import _context

    shell, capture = in_process
    start = _context.clock()
    for i in range(_context.MAX_CELLS + 30):
        shell.run_cell(f"c{i} = {i}")
    assert capture.forgotten_since(start) == 30 and capture.forgotten_since(_context.clock() - 10) == 0
    assert capture.forgotten_since(start + 20) == 10
    context = build(capture.since(start), tokens=100_000, images=0, chars_per_token=3.5, upto=0, forgotten=30)
    assert context is not None
    assert "30 older cells no longer kept (only the latest 200)" in context.summary()
    assert "[30 older cells ran before these, no longer kept (only the latest 200).]" in context.blocks[0]["text"]
    capture.clear()  # forgotten on purpose: not named again
    shell.run_cell("after = 1")
    assert capture.forgotten_since(start) == 0


@pytest.mark.parametrize("key", [KEY, "QWENKEY0123456789abcdefXYZ"])  # with and without the ``sk-`` the mask shows
def test_a_cut_anywhere_in_a_key_leaves_no_more_of_it_than_its_masked_form_and_ordinary_text_stays(key: str) -> None:
    from qwen_magic._context_text import unbroken

    for at in range(1, len(key)):
        for junk in ("", "\x1b[3", "[0m"):  # the remains of a colour code the cut split
            head, tail = unbroken("text " + key[:at] + junk, junk + key[at:] + " more", key)
            assert not fragments(head + "|" + tail, key) and head.startswith("text") and tail.endswith(" more")
    assert unbroken("a banana", "ends", key) == ("a banana", "ends")  # no piece of the key: nothing goes


def test_a_cell_run_by_a_running_cell_is_part_of_it_and_the_outer_cell_is_kept(in_process, capsys) -> None:
    shell, capture = in_process
    shell.run_cell("%%capture cap\nprint('captured print')", store_history=True)
    shell.run_cell("print('outer')\nget_ipython().run_cell(\"print('inner')\")\nprint('after')", store_history=True)
    shell.run_cell("print('next')", store_history=True)
    quiet, outer, following = capture.cells
    assert quiet.source.startswith("%%capture") and quiet.stdout.total == 0  # the user chose not to see it
    assert outer.stdout.text() == "outer\ninner\nafter\n" and following.stdout.text() == "next\n"
    assert quiet.count is not None and outer.count is not None


@pytest.mark.parametrize(
    "first", ['print(f"${price:.2f} (was ${old:.2f})")', r're.findall(r"\((\d+)\)", s)', "!cp $SRC $DST", r"x = '\[a\]'"]
)
def test_the_manifest_shows_a_cell_s_first_line_as_written_not_as_math(first: str) -> None:
    """A cell's first line is code: MathJax pairs none of its dollars or backslash-brackets."""
    from html_readers import typeset, visible_text

    context = build([Cell(1, 1, first + "\nmore()")], tokens=100_000, images=0, chars_per_token=3.5, upto=1)
    assert context is not None
    html = context.manifest_bundle()["text/html"]
    assert typeset(html) == []
    assert first in visible_text(html)
