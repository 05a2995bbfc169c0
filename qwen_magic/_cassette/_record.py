"""Recording: a transport that tees the real one, writing each exchange as it ends, the key masked."""

from __future__ import annotations

import base64
import codecs
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anthropic
import httpx2
from IPython.core.error import UsageError

from .._client import KEY_VARIABLE
from .._files import check_target, resolve, safe_text, write_failed
from .._text import masked
from ._file import KEPT_HEADERS, CassetteError, exchange_count, header, is_blank, read
from ._match import describe_request

if TYPE_CHECKING:
    from ._file import Exchange, Piece

# -- recording -----------------------------------------------------------------------------


def _secrets(request: httpx2.Request) -> set[str]:
    """The key, however this request carries it; too short a string could match anything."""
    found = {os.environ.get(KEY_VARIABLE, "").strip(), request.headers.get("x-api-key", "").strip()}
    authorization = request.headers.get("authorization", "").strip()
    found |= {authorization, authorization.partition(" ")[2].strip()}
    return {s for s in found if len(s) >= 8}


def _redact(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):  # "Bearer sk-…" before "sk-…"
            value = value.replace(secret, masked(secret))
        return value
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    return value


_DELTA_FIELDS = ("text", "thinking", "partial_json")


def _mask_deltas(pieces: Any, secrets: set[str]) -> None:
    """Mask each secret in streamed model text, also where it is split across deltas (in place).

    The deltas of one content block are joined, each occurrence found, and the masked form
    put in the delta where the secret begins; the rest of the secret's characters go.
    """
    streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for piece in pieces if isinstance(pieces, list) else []:
        data = piece.get("data") if isinstance(piece, dict) else None
        if not isinstance(data, dict) or data.get("type") != "content_block_delta":
            continue
        delta = data.get("delta")
        for name in _DELTA_FIELDS:
            if isinstance(delta, dict) and isinstance(delta.get(name), str):
                streams.setdefault((repr(data.get("index")), name), []).append(delta)
    for (_, name), deltas in streams.items():
        for secret in sorted(secrets, key=len, reverse=True):
            joined = "".join(d[name] for d in deltas)
            if secret in joined:
                _cut_out(deltas, name, joined, secret)


def _cut_out(deltas: list[dict[str, Any]], name: str, joined: str, secret: str) -> None:
    starts, at = [], joined.find(secret)
    while at != -1:
        starts.append(at)
        at = joined.find(secret, at + len(secret))
    offset = 0
    for delta in deltas:
        text, out = delta[name], []
        for position in range(offset, offset + len(text)):
            inside = next((s for s in starts if s <= position < s + len(secret)), None)
            if inside is None:
                out.append(text[position - offset])
            elif inside == position:
                out.append(masked(secret))
        offset += len(text)
        delta[name] = "".join(out)


def _error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)[:500]}


def _proxy_for(url: httpx2.URL) -> str | None:
    """The environment's proxy for ``url`` (the SDK's own client honours these too)."""
    import urllib.request

    if urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


class _Body:
    """A response body as it arrives, cut into the pieces a cassette line holds."""

    def __init__(self, headers: httpx2.Headers) -> None:
        self.sse = headers.get("content-type", "").startswith("text/event-stream")
        encoding = headers.get("content-encoding", "identity").lower()
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "x-gzip", "deflate") else None
        self.binary = encoding not in ("identity", "", "gzip", "x-gzip", "deflate")
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._raw: list[tuple[float, bytes]] = []
        self._text: list[str] = []
        self._buffer = ""
        self._last = 0.0
        self.pieces: list[Piece] = []

    def feed(self, chunk: bytes, t: float) -> None:
        self._raw.append((t, chunk))
        self._last = t
        if self.binary:
            return
        try:
            data = self._zlib.decompress(chunk) if self._zlib is not None else chunk
            text = self._decoder.decode(data)
        except (zlib.error, UnicodeDecodeError):
            self.binary = True
            return
        if not self.sse:
            self._text.append(text)
            return
        self._buffer = (self._buffer + text).replace("\r\n", "\n")
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            self.pieces.append(_sse_piece(block, t))

    def finish(self) -> list[Piece]:
        if self.binary:
            return [{"t": t, "base64": base64.b64encode(c).decode("ascii")} for t, c in self._raw if c]
        if self.sse:
            return self.pieces + ([{"t": self._last, "sse": self._buffer, "tail": True}] if self._buffer else [])
        text = "".join(self._text)
        if not text:
            return []
        try:
            return [{"t": self._last, "json": json.loads(text)}]
        except ValueError:
            return [{"t": self._last, "text": text}]


def _sse_piece(block: str, t: float) -> Piece:
    """One SSE event: its name and parsed JSON data, or verbatim when it is anything else."""
    event, data, other = None, [], False
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event" and colon and event is None:
            event = value
        elif name == "data" and colon:
            data.append(value)
        else:
            other = True
    if data and not other:
        try:
            parsed = json.loads("\n".join(data))
        except ValueError:
            pass
        else:
            piece: Piece = {"t": t}
            if event is not None:
                piece["event"] = event
            piece["data"] = parsed
            return piece
    return {"t": t, "sse": block}


def _since(started: float) -> float:
    return round(time.monotonic() - started, 4)


