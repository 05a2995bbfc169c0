"""Painting an answer: in a notebook through display ids, in a terminal as plain text.

Jupyter has no "append" for rich outputs: ``update_display_data`` replaces a whole output.
Re-sending the growing answer on every token costs bytes that grow with the square of
its length. ``NotebookView`` instead keeps one *live* output holding only the open tail of
the answer; the finished markdown blocks a repaint finds before it (at least
``COMMIT_AT`` characters of them) are published one last time, with their ``text/plain``,
and a fresh live output takes the rest. Every character is thus sent about twice
(markdown and plain text) plus the short open tail at each repaint, and repaints are
throttled to ``INTERVAL``.
"""

from __future__ import annotations

import contextvars
import html
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from IPython.display import display, update_display

from ._answer import Answer
from ._cache import cost_text

Bundle = dict[str, str]


class View(Protocol):
    """What the streaming loop tells a painter."""

    def start(self, answer: Answer) -> None: ...
    def thinking(self, delta: str) -> None: ...
    def text(self, delta: str) -> None: ...
    def finish(self, answer: Answer) -> None: ...
    def show(self, bundle: Bundle) -> Callable[[Bundle], None]: ...


def view_for(shell: Any) -> View:
    """A notebook painter under a kernel, a terminal one otherwise."""
    if getattr(shell, "kernel", None) is not None:
        return NotebookView()
    from ._terminal import terminal_view

    return terminal_view()


def _publish(display_id: str, bundle: Bundle, *, new: bool = False) -> None:
    publisher = _direct_publisher()
    if publisher is not None:
        publisher.session.send(
            publisher.pub_socket,
            publisher.session.msg(
                "display_data" if new else "update_display_data",
                {"data": bundle, "metadata": {}, "transient": {"display_id": display_id}},
                parent=publisher.parent_header,
            ),
            ident=publisher.topic,
        )
    elif new:
        display(bundle, raw=True, display_id=display_id)
    else:
        update_display(bundle, raw=True, display_id=display_id)


def _direct_publisher() -> Any:
    """ipykernel's display publisher, when a streamed repaint may skip its stream flushing.

    ``ZMQDisplayPublisher.publish`` first flushes stdout and stderr, each a round trip to
    the kernel's IO thread; at five repaints a second that is most of a repaint's cost.
    The view flushes once when it starts instead, and nothing prints while it streams.
    With an output hook installed (an ``Output`` widget capturing), the normal path is kept.
    """
    from IPython import get_ipython

    shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    needed = ("session", "pub_socket", "topic", "parent_header")
    if publisher is None or not all(hasattr(publisher, name) for name in needed):
        return None
    if getattr(publisher, "_hooks", None):
        return None
    return publisher


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


def thinking_bundle(thinking: str, *, live: bool, seconds: float | None = None, window: int = 0) -> Bundle:
    """Thinking in a ``<details>`` block: open with its latest lines while live, closed after."""
    shown = thinking[-window:] if live and window and len(thinking) > window else thinking
    prefix = "…" if len(shown) < len(thinking) else ""
    if live:
        summary = f"Thinking… ({len(thinking):,} characters)"
    else:
        took = f" for {seconds:.1f} s" if seconds is not None else ""
        summary = f"Thought{took} ({len(thinking):,} characters) — click to read"
    body = html.escape(prefix + shown)
    return {
        "text/html": (
            f'<details class="qwen-thinking"{" open" if live else ""}>'
            f'<summary style="color:#888;cursor:pointer">{html.escape(summary)}</summary>'
            '<div style="white-space:pre-wrap;color:#777;font-size:0.9em;'
            f'border-left:3px solid #ddd;padding-left:0.8em;margin:0.3em 0">{body}</div></details>'
        ),
        "text/plain": f"[{summary}]",
    }


def footer_text(answer: Answer) -> str:
    """One line of usage and timing under a finished answer, summed over its tool rounds."""
    if answer.tool_calls and answer.complete:  # a round that called tools: the calls follow it
        return f"🔧 {answer.model} calls " + ", ".join(call["name"] for call in answer.tool_calls)
    parts = [answer.model]
    if answer.cassette:
        parts.append(answer.cassette)
    if answer.rounds:
        parts.append(f"{len(answer.rounds)} tool round{'s' if len(answer.rounds) != 1 else ''}")
    if (u := answer.total_usage) is not None:
        parts += [f"{u.input_tokens:,} in", f"{u.output_tokens:,} out"]
        parts.append(f"cache {u.cache_read:,} read / {u.cache_write:,} written")
        parts.append(cost_text(u.input_tokens, u.cache_write, u.cache_read))
    if answer.time_to_first_token is not None:
        parts.append(f"{answer.time_to_first_token:.2f} s to first token")
    if answer.tokens_per_second:
        parts.append(f"{answer.tokens_per_second:.0f} tok/s")
    if answer.stop_reason == "max_tokens":
        parts.append("⚠ cut at max_tokens: raise it with --max-tokens N or %qwen config max_tokens=N")
    elif answer.stop_reason == "max_tool_rounds":
        parts.append("⚠ stopped at max_tool_rounds, the last calls not run: raise it with %qwen config max_tool_rounds=N")
    elif answer.stop_reason not in (None, "end_turn", "tool_use"):
        parts.append(f"stopped: {answer.stop_reason}")
    elif answer.interrupted and answer.rounds and not answer.text:
        parts.append("interrupted")
    elif answer.interrupted:
        parts.append(f"interrupted after {len(answer.text):,} characters")
    elif answer.error is not None:
        parts.append(f"failed after {len(answer.text):,} characters" if answer.text else "no answer")
    return " · ".join(parts)


