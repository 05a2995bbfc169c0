"""Shared helpers of the benchmarks: the test harness on sys.path, table printing, results, versions.

Importing this module puts ``tests/`` on ``sys.path``: import it before ``fake_dashscope``/``kernel_harness``
(import sorting keeps ``from _common import ...`` ahead of them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
RESULTS = Path(__file__).resolve().parent / "results"

for _path in (str(TESTS), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


KERNEL_LOG = Path(tempfile.gettempdir()) / "qwen-magic-bench-kernel-stderr.log"
_log_mode = "wb"


@contextlib.contextmanager
def kernel_stderr() -> Iterator[None]:
    """Kernels started inside write their stderr (ipykernel's TCP warning, …) to ``KERNEL_LOG``, not the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    global _log_mode
    with open(KERNEL_LOG, _log_mode) as log:
        _log_mode = "ab"  # truncated once per run, then appended to
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def kernel_pid(kernel: Any) -> int:
    """The kernel's process id, from the jupyter_client manager, checked against the kernel itself."""
    manager = kernel.manager
    process = getattr(getattr(manager, "provisioner", None), "process", None)  # jupyter_client >= 7
    pid = getattr(process, "pid", None)
    if pid is None:
        pid = getattr(getattr(manager, "kernel", None), "pid", None)  # older jupyter_client
    if pid is None:
        raise RuntimeError("cannot find the kernel's pid through its KernelManager")
    reported = kernel.run("import os as _bench_os\nprint(_bench_os.getpid(), end='')").stdout.strip()
    if reported != str(pid):
        raise RuntimeError(f"KernelManager says pid {pid} but the kernel says {reported!r}")
    return int(pid)


def environment() -> dict[str, Any]:
    versions = {}
    for name in ("anthropic", "ipykernel", "ipython", "jupyter_client", "pyzmq", "markdown-it-py", "nh3"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for n, row in enumerate(cells):
        out.append("|".join(f" {c:<{w}} " for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line, and the ``--no-fail`` that run_all.py passes to each."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--no-fail", action="store_true", help="report only: exit 0 even if a target is missed")
    return parser
