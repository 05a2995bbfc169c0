"""A Jupyter server and headless Chromium for the browser tests, and the page readers they share.

Both browser modules (JupyterLab in ``test_browser.py``, Notebook 7 in
``test_browser_notebook.py``) start a server the same way: its own config, data, runtime,
settings and IPython dirs, a random token, a free port, no news or update checks, and
every kernel it started gone when it stops. Chromium is Debian's (``/usr/bin/chromium``:
Playwright's own browser download does not work on these machines).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_dashscope import FakeDashScope
from kernel_harness import ROOT, kernel_env

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps calling hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDGET_TROUBLE = ("Error displaying widget", "Loading widget")
KERNEL_STATUS = "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status ?? null"


def missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            return f'{package} is not installed: pip install -e ".[test,browser]"'
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)"
    return None


def skip_unless_ready(reason: str | None) -> None:
    """Skip the calling test module at collection, unless CI requires it to run.

    One skip for the module, raised from this one line, so the summary says why once for
    every browser module instead of once per test. With ``QWEN_MAGIC_BROWSER_REQUIRED=1``
    nothing is skipped here: ``require`` (the ``needs`` fixtures) turns the reason into a failure.
    """
    if reason is not None and os.environ.get("QWEN_MAGIC_BROWSER_REQUIRED") != "1":
        pytest.skip(f"browser test: {reason}", allow_module_level=True)


def require(reason: str | None) -> None:
    """Fail when a browser test cannot run (only reached when ``skip_unless_ready`` did not skip)."""
    if reason is not None:
        pytest.fail(f"browser test required but cannot run: {reason}", pytrace=False)


def artifacts_dir() -> Path:
    """Where screenshots go: ``$QWEN_MAGIC_ARTIFACTS``, else ``artifacts/`` in the checkout."""
    path = Path(os.environ.get("QWEN_MAGIC_ARTIFACTS") or ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    """A running Jupyter server: where it listens, its token and the folder it serves."""

    url: str
    token: str
    root: Path
    log: Path

    def page_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
        return json.loads(data) if data else None

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@contextmanager
def serve_jupyter(app: str, title: str, fake: FakeDashScope, base: Path, *flags: str) -> Iterator[Lab]:
    """Run ``jupyter APP`` with dirs of its own under ``base``, pointed at ``fake``; stop it and its kernels after."""
    import psutil

    dirs = {name: base / name for name in ("root", "config", "data", "runtime", "ipython", "settings", "workspaces")}
    for path in dirs.values():
        path.mkdir()
    # No news or update checks: they would reach the internet and put a toast on the page.
    notification = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = kernel_env(
        # Replaces only the user data dir: the system one (sys.prefix/share/jupyter) still
        # holds the widgets labextension and the python3 kernelspec.
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        DASHSCOPE_BASE_URL=fake.url,
        DASHSCOPE_API_KEY=fake.api_key,
        JUPYTER_PATH=None,
    )
    port, token = free_port(), secrets.token_hex(16)
    log = base / f"{app}.log"
    command = [
        sys.executable, "-m", "jupyter", app, "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands as the menus do
        "--LabApp.extension_manager=readonly",  # no PyPI queries
        *flags,
    ]  # fmt: skip
    if os.geteuid() == 0:  # CI machines run as root
        command.append("--allow-root")
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=dirs["root"])
    running = Lab(f"http://127.0.0.1:{port}", token, dirs["root"], log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{title} exited with {process.returncode}:\n{running.log_tail()}")
            try:
                running.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{title} did not answer in 90 s:\n{running.log_tail()}") from None
                time.sleep(0.2)
        yield running
    finally:
        # Kernels run in sessions of their own: note them before asking the server to stop.
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()


@contextmanager
def chromium(profile: Path, artifacts: Path, height: int, last: str) -> Iterator[Any]:
    """Headless Chromium with a fresh profile; on the way out, a screenshot of every open page (``last`` names them)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),  # a fresh, empty --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": height},
        )
        try:
            yield context
        finally:
            for number, page in enumerate(context.pages):  # the last state of every open page, whatever happened
                if page.url.startswith("http"):
                    try:
                        page.screenshot(path=str(artifacts / last.format(number=number)))
                    except Exception as error:  # a crashed page must not hide the real failure
                        print(f"no last screenshot: {error}")
            context.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of these code cells, on the python3 kernel."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def output_area(page: Any, cell: int) -> Any:
    """The output area of a cell of the open notebook."""
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(cell).locator(".jp-OutputArea").first


def widget_trouble(text: str) -> list[str]:
    return [trouble for trouble in WIDGET_TROUBLE if trouble in text]


def wait_for_kernel(page: Any, status: str | None = "idle") -> None:
    page.wait_for_function(f"() => ({KERNEL_STATUS})() === {json.dumps(status)}", timeout=60_000)


@dataclass
class Run:
    """A notebook page after all cells ran, and what was seen on the way."""

    page: Any
    samples: list[str]  # the answer's rendered text, sampled while it streamed
    statuses: list[str]  # the live footer widget's text, at the same moments
    live_thinking: str  # the thinking section's summary while it streamed open
    seconds: float
    errors: list[str]  # uncaught exceptions in the page
    dialogs: list[str]
    popups: list[str]


def watch_page(page: Any) -> tuple[list[str], list[str], list[str]]:
    """Collect the page's uncaught errors (with their stacks), its dialogs (dismissed) and popups (closed)."""
    errors: list[str] = []
    dialogs: list[str] = []
    popups: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error.stack)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("popup", lambda popup: (popups.append(popup.url), popup.close()))
    return errors, dialogs, popups


# Whether the open notebook has unsaved changes: JupyterLab marks its tab; Notebook 7 has no tab to mark.
LAB_DIRTY = "() => document.querySelector('.jp-mod-dirty') !== null"
MODEL_DIRTY = "() => window.jupyterapp.shell.currentWidget.context.model.dirty"


def save(page: Any, dirty: str = LAB_DIRTY) -> None:
    """Save the open notebook with Ctrl+S, as a person would, and wait until it is saved."""
    page.locator(".jp-NotebookPanel .jp-Cell").first.locator(".jp-InputPrompt").click()  # command mode
    page.keyboard.press("Control+s")
    page.wait_for_function(f"() => !({dirty})()", timeout=20_000)


def shut_down(page: Any) -> None:
    """Shut the notebook's kernel down from the menu command, then close the tab."""
    page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:shutdown')")
    wait_for_kernel(page, None)
    page.close()


def assert_saved_answers(path: Path, cells: Sequence[int]) -> None:
    """The notebook on disk holds these answers, each with its static footer and no live widget."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in cells:
        saved_outputs = json.dumps(notebook.cells[cell].outputs)
        assert "qwen-usage" in saved_outputs, "the save did not reach the disk"
        assert "widget-view" not in saved_outputs, "an answer was saved with a live widget in it"
