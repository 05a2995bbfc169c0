"""qwen-magic: ask Qwen models from Jupyter and IPython with ``%%qwen``."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension", "tool", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    # ``qwen_magic.tool`` is imported on first use: ``import qwen_magic`` stays cheap.
    if name == "tool":
        from ._tools import tool

        return tool
    raise AttributeError(f"module 'qwen_magic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%qwen``/``%qwen``; the SDK is imported in the background, not here."""
    from ._client import warm_up
    from ._magic import QwenMagics

    ipython.register_magics(QwenMagics(shell=ipython))
    warm_up()


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and their settings object."""
    magics = ipython.magics_manager.registry.pop("QwenMagics", None)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("qwen", None)
    if magics is not None:
        ipython.events.unregister("pre_run_cell", magics._remember_cell)
        magics.capture.uninstall()
        if magics in ipython.configurables:
            ipython.configurables.remove(magics)
