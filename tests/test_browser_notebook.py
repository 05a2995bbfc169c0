"""What a person sees in Jupyter Notebook 7, and in every saved notebook reopened.

``test_browser.py`` runs the notebook in JupyterLab; this module runs it in Notebook 7
(``jupyter notebook``, the other frontend most people have) with the same checks:
streamed markdown, thinking collapsed, the widgets, the footers, no script from model
text. It adds answers with image markup that a sanitizer may leave without a usable
``src`` and a price sentence beside inline and display math, then saves and reopens the
notebook with no kernel, in Notebook 7 and in JupyterLab: nothing the live view hides
may show up as a broken element, and dollars stay dollars while math stays math.

One server serves both frontends: ``jupyter notebook`` loads JupyterLab as a server
extension too, so ``/notebooks/…`` is Notebook 7 and ``/lab/…`` is JupyterLab, with the
same isolated dirs, random token and Chromium flags as the JupyterLab test. Needs the
``browser`` extra (which brings ``notebook``) and Debian's Chromium.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    KERNEL_STATUS,
    MODEL_DIRTY,
    Lab,
    Run,
    artifacts_dir,
    assert_saved_answers,
    chromium,
    missing,
    output_area,
    require,
    save,
    serve_jupyter,
    shut_down,
    skip_unless_ready,
    wait_for_kernel,
    watch_page,
    widget_trouble,
    write_notebook,
)
from fake_dashscope import FakeDashScope, Reply, Stream
from responders import last_user_text
from test_browser import (
    ANSWER_CELL,
    PANEL,
    PAYLOAD,
    PAYLOAD_CELL,
    PAYLOAD_QUESTION,
    QUESTION,
    STREAMED,
    THINKING,
    _watch_stream,
)

pytestmark = pytest.mark.browser


def _missing_here() -> str | None:
    """Why Notebook 7 cannot be driven here, or None."""
    reason = missing()
    if reason is None and importlib.util.find_spec("notebook") is None:
        reason = 'notebook (Jupyter Notebook 7) is not installed: pip install -e ".[test,browser]"'
    return reason


skip_unless_ready(_missing_here())

NOTEBOOK = "notebook7.ipynb"

# --- the answers the server streams, beyond those of the JupyterLab test ----------------

# JupyterLab's payloads, and a few that reach script by other roads: a frame's document,
# a form's action, markup that re-parses differently (mXSS), focus, plugins, CSS.
MORE_PAYLOADS = """\

More of them.

<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>

<form action="javascript:window.__pwned=1"><button>send</button></form>

<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=1"></style></mglyph></table></mtext></math>

<a href="data:text/html,<script>alert(1)</script>">data link</a> and [ref link][r]

[r]: javascript:window.__pwned=1

<input autofocus onfocus="window.__pwned=1"> <object data="javascript:window.__pwned=1"></object>

<p style="background:url(javascript:window.__pwned=1)">styled</p>
"""
IMAGES_QUESTION = "Show me some pictures."
# Image markup with nothing a browser can show. Sanitized, it may leave no image element
# without a usable src, live or reopened: the browser would paint a broken-image icon
# (JupyterLab gives it the alt text "Image"). The text around it stays.
IMAGES = """\
Pictures with nothing to show.

<img src=x onerror=alert(1)>

![](javascript:alert(1))

![a chart](javascript:alert(2)) and <img src="" onerror=alert(3)> and <img onerror=alert(4)>

![](data:text/html,<script>alert(5)</script>) ![](vbscript:msgbox(6))

Text after the pictures.
"""
PRICE_QUESTION = "What does the trip cost, and what is the area of a circle?"
PRICE_SENTENCE = "The ticket costs $5 and the meal $10, so $15 in total."
PRICES = f"""\
{PRICE_SENTENCE}

The area of a circle is $\\pi r^2$.

