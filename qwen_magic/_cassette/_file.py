"""The cassette file: its header and limits, read line by line as untrusted input, each exchange checked."""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anthropic
from IPython.core.error import UsageError

from .._errors import QwenError
from .._files import open_regular, safe_text

if TYPE_CHECKING:
    from typing_extensions import Required, TypedDict

    class Piece(TypedDict, total=False):
        """A piece of a recorded body (one of ``data``, ``sse``, ``json``, ``base64``, ``text``) and when it came."""

        t: float
        event: str
        data: Any  # an SSE event's data: the service's JSON, any shape (checked before it is served)
        sse: str
        tail: bool  # the stream ended in this SSE text, without the blank line after it
        json: Any  # a whole JSON body, any shape
        base64: str
        text: str

    class Exchange(TypedDict, total=False):
        """One line of a cassette after the header: a request and its answer (module docstring)."""

        method: Required[str]
        path: Required[str]
        status: int | None
        end: str
        at: float | None
        headers: dict[str, str]
        request: Any  # the normalised request body: JSON, any shape (``_match``)
        body: list[Piece]
        error: dict[str, str]

FORMAT = "qwen-magic"
VERSION = 1
IGNORED_FIELDS = frozenset({"metadata"})
KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-should-retry", "request-id", "x-request-id")
FIRST_FIELDS = ("model", "stream", "max_tokens", "thinking", "temperature")


class CassetteError(QwenError, anthropic.AnthropicError):
    """A request the cassette cannot answer, or an exchange it refuses to record.

    Also an ``AnthropicError``, so the SDK passes it up unwrapped and does not retry it,
    and the cell shows it as a short message, like any other failed request.
    """



# -- the file ------------------------------------------------------------------------------


def header() -> dict[str, Any]:
    from .._version import __version__

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"cassette": FORMAT, "version": VERSION, "created": created, "qwen_magic": __version__}


MAX_LINE = 64 * 1024 * 1024  # bytes of one cassette line (an exchange); this version writes far less
MAX_FILE = 1024 * 1024 * 1024  # bytes of a whole cassette
MAX_TIME = 3600.0  # recorded seconds from a request to a piece of its answer
ENDS = ("complete", "closed", "error")
PIECE_KINDS = ("data", "sse", "json", "base64", "text")


def is_blank(path: Path) -> bool:
    size = path.stat().st_size
    return size == 0 or (size < 64 and not path.read_bytes().strip())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """The cassette's lines, numbered, each read with a bound; a ``UsageError`` for a file that is not one."""
    if not path.exists():
        raise UsageError(f"No cassette at {name}: record one first with `%qwen record {name}` (online).")
    file, size = open_regular(path, name)
    with file:
        if size > MAX_FILE:
            raise UsageError(f"{name} is over {MAX_FILE >> 30} GB: not a cassette qwen-magic wrote.")
        number = 0
        while True:
            try:
                raw = file.readline(MAX_LINE + 1)
            except OSError as exc:
                raise UsageError(f"Cannot read the cassette {name}: {safe_text(exc)}.") from None
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE:
                raise UsageError(
                    f"{name}, line {number}: over {MAX_LINE >> 20} MB, longer than any exchange qwen-magic "
                    "records; the file is damaged or not a cassette. Record it again."
                )
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{name}, line {number}: not UTF-8 text, so not a cassette line. Record it again.") from None


def read(path: Path, name: str) -> list[Exchange]:
    """The exchanges of a cassette file; a ``UsageError`` saying what is wrong if it will not do."""
    return [exchange for _, exchange in read_numbered(path, name)]


def read_numbered(path: Path, name: str) -> list[tuple[int, Exchange]]:
    """``read``, each exchange with its line number."""
    exchanges: list[tuple[int, Exchange]] = []
    for number, line in _lines(path, name):
        if number > 1 and not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            item = None
        if number == 1:
            if not isinstance(item, dict) or item.get("cassette") != FORMAT:
                raise UsageError(f"{name} is not a qwen-magic cassette (its first line is not a cassette header).")
            version = item.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise UsageError(f"{name}: the cassette header has no valid format version; record it again.")
            if version > VERSION:
                raise UsageError(f"{name} was written by a newer qwen-magic (format {version}); upgrade.")
            continue
        if item is None:
            truncated = "" if line.endswith("\n") else " (the file ends in the middle of it: cut short?)"
            raise UsageError(f"{name}, line {number}: not valid JSON{truncated}. Record the cassette again.")
        problem = _exchange_problem(item)
        if problem is not None:
            raise UsageError(f"{name}, line {number}: not a recorded exchange ({problem}). Record the cassette again.")
        exchanges.append((number, cast("Exchange", item)))  # its shape was checked just now
    return exchanges


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIME


def _exchange_problem(item: Any) -> str | None:
    """What makes ``item`` not an exchange this module can replay, or None."""
    if not isinstance(item, dict):
        return f"a JSON {type(item).__name__} where an object belongs"
    for field in ("method", "path"):
        if not isinstance(item.get(field), str) or not item[field]:
            return f"{field} should be text"
    status = item.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599):
        return "status should be an HTTP status code or null"
    if "at" in item and item["at"] is not None and not _number(item["at"]):
        return f"at should be a number of seconds from 0 to {MAX_TIME:g}"
    if item.get("end", "complete") not in ENDS:
        return f"end should be one of {', '.join(ENDS)}"
    headers = item.get("headers", {})
    if headers is not None and not (
        isinstance(headers, dict)
        and all(isinstance(v, str) and v.isascii() and v.isprintable() and k.isascii() for k, v in headers.items())
    ):
        return "headers should map names to printable ASCII text"
    error = item.get("error", {})
    if error is not None and not isinstance(error, dict):
        return "error should be an object"
    body = item.get("body")
    if not isinstance(body, list):
        return "body should be a list of pieces"
    for index, piece in enumerate(body):
        problem = _piece_problem(piece)
        if problem is not None:
            return f"body piece {index + 1}: {problem}"
    return None


def _piece_problem(piece: Any) -> str | None:
    if not isinstance(piece, dict):
        return f"a JSON {type(piece).__name__} where an object belongs"
    if "t" in piece and piece["t"] is not None and not _number(piece["t"]):
        return f"t should be a number of seconds from 0 to {MAX_TIME:g}"
    kinds = [kind for kind in PIECE_KINDS if kind in piece]
    if len(kinds) != 1:
        return f"it should hold one of {', '.join(PIECE_KINDS)}"
    kind = kinds[0]
    if kind == "data" and "event" in piece and not isinstance(piece["event"], str):
        return "event should be text"
    if kind in ("sse", "text", "base64") and not isinstance(piece[kind], str):
        return f"{kind} should be text"
    if kind == "base64":
        try:
            base64.b64decode(piece["base64"], validate=True)
        except ValueError:
            return "base64 is not valid base64"
    return None


def exchange_count(count: int) -> str:
    """'1 recorded exchange', '3 recorded exchanges'."""
    return f"{count} recorded exchange{'s' if count != 1 else ''}"


def speed_text(speed: float) -> str:
    """'at the recorded pace', '10× faster than recorded', 'as fast as possible'."""
    if speed <= 0 or math.isinf(speed):
        return "as fast as possible"
    if speed == 1:
        return "at the recorded pace"
    return f"at {speed:g}× the recorded pace"