def footer_bundle(answer: Answer) -> Bundle:
    """The usage line as static output that survives saving."""
    text = footer_text(answer)
    return {
        "text/html": f'<div class="qwen-usage" style="color:#888;font-size:0.85em">{html.escape(text)}</div>',
        "text/plain": text,
    }


class NotebookView:
    """Streams rendered markdown into the cell's outputs at a cost linear in the answer.

    Outputs, top to bottom: the *status* line, the *head* (thinking, or the first part of
    the answer), the committed parts of the answer and the live tail. While the answer
    streams the status is a small widget (waiting time, then progress), updated through
    its comm rather than by re-sending display data; when the answer ends it empties and
    the usage footer is appended under the answer as static HTML, so a saved notebook
    never shows "Error displaying widget".
    """

    INTERVAL = 0.22  # seconds between repaints: four and a half visible updates a second
    COMMIT_AT = 1  # finished blocks move into an output of their own at the paint that finds them
    THINKING_WINDOW = 600  # characters of thinking shown while it streams

    def __init__(self) -> None:
        self._head = uuid.uuid4().hex
        self._head_used = False
        self._live: str | None = None  # output holding the open tail of the answer
        self._status_id = uuid.uuid4().hex
        self._tail: list[str] = []  # answer text not yet committed
        self._stable = 0  # length of the finished blocks at the start of the tail
        self._thinking: list[str] = []
        self._state = "waiting"  # -> thinking -> text
        self._last_paint = self._last_status = 0.0
        self._chars = 0
        self._ticker: _Ticker | None = None
        self._status: Any = None
        self._model = ""
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
        from ._widgets import live_status

        # Anything printed before the answer shows above it (repaints skip this flush).
        sys.stdout.flush()
        sys.stderr.flush()
        self._model = answer.model
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
        if self._state == "waiting":
            self._stop_ticker()
            self._state = "thinking"
            self._head_used = True
            self._thinking_started = time.monotonic()
        elif time.monotonic() - self._last_paint < self.INTERVAL:
            return
        self._paint_thinking(live=True)

    def _paint_thinking(self, *, live: bool) -> None:
        thinking = "".join(self._thinking)
        self._thinking = [thinking]
        self._last_paint = time.monotonic()
        seconds = None if live else self._last_paint - self._thinking_started
        _publish(self._head, thinking_bundle(thinking, live=live, seconds=seconds, window=self.THINKING_WINDOW))
        if live and self._status is not None:
            self._status.set(self._status_text())

    def text(self, delta: str) -> None:
        self._tail.append(delta)
        if self._state != "text":
            self._stop_ticker()
            if self._state == "thinking":
                self._paint_thinking(live=False)
            self._state = "text"
            self._chars = 0
        elif time.monotonic() - self._last_paint < self.INTERVAL:
            self._chars += len(delta)
            return
        self._chars += len(delta)
        self._paint()

    def _output(self, bundle: Bundle) -> str:
        """Put ``bundle`` in the next output (the head, while unused); return its display id."""
        if not self._head_used:
            self._head_used = True
            _publish(self._head, bundle)
            return self._head
        output = uuid.uuid4().hex
        _publish(output, bundle, new=True)
        return output

    def _paint(self, *, final: bool = False) -> None:
        from ._markdown import sanitize, stable_prefix

        tail = "".join(self._tail)
        self._last_paint = time.monotonic()
        # Blocks before ``_stable`` are finished: found at an earlier paint, so each paint
        # looks for block ends only in what came after.
        if final:
            self._stable = len(tail)
        else:
            self._stable += stable_prefix(tail[self._stable :])
        if self._stable and (final or self._stable >= self.COMMIT_AT):
            chunk, tail = tail[: self._stable], tail[self._stable :]
            # Each output is sanitized whole: pieces safe apart may not be safe joined
            # (JupyterLab pairs `$` math and fences across the whole output).
            bundle = {"text/markdown": sanitize(chunk), "text/plain": chunk}
            if self._live is None:
                self._output(bundle)
            else:
                _publish(self._live, bundle)
            self._live, self._stable = None, 0
        self._tail = [tail] if tail else []
        if tail:
            # While live, markdown only: the plain text comes once, when the block commits.
            bundle = {"text/markdown": sanitize(tail)}
            if self._live is None:
                self._live = self._output(bundle)
            else:
                _publish(self._live, bundle)
        if not final and self._status is not None and self._last_paint - self._last_status >= 2.0:
            self._last_status = self._last_paint  # every other second is plenty for a progress line
            self._status.set(self._status_text())

    def finish(self, answer: Answer) -> None:
        self._stop_ticker()
        if self._state == "waiting" and (answer.thinking or answer.text):
            # Nothing streamed (--no-stream): paint the whole answer once, in its final form.
            if answer.thinking:
                self._thinking, self._head_used, self._state = [answer.thinking], True, "thinking"
            self._tail = [answer.text] if answer.text else []
        if self._state == "thinking":
            self._paint_thinking(live=False)
        if self._tail or self._live is not None:
            self._paint(final=True)
        _publish(uuid.uuid4().hex, footer_bundle(answer), new=True)
        _publish(self._status_id, {"text/plain": ""})  # settled: nothing live is left to save
        if self._status is not None:
            self._status.close()

    def show(self, bundle: Bundle) -> Callable[[Bundle], None]:
        """Show ``bundle`` under the finished answer (a tool call); return what repaints it."""
        display_id = uuid.uuid4().hex
        _publish(display_id, bundle, new=True)
        return lambda repainted: _publish(display_id, repainted)

