"""Paths the user names, checked before they are opened: a bad one is a short ``UsageError``.

Reading: only regular files. A FIFO, a socket or a device named in a cell (``/dev/stdin``,
``/dev/zero``) would hang the kernel or fill its memory, so the path is checked with
``stat`` first, opened without blocking and checked again on the open descriptor (it may
have been swapped in between), and the caller reads at most its limit plus one byte, so a
file that grew after the check is still caught.

Writing: the target must not be a folder or a special file, and its folder must exist.
A missing folder is not created: a typo in it would otherwise leave files in a new tree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from IPython.core.error import UsageError

_KINDS = (
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def reason(exc: BaseException) -> str:
    """An OS error's own words (``Permission denied``), without the errno and the path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return safe_text(exc) or type(exc).__name__


def safe_text(exc: BaseException, limit: int = 200) -> str:
    """``str(exc)`` on one line and cut; never raises, even for an exception that cannot be printed."""
    try:
        text = str(exc)
    except Exception:
        return f"(a {type(exc).__name__} that cannot be printed)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve(typed: str | Path) -> Path:
    """The absolute path ``typed`` names (``~`` expanded); a ``UsageError`` if it names none."""
    try:
        path = Path(typed).expanduser()
        return path if path.is_absolute() else Path.cwd() / path
    except (RuntimeError, OSError, ValueError) as exc:  # ~nosuchuser, a deleted working folder, NUL
        raise UsageError(f"{typed}: not a usable path ({reason(exc)}). Write the full path instead.") from None


def _where(typed: str, path: Path) -> str:
    """``typed``, with the absolute path it names when that says more."""
    return typed if str(path) == typed else f"{typed} ({path})"


def _kind(mode: int) -> str | None:
    return next((name for test, name in _KINDS if test(mode)), None)


def _not_regular(typed: str, mode: int) -> UsageError:
    if stat.S_ISDIR(mode):
        return UsageError(f"{typed} is a folder, not a file: name a file in it.")
    kind = _kind(mode) or "not a regular file"
    return UsageError(
        f"{typed} is {kind}, not a regular file, so it is not read (it could block or never end). "
        "Save the data to a file first and name that file."
    )


def open_regular(path: Path, typed: str, missing: str = "") -> tuple[BinaryIO, int]:
    """``path`` opened for reading, and its size; a ``UsageError`` unless it is a readable regular file.

    ``missing`` is added to the message when the file does not exist (what to do instead).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"No such file: {typed} (looked for {path}).{' ' + missing if missing else ''}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read {_where(typed, path)}: {reason(exc)}.") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(typed, mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        descriptor = os.open(path, flags)
    except PermissionError:
        raise UsageError(f"Cannot read {_where(typed, path)}: Permission denied. Check who may read it (ls -l).") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {_where(typed, path)}: {reason(exc)}.") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise _not_regular(typed, info.st_mode)
    return os.fdopen(descriptor, "rb"), info.st_size


def check_target(path: Path, typed: str, example: str) -> None:
    """A ``UsageError`` unless ``path`` can be written as a file: not a folder, in an existing folder.

    ``example`` is a file name to suggest when ``typed`` names a folder.
    """
    try:
        mode: int | None = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot write {_where(typed, path)}: {reason(exc)}.") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{typed} is a folder: give a file name, e.g. {os.path.join(typed, example)}.")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{typed} is {_kind(mode) or 'not a regular file'}: write to an ordinary file instead.")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UsageError(
            f"Cannot write {typed}: the folder {parent} {what}. Create it first (`!mkdir -p {parent}`) "
            "or fix the path."
        )


def write_failed(typed: str, path: Path, exc: BaseException) -> UsageError:
    """The ``UsageError`` for a write that the system refused."""
    return UsageError(
        f"Cannot write {_where(typed, path)}: {reason(exc)}. Choose a place you may write to, "
        "e.g. the notebook's folder or your home folder."
    )
