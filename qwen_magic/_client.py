"""The SDK edge: DashScope's endpoints and model names, the ``anthropic`` client for them, its errors translated.

``import anthropic`` costs about a second, so nothing here imports it at module level;
``warm_up`` imports it in a background thread right after ``%load_ext``.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ._errors import ConnectionFailed, QwenError, ServiceError

if TYPE_CHECKING:
    import anthropic
    import httpx2

ENDPOINTS = {
    "cn": "https://dashscope.aliyuncs.com/apps/anthropic",
    "intl": "https://dashscope-intl.aliyuncs.com/apps/anthropic",
    "us": "https://dashscope-us.aliyuncs.com/apps/anthropic",
}
KNOWN_MODELS = (  # offered by the panel, and suggested when the service does not know a model
    "qwen3.6-plus",
    "qwen3.7-plus",
    "qwen3.5-plus",
    "qwen-plus",
    "qwen3.7-max",
    "qwen3-max",
    "qwen3.6-flash",
    "qwen3-vl-plus",
)
KEY_VARIABLE = "DASHSCOPE_API_KEY"
BASE_URL_VARIABLE = "DASHSCOPE_BASE_URL"

MISSING_KEY = (
    f"{KEY_VARIABLE} is not set. Get a key in the Model Studio console, then run "
    f"`%env {KEY_VARIABLE}=sk-...` (or export it before starting Jupyter)."
)


@dataclass(frozen=True)
class Endpoint:
    """Where requests go, and how patiently."""

    base_url: str
    timeout: float
    max_retries: int


def resolve_base_url(base_url: str, region: str) -> str:
    """``DASHSCOPE_BASE_URL`` wins, then the ``base_url`` setting, then the region's endpoint."""
    return (os.environ.get(BASE_URL_VARIABLE) or base_url or ENDPOINTS[region]).rstrip("/")


def api_key() -> str:
    """The key from the environment, or a ``UsageError`` that says how to set it."""
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        raise UsageError(MISSING_KEY)
    return key


_clients: dict[tuple[str, Endpoint, httpx2.BaseTransport | None], anthropic.Anthropic] = {}
_lock = threading.Lock()
REPLAY_KEY = "sk-replay-placeholder"  # a replay sends nothing anywhere; the SDK just wants a key


def client_for(endpoint: Endpoint, transport: httpx2.BaseTransport | None = None) -> anthropic.Anthropic:
    """A cached SDK client; the key and URL are always passed, never read from ANTHROPIC_*.

    ``transport`` (a cassette's ``Recorder`` or ``Player``, an ``httpx2`` transport) takes
    the place of the network under the SDK; a replay needs no key.
    """
    key = REPLAY_KEY if getattr(transport, "replaying", False) else api_key()
    with _lock:
        client = _clients.get((key, endpoint, transport))
        if client is None:
            import anthropic

            client = anthropic.Anthropic(
                api_key=key,
                base_url=endpoint.base_url,
                timeout=endpoint.timeout,
                max_retries=endpoint.max_retries,
                http_client=None if transport is None else anthropic.DefaultHttpxClient(transport=transport),
            )
            if transport is not None:  # clients of cassettes no longer in use go
                for stale in [k for k in _clients if k[2] is not None and k[2] is not transport]:
                    del _clients[stale]
            _clients[(key, endpoint, transport)] = client
        return client


_WARM_UP_EXIT_WAIT = 10.0  # seconds an exiting interpreter waits for the warm-up thread


def warm_up() -> None:
    """Import the SDK (and the markdown stack) in the background so the first cell is quick."""

    def _import() -> None:
        try:
            import anthropic  # noqa: F401

            from . import _markdown

            _markdown.warm_up()
        except Exception:  # a broken install is reported when a cell really needs it
            pass

    thread = threading.Thread(target=_import, name="qwen-magic-warm-up", daemon=True)
    thread.start()
    # A daemon thread still inside native code (nh3, pydantic-core) when the interpreter
    # finalizes is unwound through it, which aborts the process ("FATAL: exception not
    # rethrown"); exit waits for the warm-up instead, which is done within a second.
    atexit.register(thread.join, _WARM_UP_EXIT_WAIT)


