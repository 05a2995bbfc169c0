"""What can go wrong, and how it is shown.

User mistakes (a bad flag, a missing key, an empty prompt) are IPython's ``UsageError``,
which IPython prints as one line. Failures of the service or the network are
``QwenError``s: they fail the cell (so *Run All* stops) but render as a short message
instead of a traceback, through IPython's ``_render_traceback_`` hook.

    Exception
    └── QwenError              a request did not produce a complete answer
        ├── ServiceError       the service answered with an error (status, type)
        ├── ConnectionFailed   no answer: refused, timed out, or cut mid-stream
        ├── Interrupted        the user interrupted the kernel while it streamed
        └── InvalidValue       -o NAME --schema/--json: no valid value came, even after repairs
"""

from __future__ import annotations

import sys


class QwenError(Exception):
    """A request that failed; shown as a short message, never as a traceback."""

    def _render_traceback_(self) -> list[str]:
        from ._text import visible_controls

        # The message may echo the service's text: its control characters are shown, not obeyed.
        message = visible_controls(str(self))
        return [f"\x1b[1;31mqwen:\x1b[0m {message}" if _colour() else f"qwen: {message}"]


def _colour() -> bool:
    """Red like IPython's own error names: under a kernel (frontends render ANSI) or on a terminal, never into a pipe."""
    from ._ipython import get_ipython

    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return True
    if shell is not None and str(getattr(shell, "colors", "")).lower() == "nocolor":
        return False
    from ._terminal import is_terminal

    return is_terminal(sys.stdout)


class ServiceError(QwenError):
    """The service answered with an error status or a mid-stream error event."""

    def __init__(self, message: str, status: int | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type


class ConnectionFailed(QwenError):
    """The service could not be reached, did not answer in time, or cut the stream."""


class Interrupted(QwenError):
    """The kernel was interrupted while the answer streamed."""


class InvalidValue(QwenError):
    """``--schema``/``--json``: the answers gave no valid value; the variable was not assigned."""
