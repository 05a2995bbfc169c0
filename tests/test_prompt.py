"""Cell text → content blocks: every media form, the ``{name}`` rules, previews, old media."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path, PurePath, PurePosixPath

import pytest
from helpers import shape, text
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from qwen_magic import _media
from qwen_magic._answer import Answer
from qwen_magic._conversation import Conversation, Options, Turn
from qwen_magic._prompt import CONVERTERS, build_prompt, lookup_path, prompt_text

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + b"\x00" * 32


def url(kind: str, address: str) -> dict:
    return {"type": kind, "source": {"type": "url", "url": address}}


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A working directory holding one file of each kind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes(PNG)
    (tmp_path / "shot.jpg").write_bytes(JPEG)
    (tmp_path / "anim.gif").write_bytes(GIF)
    (tmp_path / "pic.webp").write_bytes(WEBP)
    (tmp_path / "clip.mp4").write_bytes(MP4)
    (tmp_path / "clip.mov").write_bytes(MP4)
    (tmp_path / "clip.webm").write_bytes(WEBM)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.png").write_bytes(PNG)
    return tmp_path


# -- plain text -----------------------------------------------------------------------------


def test_plain_text_is_one_stripped_text_block():
    assert build_prompt("  Hello there\n\n") == [text("Hello there")]


@pytest.mark.parametrize("cell", ["", "   \n\t"])
def test_an_empty_cell_is_a_usage_error(cell):
    with pytest.raises(UsageError, match="empty"):
        build_prompt(cell)


@pytest.mark.parametrize(
    "cell",
    [
        "e.g. version 1.2 of numpy.py, see docs.python.org or https://docs.python.org/3/library/ast.html",
        "Mail me: mailto:someone@example.com, or visit https://example.com/a.png.html",
        "ratio image:text and video:games are prose, so is Example:photo.png",
        "a.b.c {} {0} {1.5} {'a'} {True} {None}",
    ],
)
def test_ordinary_prose_and_non_media_urls_stay_text(cell):
    assert build_prompt(cell, {"a": 1}) == [text(cell)]


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "jpg", "jpeg", "gif", "webp", "bmp", "PNG", "JpG"])
def test_a_bare_image_url_becomes_an_image_block(ext):
    address = f"https://example.com/pics/cat.{ext}"
    assert build_prompt(f"What is in {address}") == [text("What is in"), url("image", address)]


@pytest.mark.parametrize("ext", ["mp4", "mov", "avi", "mkv", "webm", "MP4"])
def test_a_bare_video_url_becomes_a_video_block(ext):
    address = f"http://example.com/v/run.{ext}"
    assert build_prompt(f"{address} what happens?") == [url("video", address), text("what happens?")]


def test_query_and_fragment_are_ignored_for_the_extension_and_kept_in_the_url():
    address = "https://cdn.example.com/a/b.jpeg?w=400&sig=abc#frag"
    assert build_prompt(f"See {address}") == [text("See"), url("image", address)]
    assert build_prompt("See https://example.com/render?file=b.png") == [
        text("See https://example.com/render?file=b.png")
    ]


def test_punctuation_around_a_url_stays_text_and_balanced_parentheses_stay_in_the_url():
    blocks = build_prompt("Compare (https://x.org/a.png), <https://x.org/b.gif> and https://x.org/Foo_(bar).webp.")
    assert shape(blocks) == [
        ("text", "Compare ("),
        ("image", "url", "https://x.org/a.png"),
        ("text", "), <"),
        ("image", "url", "https://x.org/b.gif"),
        ("text", "> and"),
        ("image", "url", "https://x.org/Foo_(bar).webp"),
        ("text", "."),
    ]


def test_markdown_images_use_the_extension_else_default_to_image():
    blocks = build_prompt(
        '![a chart](https://x.org/render?id=7) then ![clip](https://x.org/v.mp4 "title") and ![](https://x.org/p.png)'
    )
    assert shape(blocks) == [
        ("image", "url", "https://x.org/render?id=7"),
        ("text", "then"),
        ("video", "url", "https://x.org/v.mp4"),
        ("text", "and"),
        ("image", "url", "https://x.org/p.png"),
    ]


def test_a_markdown_link_stays_text():
    cell = "See [this picture](https://x.org/a.png) and [https://x.org/b.png](https://x.org/b.png)"
    assert build_prompt(cell) == [text(cell)]


def test_the_explicit_form_sends_any_http_url_as_the_kind_named():
    blocks = build_prompt("image:https://x.org/render?id=7 vs video:https://x.org/stream/42, ok?")
    assert shape(blocks) == [
        ("image", "url", "https://x.org/render?id=7"),
        ("text", "vs"),
        ("video", "url", "https://x.org/stream/42"),
        ("text", ", ok?"),
    ]


def test_the_explicit_form_refuses_a_url_whose_extension_says_the_other_kind():
    with pytest.raises(UsageError, match="image extension"):
        build_prompt("video:https://x.org/a.png")


@pytest.mark.parametrize(
    ("cell", "scheme"),
    [
        ("![x](file:///etc/passwd)", "file:"),
        ("![x](data:image/png;base64,iVBORw0KGgo=)", "data:"),
        ("![x](javascript:alert(1))", "javascript:"),
        ("image:ftp://host/pic", "ftp:"),
        ("video:javascript:alert(1)", "javascript:"),
        ("look at file:///tmp/photo.png", "file:"),
        ("look at s3://bucket/clip.mp4", "s3:"),
    ],
)
def test_non_http_schemes_in_media_positions_are_refused(cell, scheme):
    with pytest.raises(UsageError, match=scheme) as error:
        build_prompt(cell)
    assert "http(s)" in str(error.value)


# -- local files ----------------------------------------------------------------------------


def test_local_files_become_base64_blocks_typed_by_content(files):
    blocks = build_prompt("Compare photo.png, ./shot.jpg and anim.gif with pic.webp; then clip.mp4 clip.mov clip.webm")
    assert shape(blocks) == [
        ("text", "Compare"),
        ("image", "image/png", PNG),
        ("text", ","),
        ("image", "image/jpeg", JPEG),
        ("text", "and"),
        ("image", "image/gif", GIF),
        ("text", "with"),
        ("image", "image/webp", WEBP),
        ("text", "; then"),
        ("video", "video/mp4", MP4),
        ("video", "video/quicktime", MP4),
        ("video", "video/webm", WEBM),
    ]
    assert [getattr(b, "label", None) for b in blocks if b["type"] != "text"][:2] == ["photo.png", "./shot.jpg"]


def test_absolute_relative_and_home_paths(files, monkeypatch):
    monkeypatch.setenv("HOME", str(files / "sub"))
    blocks = build_prompt(f"{files / 'photo.png'} sub/inner.png ~/inner.png")
    assert [b["source"]["media_type"] for b in blocks] == ["image/png"] * 3


def test_the_content_decides_the_image_type(files):
    (files / "liar.png").write_bytes(JPEG)
    assert build_prompt("liar.png")[0]["source"]["media_type"] == "image/jpeg"
    (files / "text.png").write_bytes(b"not an image at all")
    with pytest.raises(UsageError, match="not a PNG, JPEG"):
        build_prompt("text.png")


def test_a_missing_file_is_a_usage_error_naming_the_path(files):
    with pytest.raises(UsageError, match=r"No such file: nothere\.png") as error:
        build_prompt("What is in nothere.png?")
    assert str(files / "nothere.png") in str(error.value)
    assert "backticks" in str(error.value)


def test_a_folder_and_an_unreadable_file_are_usage_errors(files, monkeypatch):
    (files / "dir.png").mkdir()
    with pytest.raises(UsageError, match="folder"):
        build_prompt("dir.png")

    def refuse(path: Path, flags: int) -> int:  # chmod 0 does not stop root, who runs CI
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("qwen_magic._files.os.open", refuse)
    with pytest.raises(UsageError, match=r"Cannot read photo\.png .*Permission denied"):
        build_prompt("photo.png")


def test_a_file_over_the_inline_limit_is_refused_before_reading(files):
    big = files / "big.mp4"
    with big.open("wb") as f:
        f.truncate(8 * 1024 * 1024)  # sparse: 8 MB of file is over 10 MB once base64-encoded
    with pytest.raises(UsageError, match="10 MB") as error:
        build_prompt("big.mp4")
    assert "URL" in str(error.value) and "big.mp4" in str(error.value)


def test_the_limit_is_measured_on_the_encoded_size():
    _media.check_size("image", 3 * _media.MAX_INLINE // 4, "ok.png")
    with pytest.raises(UsageError):
        _media.check_size("image", 3 * _media.MAX_INLINE // 4 + 3, "big.png")


def test_explicit_form_for_files_checks_the_extension(files):
    assert shape(build_prompt("image:photo.png")) == [("image", "image/png", PNG)]
    with pytest.raises(UsageError, match=r"notes\.txt.*extension"):
        build_prompt("image:notes.txt")
    with pytest.raises(UsageError, match="is an image, not a video"):
        build_prompt("video:photo.png")


def test_a_path_with_spaces_goes_in_a_markdown_image(files):
    (files / "my photo.png").write_bytes(PNG)
    assert shape(build_prompt("see ![x](<my photo.png>) now")) == [
        ("text", "see"),
        ("image", "image/png", PNG),
        ("text", "now"),
    ]


# Names as downloads, screenshots and phones write them: each is sent when the file exists.
DOWNLOAD_NAMES = [
    "photo (1).png",
    "photo(1).png",
    "foo[1].png",
    "a,b.png",
    "it's.png",
    "cafe\u0301.png",  # decomposed, as macOS writes it
    "IMG_0001 copy.jpg",
    "Screenshot 2024-05-01 at 10.00.00.png",
    "Screen Shot 2020-01-01 at 9.41.05 AM.png",
    "my picture.png",
    "chart - final (2).png",
    "image (3) [edited].jpeg",
    "Bild_2023-07-14_#1.png",
    "照片.png",
    "截图 2024-05-01 10.00.00.png",
    "WhatsApp Image 2024-01-01 at 12.00.00.jpeg",
]


@pytest.mark.parametrize("name", DOWNLOAD_NAMES)
@pytest.mark.parametrize("around", ["Describe {}", "Describe {}.", "What is in '{}'?", 'See "{}", please', "({})", "请描述 {}。"])
def test_existing_files_with_real_world_names_are_sent(files, name, around):
    (files / name).write_bytes(PNG)
    blocks = build_prompt(around.format(name))
    assert [getattr(b, "label", None) for b in blocks if b["type"] == "image"] == [name]
    assert name not in prompt_text([b for b in blocks if b["type"] == "text"])


@pytest.mark.parametrize(
    "cell",
    [
        "请描述 photo.png。",
        "请看 photo.png，谢谢",
        "（photo.png）",
        "「photo.png」",
        "“photo.png”",
        "photo.png、shot.jpg",
        "see photo.png—ok",
        "see photo.png…",
        "see photo.png\u200b",
        "see \u200bphoto.png",
        "see \ufeffphoto.png\u2060",
        "see ¡photo.png!",
        "描述photo.png",
        "描述照片.png",
        "_photo.png_",
        "__photo.png__",
    ],
)
def test_unicode_punctuation_around_a_file_name_is_not_part_of_it(files, cell):
    (files / "照片.png").write_bytes(PNG)
    images = [b for b in build_prompt(cell) if b["type"] == "image"]
    assert images and all(b["source"]["media_type"] in ("image/png", "image/jpeg") for b in images)


_NON_ASCII_PUNCTUATION = st.text(
    st.characters(categories=["Ps", "Pe", "Pi", "Pf", "Po", "Pd", "Cf", "Zs"], min_codepoint=0x80), max_size=3
)


@given(before=_NON_ASCII_PUNCTUATION, after=_NON_ASCII_PUNCTUATION)
@settings(max_examples=300, deadline=None)
def test_any_punctuation_or_invisible_character_around_a_file_name_leaves_it_sent(tmp_path_factory, before, after):
    """Whatever script's punctuation, spaces or format characters stand around it, the file is sent once."""
    folder = tmp_path_factory.getbasetemp() / "punctuation"
    folder.mkdir(exist_ok=True)
    (folder / "photo.png").write_bytes(PNG)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for cell in (f"看 {before}photo.png{after} ok", f"{before}photo.png{after}", f"see {before}https://x.com/a.png{after}"):
            assert len([b for b in build_prompt(cell) if b["type"] == "image"]) == 1, cell


