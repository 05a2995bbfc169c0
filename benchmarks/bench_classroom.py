"""A classroom on one server: 10 kernels of one ``jupyter_server`` stream a 20k answer at once.

What the server process pays, and what each browser receives, while every kernel streams the
same ~20,000-character answer from the local DashScope-compatible server at the same moment:
``%%qwen`` against the naive pattern (``update_display(Markdown(snapshot))`` on every delta).
Measured: the ``jupyter_server`` process's CPU seconds (its kernels are other processes, not
counted) and the bytes of websocket frames each kernel's browser connection receives.

Not part of ``run_all.py`` (it starts a server and ten kernels, about two minutes):
``python benchmarks/bench_classroom.py [--kernels 10] [--pace 0.01]``. Results go to
``benchmarks/results/classroom.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

import psutil
from _common import environment, table, write_json

# isort: split
import shapes
from bench_streaming import NAIVE_CELL  # the naive pattern, as the streaming benchmark runs it
from fake_dashscope import FakeDashScope, Stream
from kernel_harness import kernel_env

QWEN_CELL = "%%qwen --new\nBenchmark: explain the data pipeline step by step."
SETUP_CELL = """\
%load_ext qwen_magic
import os, anthropic
from IPython.display import Markdown, display, update_display
_bench_client = anthropic.Anthropic(api_key=os.environ["DASHSCOPE_API_KEY"], base_url=os.environ["DASHSCOPE_BASE_URL"])
_BENCH_REQUEST = dict(model="qwen3.6-plus", max_tokens=4096, messages=[{"role": "user", "content": "Benchmark"}])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``jupyter_server`` subprocess whose kernels talk to the fake DashScope."""

    def __init__(self, fake: FakeDashScope) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.root = tempfile.mkdtemp(prefix="qwen-classroom-")
        env = kernel_env(DASHSCOPE_BASE_URL=fake.url, DASHSCOPE_API_KEY=fake.api_key)
        self.log = open(os.path.join(self.root, "server.log"), "wb")  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--port={self.port}", "--ip=127.0.0.1", "--no-browser",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}", "--allow-root"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"jupyter_server did not start; see {self.log.name}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Connection:
    """One browser tab's websocket to one kernel: sends cells, counts the bytes it receives."""

    def __init__(self, server: Server, kernel_id: str) -> None:
        self.server, self.kernel_id, self.session = server, kernel_id, uuid.uuid4().hex
        self.received = 0
        self.ws: Any = None

    async def open(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        self.ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.server.token}"}),
                                          max_message_size=1 << 30)

    async def run(self, code: str, timeout: float = 600) -> tuple[str, int]:
        """Execute ``code``; return its status and the bytes received until the kernel went idle."""
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": self.session, "msg_type": "execute_request",
                       "version": "5.3", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        received, status, idle = 0, "?", False
        deadline = time.monotonic() + timeout
        while not (idle and status != "?"):
            frame = await asyncio.wait_for(self.ws.read_message(), max(1.0, deadline - time.monotonic()))
            if frame is None:
                raise RuntimeError("the websocket closed")
            received += len(frame if isinstance(frame, bytes) else frame.encode())
            message = json.loads(frame) if isinstance(frame, str) else {}
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message.get("msg_type") == "status" and message["content"]["execution_state"] == "idle":
                idle = True
            elif message.get("msg_type") == "execute_reply":
                status = message["content"]["status"]
        return status, received


async def _classroom(server: Server, fake: FakeDashScope, kernels: int, text: str, pace: float) -> dict[str, Any]:
    ids = [server.api("POST", "/api/kernels", {"name": "python3"})["id"] for _ in range(kernels)]
    connections = [Connection(server, kernel_id) for kernel_id in ids]
    await asyncio.gather(*(c.open() for c in connections))
    for status, _ in await asyncio.gather(*(c.run(SETUP_CELL, timeout=180) for c in connections)):
        if status != "ok":
            raise RuntimeError(f"setup failed ({status}); see {server.log.name}")
    # Warm-up: every kernel runs both cells once on a short answer.
    for code in (QWEN_CELL, NAIVE_CELL):
        fake.queue(*[Stream(text=text[:2000], chunk=8) for _ in connections])
        await asyncio.gather(*(c.run(code) for c in connections))
    results = {}
    for name, code in (("qwen-magic", QWEN_CELL), ("naive", NAIVE_CELL)):
        fake.queue(*[Stream(text=text, chunk=8, delay=pace) for _ in connections])
        cpu0, wall0 = server.cpu(), time.monotonic()
        runs = await asyncio.gather(*(c.run(code) for c in connections))
        wall, cpu = time.monotonic() - wall0, server.cpu() - cpu0
        if any(status != "ok" for status, _ in runs):
            raise RuntimeError(f"{name}: a cell failed: {[status for status, _ in runs]}")
        per_kernel = [received for _, received in runs]
        results[name] = {
            "server_cpu_s": cpu,
            "wall_s": wall,
            "ws_bytes_per_kernel": sum(per_kernel) / len(per_kernel),
            "ws_bytes_per_kernel_max": max(per_kernel),
        }
    for c in connections:
        c.ws.close()
    for kernel_id in ids:
        server.api("DELETE", f"/api/kernels/{kernel_id}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between 8-character deltas")
    args = parser.parse_args(argv)
    text = shapes.mixed(20_000)
    started = time.monotonic()
    fake = FakeDashScope().start()
    server = Server(fake)
    try:
        results = asyncio.run(_classroom(server, fake, args.kernels, text, args.pace))
    finally:
        server.stop()
        fake.stop()
    answer = len(text.encode())
    q, n = results["qwen-magic"], results["naive"]
    rows = [
        ("jupyter_server CPU, all kernels streaming", f"{q['server_cpu_s']:.2f} s", f"{n['server_cpu_s']:.2f} s",
         f"{n['server_cpu_s'] / q['server_cpu_s']:.0f}× less" if q["server_cpu_s"] else "-"),
        ("websocket bytes per kernel (÷ answer)", f"{q['ws_bytes_per_kernel']:,.0f} ({q['ws_bytes_per_kernel'] / answer:.1f}×)",
         f"{n['ws_bytes_per_kernel']:,.0f} ({n['ws_bytes_per_kernel'] / answer:,.0f}×)",
         f"{n['ws_bytes_per_kernel'] / q['ws_bytes_per_kernel']:.0f}× less"),
        ("wall time of the round", f"{q['wall_s']:.1f} s", f"{n['wall_s']:.1f} s", "-"),
    ]
    print(table(
        f"Classroom: {args.kernels} kernels of one jupyter_server stream a {len(text):,}-character answer at once "
        f"({args.pace * 1000:g} ms per 8-character delta)",
        ("metric", "qwen-magic", "naive update_display", "qwen-magic saves"), rows))
    payload = {"benchmark": "classroom", "environment": environment(), "kernels": args.kernels, "pace_s": args.pace,
               "answer_utf8_bytes": answer, "seconds": time.monotonic() - started, **results}
    print(f"results: {write_json('classroom.json', payload)} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
