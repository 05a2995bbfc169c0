"""CPU cost of pathological answers while they stream, shape by shape.

Each shape is a ~100 kB answer built to hurt a markdown scanner: thousands of backtick
runs, nested brackets, long lines of ``$``/``*``/``_``/``<``, deeply nested lists and
quotes, an unclosed fence. It is streamed the way ``NotebookView`` paints: at a model's
pace (``RATE`` characters a second) a repaint every ``INTERVAL`` seconds finds the stable
prefix of the open tail, commits (renders once) what is finished and renders the open
tail again; at the end the rest is rendered once.

Two figures per shape, in CPU seconds (``time.process_time``):

- ``scan``: every repaint's ``stable_prefix``, each commit's render and the final render —
  the kernel's work proper; target under 1 s for 100 kB (issue 13);
- ``with live tail``: plus re-rendering the open tail at every repaint, which grows with
  the tail when one block stays open for long (reported, not a target).

Run: ``python benchmarks/bench_adversarial.py [--size N] [--no-fail]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen_magic._markdown import markdown_bundle, render_html, stable_prefix, warm_up

INTERVAL = 0.22  # seconds between repaints, as NotebookView paints
RATE = 400  # characters a second: a fast model answering
TARGET = 1.0  # CPU seconds for a 100 kB answer


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


SHAPES: dict[str, Callable[[int], str]] = {
    "backtick runs": lambda n: _repeat("".join("`" * k + "a" for k in range(1, 30)) + "\n", n),
    "backticks, one line": lambda n: _repeat("`a``b```c", n),
    "nested brackets": lambda n: "[" * (n // 2) + "]" * (n // 2),
    "nested brackets, a link": lambda n: "[" * (n // 2) + "a](b)" + "]" * (n // 2),
    "bracket links": lambda n: _repeat("[a](b [c](d ", n),
    "dollars, one line": lambda n: "$" * n,
    "dollars and words": lambda n: _repeat("$a $b c$ $5 ", n),
    "math openers": lambda n: _repeat("\\(\\[\\begin{x}$$", n),
    "stars, one line": lambda n: "x" + "*" * n,
    "underscores, one line": lambda n: "x" + "_" * n,
    "emphasis soup": lambda n: _repeat("*a_b**c__d***e", n),
    "angle brackets, one line": lambda n: "<" * n,
    "tag openers": lambda n: _repeat("<a href=", n),
    "nested lists": lambda n: _repeat("".join("  " * d + "- item\n" for d in range(40)), n),
    "nested quotes": lambda n: _repeat("".join("> " * d + "quote\n" for d in range(1, 40)), n),
    "unclosed fence": lambda n: "```python\n" + _repeat("x = [1, 2, 3]  # <b>$5</b>\n", n),
    "bare URLs and www": lambda n: _repeat("https://x.example/a_b*c www.q.example x@y.example:", n),
    "table rows": lambda n: "| a | b |\n|---|---|\n" + _repeat("| `x` | $y$ |\n", n),
    "ordinary paragraphs": lambda n: _repeat("Some *text* with `code` and $x^2$ math.\n\n", n),
}


def stream_cost(text: str, *, live: bool = False) -> float:
    """CPU seconds to stream ``text`` through stable_prefix and the renderer as the view does."""
    step = max(1, int(RATE * INTERVAL))
    start = time.process_time()
    tail, stable = "", 0
    for pos in range(step, len(text) + step, step):
        tail += text[pos - step : pos]
        stable += stable_prefix(tail[stable:])
        if stable:
            render_html(tail[:stable])
            tail, stable = tail[stable:], 0
        if live and tail:
            markdown_bundle(tail, live=True)
    if tail:
        render_html(tail)
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=100_000, help="characters per answer (default 100,000)")
    parser.add_argument("--live", action="store_true", help="also measure re-rendering the open tail")
    parser.add_argument("--no-fail", action="store_true", help="report only; exit 0 even if a target is missed")
    args = parser.parse_args()
    warm_up()
    print(f"{'shape':<26} {'scan s':>8}" + (f" {'with live tail s':>17}" if args.live else "") + "  target")
    missed = []
    for name, make in SHAPES.items():
        text = make(args.size)
        scan = stream_cost(text)
        row = f"{name:<26} {scan:8.3f}"
        if args.live:
            row += f" {stream_cost(text, live=True):17.3f}"
        verdict = "PASS" if scan < TARGET else "FAIL"
        if verdict == "FAIL":
            missed.append(name)
        print(f"{row}  < {TARGET:.0f} s {verdict}")
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
