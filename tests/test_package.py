"""The public surface and the cost of loading the extension."""

from __future__ import annotations

from helpers import run_python

import qwen_magic


def test_all_is_honest():
    public = {name for name in dir(qwen_magic) if not name.startswith("_")} | {"__version__"}
    public -= {"annotations", "Any"}
    assert set(qwen_magic.__all__) == public
    for name in qwen_magic.__all__:
        assert hasattr(qwen_magic, name)


def test_loading_imports_no_sdk_and_registers_both_magics():
    code = (
        "import sys\n"
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "import qwen_magic._client as client\n"
        "client.warm_up = lambda: None  # the background warm-up may import anything later\n"
        "shell = TerminalInteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'qwen_magic')\n"
        "heavy = [m for m in ('anthropic', 'ipywidgets', 'markdown_it', 'nh3') if m in sys.modules]\n"
        "magics = shell.magics_manager.magics\n"
        "print(heavy, 'qwen' in magics['line'], 'qwen' in magics['cell'])\n"
    )
    out = run_python("-c", code)
    assert out.stdout.strip() == "[] True True"


def test_unload_removes_the_magics():
    code = (
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "shell = TerminalInteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'qwen_magic')\n"
        "shell.run_line_magic('unload_ext', 'qwen_magic')\n"
        "magics = shell.magics_manager.magics\n"
        "print('qwen' in magics['line'], 'qwen' in magics['cell'],"
        " any(type(c).__name__ == 'QwenMagics' for c in shell.configurables))\n"
    )
    out = run_python("-c", code)
    assert out.stdout.strip() == "False False False"