def test_names_are_looked_up_only_for_words_ending_in_a_media_extension(files, monkeypatch):
    """Prose costs no file lookups, and a long word glued to Chinese text at most one per character of a name."""
    import os.path

    looked: list[str] = []
    real = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda path: looked.append(str(path)) or real(path))
    build_prompt("The quick brown fox, again and again. " * 2000 + "描述" * 5000)
    assert looked == []
    with pytest.raises(UsageError):
        build_prompt("描述" * 10_000 + ".png")
    assert 0 < len(looked) <= 300


@pytest.mark.parametrize(
    "cell", ["see https://x.com/a.png。", "看 https://x.com/a.png，", "（https://x.com/a.png）", "https://x.com/a.png—ok"]
)
def test_unicode_punctuation_after_a_url_is_not_part_of_it(cell):
    (image,) = [b for b in build_prompt(cell) if b["type"] == "image"]
    assert image["source"]["url"] == "https://x.com/a.png"


def test_urls_joined_by_commas_are_separate():
    blocks = build_prompt("see https://x.com/a.png,https://x.com/b.png,http://y.org/v.mp4 and a,b,c")
    assert [b["source"]["url"] for b in blocks if b["type"] != "text"] == [
        "https://x.com/a.png",
        "https://x.com/b.png",
        "http://y.org/v.mp4",
    ]
    assert build_prompt("https://x.com/a.png?w=1,2")[0]["source"]["url"] == "https://x.com/a.png?w=1,2"


