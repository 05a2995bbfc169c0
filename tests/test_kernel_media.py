"""Images and video through a real kernel: what the server receives, previews, history."""

from __future__ import annotations

import base64
import json

import pytest
from helpers import assert_usage_error, ok, shape

pytestmark = pytest.mark.kernel

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_every_form_reaches_the_server_in_order(fresh, tmp_path):
    (tmp_path / "photo.png").write_bytes(PNG)
    (tmp_path / "shot.jpg").write_bytes(JPEG)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "clip.mp4").write_bytes(MP4)
    ok(
        fresh.run(
            "import os\n"
            f"_qm_old = os.getcwd(), os.environ.get('HOME')\n"
            f"os.chdir({str(tmp_path)!r}); os.environ['HOME'] = {str(tmp_path / 'home')!r}\n"
            f"raw = {PNG!r}\n"
        )
    )
    try:
        cell = (
            "%%qwen\n"
            "Compare https://example.com/cat.jpg?w=400 with https://example.com/run.mp4,\n"
            "![chart](https://example.com/render?id=7) and image:https://example.com/img/42 "
            "and video:https://example.com/stream/9.\n"
            f"Files: {tmp_path / 'photo.png'} shot.jpg ~/clip.mp4 and the bytes {{raw}}. "
            "Keep `photo.png` and {{raw}} as typed."
        )
        run = fresh.run(cell)
    finally:
        fresh.run("os.chdir(_qm_old[0])\nos.environ['HOME'] = _qm_old[1] or ''")
    ok(run)
    content = fresh.server.last.body["messages"][-1]["content"]
    assert shape(content) == [
        ("text", "Compare"),
        ("image", "url", "https://example.com/cat.jpg?w=400"),
        ("text", "with"),
        ("video", "url", "https://example.com/run.mp4"),
        ("text", ","),
        ("image", "url", "https://example.com/render?id=7"),
        ("text", "and"),
        ("image", "url", "https://example.com/img/42"),
        ("text", "and"),
        ("video", "url", "https://example.com/stream/9"),
        ("text", ".\nFiles:"),
        ("image", "image/png", PNG),
        ("image", "image/jpeg", JPEG),
        ("video", "video/mp4", MP4),
        ("text", "and the bytes"),
        ("image", "image/png", PNG),
        ("text", ". Keep `photo.png` and {{raw}} as typed."),
    ]
    # The server accepted every block: its echo lists them.
    assert "[video url=https://example.com/stream/9]" in run.markdown
    assert run.markdown.count("[image base64 image/png 70 bytes]") == 2
    assert "[video base64 video/mp4 44 bytes]" in run.markdown


def test_a_matplotlib_figure_and_a_pil_image_from_the_namespace(fresh):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    ok(
        fresh.run(
            "import matplotlib.pyplot as plt\n"
            "from PIL import Image\n"
            "fig, ax = plt.subplots(figsize=(3, 2))\n"
            "ax.plot([1, 3, 2])\n"
            "img = Image.new('RGB', (40, 30), 'red')\n"
            "class Result: pass\n"
            "res = Result(); res.figure = fig; imgs = [img]\n"
            "plt.close(fig)\n"
        )
    )
    run = fresh.run("%%qwen\nWhat does {fig} show, and {imgs[0]}? Also {res.figure}.")
    ok(run)
    content = fresh.server.last.body["messages"][-1]["content"]
    kinds = [(b["type"], b["source"]["media_type"]) if b["type"] != "text" else ("text", b["text"]) for b in content]
    assert kinds == [
        ("text", "What does"),
        ("image", "image/png"),
        ("text", "show, and"),
        ("image", "image/png"),
        ("text", "? Also"),
        ("image", "image/png"),
        ("text", "."),
    ]
    pngs = [base64.b64decode(b["source"]["data"]) for b in content if b["type"] == "image"]
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    assert pngs[0] == pngs[2]  # the same figure, however it was named
    assert "{fig}" in run.data("text/plain")[0]  # the preview names what was sent


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("What is in {tmp}/missing.png?", "No such file: {tmp}/missing.png"),
        ("Describe {tmp}/big.png", "too large to send inline"),
        ("![x](file:///etc/passwd)", "file: URLs cannot be sent"),
        ("image:data:image/png;base64,iVBORw0KGgo=", "data: URLs cannot be sent"),
        ("image:{tmp}/notes.txt please", "cannot tell what kind of file"),
        ("video:{tmp}/photo.png", "is an image, not a video"),
        ("see {tmp}/zero.mp4", "is empty (0 bytes)"),
        ("see {tmp}/text.mp4", "is not an MP4 or QuickTime video"),
        ("请看 {tmp}/IMG_0001.HEIC。", "convert it to PNG or JPEG"),
    ],
)
def test_media_errors_are_usage_errors_that_send_nothing(fresh, tmp_path, cell, expected):
    (tmp_path / "photo.png").write_bytes(PNG)
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_bytes(b"hello world, not a video")
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20)
    with (tmp_path / "big.png").open("wb") as f:
        f.truncate(11 * 1024 * 1024)
    before = len(fresh.server.requests)
    run = fresh.run("%%qwen\n" + cell.format(tmp=tmp_path))
    assert len(fresh.server.requests) == before
    assert_usage_error(run, expected.format(tmp=tmp_path))
    assert not run.data("text/html")  # no preview of a prompt that was not sent


