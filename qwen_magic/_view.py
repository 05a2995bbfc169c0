"""Painting an answer: in a notebook through display ids, in a terminal as plain text.

Jupyter has no "append" for rich outputs: ``update_display_data`` replaces a whole output.
Re-sending the growing answer on every repaint costs bytes that grow with the square of
its length; so does re-sending one growing *block* (a long script, table, list or
paragraph is one markdown block, and data-analysis answers are often exactly that).
``NotebookView`` therefore sends a bounded amount at every repaint, whatever the shape:

- Finished markdown blocks (found by ``_markdown.stable_prefix``) are published whole,
  once, with their ``text/plain``, into the output that showed them live; a fresh live
  output takes what follows. Nothing of the live view stays beside them. A fenced code
  block or a table among them is markdown that the kernel writes so that it can only be
  read as that code or table (``_markdown.answer_bundles``, ``_markdown._tables``):
  JupyterLab colours and styles it at its own size, where Pygments' spans cost three and
  a half times the code and a table's HTML 2.7 times its markdown. The blocks finished at
  one repaint then share one ``text/markdown`` output, the HTML of the text between
  carried in it as HTML blocks (``_markdown._merged``): an output costs ~200 bytes of message,
  wrapper and plain-text field, a third of an answer made of many short blocks.
- The open block is shown while it streams as a *window*: when it is longer than
  ``WINDOW`` characters, a line saying how many characters are above it, the fence's
  opening line or the table's header (so it renders as the block it belongs to), and
  its last ``WINDOW_LINES`` lines, at most ``WINDOW`` characters (a table's as markdown
  written here, too). It is published whole when it closes, or when the answer ends.
  Thinking works the same way already: its last ``THINKING_WINDOW`` characters while it
  streams, whole once when it ends.

Committing finished *pieces* of an open block instead would pay for the block twice
(the pieces, then the whole once it can be rendered as one), which cannot stay within
three times the answer's bytes. The window costs ``WINDOW`` × repaints a second: 240
characters at four and a half repaints a second is 1.1 KB/s, under a third of what a fast
stream brings (4,000 characters a second). Windows are rendered cheaply: code in them is not
coloured (colour comes with the finished block), and all rendered HTML leaves out the
line breaks and end tags a browser does not need (``_markdown.compact``). A whole answer
then costs its rendered form and its plain text once (about 2.2× for prose and lists,
2× for code and tables) plus ~0.35–0.55× of windows. At slow paces the windows dominate,
but their size is fixed, so bytes grow linearly with the answer's length, never with
its square. Six lines (240 characters, three lines of prose) is what a reader follows
at the bottom of a cell while it streams; the note above it says that the rest is there
and will show whole. ``INTERVAL`` leaves room under the 0.3 s a reader notices as a
stall; when the answer ends, its last text is painted in the window before a long block
is rendered whole (a 50,000-character block takes about a tenth of a second).

Finding block ends costs linear time too, and most lines need no parse (``_ends``).
When blocks finish and the next one has only begun (under ``DEFER`` characters), its
first words wait for the next paint rather than cost an output and a render of their
own at once (unless the finished blocks look as their window did: that paint would then
show nothing new).
An open table's finished rows are read into markdown at repaints, 64 lines at a time
(``_markdown.prepare_table``), so a long table is published whole at the cost of its
last lines, with no pause after the stream ends. Repaints are throttled to ``INTERVAL``
on average: a paint that came late counts from when it was due (``_painted``). Every
repaint costs two messages' work whatever it sends (the kernel's main thread and its
IOPub thread, ~0.5 ms together), so 4.5 a second is the rate kept: above the four a second
a reader sees as smooth, with room under the 0.3 s a reader notices as a stall.

Reading costs the kernel more than painting: at a service's pace (a delta every 20 ms)
each delta read as it arrives is a wake-up of the kernel's main thread, a system call
and a trip through the HTTP layers, and four and a half repaints a second are only one
delta in eleven. So paints happen where the stream has applied every event that came and
would wait on the socket for more (``NotebookView.idle``, called by ``_stream._resting``
just before the network read): the paint shows all that came, and the stream then rests
until the next paint is due and reads what waited at once. The main thread wakes twice
per paint, once from the rest and once with the data, instead of once per delta (a bare
``messages.stream()`` consumer wakes two or three times per delta). While thinking it rests at
most ``THINKING_REST``, so the answer's first text shows as soon as it comes; the end of
an answer, like any delta, is read within one ``INTERVAL``. Where the HTTP layer has no
network stream to wait on (a replayed cassette, a mock transport), ``text`` paints when
``INTERVAL`` has passed, as each delta comes.
"""

