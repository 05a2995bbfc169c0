"""The model sees the notebook: capture in a real kernel, what each turn sends, budget cuts, the manifest, controls."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from fake_dashscope import Stream
from helpers import run_terminal

pytestmark = pytest.mark.kernel

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def ctx(fresh):
    """The shared kernel with context on (the default), nothing captured yet and fresh conversations."""
    run = fresh.run(
        "%qwen context clear\n"
        "get_ipython().magics_manager.registry['QwenMagics'].context = 'auto'\n"
        "get_ipython().magics_manager.registry['QwenMagics'].chats.clear()\n"
        # Earlier tests calibrate the token estimate; the budget tests expect the starting 3.5 characters a token.
        "get_ipython().magics_manager.registry['QwenMagics'].estimator.chars_per_token = 3.5"
    )
    assert run.status == "ok", run.error_text
    return fresh


def sent(kernel) -> list[dict[str, Any]]:
    """The last request's last user message."""
    return kernel.server.requests[-1].body["messages"][-1]["content"]


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"] for b in blocks if b["type"] == "text"]


def count_of(kernel, source_fragment: str) -> int:
    """The execution count the capture gave the cell holding ``source_fragment``."""
    code = (
        "print([c.count for c in get_ipython().magics_manager.registry['QwenMagics'].capture.cells "
        f"if {source_fragment!r} in c.source][-1], end='')"
    )
    return int(kernel.run(code).stdout)


def manifest(run) -> dict[str, str]:
    (bundle,) = run.marked("qwen-context")
    return bundle


def test_print_result_display_and_error_are_sent_before_the_question(ctx):
    printed = ctx.run("x = 21\nprint('hello from the cell')\nx * 2")
    assert printed.stdout == "hello from the cell\n"  # what the user sees is unchanged
    assert printed.data("text/plain") == ["42"]
    shown = ctx.run(
        "import sys\nprint('careful', file=sys.stderr)\n"
        "from IPython.display import display, Markdown\ndisplay(Markdown('**bold** table'))"
    )
    assert shown.stderr == "careful\n"
    failed = ctx.run("def f(n):\n    return 1 / n\nf(0)")
    assert failed.status == "error"
    run = ctx.run("%%qwen\nWhat happened?")
    assert run.status == "ok", run.error_text
    blocks = sent(ctx)
    assert [b["type"] for b in blocks] == ["text"] * 4
    first, second, third, own = texts(blocks)
    n = count_of(ctx, "hello from the cell")
    assert first.startswith("[Notebook context: the cells I ran since my last message, oldest first.]")
    assert f"In [{n}]:\n```python\nx = 21\nprint('hello from the cell')\nx * 2\n```" in first
    assert "Printed:\n```text\nhello from the cell\n```" in first
    assert f"Out[{n}]:\n```text\n42\n```" in first
    assert second.startswith(f"In [{n + 1}]:") and "Printed to stderr:\n```text\ncareful\n```" in second
    assert "Displayed:\n```text\n<IPython.core.display.Markdown object>\n```" in second
    assert third.startswith(f"In [{n + 2}]:") and "Raised ZeroDivisionError:" in third
    assert f'File "In [{n + 2}]", line 3, in <module>' in third and "in f\n    return 1 / n" in third
    assert "ZeroDivisionError: division by zero" in third and "\x1b" not in third  # no ANSI colours
    assert "IPython/core" not in third
    assert own == "What happened?"
    line = manifest(run)["text/plain"]
    assert line.startswith(f"Context: In [{n}]–[{n + 2}] · 3 cells · 1 error · ≈")
    assert "cut:" not in line


