"""Shared fixtures: the local DashScope-compatible server and a real IPython kernel."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_dashscope import FakeDashScope
from kernel_harness import Kernel


@pytest.fixture(scope="session")
def server() -> Iterator[FakeDashScope]:
    with FakeDashScope() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_server(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames or "kernel" in request.fixturenames:
        request.getfixturevalue("server").reset()


@pytest.fixture(scope="session")
def kernel(server: FakeDashScope) -> Iterator[Kernel]:
    k = Kernel(server)
    yield k
    k.stop()


@pytest.fixture
def fresh(kernel: Kernel) -> Kernel:
    """The shared kernel with conversations and settings back to their defaults."""
    result = kernel.run(
        "%qwen reset --all\n"
        "import os\n"
        f"os.environ['DASHSCOPE_API_KEY'] = {kernel.server.api_key!r}\n"
        f"os.environ['DASHSCOPE_BASE_URL'] = {kernel.server.url!r}\n"
        "_qm = get_ipython().magics_manager.registry['QwenMagics']\n"
        "_qm.totals, _qm.requests = type(_qm.totals)(), 0\n"
        "for _name in _qm.class_trait_names(config=True):\n"
        "    _qm.traits()[_name].set(_qm, _qm.traits()[_name].default())\n"
        # Notebook context is on by default; these tests assert exact prompts, so it is off here.
        # tests/test_kernel_context.py turns it back on.
        "_qm.context = 'off'\n"
    )
    assert result.status == "ok", result.error_text
    return kernel
