"""Painting an answer in terminal IPython: plain text into pipes and files, live on a terminal.

Everything the model, a tool or the service wrote passes through ``visible_controls``
before it is written: a terminal obeys the control characters it is sent, so an answer
holding ``ESC ] 52`` would write the clipboard, ``ESC ] 0`` set the window title, ``CSI 2J``
clear the screen. They are shown as ``^[``-style text instead; only newline and tab stay.

Where stdout goes decides what else is written:

- not a terminal (a pipe, a file, ``TERM=dumb``): the text as it arrives, and not one
  escape code of ours, so logs and captured output stay plain text;
- a terminal: also a one-line waiting indicator until the first token (erased then),
  thinking dimmed, the usage line dimmed (``NO_COLOR`` drops the dimming);
- a terminal with ``rich`` installed (the ``rich`` extra): the answer as rendered markdown
  in a ``rich.live.Live`` region while it streams, then printed once, whole.

Why print the answer twice? A live region taller than the screen cannot be redrawn (the
cursor cannot move up into the scrollback), so while streaming the region holds only the
last lines that fit the screen; when the answer ends the region is erased and the whole
answer printed once, rendered as one document, so the scrollback keeps all of it.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ._answer import Answer
from ._publish import Bundle
from ._text import visible_controls

if TYPE_CHECKING:  # rich is the optional ``rich`` extra: imported where a terminal view uses it
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.segment import Segment

    Line = list[Segment]  # one rendered line


DIM, RESET, ERASE_LINE = "\x1b[2m", "\x1b[0m", "\r\x1b[2K"


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is a terminal that takes escape codes (not a pipe, a file or ``TERM=dumb``)."""
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False
    return bool(tty) and os.environ.get("TERM", "") != "dumb"


def terminal_view(out: TextIO | None = None) -> TerminalView:
    """The painter for ``out`` (stdout by default): rendered with rich on a terminal when installed."""
    out = out or sys.stdout
    if is_terminal(out):
        try:
            import rich  # noqa: F401
        except ImportError:
            pass
        else:
            return RichTerminalView(out)
    return TerminalView(out)


class Untrusted:
    """Makes streamed text safe for a terminal a delta at a time: CRLF becomes LF, other controls visible.

    A ``\\r`` at the end of a delta is held back until the next one shows whether an
    ``\\n`` follows it, so a line ending split across deltas is not shown as ``^M``.
    """

    def __init__(self) -> None:
        self._carriage_return = False

    def feed(self, delta: str) -> str:
        if self._carriage_return:
            delta, self._carriage_return = "\r" + delta, False
        if delta.endswith("\r"):
            delta, self._carriage_return = delta[:-1], True
        return visible_controls(delta.replace("\r\n", "\n"))

    def flush(self) -> str:
        """What is still held back (a lone ``\\r`` at the very end), made visible."""
        held, self._carriage_return = self._carriage_return, False
        return visible_controls("\r") if held else ""


def safe(text: str) -> str:
    """Whole untrusted text (a tool summary, a service message) made safe for a terminal."""
    return visible_controls(text.replace("\r\n", "\n"))


class TerminalView:
    """Plain text to a stream as it arrives: written once, never repainted.

    On a terminal it also shows the waiting line and dims thinking and the usage line.
    """

    WAIT_EVERY = 0.1  # seconds between updates of the waiting line

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._tty = is_terminal(self._out)
        self._styled = self._tty and "NO_COLOR" not in os.environ
        self._state = "waiting"  # -> thinking -> text
        self._text, self._thinking = Untrusted(), Untrusted()
        self._lock = threading.Lock()  # the waiting line is written from its own thread
        self._waiting: _Waiting | None = None

    # -- the waiting line -----------------------------------------------------------------

    def start(self, answer: Answer) -> None:
        if self._tty:
            model = safe(answer.model)
            self._waiting = _Waiting(
                lambda elapsed: self._write(f"{ERASE_LINE}⏳ {model} · waiting {elapsed:.1f} s", width=True),
                every=self.WAIT_EVERY,
                started=answer.started_at,
            )

    def _stop_waiting(self) -> None:
        """Stop the waiting line's thread and erase the line, if it showed."""
        if self._waiting is not None:
            shown = self._waiting.stop()
            self._waiting = None
            if shown:
                self._write(ERASE_LINE)

    # -- the view protocol ----------------------------------------------------------------

    def thinking(self, delta: str) -> None:
        if self._state == "waiting":
            self._stop_waiting()
            self._write(self._style(DIM) + "Thinking: ")
            self._state = "thinking"
        self._write(self._thinking.feed(delta))

    def text(self, delta: str) -> None:
        if self._state == "waiting":
            self._stop_waiting()
        elif self._state == "thinking":
            self._write(self._thinking.flush() + self._style(RESET) + "\n\n")
        self._state = "text"
        self._write(self._text.feed(delta))

    def finish(self, answer: Answer) -> None:
        self._stop_waiting()
        if self._state == "waiting":  # nothing streamed (--no-stream): write it all now
            if answer.thinking:
                self.thinking(answer.thinking)
            if answer.text:
                self.text(answer.text)
        if self._state == "thinking":
            self._write(self._thinking.flush() + self._style(RESET))
        elif self._state == "text":
            self._write(self._text.flush())
        if self._state != "waiting":
            self._write("\n")
        self._footer(answer)

    def _footer(self, answer: Answer) -> None:
        if answer.usage is not None or answer.complete:
            from ._footer import footer_text

            self._write(self._style(DIM) + safe(footer_text(answer)) + self._style(RESET) + "\n")

    def show(self, bundle: Bundle) -> Callable[[Bundle], None]:
        """Write ``bundle``'s text now, and each different text it is repainted with (no repainting here)."""
        self._stop_waiting()
        shown = [bundle["text/plain"]]
        self._write(safe(shown[0]) + "\n")

        def repaint(repainted: Bundle) -> None:
            if repainted["text/plain"] != shown[-1]:
                shown.append(repainted["text/plain"])
                self._write(safe(shown[-1]) + "\n")

        return repaint

    # -- writing --------------------------------------------------------------------------

    def _style(self, code: str) -> str:
        return code if self._styled else ""

    def _write(self, text: str, *, width: bool = False) -> None:
        """Write and flush; ``width`` cuts a one-line status to the screen so ``\\r`` can erase it."""
        if width:
            columns = _columns(self._out)
            text = text[: len(ERASE_LINE) + columns - 2]  # a wide character (⏳) may take two columns
        with self._lock:
            self._out.write(_encodable(text, self._out))
            self._out.flush()