def test_a_missing_name_after_other_words_points_to_the_markdown_form(files):
    with pytest.raises(UsageError, match=r"No such file: photo2\.png.*!\[\]\(<my photo\.png>\)"):
        build_prompt("Describe my photo2.png")


def test_words_are_joined_only_into_a_file_that_exists_and_not_across_lines_or_media(files):
    (files / "a b.png").write_bytes(PNG)
    with pytest.raises(UsageError, match=r"No such file: b\.png"):
        build_prompt("a\nb.png")
    (files / "photo.png b.png").write_bytes(PNG)
    with pytest.raises(UsageError, match=r"No such file: b\.png"):  # photo.png was sent: not part of the next name
        build_prompt("photo.png b.png")
    (files / "my photo.png").write_bytes(PNG)  # the name typed is taken first when it exists
    assert [b.label for b in build_prompt("my photo.png") if b["type"] == "image"] == ["photo.png"]


@pytest.mark.parametrize("name", ["IMG_0001.HEIC", "f.heic", "g.svg", "h.tiff", "i.tif", "j.avif", "k.heif"])
def test_an_existing_image_the_service_does_not_take_says_to_convert_it(files, name):
    (files / name).write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20)
    for cell, namespace in [(f"see {name}", {}), ("see {p}", {"p": Path(name)}), (f"image:{name}", {}), (f"![]({name})", {})]:
        with pytest.raises(UsageError, match=r"convert it to PNG or JPEG"):
            build_prompt(cell, namespace)
    assert build_prompt("HEIC files such as x.heic are not sent") == [text("HEIC files such as x.heic are not sent")]


