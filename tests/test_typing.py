"""mypy, strict as ``[tool.mypy]`` in pyproject.toml sets it, finds nothing wrong in the package.

The data path (prompt → blocks → conversation → turn → tools → cassette) types its content
blocks, messages and requests with the SDK's TypedDicts (``qwen_magic._blocks``), so a
block built with a misspelt key or a wrong ``type`` is an error here, not a 400 from the
service. The second test shows the check is live: a wrong block in a module of its own fails.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import mypy.api as mypy_api  # a test dependency: a missing mypy fails here, it is not skipped
import pytest

import qwen_magic

ROOT = Path(qwen_magic.__file__).parent.parent
CONFIG = ROOT / "pyproject.toml"
# The whole package is held to it.
CHECKED = re.compile(r"^qwen_magic/")
ERROR = re.compile(r"^(?P<path>[^:\n]+\.py):\d+: error: .*$", re.MULTILINE)


def _mypy(*args: str, cache: Path) -> str:
    stdout, stderr, _ = mypy_api.run(["--config-file", str(CONFIG), "--cache-dir", str(cache), *args])
    assert "error: " in stdout or "Success" in stdout or "Found" in stdout, stderr or stdout
    return stdout


def _errors(report: str, wanted: re.Pattern[str]) -> list[str]:
    return [m.group(0) for m in ERROR.finditer(report) if wanted.match(m.group("path").replace("\\", "/"))]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_the_package_is_clean_under_strict_mypy(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.chdir(ROOT)  # the config's ``files`` and the report's paths are relative to it
    report = _mypy(cache=cache)
    assert "checked" in report.splitlines()[-1] or "Success" in report  # it ran over the package
    assert _errors(report, CHECKED) == []


def test_a_wrong_block_is_a_type_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    monkeypatch.chdir(ROOT)
    sample = tmp_path / "wrong_blocks.py"
    sample.write_text(
        textwrap.dedent(
            """\
            from __future__ import annotations

            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from qwen_magic._blocks import Block, Message, Request


            def build(prompt: list[Block]) -> Request:
                typo: Block = {"type": "text", "txt": "hello"}
                unknown: Block = {"type": "audio", "source": {"type": "url", "url": "https://x/a.mp3"}}
                message: Message = {"role": "system", "content": [typo, unknown, *prompt]}
                return {"model": "qwen3.6-plus", "messages": [message], "thinking": {"type": "disabled"}}
            """
        )
    )
    report = _mypy(str(sample), cache=cache)
    found = _errors(report, re.compile(re.escape(str(sample).replace("\\", "/"))))
    lines = {int(line.split(":")[1]) for line in found}
    # The misspelt key, the block the API has no type for, the role, the missing max_tokens.
    assert {10, 11, 12, 13} <= lines, report