class RichTerminalView(TerminalView):
    """The answer as rendered markdown while it streams: a live region of the lines that fit, then all of it.

    Thinking streams dimmed in the same bounded region and is printed once, dimmed, when
    the answer starts. Links are written as text with their URL, never as OSC 8 hyperlinks.
    """

    REFRESH = 4  # repaints of the live region a second (rich's own thread does them)

    def __init__(self, out: TextIO | None = None, *, width: int | None = None, height: int | None = None) -> None:
        from rich.console import Console

        super().__init__(out)
        # Only ever built for a terminal (``terminal_view``): no detection left to rich.
        self.console = Console(
            file=self._out, force_terminal=True, width=width, height=height, highlight=False, emoji=False
        )
        self._parts: list[str] = []  # the safe text of what is live: the thinking, then the answer
        self._thought = ""
        self._live: Live | None = None
        self._region = _Tail(self)

    def thinking(self, delta: str) -> None:
        if self._state == "waiting":
            self._stop_waiting()
            self._state = "thinking"
            self._start_live()
        self._parts.append(self._thinking.feed(delta))

    def text(self, delta: str) -> None:
        if self._state == "waiting":
            self._stop_waiting()
            self._start_live()
        elif self._state == "thinking":
            self._print_thinking()
        self._state = "text"
        self._parts.append(self._text.feed(delta))

    def finish(self, answer: Answer) -> None:
        self._stop_waiting()
        if self._state == "waiting":  # nothing streamed (--no-stream): the whole answer, once
            if answer.thinking:
                self._state, self._parts = "thinking", [self._thinking.feed(answer.thinking)]
            if answer.text:
                if self._state == "thinking":
                    self._print_thinking()
                self._state, self._parts = "text", [self._text.feed(answer.text)]
        if self._live is not None:
            self._live.stop()  # transient: the bounded region is erased
            self._live = None
        if self._state == "thinking":
            self._print_thinking()
        elif self._state == "text":
            self._parts.append(self._text.flush())
            self.console.print(rich_markdown(self.live_text()))
        self._footer(answer)

    def _start_live(self) -> None:
        from rich.live import Live

        self._live = Live(
            self._region,
            console=self.console,
            refresh_per_second=self.REFRESH,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        self._live.start()

    def _print_thinking(self) -> None:
        """Print the whole thinking once, dimmed, above the live region; the region goes on to the answer."""
        from rich.text import Text

        self._thought = self.live_text() + self._thinking.flush()
        self._parts = []
        self.console.print(Text("Thinking: " + self._thought, style="dim"))
        self.console.print()

    def live_text(self) -> str:
        """The safe text of the part that streams now (thinking, or the answer)."""
        # Read by rich's refresh thread too, so it only reads: the list is appended to in place.
        return "".join(self._parts)

    @property
    def state(self) -> str:
        return self._state

    def _write(self, text: str, *, width: bool = False) -> None:
        if self._live is not None:  # the live region owns the screen while it is up
            return
        super()._write(text, width=width)


def rich_markdown(source: str) -> Markdown:
    """rich's ``Markdown`` of ``source`` as the notebook reads it, math shown as written, in code.

    rich's own parser knows no math: TeX's ``\\(``, ``\\\\``, ``*`` and ``_`` became escapes and
    emphasis (``$a*b*c$`` showed as ``$abc$``). Here the notebook's parser (``_markdown._parse``)
    reads it, and each math span becomes inline code, each display block a ``latex`` code block.
    """
    from rich.markdown import Markdown

    from ._markdown._parse import _parser

    shown = Markdown("", hyperlinks=False)
    shown.markup, shown.parsed = source, _parser().parse(source)
    for token in shown.parsed:
        if token.type == "math_block":
            token.type, token.tag, token.info, token.markup = "fence", "code", "latex", "```"
            token.content += "\n"
        for child in token.children or ():
            if child.type == "math_inline":
                child.type, child.tag = "code_inline", "code"
    return shown


class _Tail:
    """The end of what streams, rendered, cut to the lines that fit the screen (rich renderable).

    The answer is cut at block boundaries (``stable_prefix``, one more at each repaint):
    finished pieces are rendered once and their lines kept, so a repaint renders only the
    open block; pieces more than a screenful of characters back are dropped. Rendering
    pieces apart loses nothing a reader sees: top-level blocks are drawn independently,
    and the blank line rich puts between them is put back.
    """

    def __init__(self, view: RichTerminalView) -> None:
        self._view = view
        self._marks = [0]  # block boundaries in the answer, ascending
        self._pieces: dict[tuple[int, int, int], list[Line]] = {}  # (start, end, width) -> rendered lines
        self._cache: tuple[tuple[str, int, int, int], list[Line]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        height = max(2, console.size.height - 1)  # the cursor's line stays free
        lines = self.lines(console, options, height)
        for index, line in enumerate(lines):
            yield from line
            if index < len(lines) - 1:
                yield Segment.line()

    def lines(self, console: Console, options: ConsoleOptions, height: int) -> list[Line]:
        """The last ``height`` rendered lines of what streams now."""
        from rich.text import Text

        view = self._view
        state, text = view.state, view.live_text()
        key = (state, len(text), options.max_width, height)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        budget = height * options.max_width  # characters that surely fill the screen
        options = options.update(height=None)
        if state == "thinking":
            # The heading stays on top; under it the latest lines of the thinking.
            heading = Text(f"Thinking… ({len(text):,} characters)", style="dim")
            body = Text(text[-2 * budget :].rstrip("\n"), style="dim")
            lines = console.render_lines(heading, options, pad=False)[:1]
            lines += console.render_lines(body, options, pad=False)[-(height - 1) :] if body else []
        else:
            self._advance(text, budget)
            bounds = [*self._marks, len(text)]
            lines = []
            for start, end in itertools.pairwise(bounds):
                piece = self._piece(console, options, text, start, end)
                if piece and lines:
                    lines.append([])  # the blank line between two blocks
                lines += piece
            lines = lines[-height:]
        self._cache = (key, lines)
        return lines

    def _piece(self, console: Console, options: ConsoleOptions, text: str, start: int, end: int) -> list[Line]:
        """``text[start:end]`` rendered as markdown; finished pieces (all but the open one) are kept."""
        key = (start, end, options.max_width)
        if key in self._pieces:
            return self._pieces[key]
        source = text[start:end]
        lines = console.render_lines(rich_markdown(source), options, pad=False) if source.strip() else []
        # Rich may start or end a piece with blank lines (before a heading, after a list); the
        # joining puts exactly one between pieces. A code block's shaded padding is not blank.
        while lines and _blank(lines[-1]):
            lines.pop()
        while lines and _blank(lines[0]):
            lines.pop(0)
        if end != len(text):
            self._pieces[key] = lines
        return lines

    def _advance(self, text: str, budget: int) -> None:
        """Add the newest block boundary; drop the pieces more than ``budget`` characters back."""
        from ._markdown import stable_prefix

        last = self._marks[-1]
        mark = last + stable_prefix(text[last:])  # parses only the blocks after the last boundary
        if mark > last:
            self._marks.append(mark)
        start = max(m for m in self._marks if len(text) - m >= budget or m == self._marks[0])
        self._marks = [m for m in self._marks if m >= start]
        self._pieces = {k: v for k, v in self._pieces.items() if k[0] >= start}


def _blank(line: Line) -> bool:
    return not any(segment.text.strip() or (segment.style and segment.style.bgcolor) for segment in line)


class _Waiting:
    """Calls ``tick(elapsed)`` every ``every`` seconds in a thread until stopped."""

    def __init__(self, tick: Callable[[float], None], *, every: float, started: float) -> None:
        self._tick, self._every, self._started = tick, every, started
        self._stop = threading.Event()
        self.shown = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._tick(time.monotonic() - self._started)
            self.shown = True

    def stop(self) -> bool:
        """Stop ticking; return whether the line was ever written."""
        self._stop.set()
        self._thread.join(timeout=2)
        return self.shown


def _columns(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80


def _encodable(text: str, out: TextIO) -> str:
    """``text`` as ``out`` can encode it: lone surrogates and unencodable characters become ``?``."""
    if text.isascii():
        return text
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "replace").decode(encoding, "replace")
    except LookupError:  # a stream naming an encoding Python does not know: leave it to the stream
        pass
    return text
