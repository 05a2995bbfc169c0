"""The README's examples are real: its code blocks and magic examples run in a kernel against the local server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kernel_harness import Kernel
from responders import responder

pytestmark = pytest.mark.kernel

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)
SPAN = re.compile(r"`(%%?qwen[^`]*)`")
# Syntax descriptions, not examples: placeholders and alternatives.
PLACEHOLDER = re.compile(r"[\[\]…|<>?]|\b(?:NAME|FILE|N|T|X|F,G|f,g|key=value|F\.ipynb)\b")


def python_blocks() -> list[str]:
    """Every fenced block whose info string is exactly ``python``, in document order."""
    return [m["body"] for m in BLOCK.finditer(README) if m["info"].strip() == "python"]


def magic_examples() -> list[str]:
    """One-line ``%%qwen …``/``%qwen …`` examples from the README's tables and prose."""
    outside_blocks = BLOCK.sub("", README)
    found = []
    for span in SPAN.findall(outside_blocks):
        if PLACEHOLDER.search(span) or span in found:
            continue
        found.append(span)
    return found


@pytest.fixture(scope="module")
def readme_kernel(server, tmp_path_factory):
    kernel = Kernel(server, HOME=str(tmp_path_factory.mktemp("home")))
    kernel.run(f"import os; os.chdir({str(tmp_path_factory.mktemp('cwd'))!r})")
    yield kernel
    kernel.stop()


def test_the_readme_has_examples_to_run():
    assert len(python_blocks()) >= 8
    assert len(magic_examples()) >= 20


def test_every_python_block_runs_in_order(readme_kernel, server):
    server.responder = responder
    for number, block in enumerate(python_blocks(), 1):
        run = readme_kernel.run(block, timeout=60)
        assert run.status == "ok", f"README python block {number} failed:\n{block}\n{run.error_text}{run.stderr}"
        if block.startswith("%%qwen") and "--system" not in block.splitlines()[0]:
            assert run.markdown, f"README block {number} showed no answer:\n{block}"


def test_every_magic_example_runs(readme_kernel, server, tmp_path):
    server.responder = responder
    readme_kernel.run(f"%qwen replay --stop\n%qwen record --stop\nimport os; os.chdir({str(tmp_path)!r})")
    setup = readme_kernel.run(
        "import qwen_magic\n@qwen_magic.tool\ndef f(x: int) -> int:\n    \"\"\"Double x.\"\"\"\n    return 2 * x\ng = f"
    )
    assert setup.status == "ok", setup.error_text
    for example in magic_examples():
        code = example + ("\nWhat is 2 + 2?" if example.startswith("%%qwen") else "")
        if example.startswith("%%qwen --system"):
            code = example + "\nYou are terse."
        run = readme_kernel.run(code, timeout=60)
        assert run.status == "ok", f"README example failed: {example}\n{run.error_text}{run.stderr}"
        assert "UsageError" not in run.stderr, f"README example failed: {example}\n{run.stderr}"
