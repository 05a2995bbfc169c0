"""Kernel CPU for answers that are pathological for a markdown scanner (issue 13).

Each shape is a ~100 KB answer streamed in 40-character deltas by the local server into a
``%%qwen`` cell of a real kernel; measured is the kernel's CPU time (all threads, psutil)
for the whole cell. Target: under 1 s each, i.e. the scanning is linear in the answer.

Shapes: thousands of backtick runs, nested brackets, long lines of ``$``, ``*``/``_`` and
``<``, deeply nested lists and block quotes, and a 100 KB answer of ordinary markdown for
scale. A shape that runs longer than ``--limit`` seconds of wall time is interrupted and
reported as over it.

Run: ``python benchmarks/bench_adversarial_kernel.py [--no-fail] [--size N] [--limit S]``; results go to
``benchmarks/results/adversarial_kernel.json``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import psutil
from _common import arguments, environment, kernel_pid, kernel_stderr, table, verdict, write_json

# isort: split
from answer import ANSWER
from fake_dashscope import FakeDashScope, Stream
from kernel_harness import Kernel

TARGET_CPU = 1.0  # seconds of kernel CPU for one 100 KB answer


def shapes(size: int) -> dict[str, str]:
    """The adversarial answers, each cut to ``size`` characters."""
    made = {
        "backtick runs": "".join("`" * (i % 7 + 1) + " x " for i in range(size)),
        "nested brackets": "[" * 500 + "a" + "](" * 500 + "\n",
        "dollar lines": "$" * 200 + "\n",
        "star/underscore lines": "*_" * 100 + "\n",
        "less-than lines": "<" * 200 + "\n",
        "nested lists": "".join("  " * (i % 60) + "- > item\n" for i in range(120)),
        "nested quotes": "".join(">" * (i % 100) + " q\n" for i in range(200)),
        "ordinary markdown": ANSWER,
    }
    return {name: (text * (size // len(text) + 1))[:size] for name, text in made.items()}


def measure(
    kernel: Kernel, server: FakeDashScope, process: psutil.Process, text: str, limit: float, delay: float = 0.0
) -> dict[str, Any]:
    """Kernel CPU and wall time for one cell that streams ``text``."""
    server.queue(Stream(text=text, chunk=40, delay=delay))
    before, started = process.cpu_times(), time.monotonic()
    try:
        run = kernel.run("%%qwen --new\nGo", timeout=limit)
        status = run.status
    except TimeoutError:
        kernel.manager.interrupt_kernel()
        kernel.run("pass", timeout=600)  # the interrupt lands; the kernel is idle again
        status = "interrupted"
    after = process.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"cpu_s": cpu, "wall_s": time.monotonic() - started, "status": status, "chars": len(text)}


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--size", type=int, default=100_000, help="characters per answer")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds of wall time before a shape is interrupted")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas (0: as fast as the server sends)")
    parser.add_argument("--only", default="", help="run only the shapes whose name contains this text")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with kernel_stderr(), FakeDashScope() as server:
        kernel = Kernel(server)
        try:
            process = psutil.Process(kernel_pid(kernel))
            measure(kernel, server, process, "warm-up " * 100, args.limit)
            for name, text in shapes(args.size).items():
                if args.only in name:
                    results[name] = measure(kernel, server, process, text, args.limit, args.delay)
        finally:
            kernel.stop()
    rows, missed = [], False
    for name, result in results.items():
        over = result["status"] == "interrupted"
        passed = result["cpu_s"] < TARGET_CPU and not over
        missed = missed or (not passed and name != "ordinary markdown")
        cpu = f"> {result['cpu_s']:.2f} s (interrupted)" if over else f"{result['cpu_s']:.2f} s"
        rows.append([name, f"{result['chars']:,}", cpu, f"{result['wall_s']:.2f} s", f"< {TARGET_CPU:g} s", verdict(passed)])
    pace = f" every {args.delay * 1000:g} ms" if args.delay else ""
    title = f"Adversarial answers, {args.size:,} characters each, streamed in 40-character deltas{pace}"
    print(table(title, ["shape", "chars", "kernel CPU", "wall", "target", ""], rows))
    write_json("adversarial_kernel.json", {"environment": environment(), "size": args.size, "results": results})
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
