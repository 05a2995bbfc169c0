"""The notebook as context, captured: what each cell ran, printed, showed and raised, kept bounded.

Capture (``Capture``, installed by ``%load_ext``) follows IPython's ``pre_run_cell`` and
``post_run_cell`` events and keeps a bounded head and tail of what each cell prints
(``Bounded``), so memory stays small whatever it prints. Under ipykernel the text is read
where the kernel's ``OutStream`` flushes it to the frontend, a batch at a time (ipykernel 7:
only the running cell's parent message's): a cell printing a million lines pays nothing per line
(a per-write stand-in cost 10–15%, measured by ``benchmarks/bench_context.py``). Elsewhere
(terminal IPython, other streams) ``sys.stdout``/``sys.stderr`` are stand-ins for the cell
that hand every write to the real stream first and keep a copy. Either way what the user
sees is unchanged. Rich output is read where IPython publishes it:
``display_pub.publish`` (``display()``, matplotlib's inline figures) and the display hook's
``write_format_data`` (``Out``) are wrapped, not hooked, because a display-publisher hook
would make the streaming view give up its direct path. ``%%qwen``/``%qwen`` cells and cells
whose first line is ``# qwen: skip`` are never captured. What a turn sends of them is
``_context_build``.
"""

from __future__ import annotations

import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from ._context_text import image_data, middle, plain, sendable, size

if TYPE_CHECKING:
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell

OnFlush = Callable[[dict[str, Any], str], None]  # what a tapped stream tells: the batch's parent header, its text


class OutStream(Protocol):
    """What is read of ipykernel's ``OutStream`` (ipykernel is not a dependency of the package)."""

    parent_header: dict[str, Any]

    def flush(self) -> None: ...

HEAD_CHARS = 6000  # kept from the start of each stream of a cell
TAIL_CHARS = 6000  # and from its end
DISPLAY_CHARS = 4000  # head and tail of a cell's displayed text/plain
IMAGES_PER_CELL = 6  # images kept per cell (the latest)
MAX_IMAGES = 32  # images kept in all: older cells keep only how many they showed
MAX_CELLS = 200  # cells kept; older ones are forgotten
SOURCE_CHARS = 8000  # a longer source is cut in the middle
OUTPUT_SHARE = 0.4  # one output may take at most this share of the turn's budget
MIN_OUTPUT_CHARS = 300  # below this an output is not worth cutting to: the cell keeps its source only
MAX_IMAGE_BASE64 = 10 * 1024 * 1024  # DashScope's inline limit

INTRO = "[Notebook context: the cells I ran since my last message, oldest first.]"
NOTE_RESERVE = 100  # characters kept for the note naming the cells left out

_SKIP = re.compile(r"#\s*qwen\s*:\s*skip\b", re.IGNORECASE)
_OWN = re.compile(r"%%?qwen\b")
_clock = 0  # the number of the latest captured cell, process-wide


def clock() -> int:
    """The number of the latest captured cell: a conversation sends the cells numbered after its mark."""
    return _clock


def _tick() -> int:
    global _clock
    _clock += 1
    return _clock


def skipped(source: str) -> bool:
    """Whether a cell is never captured: a ``%%qwen``/``%qwen`` cell, or one marked ``# qwen: skip``."""
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return bool(_OWN.match(first) or _SKIP.match(first))


