"""Run every benchmark and print their tables: ``python benchmarks/run_all.py [--no-fail]``."""

from __future__ import annotations

import argparse
import sys
import time

import bench_cache
import bench_context
import bench_load
import bench_streaming


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fail", action="store_true", help="report only: exit 0 even if a target is missed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    codes = []
    for bench in (bench_load, bench_streaming, bench_cache, bench_context):
        codes.append(bench.main(["--no-fail"] if args.no_fail else []))
        print()
    print(f"all benchmarks: {time.monotonic() - started:.0f} s; " + ("all targets met" if not any(codes) else
          "some targets MISSED (see above)"))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