from __future__ import annotations

import contextvars
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from ._answer import Answer
from ._ends import FENCE_OPEN as _FENCE_OPEN
from ._ends import BlockEnds, open_fence
from ._footer import footer_bundle, provenance, thinking_bundle
from ._markdown._lines import TABLE_HEAD as _TABLE_HEAD
from ._publish import Bundle
from ._publish import publish as _publish
from ._text import mask_key


def _new_id() -> str:
    """A display id: 64 random bits are unique enough in one notebook, and every message carries it."""
    return uuid.uuid4().hex[:16]


class View(Protocol):
    """What the streaming loop tells a painter."""

    def start(self, answer: Answer) -> None: ...
    def thinking(self, delta: str) -> None: ...
    def text(self, delta: str) -> None: ...
    def finish(self, answer: Answer) -> None: ...
    def show(self, bundle: Bundle) -> Callable[[Bundle], None]: ...


def _bundle(md: str) -> Bundle:
    """The bundle of a live window, without plain text: an open code block or a table as markdown
    written here (as when finished), else HTML with code uncoloured."""
    from ._markdown import markdown_bundle, open_code_markdown, table_markdown

    note = _NOTE.match(md)
    body, above = (md[note.end() :], note.group()) if note else (md, "")
    opened = open_fence(body)
    if opened is not None and not opened[1].group("indent") and not opened[0].search(body, opened[1].end()):
        # A fence still open: the rest is its code.
        code = body[opened[1].end() :].replace("\r\n", "\n").replace("\r", "\n")  # as markdown-it reads it
        if (written := open_code_markdown(code, opened[1].group("info"), above)) is not None:
            return {"text/markdown": written}
    if "|" in body and (table := table_markdown(body, above)):
        return {"text/markdown": table}
    return markdown_bundle(md, live=True)


def _finished(md: str) -> list[Bundle]:
    """The bundles of finished markdown, with its text as ``text/plain``: one, or one per code block,
    table and run of text between (``_markdown.answer_bundles``) when none is markdown (``_markdown._merged``)."""
    from ._markdown import answer_bundles, merged

    return merged(answer_bundles(md))


def _look(bundle: Bundle) -> Bundle:
    """What a frontend shows of a bundle: its markdown or HTML (not the plain text beside them)."""
    return {kind: value for kind, value in bundle.items() if kind in ("text/markdown", "text/html")}


_NOTE = re.compile(r"\*⋯ [\d,]+ characters above ⋯\*\n\n")  # what ``_window`` writes above a window


class _Ticker:
    """Calls ``tick(elapsed)`` every ``every`` seconds in a thread until stopped."""

    def __init__(self, tick: Callable[[float], None], every: float = 0.5) -> None:
        self._tick, self._every = tick, every
        self._stop = threading.Event()
        self._started = time.monotonic()
        # ipykernel keeps the parent message in a context variable: without a copy of
        # this context the thread's updates would not be routed to this cell.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._tick(time.monotonic() - self._started)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