class Recorder(httpx2.BaseTransport):
    """Sends requests through the real transport and writes each exchange to the cassette."""

    replaying = False

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.name = str(path)
        self.path = resolve(path)
        self._lock = threading.Lock()
        self._transports: dict[str | None, httpx2.HTTPTransport] = {}
        check_target(self.path, self.name, "demo.jsonl")
        if overwrite or not self.path.exists() or is_blank(self.path):
            self.count = 0
            self._start_file()
        else:
            try:
                self.count = len(read(self.path, self.name))
            except UsageError as error:  # never append to what is not a sound cassette
                raise UsageError(
                    f"{error} To record into it anyway, starting afresh: `%qwen record {self.name} --overwrite`."
                ) from None
            try:  # appending must work now, not fail later inside a streaming answer
                self.path.open("a", encoding="utf-8").close()
            except OSError as exc:
                raise write_failed(self.name, self.path, exc) from None

    @property
    def footer(self) -> str:
        return f"● recorded to {self.name}"

    def describe(self) -> str:
        return f"recording to {self.name} ({exchange_count(self.count)} in it)"

    def _start_file(self) -> None:
        try:
            self.path.write_text(json.dumps(header(), ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise write_failed(self.name, self.path, exc) from None

    def _transport(self, url: httpx2.URL) -> httpx2.HTTPTransport:
        proxy = _proxy_for(url)
        with self._lock:
            transport = self._transports.get(proxy)
            if transport is None:
                # The SDK's own defaults: its connection limits, and TCP keepalive so a long
                # silent thinking phase does not lose the connection.
                options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
                for name, value in (("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5), ("TCP_KEEPIDLE", 60)):
                    if hasattr(socket, name):
                        options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
                transport = httpx2.HTTPTransport(
                    proxy=proxy, limits=anthropic.DEFAULT_CONNECTION_LIMITS, socket_options=options
                )
                self._transports[proxy] = transport
            return transport

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        secrets = _secrets(request)
        method, path, body = describe_request(request)
        exchange: Exchange = {"method": method, "path": path}
        # An identity body can be recorded as it arrives (and served as it was).
        request.headers["accept-encoding"] = "identity"
        try:
            response = self._transport(request.url).handle_request(request)
        except Exception as exc:
            exchange.update(
                {"status": None, "end": "error", "at": _since(started), "error": _error_of(exc), "request": body, "body": []}
            )
            self.write(exchange, secrets)
            raise
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        tape = _Tee(self, response, {**exchange, "status": response.status_code, "at": _since(started),
                                     "headers": kept, "request": body}, started, secrets)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=tape, extensions=response.extensions
        )

    def write(self, exchange: Exchange, secrets: set[str]) -> None:
        """Append one exchange with the key masked; refuse (and write nothing) if a line still held it."""
        secrets = secrets | {s for s in [os.environ.get(KEY_VARIABLE, "").strip()] if len(s) >= 8}
        exchange = _redact(exchange, secrets)
        _mask_deltas(exchange.get("body"), secrets)
        line = json.dumps(exchange, ensure_ascii=False, separators=(",", ":"))
        if any(secret in line for secret in secrets):
            raise CassetteError(
                f"record: this exchange would have put the API key in {self.name}, so it was not recorded."
            )
        with self._lock:
            try:
                if not self.path.exists() or not self.path.stat().st_size:
                    self._start_file()
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            except (OSError, UsageError) as exc:  # a full disk, a file made read-only meanwhile
                raise CassetteError(
                    f"record: this exchange could not be written to {self.name} ({safe_text(exc)}); "
                    "the answer stays on screen, but the cassette lacks it. Free space or fix the file, then re-run."
                ) from None
            self.count += 1

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


class _Tee(httpx2.SyncByteStream):
    """The real response stream, passed on chunk by chunk while each chunk is recorded."""

    def __init__(
        self, recorder: Recorder, response: httpx2.Response, exchange: Exchange, started: float, secrets: set[str]
    ) -> None:
        # A sync transport's response: its stream is a sync one.
        self._recorder, self._inner, self._exchange = recorder, cast("httpx2.SyncByteStream", response.stream), exchange
        self._started, self._secrets, self._status = started, secrets, response.status_code
        self._body = _Body(response.headers)
        if self._body.binary and "content-encoding" in response.headers:
            exchange["headers"]["content-encoding"] = response.headers["content-encoding"]
        self._done = self._broken = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._body.feed(chunk, _since(self._started))
                yield chunk
        except Exception as exc:
            self._finish("error", exc)
            raise
        except BaseException:  # an interrupt: close() records what came
            self._broken = True
            raise
        self._finish("complete")

    def close(self) -> None:
        try:
            if not self._done and not self._broken and self._status >= 400:
                # The SDK closes a response it will retry without reading it; an error body
                # is short and already on its way, so keep it for a faithful replay.
                try:
                    for chunk in self._inner:
                        self._body.feed(chunk, _since(self._started))
                except Exception as exc:
                    self._finish("error", exc)
                else:
                    self._finish("complete")
            self._finish("closed")
        finally:
            self._inner.close()

    def _finish(self, end: str, exc: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._exchange["end"] = end
        if exc is not None:
            self._exchange["error"] = _error_of(exc)
        self._exchange["body"] = self._body.finish()
        self._recorder.write(self._exchange, self._secrets)
