"""Cassettes: record every request and its answer once, replay them anywhere without a network.

A cassette is a JSON-lines file: a header line, then one line per HTTP exchange, written
when the exchange ends::

    {"cassette": "qwen-magic", "version": 1, "created": "2026-05-04T09:00:00+00:00", "qwen_magic": "0.1.0"}
    {"method": "POST", "path": "/v1/messages", "status": 200, "end": "complete", "at": 0.41,
     "headers": {"content-type": "text/event-stream"}, "request": {…the normalised request…},
     "body": [{"t": 0.41, "event": "message_start", "data": {…}}, {"t": 0.45, …}, …]}

``at`` is when the response headers came and each body piece's ``t`` when it came, in
seconds from the request. A piece is an SSE event (``event`` and its JSON ``data``, or
``sse`` verbatim when it is not plain JSON), a whole JSON body (``json``, for errors and
``--no-stream`` answers), or ``text``/``base64``. ``end`` is ``complete``; ``closed`` (the
client stopped reading, i.e. an interrupt); or ``error`` (the connection failed: ``error``
holds the exception's type and message; ``status`` is null when no response came at all).
Only headers that steer the SDK are kept (content type, retry hints, request id): never
auth or cookies. The key is masked (``sk-…abcd``) wherever it stands, also in model text
split across stream deltas; a last check refuses to write a line that still holds it.

Both ends are ``httpx2`` transports under the SDK (``http_client=httpx2.Client(transport=…)``),
so its retries, errors and streaming helpers work as they do live. ``Recorder`` tees the
real transport's stream: events reach the notebook as they arrive while being recorded.
``Player`` makes no network call: it serves the recorded body as a streamed response,
sleeping the recorded gaps divided by ``speed`` (0 or infinity: no waiting).

Matching. A request is found by a key: its method, its path from ``/v1/``, and its JSON
body normalised so that what does not change the answer's meaning does not count:

- dropped: ``cache_control`` markers (the automatic cache policy moves them from turn to
  turn), ``metadata``, all headers, the query string and the base URL;
- ``tool_use`` ids, and the ``tool_result`` ids answering them, become ``tool_1``,
  ``tool_2`` … in order of appearance (also where an id is quoted inside text);
- text loses the whitespace at its ends; a string ``content`` or ``system`` counts as one
  text block; inline (base64) media count by their SHA-256, not their bytes;
- in text, what differs from run to run of the same notebook does not count: memory
  addresses (``0x7f3a…`` in reprs) and the kernel's temporary paths (``/tmp/ipykernel_42/
  123.py``, ``<ipython-input-3-…>``, ``/tmp/tmpab12cd34``) — they reach requests through the
  notebook context (``_context``).

Everything else counts: model, system, the messages' text and media, tools, tool_choice,
thinking and its budget, temperature and the other sampling fields, ``max_tokens`` (a
smaller limit may cut the answer) and ``stream`` (a streamed body cannot answer a request
that waits for one JSON document). A request recorded several times replays its answers
in the order they were recorded, then the last one again. A request the cassette does not
hold fails with a message naming the closest recorded request and what differs.

A cassette is a file anyone may edit, so it is read as untrusted input: only a regular
file, line by line with a bound, each exchange checked for the shape replay relies on
when the file is opened, and each recorded answer checked for what the SDK could not take
(wrong types, events out of order) before it is served. Anything else is a short
``UsageError`` or ``CassetteError`` naming the line; a replayed answer reaches the notebook
through the SDK and the same painting (and sanitizing) as a live one.

The parts, one job each: ``_file`` (the format, its limits, reading and checking lines),
``_match`` (normalising a request into its key; saying what differs), ``_record``
(``Recorder``) and ``_replay`` (``Player``, and the checks a recorded answer passes before
the SDK reads it). This package imports the SDK and ``httpx2``: it is imported only once
a cassette is used.
"""


from __future__ import annotations

from IPython.core.error import UsageError

from ._file import MAX_TIME, CassetteError, exchange_count, header, read, speed_text
from ._match import differences, normalise, request_key
from ._record import Recorder
from ._replay import Player

__all__ = [
    "MAX_TIME",
    "CassetteError",
    "Player",
    "Recorder",
    "differences",
    "exchange_count",
    "header",
    "normalise",
    "open_cassette",
    "read",
    "request_key",
    "speed_text",
]


def open_cassette(mode: str, path: str, *, speed: float = 1.0, overwrite: bool = False) -> Recorder | Player:
    """A ``Recorder`` or ``Player`` for ``path``; a ``UsageError`` when the file will not do."""
    if not path:
        raise UsageError(
            f"cassette_mode is {mode!r} but no cassette file is set: use `%qwen {mode} FILE` "
            "or `%config QwenMagics.cassette = 'FILE'`."
        )
    return Recorder(path, overwrite=overwrite) if mode == "record" else Player(path, speed)
