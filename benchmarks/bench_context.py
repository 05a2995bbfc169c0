"""What capturing the notebook costs a print-heavy cell: ``python benchmarks/bench_context.py``.

One real kernel runs the same cell — 1,000,000 short lines printed (``print(i)``) — with
the extension loaded (the cell's output captured: a bounded head and tail) and with it
unloaded (``%unload_ext``: nothing captured), interleaved ``--repeats`` times each after a
warm-up of each. Wall time is measured by the client, from sending the execute request to
the kernel's idle status after the last output: what the user waits for. The time inside
the kernel (the loop and the final flush) and the kernel's CPU time (all its threads, from
``/proc/<pid>/task/*/schedstat``) are reported too: on a busy machine wall time is noisy,
CPU time much less so. Targets: the median over rounds of each round's wall-time ratio
(the two runs of a round are adjacent, so they share the machine's load) at most 1.05,
and the same for the kernel's CPU time; the least-disturbed (fastest) runs and the plain
medians are shown too. The run also checks that the outputs the
frontend received are the same both ways (1,000,000 lines, in order) and that the capture
kept only a bounded head and tail.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from _common import arguments, environment, kernel_pid, kernel_stderr, median, table, verdict, write_json

# isort: split
from fake_dashscope import FakeDashScope
from kernel_harness import Kernel

LINES = 1_000_000
TARGET = 1.05
CELL = (
    "import sys as _s, time as _t\n"
    "_t0 = _t.perf_counter()\n"
    f"for _i in range({LINES}):\n"
    "    print(_i)\n"
    "_s.stdout.flush()\n"
    "_bench_inside = _t.perf_counter() - _t0\n"
)


def cpu_seconds(pid: int) -> float:
    """CPU time of all the kernel's threads (nanosecond counters where Linux has them)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def run_cell(kernel: Kernel, pid: int) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    run = kernel.run(CELL, timeout=600)
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    if run.status != "ok":
        raise RuntimeError(run.error_text)
    inside = float(kernel.run("print(_bench_inside, end='')").stdout)
    text = run.stdout
    return {"wall": wall, "cpu": cpu, "inside": inside, "lines": text.count("\n"), "exact": text == EXPECTED}


def captured_size(kernel: Kernel) -> str:
    code = (
        "_c = [c for c in get_ipython().magics_manager.registry['QwenMagics'].capture.cells if '_bench_inside =' in c.source][-1]\n"
        "print(_c.stdout.total, len(_c.stdout.head) + len(_c.stdout.tail), end='')"
    )
    return kernel.run(code).stdout


EXPECTED = "".join(f"{i}\n" for i in range(LINES))


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved runs of each (default 5)")
    args = parser.parse_args(argv)
    samples: dict[str, list[dict[str, Any]]] = {"capture": [], "plain": []}
    with FakeDashScope() as server, kernel_stderr():
        kernel = Kernel(server)
        pid = kernel_pid(kernel)
        try:
            loaded = True

            def state(want: bool) -> None:
                nonlocal loaded
                if want != loaded:
                    kernel.run("%load_ext qwen_magic" if want else "%unload_ext qwen_magic")
                    loaded = want

            for warm in (True, False):
                state(warm)
                run_cell(kernel, pid)
            kept = ""
            for repeat in range(args.repeats):
                # Alternate which goes first, so drift in the machine's load falls on both.
                for mode in ("capture", "plain") if repeat % 2 == 0 else ("plain", "capture"):
                    state(mode == "capture")
                    samples[mode].append(run_cell(kernel, pid))
                    if mode == "capture":
                        kept = captured_size(kernel)
        finally:
            kernel.stop()
    wall = {mode: median([s["wall"] for s in runs]) for mode, runs in samples.items()}
    inside = {mode: median([s["inside"] for s in runs]) for mode, runs in samples.items()}
    cpu = {mode: median([s["cpu"] for s in runs]) for mode, runs in samples.items()}
    fastest = {mode: min(s["wall"] for s in runs) for mode, runs in samples.items()}
    pairs = list(zip(samples["capture"], samples["plain"], strict=True))
    ratio = median([c["wall"] / p["wall"] for c, p in pairs])
    cpu_ratio = median([c["cpu"] / p["cpu"] for c, p in pairs])
    spread = [round(c["wall"] / p["wall"], 3) for c, p in pairs]
    exact = all(s["exact"] for runs in samples.values() for s in runs)
    total, kept_chars = (int(n) for n in kept.split())
    rows = [
        ["wall time with ÷ without, median of rounds", f"{ratio:.3f}", f"({min(spread)}–{max(spread)})", f"≤ {TARGET}", verdict(ratio <= TARGET)],
        ["kernel CPU with ÷ without, median of rounds", f"{cpu_ratio:.3f}", "", f"≤ {TARGET}", verdict(cpu_ratio <= TARGET)],
        ["wall time, client (least disturbed)", f"{fastest['capture']:.2f} s", f"{fastest['plain']:.2f} s", "info", "-"],
        ["wall time, client (median)", f"{wall['capture']:.2f} s", f"{wall['plain']:.2f} s", "info", "-"],
        ["time inside the kernel (median)", f"{inside['capture']:.2f} s", f"{inside['plain']:.2f} s", "", ""],
        ["  with capture ÷ without", f"{inside['capture'] / inside['plain']:.3f}", "", "info", "-"],
        ["kernel CPU time (median)", f"{cpu['capture']:.2f} s", f"{cpu['plain']:.2f} s", "info", "-"],
        ["outputs identical (1,000,000 lines)", str(exact), str(exact), "True", verdict(exact)],
        ["captured chars kept / printed", f"{kept_chars:,} / {total:,}", "", "bounded", verdict(kept_chars <= 12_000)],
    ]
    print(table(f"bench_context: {LINES:,} printed lines, {args.repeats} interleaved runs each", ["metric", "capture", "no extension", "target", ""], rows))
    path = write_json(
        "context.json",
        {
            "lines": LINES,
            "repeats": args.repeats,
            "samples": samples,
            "median_wall": wall,
            "fastest_wall": fastest,
            "median_inside": inside,
            "median_cpu": cpu,
            "ratio": ratio,
            "round_ratios": spread,
            "cpu_ratio": cpu_ratio,
            "target": TARGET,
            "environment": environment(),
        },
    )
    print(f"results: {path}")
    ok = ratio <= TARGET and cpu_ratio <= TARGET and exact and kept_chars <= 12_000
    return 0 if ok or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
