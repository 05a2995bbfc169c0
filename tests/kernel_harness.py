"""A real IPython kernel driven like a frontend: the tests' and benchmarks' window on outputs."""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_dashscope import FakeDashScope

ROOT = Path(__file__).resolve().parent.parent


# What would point a child process elsewhere than the test's own server, or replay a cassette.
LEAKS = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "QWEN_MAGIC_REPLAY")


def kernel_env(**changes: str | None) -> dict[str, str]:
    """This environment for a kernel or server we start: this checkout importable, no ``LEAKS``, then ``changes`` (None unsets)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for name in LEAKS:
        env.pop(name, None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def is_markdown(data: dict[str, Any]) -> bool:
    """Whether an output's data is model markdown: rendered (``markdown_bundle``) or a code block."""
    marker = '<div class="qwen-markdown">'
    return marker in data.get("text/html", "")[:40] or data.get("text/markdown", "").startswith(marker)


def shown(data: dict[str, Any]) -> str:
    """What an answer output gives the frontend: its HTML, or a code block's markdown (``answer_bundles``)."""
    return data.get("text/html") or data.get("text/markdown", "")


@dataclass
class Execution:
    """What a frontend received for one execute request."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.reply.get("status", "?")

    def of(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The cell's final outputs, with display updates applied as a frontend would."""
        outputs: list[dict[str, Any]] = []
        by_id: dict[str, list[int]] = {}
        for msg in self.messages:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "clear_output":
                outputs, by_id = [], {}
            elif kind in ("display_data", "execute_result"):
                display_id = content.get("transient", {}).get("display_id")
                if display_id:
                    by_id.setdefault(display_id, []).append(len(outputs))
                outputs.append({"output_type": kind, "data": dict(content["data"])})
            elif kind == "update_display_data":
                for index in by_id.get(content["transient"]["display_id"], []):
                    outputs[index]["data"] = dict(content["data"])
            elif kind == "stream":
                outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind == "error":
                outputs.append({"output_type": "error", **content})
        return outputs

    def marked(self, marker: str) -> list[dict[str, Any]]:
        """The data of the outputs whose HTML holds ``marker`` (a class such as ``qwen-tool``)."""
        return [o["data"] for o in self.outputs if marker in o.get("data", {}).get("text/html", "")]

    def data(self, mime: str) -> list[str]:
        return [o["data"][mime] for o in self.outputs if "data" in o and mime in o["data"]]

    @property
    def markdown(self) -> str:
        """The markdown of the outputs that show rendered markdown (their plain text is the markdown)."""
        return "".join(o["data"].get("text/plain", "") for o in self.outputs if is_markdown(o.get("data", {})))

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("name") == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("name") == "stderr")

    @property
    def error_text(self) -> str:
        return "\n".join("\n".join(o["traceback"]) for o in self.outputs if o["output_type"] == "error")


class Kernel:
    """A real IPython kernel, with qwen_magic loaded, pointed at the fake server."""

    def __init__(self, server: FakeDashScope, **env: str) -> None:
        from jupyter_client.manager import KernelManager

        self.server = server
        environment = kernel_env(DASHSCOPE_BASE_URL=server.url, DASHSCOPE_API_KEY=server.api_key, **env)
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=environment)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.run("%load_ext qwen_magic")

    def run(
        self, code: str, *, cell_id: str | None = None, timeout: float = 30, interrupt_after: float | None = None
    ) -> Execution:
        """Execute ``code`` and collect every iopub message until the kernel is idle."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        metadata = {"cellId": cell_id} if cell_id else {}
        msg = self.client.session.msg("execute_request", content, metadata=metadata)
        self.client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        execution = Execution()
        deadline = time.monotonic() + timeout
        interrupted = interrupt_after is None
        started = time.monotonic()
        while True:
            if not interrupted and time.monotonic() - started >= interrupt_after:
                self.manager.interrupt_kernel()
                interrupted = True
            try:
                message = self.client.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no idle status within {timeout} s for {code!r}") from None
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            message["received_at"] = time.monotonic()
            if message["msg_type"] == "status":
                if message["content"]["execution_state"] == "idle":
                    break
                continue
            execution.messages.append(message)
        reply = self.client.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.client.get_shell_msg(timeout=timeout)
        execution.reply = reply["content"]
        return execution

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