@pytest.mark.parametrize("url", ["https://example.com/IMG_1.HEIC", "http://x.org/a/logo.svg?v=2", "https://h/p.tiff#f"])
def test_an_image_url_the_service_does_not_take_says_to_convert_it_when_sent_as_an_image(url):
    """``image:URL`` and ``![](URL)`` ask for an image: said at once, not a 400 from the service.
    The bare URL in a sentence is a link, and stays text."""
    for cell in (f"image:{url}", f"![]({url})", f"see ![logo](<{url}>) here"):
        with pytest.raises(UsageError, match=r"which the service does not take: download it and convert it to PNG or JPEG"):
            build_prompt(cell)
    assert build_prompt(f"what is at {url} ?") == [text(f"what is at {url} ?")]


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("zero.mp4", b"", "is empty"),
        ("zero.webm", b"", "is empty"),
        ("text.mp4", b"hello world, not a video", "not an MP4 or QuickTime video"),
        ("text.mov", b"hello world, not a video", "not an MP4 or QuickTime video"),
        ("text.avi", b"RIFF\x00\x00\x00\x00WAVEfmt ", "not an AVI video"),
        ("text.mkv", PNG, "not a WebM or Matroska video"),
        ("mp4.webm", MP4, "holds an MP4 or QuickTime video"),
    ],
)
def test_a_video_file_must_hold_the_container_its_extension_names(files, name, data, needle):
    (files / name).write_bytes(data)
    with pytest.raises(UsageError, match=needle):
        build_prompt(f"see {name}")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.mp4", MP4),
        ("old.mov", b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat"),
        ("a.webm", WEBM),
        ("a.mkv", b"\x1a\x45\xdf\xa3" + b"\x00" * 20),
        ("a.avi", b"RIFF\x00\x00\x00\x00AVI LIST"),
    ],
)
def test_each_accepted_video_container_is_sent(files, name, data):
    (files / name).write_bytes(data)
    (block,) = build_prompt(name)
    assert block["type"] == "video" and base64.b64decode(block["source"]["data"]) == data


@pytest.mark.parametrize("header", [b"II*\x00", b"\x00\x00\x00\x18ftypheic", b"<svg"])
def test_an_image_in_another_format_under_a_known_extension_says_to_convert_it(files, header):
    (files / "odd.jpg").write_bytes(header + b"\x00" * 30)
    with pytest.raises(UsageError, match="convert it to PNG or JPEG"):
        build_prompt("odd.jpg")


@pytest.mark.parametrize("name", ["zero.png", "zero.jpg", "zero.bmp", "zero.mov", "zero.avi"])
def test_an_empty_media_file_says_it_is_empty(files, name):
    (files / name).write_bytes(b"")
    with pytest.raises(UsageError, match=r"is empty \(0 bytes\)"):
        build_prompt(name)


def test_a_size_just_over_the_limit_reads_as_bytes_not_the_same_rounded_number():
    limit = 3 * _media.MAX_INLINE // 4
    with pytest.raises(UsageError) as error:
        _media.check_size("image", limit + 1, "edge.png")
    assert f"is {limit + 1:,} bytes" in str(error.value) and f"about {limit:,} bytes" in str(error.value)
    with pytest.raises(UsageError, match=r"is 9\.0 MB.*about 7\.5 MB"):
        _media.check_size("image", 9 * 1024 * 1024, "big.png")