def test_the_preview_is_one_static_html_output_above_the_answer(fresh, tmp_path):
    (tmp_path / "photo.png").write_bytes(PNG)
    run = fresh.run(f"%%qwen\nLook at https://example.com/a.png and {tmp_path / 'photo.png'} and https://x.org/v.webm")
    ok(run)
    first = run.outputs[0]
    assert first["output_type"] == "display_data"
    assert set(first["data"]) == {"text/html", "text/plain"}  # no widget: it survives saving
    page = first["data"]["text/html"]
    assert 'class="qwen-media"' in page
    assert '<img src="https://example.com/a.png"' in page and "max-height:160px" in page
    assert "data:image/" in page  # the inline image's thumbnail
    assert 'href="https://x.org/v.webm"' in page and "▶ video" in page
    assert "[image: https://example.com/a.png]" in first["data"]["text/plain"]
    previews = [m for m in run.of("display_data") if "text/html" in m["content"]["data"]][:1]
    assert previews and not previews[0]["content"].get("transient", {}).get("display_id")  # never repainted
    assert not any(WIDGET in o.get("data", {}) for o in run.outputs[:1])
    assert "Echo: Look at" in run.markdown  # the answer follows the preview


def test_a_text_only_cell_has_no_preview(fresh):
    run = fresh.run("%%qwen\nJust words, and https://docs.python.org/3/ as text.")
    ok(run)
    assert not any("qwen-media" in html for html in run.data("text/html"))
    assert fresh.server.last.body["messages"][-1]["content"] == [
        {"type": "text", "text": "Just words, and https://docs.python.org/3/ as text."}
    ]


def test_a_follow_up_still_sends_the_media(fresh, tmp_path):
    (tmp_path / "photo.png").write_bytes(PNG)
    ok(fresh.run(f"%%qwen\nWhat is {tmp_path / 'photo.png'} next to https://example.com/b.gif?"))
    first = fresh.server.last.body["messages"][-1]["content"]
    ok(fresh.run("%%qwen\nAnd what colour is it?"))
    messages = fresh.server.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert shape(messages[0]["content"]) == shape(first)
    assert ("image", "image/png", PNG) in shape(messages[0]["content"])
    history = fresh.run("%qwen history").markdown
    assert f"[image: {tmp_path / 'photo.png'} (image/png, 70 bytes)]" in history
    assert "[image: https://example.com/b.gif]" in history


def test_old_inline_media_is_replaced_by_a_placeholder(fresh, tmp_path):
    (tmp_path / "photo.png").write_bytes(PNG)
    ok(fresh.run("%qwen config keep_media_turns=0"))  # with its own cell only (batches: tests/test_kernel_cache.py)
    ok(fresh.run(f"%%qwen\nSee {tmp_path / 'photo.png'} and https://example.com/b.gif"))
    assert fresh.server.last.body["messages"][0]["content"][1]["source"]["type"] == "base64"
    ok(fresh.run("%%qwen\nSecond"))
    first = fresh.server.last.body["messages"][0]["content"]
    assert shape(first) == [
        ("text", "See"),
        ("text", f"[image sent earlier: {tmp_path / 'photo.png'}, 70 bytes — no longer attached]"),
        ("text", "and"),
        ("image", "url", "https://example.com/b.gif"),
    ]
    assert '"base64"' not in json.dumps(fresh.server.last.body["messages"])