$$E = mc^2$$
"""
CELLS = [
    "%load_ext qwen_magic",
    "%qwen",
    f"%%qwen --thinking\n{QUESTION}",
    f"%%qwen\n{PAYLOAD_QUESTION}",
    f"%%qwen\n{IMAGES_QUESTION}",
    f"%%qwen\n{PRICE_QUESTION}",
]
IMAGES_CELL, PRICE_CELL = 4, 5
ANSWER_CELLS = (ANSWER_CELL, PAYLOAD_CELL, IMAGES_CELL, PRICE_CELL)


def _responder(body: dict[str, Any]) -> Reply | None:
    text = last_user_text(body)
    if QUESTION in text:
        return STREAMED
    for question, answer in (
        (PAYLOAD_QUESTION, PAYLOAD + MORE_PAYLOADS),
        (IMAGES_QUESTION, IMAGES),
        (PRICE_QUESTION, PRICES),
    ):
        if question in text:
            return Stream(text=answer, chunk=40, delay=0.01)
    return None  # echo


# --- setup: one Jupyter server for both frontends, and Chromium -------------------------


@pytest.fixture(scope="module")
def needs() -> None:
    require(_missing_here())


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir()


@pytest.fixture(scope="module")
def fake(needs: None) -> Iterator[FakeDashScope]:
    with FakeDashScope() as server:
        server.responder = _responder
        yield server


def _notebook_url(jupyter: Lab, path: str) -> str:
    return f"{jupyter.url}/notebooks/{path}?token={jupyter.token}"


@pytest.fixture(scope="module")
def jupyter(fake: FakeDashScope, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``jupyter notebook`` with its own dirs, a random token and a free port."""
    base = tmp_path_factory.mktemp("notebook7")
    flags = ("--JupyterNotebookApp.expose_app_in_browser=True",)  # window.jupyterapp in Notebook 7 too
    with serve_jupyter("notebook", "Jupyter Notebook", fake, base, *flags) as running:
        yield running