def test_a_linked_image_is_sent_and_a_link_with_brackets_stays_text(files):
    blocks = build_prompt("see [![](photo.png)](https://x.com) and [a [b] c](https://x.com/d.png)")
    assert [b["type"] for b in blocks] == ["text", "image", "text"]
    assert "[a [b] c](https://x.com/d.png)" in blocks[-1]["text"]


def test_bmp_is_converted_to_png(files):
    image_module = pytest.importorskip("PIL.Image")
    image_module.new("RGB", (3, 2), "red").save(files / "old.bmp")
    (block,) = build_prompt("old.bmp")
    assert block["source"]["media_type"] == "image/png"
    assert base64.b64decode(block["source"]["data"]).startswith(b"\x89PNG")


def test_bmp_without_pillow_says_what_to_do(files, monkeypatch):
    (files / "old.bmp").write_bytes(b"BM" + b"\x00" * 12 + b"\x28" + b"\x00" * 47)  # a 40-byte info header
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(UsageError, match="pip install pillow"):
        build_prompt("old.bmp")


def test_code_spans_and_fenced_blocks_stay_as_typed(files):
    cell = (
        "Why does `open('photo.png')` fail? And `{x}` here.\n"
        "```python\nimg = load('https://x.org/a.png')\nprint(f\"{x}\")\nphoto.png\n```\n"
        "~~~\n{x} missing.png\n~~~\n"
        "Done."
    )
    assert build_prompt(cell, {"x": 1}) == [text(cell)]


@pytest.mark.parametrize(
    "cell",
    [
        "    see missing.png {x}",
        "Run this:\n\n    convert missing.png out.jpg\n    open https://x.org/a.png\n\nDone.",
        "Run this:\n\n\tcat missing.png\n\n    and {x}\n",
        "```\nx\n```\n    missing.png",
    ],
)
def test_indented_code_blocks_stay_as_typed(files, cell):
    assert build_prompt(cell, {"x": 1}) == [text(cell.strip())]


@pytest.mark.parametrize(
    "cell",
    [
        "Look at this\n    photo.png",  # a paragraph's continuation line, not code
        "- first item\n\n    photo.png in the item",  # an item's second paragraph
        "1. step\n   more\n\n    photo.png",
        "    code line\n\nthen photo.png",
    ],
)
def test_indented_lines_that_are_not_code_blocks_are_scanned(files, cell):
    assert [b.label for b in build_prompt(cell) if b["type"] == "image"] == ["photo.png"]


# -- {name} ---------------------------------------------------------------------------------


class Box:
    def __init__(self) -> None:
        self.reads: list[str] = []
        self.items = ["zero", "one", "two"]
        self.calls = 0

    @property
    def figure(self) -> str:
        self.reads.append("figure")
        return "the figure"

    def method(self) -> str:
        self.calls += 1
        return "called"

    def _private(self) -> str:
        return "secret"


def test_names_attributes_and_constant_indexes_are_substituted():
    box = Box()
    ns = {"n": 42, "s": "hello", "box": box, "d": {"k": "vee", 3: "three"}, "xs": [1, 2, 3]}
    cell = 'n={n}; {s}; {box.figure}; {box.items[1]}; {box.items[-1]}; {d["k"]}; {d[3]}; {xs[0]}'
    assert build_prompt(cell, ns) == [text("n=42; hello; the figure; one; two; vee; three; 1")]
    assert box.reads == ["figure"]  # a property is read once, as typing box.figure would


def test_nothing_is_evaluated_beyond_the_lookup():
    box = Box()
    calls = []

    def f() -> str:
        calls.append(1)
        return "ran"

    ns = {"f": f, "box": box, "x": 5, "i": 0, "xs": [1, 2]}
    cell = "{f()} {box.method()} {x + 1} {xs[i]} {xs[0:1]} {x!r} {x:.2f} { x } {box._private} {__import__('os')}"
    assert build_prompt(cell, ns) == [text(cell)]
    assert calls == [] and box.calls == 0


@pytest.mark.parametrize(
    "expr",
    ["f()", "a.b()", "a + b", "a[i]", "a[1:2]", "a._x", "a.__class__", "lambda: 1", "a if b else c", "[a]", "a.b[c.d]"],
)
def test_lookup_path_accepts_only_names_public_attributes_and_constant_subscripts(expr):
    assert lookup_path(expr) is None


def test_lookup_path_of_a_valid_expression():
    assert lookup_path('res.figs[0]["k"][-2]') == ("res", [("attr", "figs"), ("item", 0), ("item", "k"), ("item", -2)])