class NotebookView:
    """Streams rendered markdown into the cell's outputs, each repaint a bounded size.

    Outputs, top to bottom: the *status* line, the *head* (thinking, or the first part of
    the answer), the answer's finished parts and the live window. While the answer
    streams the status is a small widget (waiting time, then progress), updated through
    its comm rather than by re-sending display data; when the answer ends it empties and
    the usage footer is appended under the answer as static HTML (carrying the answer's
    provenance as metadata), so a saved notebook never shows "Error displaying widget".
    """

    INTERVAL = 0.22  # seconds between repaints: four and a half visible updates a second
    STATUS_EVERY = 5.0  # seconds between updates of the progress line while the answer shows
    COMMIT_AT = 1  # finished blocks move into an output of their own at the paint that finds them
    THINKING_WINDOW = 400  # characters of thinking shown while it streams
    WINDOW = 240  # characters of the open block shown while it streams …
    WINDOW_LINES = 6  # … and at most this many of its lines
    REST = 0.1  # the longest rest while a long open block costs a render to publish whole
    COSTLY = 16_384  # characters of open text (not code or a table) that cost ~20 ms to render
    THINKING_REST = 0.04  # the longest rest while thinking: the answer's first text is shown at once
    DEFER = 120  # a shorter open tail after blocks just finished shows at the next paint, in an output of its own

    def __init__(self) -> None:
        self._head = _new_id()
        self._head_used = False
        self._live: str | None = None  # output holding the window of the open tail
        self._status_id = _new_id()
        self._tail: list[str] = []  # answer text not yet published whole
        self._ends = BlockEnds()  # where the finished blocks at the start of the tail end
        self._thinking: list[str] = []
        self._state = "waiting"  # -> thinking -> text
        self._last_paint = self._last_status = 0.0
        self._idle_paints = False  # the stream calls ``idle`` when it has read all that came: paints happen there
        self._fresh = False  # text or thinking came since the last paint
        self._costly = False  # the open text will take long to render whole
        self._shown = ""  # the text of the last live window
        self._shown_look: Bundle = {}  # what of it a frontend shows (its markdown or HTML)
        self._chars = 0
        self._ticker: _Ticker | None = None
        self._status: Any = None
        self._model = ""
        self._key: str | None = None
        self._started = self._thinking_started = time.monotonic()

    # -- the status line ------------------------------------------------------------------

    def _status_text(self) -> str:
        elapsed = time.monotonic() - self._started
        if self._state == "waiting":
            return f"⏳ {self._model} · waiting {elapsed:.1f} s"
        doing = "thinking" if self._state == "thinking" else "writing"
        return f"{self._model} · {doing} · {self._chars:,} characters · {elapsed:.1f} s"

    def _tick(self, _elapsed: float) -> None:
        if self._status is not None:
            self._status.set(self._status_text())
        else:
            _publish(self._status_id, {"text/plain": self._status_text()})

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    # -- the view protocol ----------------------------------------------------------------

    def start(self, answer: Answer) -> None:
        from ._text import current_key
        from ._widgets import live_status

        # Anything printed before the answer shows above it (repaints skip this flush).
        sys.stdout.flush()
        sys.stderr.flush()
        self._model = answer.model
        self._key = current_key()
        self._started = answer.started_at
        self._status = live_status()
        text = self._status_text()
        if self._status is not None:
            self._status.set(text)
        _publish(self._status_id, self._status.bundle(text) if self._status else {"text/plain": text}, new=True)
        _publish(self._head, {"text/plain": ""}, new=True)
        self._ticker = _Ticker(self._tick)

    def thinking(self, delta: str) -> None:
        self._thinking.append(delta)
        self._chars += len(delta)
        self._fresh = True
        if self._state == "waiting":
            self._stop_ticker()
            self._state = "thinking"
            self._head_used = True
            self._thinking_started = time.monotonic()
        elif self._idle_paints or time.monotonic() - self._last_paint < self.INTERVAL:
            return
        self._paint_thinking(live=True)

    def _paint_thinking(self, *, live: bool) -> None:
        thinking = "".join(self._thinking)
        self._thinking = [thinking]
        now = self._painted()
        seconds = None if live else now - self._thinking_started
        shown = self._masked(thinking, live=live)
        _publish(self._head, thinking_bundle(shown, live=live, seconds=seconds, window=self.THINKING_WINDOW))

    def text(self, delta: str) -> None:
        self._tail.append(delta)
        self._fresh = True
        if self._state != "text":
            self._stop_ticker()
            if self._state == "thinking":
                self._paint_thinking(live=False)
            self._state = "text"
            self._chars = 0
        elif self._idle_paints or time.monotonic() - self._last_paint < self.INTERVAL:
            self._chars += len(delta)
            return
        self._chars += len(delta)
        self._paint()

    def idle(self) -> float:
        """The stream has read all that came and would now wait on the network: paint if a
        paint is due, and return how many seconds it may rest before reading on.

        Between paints nothing a delta brings is shown, so reading each one as it arrives
        only costs a wake-up (a system call and a trip through the HTTP layers) per delta,
        which is most of the kernel's CPU at a service's pace. The stream calls this just
        before it would block on the socket (``_stream._resting``), that is, when every
        event that came has been applied: a paint here shows all of them, and a rest until
        the next paint is due lets the deltas meanwhile wait in the socket's buffer, to be
        read at once after it. Each paint then costs one rest and one read, whatever the
        pace. While thinking, rests are at most ``THINKING_REST``: the answer's first text
        is painted within that of its arrival (``text`` paints it at once). When the open
        text will take long to render whole (``COSTLY``: a long list or paragraph, not code
        or a table, which are written as markdown), rests are at most ``REST``, so that
        reading the end late and rendering it do not add up to a stall.
        """
        self._idle_paints = True
        if self._state == "waiting":
            return 0.0  # the first delta is read as it comes
        now = time.monotonic()
        if self._fresh and now >= self._last_paint + self.INTERVAL:
            if self._state == "thinking":
                self._paint_thinking(live=True)
            else:
                self._paint()
            now = time.monotonic()
        rest = self._last_paint + self.INTERVAL - now
        if self._costly:
            rest = min(rest, self.REST)
        if self._state == "thinking":
            rest = min(rest, self.THINKING_REST)
        return max(rest, 0.0)

    def _painted(self) -> float:
        """Note a paint now (nothing new has come since it), and return the time. A paint that
        came late (the first delta after ``INTERVAL`` arrived some time after it) counts from when
        it was due, by up to half an interval: paints then come every ``INTERVAL`` on average,
        however the deltas fall."""
        now = time.monotonic()
        late = now - (self._last_paint + self.INTERVAL)
        self._last_paint = now - min(max(late, 0.0), self.INTERVAL / 2)
        self._fresh = False
        return now

    def _masked(self, text: str, *, live: bool) -> str:
        """``text`` with the API key masked; while live, without a tail that may be a key's beginning."""
        key = self._key
        if key is None:
            return text
        text = mask_key(text, key)
        if live:
            for n in range(min(len(key) - 1, len(text)), 0, -1):
                if key.startswith(text[-n:]):
                    return text[:-n]
        return text

    def _output(self, bundle: Bundle, metadata: dict[str, Any] | None = None) -> str:
        """Put ``bundle`` in the next output (the head, while unused); return its display id."""
        if not self._head_used:
            self._head_used = True
            _publish(self._head, bundle, metadata=metadata)
            return self._head
        output = _new_id()
        _publish(output, bundle, new=True, metadata=metadata)
        return output

    def _paint(self, *, final: bool = False) -> None:
        tail = "".join(self._tail)
        self._painted()
        stable = len(tail) if final else self._ends.find(tail)
        defer = False  # the open tail's window waits for the next paint
        if stable and (final or stable >= self.COMMIT_AT):
            # The finished blocks, published whole and once, in place of the live window.
            chunk, tail = self._masked(tail[:stable], live=False), tail[stable:]
            finished = _finished(chunk)
            # Only if the finished blocks show something new: else this paint would change nothing.
            new = chunk.strip() != self._shown.strip() and (len(finished) > 1 or _look(finished[0]) != self._shown_look)
            for bundle in finished:
                if self._live is None:
                    self._output(bundle)
                else:
                    _publish(self._live, bundle)
                    self._live = None
            self._live, self._ends = None, BlockEnds()
            defer = not final and len(tail) < self.DEFER and new
            self._shown, self._shown_look = "", {}
        self._tail = [tail] if tail else []
        self._costly = False
        if tail and not defer:
            table = len(tail) > BlockEnds.REPARSE and _TABLE_HEAD.match(tail) is not None
            if table:
                from ._markdown import prepare_table

                prepare_table(tail)  # its finished rows read now: the whole table is then published at once
            self._costly = len(tail) > self.COSTLY and not table and self._ends.fence is None
            # While live, markdown only: the plain text comes once, with the whole block.
            window = self._window(self._masked(tail, live=True))
            if self._live is None or window != self._shown:  # (only whitespace came, say: nothing to show)
                bundle = _bundle(window)
                if self._live is None:
                    self._live = self._output(bundle)
                else:
                    _publish(self._live, bundle)
                self._shown_look = _look(bundle)
            self._shown = window
        if not final and self._status is not None and self._last_paint - self._last_status >= self.STATUS_EVERY:
            self._last_status = self._last_paint
            self._status.set(self._status_text())

    def _window(self, tail: str) -> str:
        """The open text, or (when long) a note of how much is hidden and its last lines.

        A window that starts inside a fence or a table repeats the fence's opening line or
        the table's header, so it renders as the block it is part of; they count towards
        its ``WINDOW`` characters.
        """
        if len(tail) <= self.WINDOW:
            return tail
        context = ""
        if (opener := _FENCE_OPEN.match(tail)) is not None or (opener := _TABLE_HEAD.match(tail)) is not None:
            context = opener.group() if opener.end() <= self.WINDOW // 2 else ""
        start = len(tail) - (self.WINDOW - len(context))
        cut = tail.find("\n", start) + 1
        if cut == 0 or cut >= len(tail) - 40:  # one long line: cut it between words
            space = tail.find(" ", start, start + 80)
            cut = start if space == -1 else space + 1
        lines_end = len(tail)
        for _ in range(self.WINDOW_LINES):
            lines_end = tail.rfind("\n", cut, lines_end)
            if lines_end == -1:
                break
        else:
            cut = lines_end + 1
        if cut < len(context):
            context = ""
        return f"*⋯ {cut - len(context):,} characters above ⋯*\n\n{context}{tail[cut:]}"

    def finish(self, answer: Answer) -> None:
        self._stop_ticker()
        if self._state == "waiting" and (answer.thinking or answer.text):
            # Nothing streamed (--no-stream): paint the whole answer once, in its final form.
            if answer.thinking:
                self._thinking, self._head_used, self._state = [answer.thinking], True, "thinking"
            self._tail = [answer.text] if answer.text else []
        if self._state == "thinking":
            self._paint_thinking(live=False)
        since = time.monotonic() - self._last_paint
        if self._tail and self._live is not None and (since > self.INTERVAL / 2 or sum(map(len, self._tail)) > 4 * self.WINDOW):
            # The last text first, in the window: rendering a long block whole may take a tenth of a second.
            self._paint()
        if self._tail or self._live is not None:
            self._paint(final=True)
        _publish(_new_id(), footer_bundle(answer), new=True, metadata=provenance(answer))
        _publish(self._status_id, {"text/plain": ""})  # settled: nothing live is left to save
        if self._status is not None:
            self._status.close()

    def show(self, bundle: Bundle) -> Callable[[Bundle], None]:
        """Show ``bundle`` under the finished answer (a tool call); return what repaints it."""
        display_id = _new_id()
        _publish(display_id, bundle, new=True)
        return lambda repainted: _publish(display_id, repainted)