@pytest.fixture(scope="module")
def browser(needs: None, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Tall enough for the whole notebook in one screenshot.
    profile = tmp_path_factory.mktemp("chromium-profile")
    with chromium(profile, artifacts, 2200, "notebook7-last-{number}.png") as context:
        yield context


# --- what every view is checked for ------------------------------------------------------

# Every <img> in an output must have a src the browser could show: none at all, a blank
# one or one that failed to load is the broken-image icon (with its alt text, or
# JupyterLab's "Image") where the live view meant to show nothing.
BROKEN_IMAGES = """area => [...area.querySelectorAll('img')]
    .filter(img => !(img.getAttribute('src') || '').trim() || (img.complete && img.naturalWidth === 0))
    .map(img => img.outerHTML)"""
# Script that model text could bring: elements that run it, event handlers, javascript: URLs.
DANGEROUS = """area => [...area.querySelectorAll('*')].flatMap(e => [
    ...(['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'FRAME'].includes(e.tagName) ? [e.outerHTML] : []),
    ...[...e.attributes].filter(a => a.name.startsWith('on')).map(a => `${e.tagName} ${a.name}`),
    ...[...e.attributes].filter(a => /^\\s*(javascript|vbscript|data):/i.test(a.value)).map(a => `${e.tagName} ${a.name}`),
])"""


def _assert_no_broken_images(page: Any) -> None:
    """No output of the notebook on this page holds an image element that shows as broken."""
    page.wait_for_function(  # images that are still loading are judged once they finish
        "() => [...document.querySelectorAll('.jp-OutputArea img')].every(img => img.complete)", timeout=10_000
    )
    broken = {cell: output_area(page, cell).evaluate(BROKEN_IMAGES) for cell in range(len(CELLS))}
    assert not any(broken.values()), f"broken images by cell: { {c: i for c, i in broken.items() if i} }"
    text = " ".join(output_area(page, IMAGES_CELL).inner_text().split())
    assert "Pictures with nothing to show." in text and "Text after the pictures." in text, text


def _assert_prices_and_math(page: Any) -> None:
    """The price sentence shows its dollars; only the two formulas are typeset by MathJax."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    outputs = output_area(page, PRICE_CELL)
    markdown = outputs.locator(".qwen-markdown").first
    markdown.wait_for(timeout=10_000)
    # MathJax typesets after the markdown renders: wait for the two formulas, then give a
    # wrongly paired price time to become a third.
    try:
        page.wait_for_function(
            "area => area.querySelectorAll('mjx-container').length >= 2", arg=outputs.element_handle(), timeout=15_000
        )
    except PlaywrightTimeout:
        pass  # asserted below, with what was seen
    page.wait_for_timeout(500)
    text = " ".join(outputs.inner_text().split())
    formulas = outputs.locator("mjx-container").count()
    assert all(price in text for price in ("$5", "$10", "$15")), f"prices not shown as dollars: {text!r}"
    assert PRICE_SENTENCE in text, text
    assert formulas == 2, f"{formulas} typeset formulas (want 2: πr² and E = mc²) in {text!r}"
    assert outputs.locator("mjx-container[display='true']").count() == 1  # $$…$$ is display math
    assert "\\pi" not in text and "$$" not in text, text  # the math itself is typeset, not raw


def _assert_answers_render(page: Any) -> None:
    """The saved answers as they should look, with or without a kernel."""
    answer = output_area(page, ANSWER_CELL)
    assert answer.locator("h1").inner_text().startswith("Streaming report")
    assert answer.locator("pre code span[class]").count() > 5
    assert answer.locator("table th").count() == 2
    assert answer.locator("details.qwen-thinking").get_attribute("open") is None
    for cell in ANSWER_CELLS:
        outputs = output_area(page, cell)
        assert " out · " in outputs.locator(".qwen-usage").inner_text()
        assert not widget_trouble(outputs.inner_text())
        assert outputs.evaluate(DANGEROUS) == []
    assert page.evaluate("() => window.__pwned") is None


# --- the notebook, run live in Notebook 7 ------------------------------------------------


# Notebook 7.6 throws this with any notebook, no package loaded: its keyboard-shortcuts
# settings handler reads the schema of a settings plugin that is not loaded yet.
NOTEBOOK7_OWN_ERROR = "Cannot read properties of undefined (reading 'schema')"


@pytest.fixture(scope="module")
def ran(jupyter: Lab, browser: Any) -> Run:
    """Open the notebook in Notebook 7 and run all cells, watching the answer stream."""
    write_notebook(jupyter.root / NOTEBOOK, CELLS)
    page = browser.pages[0] if browser.pages else browser.new_page()
    errors, dialogs, popups = watch_page(page)
    started = time.monotonic()
    page.goto(_notebook_url(jupyter, NOTEBOOK))
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    wait_for_kernel(page)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    live_thinking = page.locator("details.qwen-thinking[open] summary").first
    live_thinking.wait_for(timeout=30_000)
    live_thinking_text = live_thinking.inner_text()
    samples, statuses = _watch_stream(page)
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-NotebookPanel .qwen-usage').length === {len(ANSWER_CELLS)}",
        timeout=60_000,
    )
    wait_for_kernel(page)
    own = [error for error in errors if NOTEBOOK7_OWN_ERROR in error]
    if own:
        print(f"Notebook 7's own errors, not counted: {own}")
    errors = [error for error in errors if NOTEBOOK7_OWN_ERROR not in error]
    return Run(page, samples, statuses, live_thinking_text, time.monotonic() - started, errors, dialogs, popups)


def test_notebook7_shows_the_answer_growing_while_it_streams(ran: Run) -> None:
    lengths = [len(sample) for sample in ran.samples]
    final = "\n".join(output_area(ran.page, ANSWER_CELL).locator(".qwen-markdown").all_inner_texts())
    print(f"all cells ran in {ran.seconds:.1f} s; answer length at each sample: {lengths}; footer: {ran.statuses}")
    assert ran.live_thinking.startswith("Thinking…"), ran.live_thinking
    assert len(set(ran.samples)) >= 3, f"fewer than 3 different states seen while streaming: {lengths}"
    assert lengths[0] < len(final) / 2 and ran.samples[-1] != final, lengths
    live = [status for status in ran.statuses if status]
    assert any("writing" in status and "characters" in status for status in live), ran.statuses


def test_notebook7_renders_the_answer_as_markdown(ran: Run) -> None:
    answer = output_area(ran.page, ANSWER_CELL)
    assert answer.locator("h1").inner_text().startswith("Streaming report")
    assert answer.locator("strong").inner_text() == "bold"
    code = answer.locator("pre code")
    assert "def greet(name: str) -> str:" in code.inner_text()
    tokens = code.evaluate("c => [...c.querySelectorAll('span[class]')].map(s => s.textContent)")
    assert {"def", "return", "# say hello"} <= set(tokens), tokens
    assert answer.locator("table th").all_inner_texts() == ["model", "tokens"]
    assert "```" not in answer.inner_text() and "|---|" not in answer.inner_text()


def test_notebook7_collapses_thinking_and_opens_it_on_click(ran: Run) -> None:
    details = output_area(ran.page, ANSWER_CELL).locator("details.qwen-thinking")
    assert details.count() == 1 and details.get_attribute("open") is None
    assert "Thought for" in details.locator("summary").inner_text()
    assert not details.locator("div").is_visible()
    details.locator("summary").click()
    ran.page.wait_for_function("d => d.open", arg=details.element_handle(), timeout=5_000)
    assert THINKING.split(".")[0] in details.locator("div").inner_text()


def test_notebook7_control_panel_is_live_widgets(ran: Run) -> None:
    panel = output_area(ran.page, PANEL)
    assert panel.locator(".jupyter-widgets.widget-vbox").count() == 1
    assert panel.locator(".widget-text input[list]").input_value() == "qwen3.6-plus"
    assert f"Session: {len(ANSWER_CELLS)} requests" in panel.inner_text()
    toggle = panel.locator("button.widget-toggle-button", has_text="Thinking")
    budget = panel.locator(".widget-text", has_text="Thinking budget").locator("input")
    assert budget.is_disabled()
    toggle.click()
    ran.page.wait_for_function("i => !i.disabled", arg=budget.element_handle(), timeout=10_000)
    toggle.click()
    ran.page.wait_for_function("i => i.disabled", arg=budget.element_handle(), timeout=10_000)


def test_notebook7_ends_every_answer_with_the_static_footer(ran: Run) -> None:
    for cell in ANSWER_CELLS:
        outputs = output_area(ran.page, cell)
        footer = outputs.locator(".qwen-usage")
        assert footer.count() == 1
        assert " in · " in footer.inner_text() and " out · " in footer.inner_text()
        assert outputs.locator(".jupyter-widgets").count() == 0, "a live widget was left under the answer"
    assert not widget_trouble(ran.page.locator("body").inner_text())
    assert not ran.errors, ran.errors


def test_notebook7_runs_no_script_from_model_text(ran: Run) -> None:
    page = ran.page
    for cell in (PAYLOAD_CELL, IMAGES_CELL):
        assert output_area(page, cell).evaluate(DANGEROUS) == []
    payload = output_area(page, PAYLOAD_CELL)
    assert "Here are some payloads." in payload.inner_text() and "More of them." in payload.inner_text()
    url = page.url
    for clickable in payload.locator("a, button, input").all():
        clickable.click()
    payload.locator("details", has_text="toggle").locator("summary").click()
    page.wait_for_timeout(500)  # a handler or a javascript: navigation would have run by now
    assert page.evaluate("() => window.__pwned") is None
    assert page.url == url
    assert ran.dialogs == [] and ran.popups == []


def test_notebook7_shows_prices_as_dollars_and_math_as_math(ran: Run) -> None:
    _assert_prices_and_math(ran.page)


def test_notebook7_shows_no_broken_image(ran: Run) -> None:
    _assert_no_broken_images(ran.page)


# --- saved, then reopened with no kernel: Notebook 7, then JupyterLab --------------------


@pytest.fixture(scope="module")
def saved(ran: Run, jupyter: Lab, artifacts: Path) -> Path:
    """Save with Ctrl+S, take the screenshot of the run, shut the kernel down and close the tab."""
    page = ran.page
    save(page, MODEL_DIRTY)
    path = jupyter.root / NOTEBOOK
    assert_saved_answers(path, ANSWER_CELLS)
    page.screenshot(path=str(artifacts / "notebook7-run.png"))
    shut_down(page)
    return path


@dataclass
class Reopened:
    """A page showing the saved notebook, and the dialogs it opened (none expected)."""

    page: Any
    dialogs: list[str]


@pytest.fixture(scope="module")
def notebook7_reopened(saved: Path, jupyter: Lab, browser: Any, artifacts: Path) -> Reopened:
    """The saved notebook opened again in Notebook 7, choosing No Kernel: nothing can run.

    Notebook 7 starts the notebook's kernel on opening unless asked which one, and asks
    only when it finds none to start: the page is shown an empty list of kernel specs,
    so it offers the kernel dialog, where a person picks "No Kernel".
    """
    page = browser.new_page()
    _errors, dialogs, _popups = watch_page(page)
    page.route(
        "**/api/kernelspecs*",
        lambda route: route.fulfill(json={"default": "python3", "kernelspecs": {}}),
    )
    page.goto(_notebook_url(jupyter, NOTEBOOK))
    page.locator(".jp-Dialog button", has_text="No Kernel").click(timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-NotebookPanel .qwen-usage').length === {len(ANSWER_CELLS)}",
        timeout=30_000,
    )
    page.wait_for_timeout(1_000)  # widget outputs settle once the widget manager has looked for models
    page.screenshot(path=str(artifacts / "notebook7-reopened.png"))
    assert page.evaluate(KERNEL_STATUS) is None
    return Reopened(page, dialogs)


def test_notebook7_reopened_shows_the_answers_and_their_footers(notebook7_reopened: Reopened) -> None:
    page = notebook7_reopened.page
    _assert_answers_render(page)
    prompts = page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").all_inner_texts()
    assert [prompt.strip() for prompt in prompts] == [f"[{n}]:" for n in range(1, 7)]  # nothing ran again
    assert notebook7_reopened.dialogs == []


def test_notebook7_reopened_shows_prices_as_dollars_and_math_as_math(notebook7_reopened: Reopened) -> None:
    _assert_prices_and_math(notebook7_reopened.page)


def test_notebook7_reopened_shows_no_broken_image(notebook7_reopened: Reopened) -> None:
    _assert_no_broken_images(notebook7_reopened.page)


@pytest.fixture(scope="module")
def lab_reopened(notebook7_reopened: Reopened, jupyter: Lab, browser: Any, artifacts: Path) -> Reopened:
    """The same saved notebook opened in JupyterLab with No Kernel, as ``test_browser.py`` does."""
    page = browser.new_page()
    _errors, dialogs, _popups = watch_page(page)
    page.goto(f"{jupyter.url}/lab?reset&token={jupyter.token}")  # reset: no tab restored
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    page.evaluate("() => window.jupyterapp.restored.then(() => null)")
    page.evaluate(
        """path => window.jupyterapp.commands.execute('docmanager:open', {
            path, factory: 'Notebook', kernelPreference: {shouldStart: false, canStart: false, autoStartDefault: false},
        })""",
        NOTEBOOK,
    )
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-NotebookPanel .qwen-usage').length === {len(ANSWER_CELLS)}",
        timeout=30_000,
    )
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(artifacts / "jupyterlab-reopened-notebook7.png"))
    assert page.evaluate(KERNEL_STATUS) is None
    return Reopened(page, dialogs)


def test_jupyterlab_reopened_shows_the_answers_and_their_footers(lab_reopened: Reopened) -> None:
    _assert_answers_render(lab_reopened.page)
    assert lab_reopened.dialogs == []


def test_jupyterlab_reopened_shows_prices_as_dollars_and_math_as_math(lab_reopened: Reopened) -> None:
    _assert_prices_and_math(lab_reopened.page)


def test_jupyterlab_reopened_shows_no_broken_image(lab_reopened: Reopened) -> None:
    _assert_no_broken_images(lab_reopened.page)
