"""qwen-magic: ask Qwen models from Jupyter and IPython with ``%%qwen``."""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any

from ._version import __version__

if _TYPE_CHECKING:  # for type checkers; at run time ``tool`` is imported on first use (below)
    from IPython.core.interactiveshell import InteractiveShell

    from ._tools import tool

__all__ = ["__version__", "load_ipython_extension", "tool", "unload_ipython_extension"]


def __getattr__(name: str) -> object:
    # ``qwen_magic.tool`` is imported on first use: ``import qwen_magic`` stays cheap.
    if name == "tool":
        from ._tools import tool

        return tool
    raise AttributeError(f"module 'qwen_magic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register ``%%qwen``/``%qwen``; the SDK is imported in the background, not here."""
    from ._client import warm_up
    from ._magic import QwenMagics

    shell: Any = ipython  # IPython leaves register_magics and magics_manager unannotated
    shell.register_magics(QwenMagics(shell=ipython))
    warm_up()


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics and their settings object."""
    shell: Any = ipython  # IPython leaves register_magics and magics_manager unannotated
    magics = shell.magics_manager.registry.pop("QwenMagics", None)
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("qwen", None)
    if magics is not None:
        shell.events.unregister("pre_run_cell", magics._remember_cell)
        magics.capture.uninstall()
        if magics in ipython.configurables:
            ipython.configurables.remove(magics)
