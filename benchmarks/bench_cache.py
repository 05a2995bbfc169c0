"""What automatic prompt caching saves on a long conversation: ``python benchmarks/bench_cache.py``.

A 20-turn conversation over a system context of about 5,000 tokens, each turn a ~300-token
question and a ~300-token answer, run twice through ``%%qwen`` against the local server
(which simulates DashScope's explicit cache and counts tokens): once with
``QwenMagics.cache = "auto"``, once with ``"off"``. The bill is compared in input-token
equivalents: input + 1.25 × cache writes + 0.1 × cache reads. Target: auto ≤ 25% of off.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from typing import Any

from _common import environment, table, verdict, write_json

# isort: split
from fake_dashscope import FakeDashScope, Stream, estimate_tokens

TURNS = 20
TARGET = 0.25


def system_context() -> str:
    sentences = [f"Clause {i}: the team reviews every change to module {i % 37} before it lands." for i in range(282)]
    return " ".join(sentences)


def question(turn: int) -> str:
    return f"Question {turn}: " + " ".join(f"how does clause {turn * 7 + i} interact with review step {i}?" for i in range(24))


def answer(turn: int) -> str:
    return f"Answer {turn}: " + " ".join(f"clause {turn * 7 + i} applies after review step {i} is done." for i in range(24))


def converse(server: FakeDashScope, shell: Any, mode: str) -> dict[str, Any]:
    server.reset()
    with contextlib.redirect_stdout(io.StringIO()):
        shell.run_line_magic("qwen", "reset --all")
        shell.run_line_magic("qwen", f"config cache={mode}")
        shell.run_cell_magic("qwen", "--system", system_context())
        for turn in range(TURNS):
            server.queue(Stream(text=answer(turn), chunk=64))
            shell.run_cell_magic("qwen", "", question(turn))
    totals = {"input": 0, "write": 0, "read": 0}
    for record in server.requests:
        usage = record.usage or {}
        totals["input"] += usage.get("input_tokens", 0)
        totals["write"] += usage.get("cache_creation_input_tokens", 0)
        totals["read"] += usage.get("cache_read_input_tokens", 0)
    totals["requests"] = len(server.requests)
    totals["equivalents"] = totals["input"] + 1.25 * totals["write"] + 0.1 * totals["read"]
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fail", action="store_true", help="report only: exit 0 even if the target is missed")
    args = parser.parse_args(argv)
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    started = time.monotonic()
    with FakeDashScope() as server:
        os.environ["DASHSCOPE_BASE_URL"] = server.url
        os.environ["DASHSCOPE_API_KEY"] = server.api_key
        shell = TerminalInteractiveShell.instance()
        shell.run_line_magic("load_ext", "qwen_magic")
        auto = converse(server, shell, "auto")
        off = converse(server, shell, "off")
    ratio = auto["equivalents"] / off["equivalents"]
    shape = {
        "turns": TURNS,
        "system_tokens": estimate_tokens(system_context()),
        "question_tokens": estimate_tokens(question(10)),
        "answer_tokens": estimate_tokens(answer(10)),
    }
    rows = [
        [key, f"{auto[key]:,.0f}", f"{off[key]:,.0f}"]
        for key in ("requests", "input", "write", "read", "equivalents")
    ]
    rows.append(["auto / off", f"{ratio:.1%}", f"target ≤ {TARGET:.0%}: {verdict(ratio <= TARGET)}"])
    title = (
        f"Prompt caching over {TURNS} turns (system ≈{shape['system_tokens']:,} tokens, "
        f"question ≈{shape['question_tokens']} and answer ≈{shape['answer_tokens']} tokens per turn)"
    )
    print(table(title, ["tokens", "cache=auto", "cache=off"], rows))
    path = write_json(
        "cache.json",
        {
            "benchmark": "cache",
            "environment": environment(),
            "seconds": time.monotonic() - started,
            "shape": shape,
            "auto": auto,
            "off": off,
            "ratio": ratio,
            "target": TARGET,
        },
    )
    print(f"results: {path.relative_to(path.parent.parent.parent)}")
    return 0 if ratio <= TARGET or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