def test_images_a_cell_displays_are_sent_as_image_blocks(ctx):
    ctx.run(f"from IPython.display import Image, display\ndisplay(Image(data={PNG!r}))")
    ctx.run("%%qwen\nDescribe the picture")
    blocks = sent(ctx)
    assert [b["type"] for b in blocks] == ["text", "image", "text"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    assert "[1 image displayed]" in blocks[0]["text"]


def test_a_matplotlib_figure_is_sent_and_counted_in_the_manifest(ctx):
    pytest.importorskip("matplotlib")
    ctx.run("%matplotlib inline")
    ctx.run("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([])\nax.set_title('empty')")
    run = ctx.run("%%qwen\nWhy is this plot empty?")
    blocks = sent(ctx)
    images = [b for b in blocks if b["type"] == "image"]
    assert len(images) == 1 and images[0]["source"]["media_type"] == "image/png"
    assert base64.b64decode(images[0]["source"]["data"]).startswith(b"\x89PNG")
    assert "<Figure size" in texts(blocks)[-2]
    assert " · 1 figure · " in manifest(run)["text/plain"]


def test_budget_cuts_long_output_in_the_middle_then_sources_then_drops_older_cells(ctx):
    ctx.run("%qwen config context_tokens=800")
    for i in range(12):
        ctx.run(f"old_{i} = {i}\nprint('old cell {i} output ' * 20)")
    ctx.run("print('\\n'.join(f'line {i}' for i in range(5000)))")
    run = ctx.run("%%qwen\nSummarise")
    body = ctx.server.requests[-1].body
    blocks = sent(ctx)
    context_text = "\n".join(texts(blocks)[:-1])
    newest = texts(blocks)[-2]
    # The newest cell is kept, its long output cut in the middle with a marker saying how much.
    assert "line 0\n" in newest and "line 4999" in newest
    assert re.search(r"\[… \d+ kB cut from the middle …\]", newest)
    # Older cells keep their source only, with a note, and the oldest are left out with a note.
    assert "[its outputs (stdout) left out for the context budget]" in context_text, manifest(run)["text/plain"]
    assert "Left out for the context budget: In [" in blocks[0]["text"]
    assert "old_0 = 0" not in context_text
    # Within the budget (estimated like every prompt: about 3.5 characters a token).
    assert len(context_text) / 3.5 <= 800
    line = manifest(run)["text/plain"]
    assert re.search(r"\(cut: .*In \[\d+\] output 49 kB → \d+ k?B;", line), line
    assert "source only" in line and "left out" in line
    html_text = manifest(run)["text/html"]
    assert html_text.startswith('<details class="qwen-context"') and "<li>" in html_text
    assert body["messages"][-1]["content"][-1]["text"] == "Summarise"


def test_image_cap_keeps_the_newest_images_and_says_what_was_left_out(ctx):
    ctx.run("%qwen config context_images=1")
    for _ in range(2):
        ctx.run(f"from IPython.display import Image, display\ndisplay(Image(data={PNG!r}))")
    run = ctx.run("%%qwen\nCompare")
    blocks = sent(ctx)
    assert [b["type"] for b in blocks] == ["text", "text", "image", "text"]
    assert "1 image left out" in manifest(run)["text/plain"]


def test_the_manifest_escapes_cell_text(ctx):
    ctx.run("s = '<img src=x onerror=alert(1)>'  # <script>alert(2)</script>")
    run = ctx.run("%%qwen\nHi")
    html_text = manifest(run)["text/html"]
    assert "<img" not in html_text and "<script" not in html_text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html_text


def test_each_conversation_gets_the_cells_run_since_its_own_previous_turn(ctx):
    ctx.run("a = 'first cell'")
    ctx.run("%%qwen\nOne")
    assert "a = 'first cell'" in texts(sent(ctx))[0]
    ctx.run("b = 'second cell'")
    ctx.run("%%qwen\nTwo")
    second = texts(sent(ctx))
    assert "b = 'second cell'" in second[0] and not any("first cell" in t for t in second)
    ctx.run("%%qwen --chat side\nSide")  # its first turn: everything since the conversations were reset
    side = "\n".join(texts(sent(ctx)))
    assert "first cell" in side and "second cell" in side
    ctx.run("%%qwen\nThree")  # nothing new for the default conversation
    assert sent(ctx) == [{"type": "text", "text": "Three"}]
    ctx.run("n = 'before new'")
    ctx.run("%%qwen --new\nNew")  # a fresh conversation in the same cell still sees what was not yet sent
    assert "before new" in texts(sent(ctx))[0] and len(ctx.server.requests[-1].body["messages"]) == 1
    ctx.run("c = 'third cell'")
    ctx.run("%qwen reset")
    ctx.run("d = 'after reset'")
    ctx.run("%%qwen\nFresh")
    fresh_text = "\n".join(texts(sent(ctx)))
    assert "after reset" in fresh_text and "third cell" not in fresh_text


def test_the_second_turn_starts_with_the_first_turns_blocks_byte_for_byte(ctx):
    ctx.run("values = [3, 1, 2]\nprint(sorted(values))")
    ctx.run(f"from IPython.display import Image, display\ndisplay(Image(data={PNG!r}))")
    ctx.run("%%qwen\nWhat did I sort?")
    first = ctx.server.requests[-1].body["messages"]
    ctx.run("total = sum(values)\ntotal")
    ctx.run("%%qwen\nAnd now?")
    second = ctx.server.requests[-1].body["messages"]

    def unmarked(message: dict[str, Any]) -> str:
        return json.dumps(
            {**message, "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in message["content"]]},
            sort_keys=True,
        )

    assert unmarked(second[0]) == unmarked(first[0])
    assert "total = sum(values)" in second[2]["content"][0]["text"]
    assert not any("sorted(values)" in t for t in texts(second[2]["content"]))


def test_rerunning_the_latest_cell_sends_the_same_context_again(ctx):
    ctx.run("z = 'before the question'")
    ctx.run("%%qwen\nFirst try", cell_id="ask")
    ctx.run("%%qwen\nSecond try", cell_id="ask")
    messages = ctx.server.requests[-1].body["messages"]
    assert len(messages) == 1 and "before the question" in messages[0]["content"][0]["text"]
    assert messages[0]["content"][-1]["text"] == "Second try"


def test_no_context_flag_setting_off_context_flag_and_skip_marker(ctx):
    ctx.run("p = 'visible'")
    ctx.run("%%qwen --no-context\nJust this")
    assert sent(ctx) == [{"type": "text", "text": "Just this"}]
    ctx.run("%qwen config context=off")
    ctx.run("q = 'also visible'")
    ctx.run("%%qwen\nOff")
    assert sent(ctx) == [{"type": "text", "text": "Off"}]
    ctx.run("# qwen: skip\nsecret = 'hunter2'\nprint(secret)")
    ctx.run("r = 'forced'")
    run = ctx.run("%%qwen --context\nForced")
    joined = "\n".join(texts(sent(ctx)))
    assert "r = 'forced'" in joined and "hunter2" not in joined and "qwen: skip" not in joined
    assert "%%qwen" not in joined  # the magic cells themselves are never captured
    assert manifest(run)["text/plain"].startswith("Context: In [")


def test_context_command_previews_without_sending_and_clear_forgets(ctx):
    ctx.run("w = 1\nprint('shown in preview')")
    ctx.run(f"from IPython.display import Image, display\ndisplay(Image(data={PNG!r}))")
    before = len(ctx.server.requests)
    preview = ctx.run("%qwen context")
    assert len(ctx.server.requests) == before
    text = preview.data("text/plain")[0]
    assert text.startswith("Context: In [") and "shown in preview" in text
    assert re.search(r"\[image: In \[\d+\] figure 1 \(image/png, \d+ bytes\)\]", text)
    cleared = ctx.run("%qwen context clear")
    assert "Forgot 2 captured cell(s)" in cleared.data("text/plain")[0]
    assert "No notebook context to send" in ctx.run("%qwen context").data("text/plain")[0]
    ctx.run("%%qwen\nAfter clear")
    assert sent(ctx) == [{"type": "text", "text": "After clear"}]


def test_the_api_key_is_masked_in_captured_text(ctx):
    key = "sk-context-test-key-1234567890"
    ctx.run(f"import os\nos.environ['DASHSCOPE_API_KEY'] = {key!r}\nprint(os.environ['DASHSCOPE_API_KEY'])")
    ctx.run("%%qwen\nWhat did it print?")
    everything = json.dumps(ctx.server.requests[-1].body, ensure_ascii=False)
    assert key not in everything and "sk-…7890" in everything


def test_history_and_export_show_each_turns_context(ctx, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    ctx.run("m = 'model input'\nprint(m)")
    ctx.run("%%qwen\nLook")
    history = ctx.run("%qwen history").markdown
    assert re.search(r"\*Context: In \[\d+\] · 1 cell · ≈\d+ tokens\*", history)
    assert "- In [" in history and "m = 'model input' — source, stdout" in history
    assert "**You (1):**\n\nLook" in history
    path = tmp_path / "talk.ipynb"
    ctx.run(f"%qwen export {path}")
    cell = nbformat.read(path, as_version=4).cells[1]
    assert '<details class="qwen-context">' in cell.source and "print(m)" in cell.source
    assert re.search(r"<blockquote>\s*<p>Look</p>", cell.source), cell.source


def test_explain_uses_the_captured_cell(ctx):
    ctx.run("print('about to fail')\nitems = {}\nitems['missing']")
    ctx.server.queue(Stream(text="The key is missing."))
    run = ctx.run("%qwen explain")
    assert run.status == "ok", run.error_text
    text = "\n".join(texts(sent(ctx)))
    assert "The cell that raised it:\n\n```python\nprint('about to fail')" in text
    assert "What it printed before it failed:\n\n```text\nstdout:\nabout to fail" in text
    assert "KeyError: 'missing'" in text
    assert text.count("about to fail") == 2  # the failing cell is not sent again as context


def test_unload_restores_the_streams_and_display_paths(ctx):
    code = (
        "import sys\n"
        "_o = get_ipython().display_pub\n"
        "print('publish' in vars(_o), '_flush_buffers' in vars(sys.stdout), end=' ')\n"
    )
    assert ctx.run(code).stdout == "True True "
    ctx.run("%unload_ext qwen_magic")
    try:
        assert ctx.run(code).stdout == "False False "
        assert ctx.run("print('still printing')").stdout == "still printing\n"
    finally:
        ctx.run("%load_ext qwen_magic")


def test_the_panel_toggle_is_the_context_setting(ctx):
    ctx.run("_p = (get_ipython().run_line_magic('qwen', 'panel') or _qm._panels[-1])")
    assert ctx.run("print(_p.context.value, end='')").stdout == "True"
    ctx.run("_p.context.value = False")
    assert ctx.run("print(_qm.context, end='')").stdout == "off"
    ctx.run("k = 'while off'")
    ctx.run("%%qwen\nOff by the panel")
    assert sent(ctx) == [{"type": "text", "text": "Off by the panel"}]
    ctx.run("%qwen config context=auto")
    assert ctx.run("print(_p.context.value, end='')").stdout == "True"
    assert "context auto" in ctx.run("%qwen").data("text/plain")[0]


def test_terminal_ipython_captures_through_stream_stand_ins(tmp_path):
    out = run_terminal(
        tmp_path,
        "real = sys.stdout\n"
        "shell.run_cell('print(\"terminal line\")\\n6 * 7', store_history=True)\n"
        "assert sys.stdout is real, 'the stream stand-in must be removed after the cell'\n"
        "shell.run_cell('import sys\\nprint(\"to stderr\", file=sys.stderr)\\nraise ValueError(\"bad value\")', store_history=True)\n"
        "shell.run_cell('%%qwen\\nWhat happened?', store_history=True)\n"
        "print('BODY=' + json.dumps(server.requests[-1].body['messages'][-1]['content']))\n",
    )
    assert "terminal line" in out.stdout and "to stderr" in out.stderr  # the user still sees it
    (body,) = [line[5:] for line in out.stdout.splitlines() if line.startswith("BODY=")]
    blocks = json.loads(body)
    first, second, own = (b["text"] for b in blocks)
    assert "Printed:\n```text\nterminal line\n```" in first and "Out[1]:\n```text\n42\n```" in first
    assert "Printed to stderr:\n```text\nto stderr\n```" in second
    assert "ValueError: bad value" in second and "\x1b" not in second
    assert own == "What happened?"


def test_a_lesson_with_context_replays_in_a_fresh_kernel_despite_new_addresses_and_temp_paths(tmp_path):
    import os

    import nbclient
    import nbformat
    from fake_dashscope import FakeDashScope
    from kernel_harness import ROOT, is_markdown

    cassette = tmp_path / "lesson.jsonl"
    cells = [
        "%load_ext qwen_magic",
        f"%qwen record {cassette}",
        "class Box:\n    pass\nBox()",  # Out: <__main__.Box at 0x7f…>, a new address in every process
        "import warnings\nwarnings.warn('careful')",  # stderr names the kernel's temp file of the cell
        "%%qwen\nWhat are these?",
    ]

    def run(env: dict[str, str]) -> Any:
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
        base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "QWEN_MAGIC_REPLAY"):
            base.pop(name, None)
        nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True).execute(
            env={**base, **env}
        )
        return notebook

    with FakeDashScope() as server:
        server.queue(Stream(text="A box and a warning."))
        live = run({"DASHSCOPE_BASE_URL": server.url, "DASHSCOPE_API_KEY": server.api_key})
        context = server.requests[-1].body["messages"][-1]["content"]
        url = server.url
    joined = "\n".join(b["text"] for b in context if b["type"] == "text")
    assert re.search(r"<__main__\.Box (object )?at 0x[0-9a-f]{6,}>", joined) and "ipykernel_" in joined, joined
    assert "A box and a warning." in json.dumps(live.cells[4].outputs)

    replayed = run({"DASHSCOPE_BASE_URL": url, "QWEN_MAGIC_REPLAY": str(cassette)})
    answer = "".join(o["data"]["text/plain"] for o in replayed.cells[4].outputs if is_markdown(o.get("data", {})))
    errors = [o for o in replayed.cells[4].outputs if o.output_type == "error"]
    assert answer == "A box and a warning.", (errors and errors[0].traceback) or replayed.cells[4].outputs


def test_a_bad_image_a_surrogate_or_escapes_in_any_output_never_break_a_later_turn(ctx):
    ctx.run(
        "from IPython.display import display\n"
        "display({'image/png': 'abc', 'text/plain': 'img'}, raw=True)\n"  # not base64
        "display({'image/png': 'PGh0bWw+', 'text/plain': 'html'}, raw=True)"  # base64 of '<html>': no image
    )
    written = ctx.run("import sys\nsys.stdout.write('x \\ud800 y\\n')")
    assert written.status == "ok" and "x \ufffd y" in written.stdout  # shown, not lost in the kernel's IO thread
    ctx.run("raise ValueError('bad \\udc80 \\x1b[31mred\\x1b[0m char')")
    runs = []
    for _ in range(2):  # and the turn after
        ctx.server.queue(Stream(text="ok"))
        runs.append(ctx.run("%%qwen\nWhat happened?"))
        assert runs[-1].status == "ok", runs[-1].error_text
    first = ctx.server.requests[-2].body["messages"][-1]["content"]
    assert [b["type"] for b in first] == ["text"] * 4
    body = json.dumps(first, ensure_ascii=False)
    assert "x \ufffd y" in body and "bad \ufffd red char" in body and "\\u001b" not in body
    assert "2 unreadable images left out" in manifest(runs[0])["text/plain"]
    preview = ctx.run("%qwen context")
    assert preview.status == "ok", preview.error_text


def test_no_piece_of_the_key_is_sent_or_shown_where_an_output_or_a_manifest_line_is_cut(ctx):
    secret = ctx.server.api_key  # the kernel's key
    ctx.run("%qwen config context_tokens=20000")  # the fixture's kernel resets the settings
    for before in range(5980, 5998, 4):  # the key across the end of a printed text's kept head
        ctx.run(f"import os\nprint('a' * {before} + os.environ['DASHSCOPE_API_KEY'] + 'b' * 9000)")
    ctx.run(f"KEY = {secret!r}  # and a first line the manifest shows shortened")
    ctx.server.queue(Stream(text="ok"))
    run = ctx.run("%%qwen\nq")
    assert run.status == "ok", run.error_text
    everything = json.dumps(ctx.server.requests[-1].body, ensure_ascii=False) + json.dumps(manifest(run))
    assert [secret[i : i + 6] for i in range(len(secret) - 5) if secret[i : i + 6] in everything] == []
    assert f"KEY = &#x27;sk-…{secret[-4:]}&#x27;" in manifest(run)["text/html"]


def test_cells_the_capture_no_longer_keeps_are_named_in_the_manifest_and_the_text(ctx):
    ctx.run("import qwen_magic._context as _c\n_c.MAX_CELLS = 3")
    try:
        for i in range(5):
            ctx.run(f"c{i} = {i}")
        ctx.server.queue(Stream(text="ok"))
        run = ctx.run("%%qwen\nq")
        assert run.status == "ok", run.error_text
    finally:
        ctx.run("_c.MAX_CELLS = 200")
    assert "3 older cells no longer kept" in manifest(run)["text/plain"]  # the setup cell and c0, c1
    assert "[3 older cells ran before these, no longer kept" in texts(sent(ctx))[0]