def test_braces_that_are_not_lookups_stay_exactly_as_typed():
    ns = {"x": 5, "a": 1, "b": 2, "HOME": "/root", "name": "N"}
    cells = [
        '{"a": 1, "b": {"c": [1, 2]}}',
        "{x: 1, 'y': 2}",
        "{{x}} and {{ name }} and {{x}",
        "print(f\"value {x}\") and f'{a}'",
        r"$\frac{a}{b}$ and $x^{2}$, a_{x}, echo ${HOME}, #{x}, %{x}, @{x}",
        "func{x} {x}y",
        "{undefined} {also.undefined}",
        "def f():\n    return {}\n",
    ]
    for cell in cells:
        assert build_prompt(cell, ns) == [text(cell.strip())], cell


def test_a_brace_in_chinese_text_is_substituted():
    assert build_prompt("描述{x}的内容", {"x": "图"}) == [text("描述图的内容")]


def test_a_failing_lookup_is_a_usage_error_naming_it():
    with pytest.raises(UsageError, match=r"\{d\['zz'\]\}: KeyError"):
        build_prompt("{d['zz']}", {"d": {}})
    with pytest.raises(UsageError, match=r"\{box\.nope\}: AttributeError"):
        build_prompt("{box.nope}", {"box": Box()})


def test_a_substituted_string_is_not_scanned_again(files):
    value = "photo.png https://x.org/a.png {x}"
    assert build_prompt("say {v}", {"v": value, "x": 1}) == [text("say " + value)]


def test_other_objects_become_their_repr_cut_at_2000_characters():
    assert build_prompt("{v}", {"v": [1, "a"]}) == [text("[1, 'a']")]
    (block,) = build_prompt("{v}", {"v": list(range(5000))})
    assert block["text"].startswith("[0, 1, 2") and len(block["text"]) < 2100
    assert "characters in all)" in block["text"]
    assert build_prompt("{v}", {"v": "y" * 5000}) == [text("y" * 5000)]  # a string is never cut


def test_image_bytes_are_sniffed_and_other_bytes_are_text():
    blocks = build_prompt("{png} {jpeg} {blob}", {"png": PNG, "jpeg": bytearray(JPEG), "blob": b"\x00\x01"})
    assert shape(blocks) == [("image", "image/png", PNG), ("image", "image/jpeg", JPEG), ("text", "b'\\x00\\x01'")]
    assert getattr(blocks[0], "label", None) == "{png}"


def test_a_list_of_images_with_captions_sends_each_in_order():
    """Images and other items in one list: each image a block, each caption its text (not the list's repr)."""
    blocks = build_prompt("compare {shots}", {"shots": [PNG, "before the fix", bytearray(JPEG), "after", 3]})
    assert shape(blocks) == [
        ("text", "compare"), ("image", "image/png", PNG), ("text", "before the fix"),
        ("image", "image/jpeg", JPEG), ("text", "after\n3"),
    ]  # fmt: skip
    assert [getattr(b, "label", None) for b in blocks if b["type"] == "image"] == ["{shots}[0]", "{shots}[2]"]
    # A list with no image among its first items is data: its repr, as before.
    numbers = [*range(100), PNG]
    assert shape(build_prompt("{n}", {"n": numbers}))[0][0] == "text"
    assert shape(build_prompt("{n}", {"n": [1, "two"]})) == [("text", "[1, 'two']")]


def test_pil_images_become_png_or_jpeg():
    image_module = pytest.importorskip("PIL.Image")
    img = image_module.new("RGBA", (20, 10), (255, 0, 0, 128))
    buffer = io.BytesIO()
    image_module.new("RGB", (20, 10), "blue").save(buffer, format="JPEG")
    photo = image_module.open(io.BytesIO(buffer.getvalue()))
    cmyk = image_module.new("CMYK", (4, 4))
    blocks = build_prompt("{img} {photo} {cmyk} {imgs}", {"img": img, "photo": photo, "cmyk": cmyk, "imgs": [img, img]})
    assert [b["source"]["media_type"] for b in blocks] == ["image/png", "image/jpeg", *["image/png"] * 3]
    decoded = image_module.open(io.BytesIO(base64.b64decode(blocks[0]["source"]["data"])))
    assert decoded.size == (20, 10)
    assert [getattr(b, "label", None) for b in blocks[-2:]] == ["{imgs}[0]", "{imgs}[1]"]