def _service_message(exc: anthropic.APIStatusError) -> str:
    """The service's own error message, if the body carries one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc)


def translate(exc: BaseException, *, model: str, base_url: str) -> QwenError:
    """Turn an SDK or transport exception into a short message that says what to do."""
    error = _translate(exc, model=model, base_url=base_url)
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if key and key in str(error):  # a service that echoes the key must not put it on screen
        from ._text import masked

        error.args = (str(error).replace(key, masked(key)),)
    return error


def malformed_stream(detail: str, base_url: str) -> ServiceError:
    """The error for an event stream the SDK could not read (not JSON, or not the expected shape)."""
    return ServiceError(
        f"The service sent a malformed event stream ({detail}); the answer so far is kept. Run the cell "
        f"again; if it keeps happening, check that {base_url} is DashScope's Anthropic-compatible endpoint."
    )


def _translate(exc: BaseException, *, model: str, base_url: str) -> QwenError:
    import json

    import anthropic
    import httpx2

    if isinstance(exc, QwenError):
        return exc
    if isinstance(exc, json.JSONDecodeError):  # an SSE ``data:`` line that is not JSON
        return malformed_stream(f"an event that is not JSON: {exc.msg} at character {exc.pos}", base_url)
    if isinstance(exc, UnicodeEncodeError):
        where = exc.object[max(0, exc.start - 20) : exc.start] if isinstance(exc.object, str) else ""
        return QwenError(
            f"The request holds text that cannot be sent as UTF-8 ({exc.reason}: {exc.object[exc.start:exc.end]!a}"
            + (f" after {where!r}" if where else "")
            + "). It is usually a lone surrogate from a broken decode: clean the text "
            "(e.g. `s.encode('utf-8', 'replace').decode()`) and run the cell again."
        )
    if isinstance(exc, httpx2.TimeoutException) and not isinstance(exc, httpx2.ConnectTimeout):
        # The SDK turns timeouts before the answer began into APITimeoutError; a raw one
        # comes from reading the body: the service started answering, then went quiet.
        return ConnectionFailed(
            "The answer stalled: the service started answering, then sent nothing for longer than the "
            "timeout; what arrived is kept. Run the cell again, or wait longer with "
            "`%qwen config timeout=300` (seconds)."
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return ConnectionFailed(
            f"No answer from {base_url} in time. Try again, or raise the limit with `%qwen config timeout=300`."
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ConnectionFailed(
            f"Could not reach {base_url} ({_cause(exc)}). Check the network, the region "
            "(`%qwen config region=intl`) or DASHSCOPE_BASE_URL."
        )
    if isinstance(exc, anthropic.APIStatusError):
        status, detail = exc.status_code, _service_message(exc)
        kind = getattr(exc, "type", None) or (
            exc.body.get("error", {}).get("type") if isinstance(exc.body, dict) else None
        )
        if status == 200:  # an `event: error` after the stream had started
            return ServiceError(
                f"The service stopped the answer with an error ({kind or 'error'}: {detail}). Run the cell again.",
                status,
                kind,
            )
        if status in (401, 403):
            text = (
                f"{status}: the key was rejected ({detail}). Check {KEY_VARIABLE}, and that "
                "the key belongs to this region (`%qwen config region=cn|intl|us`)."
            )
        elif status == 404:
            other = _other_model(model)
            text = (
                f"404: model {model!r} was not found ({detail}). Pick another with "
                f"`%qwen config model={other}` or `-m {other}`."
            )
        elif status == 400:
            text = f"400: the service refused the request: {detail}"
            if "arrearage" in detail.lower():
                text += " (the account is in arrears; top it up in the console)."
            elif _HISTORY.search(detail):
                text += (
                    " If that is an earlier turn's message, start the conversation afresh: "
                    "`%%qwen --new`, or `%qwen reset`."
                )
        elif status == 429:
            text = (
                f"429: rate limit or quota exceeded ({detail}), still after retrying. Wait a "
                "moment and run the cell again."
            )
        elif status == 529:
            text = f"529: the service is overloaded ({detail}). Try again shortly."
        elif status >= 500:
            text = f"{status}: the service had an internal error ({detail}). Try again shortly."
        else:
            text = f"{status}: {detail}"
        return ServiceError(text, status, kind)
    if isinstance(exc, (httpx2.HTTPError, OSError)):
        # A connection cut mid-stream surfaces as a raw transport error, not an SDK one.
        return ConnectionFailed(
            f"The connection to {base_url} broke before the answer finished ({_cause(exc)}). Run the cell again."
        )
    return QwenError(f"{type(exc).__name__}: {exc}")


# A refusal that points into the request's messages (or at a tool call): it may be the history.
_HISTORY = re.compile(r"\bmessages\.\d+|tool_use|tool_result", re.I)


def _other_model(failed: str) -> str:
    """A listed model to suggest instead of ``failed``: the closest spelling, never ``failed`` itself."""
    import difflib

    others = [m for m in KNOWN_MODELS if m.lower() != failed.strip().lower()]
    close = difflib.get_close_matches(failed.strip().lower(), others, n=1, cutoff=0.75)
    return close[0] if close else others[0]


def _cause(exc: BaseException) -> str:
    """The innermost cause's text, short."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "…"