class Bounded:
    """A stream's text, kept as its first ``head`` and last ``tail`` characters and its total size."""

    __slots__ = ("head", "head_limit", "parts", "tail", "tail_limit", "total")

    def __init__(self, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> None:
        self.parts: list[str] = []  # recent writes, not yet folded into head/tail
        self.head = ""
        self.tail = ""
        self.total = 0
        self.head_limit, self.tail_limit = head, tail

    def add(self, text: str) -> None:
        """Keep ``text`` (folds the pending writes first)."""
        self.parts.append(text)
        self.fold()

    def fold(self) -> None:
        """Fold the pending writes into head and tail."""
        if not self.parts:
            return
        text = "".join(self.parts)
        self.parts.clear()
        self.total += len(text)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += text[:room]
            text = text[room:]
        if text:
            self.tail = (self.tail + text)[-self.tail_limit :]

    @property
    def cut(self) -> int:
        """Characters between head and tail that were not kept."""
        self.fold()
        return self.total - len(self.head) - len(self.tail)

    def kept(self, limit: int | None = None) -> tuple[str, str, int]:
        """Head, tail and the characters cut between them, the two sides at most about ``limit`` characters."""
        self.fold()
        head, tail, cut = self.head, self.tail, self.cut
        if limit is not None and len(head) + len(tail) > limit:
            keep_head = limit // 2
            keep_tail = limit - keep_head
            cut += len(head) - min(len(head), keep_head) + len(tail) - min(len(tail), keep_tail)
            head, tail = head[:keep_head], tail[len(tail) - min(len(tail), keep_tail) :]
        return head, tail, cut

    def text(self, limit: int | None = None) -> str:
        """The kept text as written, with a marker where the middle was cut; at most about ``limit`` characters."""
        head, tail, cut = self.kept(limit)
        return f"{head}\n[… {size(cut)} cut from the middle …]\n{tail}" if cut else head + tail


def _tap(stream: Any, on_flush: OnFlush) -> str | None:  # Any: its private flush methods are replaced
    """Wrap an ipykernel ``OutStream``'s flush so ``on_flush(parent, text)`` sees each batch.

    Returns the name of the wrapped method, or None for a stream that has neither.
    ipykernel 7 keeps a buffer per parent message (``_flush_buffers`` yields them);
    ipykernel 6 one buffer sent under the stream's current ``parent_header`` (``_flush_buffer``).
    A batch goes on with each lone surrogate as U+FFFD: the kernel cannot encode one, and its
    IO thread's failure lost the batch and could hold back the cell's idle status for good.
    """
    owned = getattr(stream, "__dict__", {})
    batches = getattr(stream, "_flush_buffers", None)
    if callable(batches) and "_flush_buffers" not in owned:

        def flushed() -> Iterator[tuple[dict[str, Any], str]]:
            for parent, data in batches():
                data = sendable(data) if isinstance(data, str) else data
                _tell(on_flush, parent, data)
                yield parent, data

        stream._flush_buffers = flushed
        return "_flush_buffers"
    single = getattr(stream, "_flush_buffer", None)
    if callable(single) and "_flush_buffer" not in owned and batches is None:

        def flushed_one() -> object:
            data = single()
            data = sendable(data) if isinstance(data, str) else data
            _tell(on_flush, getattr(stream, "parent_header", {}), data)
            return data

        stream._flush_buffer = flushed_one
        return "_flush_buffer"
    return None


def _tell(on_flush: OnFlush, parent: dict[str, Any], data: object) -> None:
    try:
        if data and isinstance(data, str):
            on_flush(parent, data)
    except Exception:  # capture must never lose the user's output
        pass


class _Tee:
    """A cell's ``sys.stdout``/``sys.stderr``: the real stream gets every write first, a bounded copy is kept."""

    def __init__(self, stream: TextIO, sink: Bounded) -> None:
        self._stream = stream
        self._write = stream.write
        self._sink = sink
        self._parts = sink.parts

    def write(self, text: str) -> int:
        written: int = self._write(text)
        # The fast path is one append; a long write or many pending ones fold (memory stays bounded).
        if len(text) > 512 or len(self._parts) > 1000:
            self._sink.add(text)
        else:
            self._parts.append(text)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # the rest of the stream's interface, whatever it is
        return getattr(self._stream, name)


@dataclass
class Cell:
    """What one cell ran and produced."""

    number: int  # the capture clock
    count: int | None  # IPython's execution count: ``In [count]``
    source: str
    stdout: Bounded = field(default_factory=Bounded)
    stderr: Bounded = field(default_factory=Bounded)
    shown: Bounded = field(default_factory=lambda: Bounded(DISPLAY_CHARS, DISPLAY_CHARS))  # display() text/plain
    result: str | None = None  # Out, as text
    images: list[tuple[str, str]] = field(default_factory=list)  # (media type, base64), latest kept
    images_seen: int = 0
    images_bad: int = 0  # displayed as images but not one (bad base64, or bytes no image format announces)
    error_name: str | None = None
    error: str | None = None  # "Type: message" and the traceback, no ANSI
    exception: BaseException | None = None  # the exception object, to match ``sys.last_value``

    @property
    def label(self) -> str:
        return f"In [{self.count}]" if self.count is not None else "In [ ]"


class Capture:
    """Records every cell the kernel runs (but ``%%qwen`` and skipped ones) while the extension is loaded."""

    def __init__(self, shell: InteractiveShell | None) -> None:
        # Any: install() wraps the shell's display paths in place, which its declared types do not allow.
        self.shell: Any = shell
        self.cells: list[Cell] = []
        self.current: Cell | None = None
        self._saved: tuple[TextIO, TextIO] | None = None
        self._publish: Callable[..., object] | None = None
        self._write_format_data: Callable[..., object] | None = None
        self._tapped: dict[str, tuple[OutStream, str]] = {}  # "stdout"/"stderr" → (the OutStream read, its wrapped method)
        self._parent: frozenset[tuple[str, Any]] | None = None  # the running cell's parent header, as the OutStream keys its text
        self._lock = threading.Lock()
        self._hushed: _Tee | None = None
        self._nested = 0  # cells running inside the current one
        self.forgotten = 0  # the number of the newest cell forgotten for ``MAX_CELLS``
        self._cleared = 0  # the clock when the cells were last cleared: those were forgotten on purpose

    # -- installing ----------------------------------------------------------------------

    def install(self) -> None:
        """Register the events and wrap the display paths (cheap: nothing is imported)."""
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        publisher = getattr(self.shell, "display_pub", None)
        if publisher is not None:
            self._publish = publisher.publish
            publisher.publish = self._published
        hook = getattr(self.shell, "displayhook", None)
        if hook is not None and hasattr(hook, "write_format_data"):
            self._write_format_data = hook.write_format_data
            hook.write_format_data = self._result
        if hook is not None and hasattr(hook, "start_displayhook") and hasattr(hook, "finish_displayhook"):
            # A terminal's display hook prints ``Out[1]: 42`` to stdout: kept as the result, not as printed text.
            start, finish = hook.start_displayhook, hook.finish_displayhook

            def start_displayhook(*args: object, **kwargs: object) -> object:
                self._hush()
                return start(*args, **kwargs)

            def finish_displayhook(*args: object, **kwargs: object) -> object:
                done = finish(*args, **kwargs)
                self._unhush()
                return done

            hook.start_displayhook, hook.finish_displayhook = start_displayhook, finish_displayhook
        show = getattr(self.shell, "_showtraceback", None)
        if show is not None:
            # A terminal prints the coloured traceback to stdout: the error is kept from the exception instead.
            def showtraceback(*args: object, **kwargs: object) -> object:
                self._hush()
                try:
                    return show(*args, **kwargs)
                finally:
                    self._unhush()

            self.shell._showtraceback = showtraceback
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if getattr(self.shell, "kernel", None) is not None:
                method = _tap(stream, self._flushed_to(name))
                if method is not None:
                    self._tapped[name] = (stream, method)

    def uninstall(self) -> None:
        """Undo ``install``."""
        for name, callback in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(name, callback)
            except ValueError:
                pass
        self._restore_streams()
        if self._publish is not None:
            self.shell.display_pub.__dict__.pop("publish", None)
        if self._write_format_data is not None:
            for name in ("write_format_data", "start_displayhook", "finish_displayhook"):
                self.shell.displayhook.__dict__.pop(name, None)
        self.shell.__dict__.pop("_showtraceback", None)
        for stream, method in self._tapped.values():
            stream.__dict__.pop(method, None)
        self._tapped.clear()

    def clear(self) -> None:
        """Forget every captured cell."""
        self.cells.clear()
        self._cleared = clock()

    # -- events --------------------------------------------------------------------------

    def pre_run_cell(self, info: ExecutionInfo) -> None:
        if getattr(info, "store_history", True):
            self._nested = 0  # a cell of the user's own always starts afresh
        elif self._nested or self.current is not None:
            # A cell run by the running one (``%%capture``, ``run_cell``) is part of it: what it prints is the
            # outer cell's (or was captured away by the user), and the outer cell must not be lost.
            self._nested += 1
            return
        source = getattr(info, "raw_cell", "") or ""
        self._restore_streams()
        if skipped(source) or not source.strip():
            self.current = None
            return
        count = getattr(self.shell, "execution_count", None) if getattr(info, "store_history", True) else None
        cell = Cell(0, count, source)
        self._saved = (sys.stdout, sys.stderr)
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            tapped = self._tapped.get(name)
            if tapped is not None and tapped[0] is stream:
                self._parent = frozenset(stream.parent_header.items())
            else:
                setattr(sys, name, _Tee(stream, getattr(cell, name)))
        self.current = cell

    def post_run_cell(self, result: ExecutionResult) -> None:
        if self._nested:
            self._nested -= 1
            return
        cell = self.current
        for name, (stream, _method) in self._tapped.items():
            if getattr(sys, name) is stream:
                stream.flush()  # the cell's last lines reach the frontend now, and the capture with them
        with self._lock:
            self.current = None
        self._restore_streams()
        if cell is None:
            return
        count = getattr(result, "execution_count", None)
        if count is not None:
            cell.count = count
        exc = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if exc is not None:
            cell.error_name = type(exc).__name__
            cell.error = self._traceback(exc)
            cell.exception = exc
        for kept_text in (cell.stdout, cell.stderr, cell.shown):
            kept_text.fold()
        cell.number = _tick()
        self.cells.append(cell)
        if len(self.cells) > MAX_CELLS:
            self.forgotten = self.cells[-MAX_CELLS - 1].number
            del self.cells[:-MAX_CELLS]
        kept = 0
        for older in reversed(self.cells):  # memory stays bounded in a notebook full of figures
            kept += len(older.images)
            if kept > MAX_IMAGES:
                older.images = older.images[kept - MAX_IMAGES :] if kept - len(older.images) < MAX_IMAGES else []

    def _flushed_to(self, name: str) -> OnFlush:
        def on_flush(parent: dict[str, Any], text: str) -> None:
            with self._lock:
                cell = self.current
                if cell is not None and frozenset(parent.items()) == self._parent:
                    getattr(cell, name).add(text)

        return on_flush

    def _hush(self) -> None:
        if isinstance(sys.stdout, _Tee) and self._hushed is None:
            self._hushed = sys.stdout
            sys.stdout = sys.stdout._stream

    def _unhush(self) -> None:
        hushed, self._hushed = self._hushed, None
        if hushed is not None and sys.stdout is hushed._stream:
            sys.stdout = hushed

    def _restore_streams(self) -> None:
        if self._saved is None:
            return
        out, err = self._saved
        self._saved = None
        # A cell that replaced the streams itself keeps its own.
        if isinstance(sys.stdout, _Tee):
            sys.stdout = out
        if isinstance(sys.stderr, _Tee):
            sys.stderr = err

    def _published(self, data: object, *args: object, **kwargs: object) -> object:
        try:
            cell = self.current
            if cell is not None and not kwargs.get("update") and isinstance(data, dict):
                self._keep(cell, data)
        except Exception:  # capture must never break a display
            pass
        assert self._publish is not None  # install() kept it before wrapping
        self._hush()  # outside a kernel the publisher prints through the cell's stdout: kept as displayed, not printed
        try:
            return self._publish(data, *args, **kwargs)
        finally:
            self._unhush()

    def _result(self, format_dict: object, *args: object, **kwargs: object) -> object:
        try:
            cell = self.current
            if cell is not None and isinstance(format_dict, dict):
                text = format_dict.get("text/plain")
                if isinstance(text, str):
                    cell.result = _bounded(text, HEAD_CHARS + TAIL_CHARS)
                self._keep_images(cell, format_dict)
        except Exception:
            pass
        assert self._write_format_data is not None  # install() kept it before wrapping
        return self._write_format_data(format_dict, *args, **kwargs)

    def _keep(self, cell: Cell, data: dict[str, object]) -> None:
        if any(key.startswith("application/vnd.jupyter.widget") for key in data):
            return  # a widget's text/plain is its class name: nothing the model can use
        text = data.get("text/plain")
        has_image = self._keep_images(cell, data)
        if isinstance(text, str) and text.strip():
            cell.shown.add(text if text.endswith("\n") else text + "\n")
        elif has_image:
            cell.shown.add("<image>\n")

    def _keep_images(self, cell: Cell, data: dict[str, object]) -> bool:
        for media_type in ("image/png", "image/jpeg"):
            value = data.get(media_type)
            if value is None:
                continue
            image = image_data(value)
            if image is None:
                cell.images_bad += 1
                return False
            cell.images_seen += 1
            cell.images.append(image)
            del cell.images[:-IMAGES_PER_CELL]
            return True
        return False

    def _traceback(self, exc: BaseException) -> str:
        """``Type: message`` and the traceback, cell frames named ``In [N]``, IPython's own frames left out."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/IPython/core/" not in f.filename]
        text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
        # Cell files (``/tmp/ipykernel_42/123.py``, ``<ipython-input-3-…>``) by the name the user knows.
        names = getattr(getattr(self.shell, "compile", None), "_filename_map", {}) or {}
        for filename in {f.filename for f in frames} | {getattr(exc, "filename", None) or ""}:
            if filename in names:
                text = text.replace(f'"{filename}"', f'"In [{names[filename]}]"')
        head = "Traceback (most recent call last):\n" if frames else ""
        return _bounded(head + text, HEAD_CHARS)

    # -- reading -------------------------------------------------------------------------

    def since(self, mark: int, *, exclude: Cell | None = None) -> list[Cell]:
        """The cells captured after ``mark``, oldest first."""
        return [c for c in self.cells if c.number > mark and c is not exclude]

    def forgotten_since(self, mark: int) -> int:
        """How many cells captured after ``mark`` are forgotten (only the latest ``MAX_CELLS`` are kept)."""
        return max(0, self.forgotten - max(mark, self._cleared))

    def failed(self, exception: BaseException | None) -> Cell | None:
        """The captured cell that raised ``exception``."""
        if exception is None:
            return None
        return next((c for c in reversed(self.cells) if c.exception is exception), None)


def _bounded(text: str, limit: int) -> str:
    """A result or traceback as kept: cleaned first, so that a key split by colour codes is whole when masked."""
    return middle(plain(text), limit)