def test_matplotlib_figures_and_axes_become_png():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 0])
    blocks = build_prompt("Explain {fig}. And {ax}?", {"fig": fig, "ax": ax})
    assert [b["type"] for b in blocks] == ["text", "image", "text", "image", "text"]
    assert base64.b64decode(blocks[1]["source"]["data"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("kind", [Path, PurePath, PurePosixPath])
def test_a_path_object_is_its_file(files, kind):
    assert shape(build_prompt("{p}", {"p": kind("photo.png")})) == [("image", "image/png", PNG)]
    assert build_prompt("{p}", {"p": kind("notes.txt")}) == [text("notes.txt")]


def test_bmp_bytes_are_converted_to_png_like_a_bmp_file():
    image_module = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    image_module.new("RGB", (3, 2), "red").save(buffer, format="BMP")
    for value in (buffer.getvalue(), bytearray(buffer.getvalue()), memoryview(buffer.getvalue())):
        (block,) = build_prompt("{b}", {"b": value})
        assert block["source"]["media_type"] == "image/png"
        assert base64.b64decode(block["source"]["data"]).startswith(b"\x89PNG")
    assert build_prompt("{b}", {"b": b"BMW 320i"}) == [text("b'BMW 320i'")]  # "BM" alone is not a BMP


def test_converters_are_an_ordered_list_ending_in_the_catch_all():
    assert CONVERTERS[-1].__name__ == "_text_value"


def test_an_object_image_over_the_limit_says_what_to_do(monkeypatch):
    monkeypatch.setattr(_media, "MAX_INLINE", 16)
    with pytest.raises(UsageError, match=r"\{png\}.*too large"):
        build_prompt("{png}", {"png": PNG})


# -- order, merging, history text -----------------------------------------------------------


def test_blocks_keep_their_order_and_adjacent_text_merges(files):
    cell = "A {img}\n\nB https://x.org/v.mp4 {n} C\n![](photo.png)\n  \nhttps://x.org/a.png"
    blocks = build_prompt(cell, {"img": PNG, "n": 7})
    assert shape(blocks) == [
        ("text", "A"),
        ("image", "image/png", PNG),
        ("text", "B"),
        ("video", "url", "https://x.org/v.mp4"),
        ("text", "7 C"),
        ("image", "image/png", PNG),
        ("image", "url", "https://x.org/a.png"),
    ]


def test_a_cell_of_only_media_has_no_text_block(files):
    assert [b["type"] for b in build_prompt("photo.png\n\n{img}", {"img": PNG})] == ["image", "image"]


def test_a_cell_whose_values_are_all_empty_is_a_usage_error():
    with pytest.raises(UsageError, match="Nothing to send"):
        build_prompt("{e}", {"e": "  "})


def test_prompt_text_shows_media_as_readable_placeholders(files):
    blocks = build_prompt("Look: photo.png and https://x.org/v.webm {img}", {"img": PNG})
    assert prompt_text(blocks) == (
        "Look:\n[image: photo.png (image/png, 70 bytes)]\nand\n[video: https://x.org/v.webm]\n"
        "[image: {img} (image/png, 70 bytes)]"
    )


# -- previews -------------------------------------------------------------------------------


def test_no_preview_without_media():
    assert _media.preview_bundle([text("hi")]) is None


def test_preview_is_static_escaped_html_with_a_text_fallback(files):
    nasty = 'https://x.org/a.png?q="><script>alert(1)</script>'
    blocks = [url("image", nasty), url("video", "https://x.org/v.mp4"), *build_prompt("photo.png clip.mp4")]
    bundle = _media.preview_bundle(blocks)
    assert set(bundle) == {"text/html", "text/plain"}
    page = bundle["text/html"]
    assert "<script" not in page and "&quot;&gt;&lt;script&gt;" in page
    assert page.count("<img ") == 2  # the URL image and the inline thumbnail
    assert 'href="https://x.org/v.mp4"' in page and "▶ video" in page
    assert "max-height:160px" in page
    assert "clip.mp4" in page and "photo.png" in page
    plain = bundle["text/plain"]
    assert "[video: https://x.org/v.mp4]" in plain and "[image: photo.png (image/png, 70 bytes)]" in plain


def test_preview_never_links_a_non_http_url():
    page = _media.preview_bundle([url("image", "javascript:alert(1)"), url("video", "javascript:alert(2)")])[
        "text/html"
    ]
    assert "src=" not in page and "href=" not in page


def test_preview_thumbnails_are_downscaled_with_pillow():
    image_module = pytest.importorskip("PIL.Image")
    (block,) = build_prompt("{big}", {"big": image_module.new("RGB", (2000, 1000), "green")})
    page = _media.preview_bundle([block])["text/html"]
    src = page.split('src="', 1)[1].split('"', 1)[0]
    assert src.startswith("data:image/jpeg;base64,")
    thumb = image_module.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert thumb.height <= 2 * _media.PREVIEW_HEIGHT and thumb.width <= 3 * _media.PREVIEW_HEIGHT


def test_preview_without_pillow_shows_small_images_as_they_are_and_names_big_ones(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    small = _media.inline_block("image", PNG, "image/png", "small.png")
    big = _media.inline_block("image", PNG + b"\x00" * (_media.SMALL_ENOUGH_TO_SHOW + 1), "image/png", "big.png")
    page = _media.preview_bundle([small, big])["text/html"]
    assert page.count("<img ") == 1 and "data:image/png;base64," + small["source"]["data"] in page
    assert "big.png" in page


# -- old inline media in the history --------------------------------------------------------


def _answered(prompt: list[dict]) -> Turn:
    answer = Answer(model="m", text="ok", finished_at=1.0)
    answer.blocks = [text("ok")]
    return Turn(prompt, answer)


def test_old_inline_media_is_replaced_by_a_placeholder_and_urls_stay(files):
    chat = Conversation()
    chat.turns.append(_answered(build_prompt("photo.png https://x.org/a.png")))
    for _ in range(3):
        chat.turns.append(_answered([text("more")]))
    first = chat.messages(keep_media_turns=4)[0]["content"]
    assert first[0]["source"]["type"] == "base64"
    first = chat.messages(keep_media_turns=3)[0]["content"]  # old, but it waits for a batch (see test_cache)
    assert first[0]["source"]["type"] == "base64"
    first = chat.messages(keep_media_turns=0)[0]["content"]
    assert first[0] == text("[image sent earlier: photo.png, 70 bytes — no longer attached]")
    assert first[1] == url("image", "https://x.org/a.png")
    assert chat.messages()[0]["content"][0]["source"]["type"] == "base64"  # no policy: everything kept
    assert chat.turns[0].prompt[0]["source"]["type"] == "base64"  # the history itself is untouched


def test_the_request_applies_the_policy_from_options(files):
    chat = Conversation()
    chat.turns.append(_answered(build_prompt("photo.png")))
    request = chat.request([text("next")], Options(model="m", max_tokens=10, cache="off", keep_media_turns=0))
    assert request["messages"][0]["content"][0]["type"] == "text"
    assert "no longer attached" in request["messages"][0]["content"][0]["text"]


def test_values_holding_the_key_are_masked_and_named(monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-0123456789abcdef")
    held: list[str] = []
    blocks = build_prompt("Use {cfg} and {plain}, not sk-0123456789abcdef in `{cfg}`", {"cfg": {"key": "sk-0123456789abcdef"}, "plain": "x"}, held)
    text = blocks[0]["text"]
    assert text.startswith("Use {'key': 'sk-…cdef'} and x")
    assert held == ["{cfg}"]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


class _RaisingRepr:
    def __repr__(self) -> str:
        raise ValueError("broken repr")


class _NonStringRepr:
    def __repr__(self) -> str:
        return 42  # type: ignore[return-value]


class _UnprintableRepr:
    def __repr__(self) -> str:
        raise _Unprintable()


class _BadProperty:
    @property
    def figure(self) -> None:
        raise _Unprintable()


class _RecursiveRepr:
    def __repr__(self) -> str:
        return repr(self)


@pytest.mark.parametrize(
    ("value", "expr", "needle"),
    [
        (_RaisingRepr(), "obj", "ValueError: broken repr"),
        (_NonStringRepr(), "obj", "TypeError: __repr__ returned non-string"),
        (_UnprintableRepr(), "obj", "_Unprintable"),
        (_RecursiveRepr(), "obj", "RecursionError"),
        (_BadProperty(), "obj.figure", "_Unprintable"),
        ({"k": 1}, 'obj["missing"]', "KeyError"),
    ],
)
def test_values_that_cannot_be_shown_are_short_usage_errors(value, expr, needle):
    with pytest.raises(UsageError) as error:
        build_prompt(f"Look at {{{expr}}}", {"obj": value})
    message = str(error.value)
    assert message.startswith(f"{{{expr}}}") and needle in message
    assert len(message) < 400 and "\n" not in message


def test_a_str_subclass_is_sent_as_its_text():
    class Sneaky(str):
        def __str__(self) -> str:
            raise RuntimeError("never called")

        def __contains__(self, item: object) -> bool:
            raise RuntimeError("never called")

    assert build_prompt("Read {s}", {"s": Sneaky("plain words")})[0]["text"] == "Read plain words"


def test_text_that_cannot_be_encoded_is_a_usage_error_before_sending():
    with pytest.raises(UsageError, match=r"The cell: its text holds '\\udcff'.*lone surrogate"):
        build_prompt("What is caf\udcff?")
    with pytest.raises(UsageError, match=r"\{name\}: its text holds"):
        build_prompt("What is {name}?", {"name": "caf\udcff"})
