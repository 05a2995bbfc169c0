"""Images and videos as content blocks: from URLs, files and Python objects; their previews.

Every block is a plain dict the SDK sends as is (typed as ``_blocks.MediaBlockParam``);
``MediaBlock`` only adds a ``label`` attribute (the file name, URL or ``{name}`` it came
from) for previews, ``%qwen history`` and the placeholders that replace old inline media
in later turns.

DashScope takes an inline (base64) item of at most 10 MB, measured here on the encoded
text (4/3 of the file): the size is checked before anything is read or sent. Images go
inline as PNG, JPEG, GIF or WebP, the four types the service accepts; a BMP file is
converted to PNG with Pillow. Pillow and matplotlib are optional and imported only when
an object of theirs (already imported by the user) or a BMP file needs them.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from IPython.core.error import UsageError

from . import _files

if TYPE_CHECKING:
    from typing import TypeGuard

    from anthropic.types import TextBlockParam

    from ._blocks import Block, ImageMediaType, MediaBlockParam, MediaSource

MediaKind = Literal["image", "video"]

MAX_INLINE = 10 * 1024 * 1024  # characters of base64 text in one inline item
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",  # not accepted inline: converted to PNG
}
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
}
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# Image files people have that the service does not take: named in a cell, they are an
# error saying to convert them, not a word sent as text.
UNSUPPORTED_IMAGES = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".svg": "SVG",
}
# The container each video extension's file must hold, and the name it goes by.
_CONTAINERS = {".mp4": "mp4", ".mov": "mp4", ".webm": "matroska", ".mkv": "matroska", ".avi": "avi"}
_CONTAINER_NAMES = {"mp4": "MP4 or QuickTime", "matroska": "WebM or Matroska", "avi": "AVI"}
PREVIEW_HEIGHT = 160  # pixels
SMALL_ENOUGH_TO_SHOW = 256 * 1024  # bytes of an image shown as its own preview without Pillow
MAX_BMP = 64 * 1024 * 1024  # bytes of a BMP file read to convert it to PNG
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # a BMP's second header: b"BM…" alone is not one


class MediaBlock(dict[str, Any]):
    """An ``image``/``video`` content block that remembers what it was made from."""

    label: str = ""


def _labelled(block: MediaBlockParam, label: str) -> MediaBlockParam:
    """``block`` as a ``MediaBlock`` remembering ``label`` (still the dict the SDK sends)."""
    labelled = MediaBlock(block)
    labelled.label = label
    return cast("MediaBlockParam", labelled)


def label_of(block: Block) -> str:
    """What a media block was made from (file name, URL, ``{name}``); empty if unknown."""
    return getattr(block, "label", "")


def kind_of(path: str) -> MediaKind | None:
    """``"image"``, ``"video"`` or None, from the extension of a path or URL path."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix in VIDEO_TYPES:
        return "video"
    return None


def unsupported_image(path: str) -> str | None:
    """The format (``"HEIC"``) of an image extension the service does not take, else None."""
    return UNSUPPORTED_IMAGES.get(PurePosixPath(path).suffix.lower())


def url_kind(url: str) -> MediaKind | None:
    """The media kind an http(s) URL's path tells (query and fragment ignored)."""
    return kind_of(urlsplit(url).path)


def url_block(kind: MediaKind, url: str) -> MediaBlockParam:
    """A block whose source the service fetches itself."""
    if kind == "image":
        return _labelled({"type": "image", "source": {"type": "url", "url": url}}, url)
    return _labelled({"type": "video", "source": {"type": "url", "url": url}}, url)


def inline_block(kind: MediaKind, data: bytes, media_type: str, label: str) -> MediaBlockParam:
    """A base64 block, refused before sending when it is over the inline limit.

    An image's ``media_type`` is one of ``INLINE_IMAGE_TYPES`` (sniffed from its bytes, or
    the type its converter wrote); a video's any of ``VIDEO_TYPES``.
    """
    check_size(kind, len(data), label)
    encoded = base64.b64encode(data).decode("ascii")
    if kind == "image":
        image_type = cast("ImageMediaType", media_type)
        return _labelled({"type": "image", "source": {"type": "base64", "media_type": image_type, "data": encoded}}, label)
    return _labelled({"type": "video", "source": {"type": "base64", "media_type": media_type, "data": encoded}}, label)


def encoded_size(size: int) -> int:
    """Characters of base64 text for ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def check_size(kind: str, size: int, label: str) -> None:
    """A ``UsageError`` saying what to do when ``size`` bytes are too many to send inline."""
    if encoded_size(size) <= MAX_INLINE:
        return
    smaller = (
        "send a smaller version (scale it down, or save it as JPEG)"
        if kind == "image"
        else "send a shorter or lower-resolution clip"
    )
    size_text, limit_text = human_size(size), human_size(MAX_INLINE * 3 // 4)
    if size_text == limit_text:  # just over: rounded, both would read 7.5 MB
        size_text, limit_text = f"{size:,} bytes", f"{MAX_INLINE * 3 // 4:,} bytes"
    raise UsageError(
        f"{label} is {size_text}: too large to send inline. DashScope takes at most 10 MB per inline "
        f"{kind} once base64-encoded (about {limit_text} of file). Put it at an http(s) URL "
        f"and write that URL in the cell instead, or {smaller}."
    )


def human_size(size: int) -> str:
    """``1.2 MB``, ``340 KB``, ``87 bytes``."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


def sniff_image(data: bytes) -> ImageMediaType | Literal["image/bmp"] | None:
    """The image media type the first bytes announce (PNG, JPEG, GIF, WebP, BMP), if any."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM") and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    return None


def sniff_video(data: bytes) -> str | None:
    """The container the first bytes announce: ``"mp4"`` (MP4/QuickTime), ``"matroska"`` (WebM/MKV), ``"avi"``."""
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime may start with any atom
        return "mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    return None


# -- local files ---------------------------------------------------------------------------


def file_block(typed: str, kind: MediaKind | None = None) -> MediaBlockParam:
    """A base64 block for the file at ``typed`` (relative to the working directory, or ``~``).

    ``kind`` is what an explicit ``image:``/``video:`` asked for; the extension must agree.
    """
    told = kind_of(typed)
    unsupported = unsupported_image(typed)
    if told is None and unsupported is not None:
        raise UsageError(not_taken(typed, unsupported))
    if told is None:
        known = ", ".join(s.lstrip(".") for s in (IMAGE_TYPES if kind != "video" else VIDEO_TYPES))
        raise UsageError(
            f"{typed}: cannot tell what kind of file this is from its extension; "
            f"{kind or 'media'} files must end in one of {known}. Rename or convert the file."
        )
    if kind is not None and told != kind:
        raise UsageError(f"{typed} is {a(told)}, not {a(kind)}: write {told}:{typed}.")
    path = _files.resolve(typed)
    keep_text = (
        f"To mention a file name without sending the file, put it in backticks: `{typed}`. "
        "A name with spaces goes in a markdown image: ![](<my photo.png>)."
    )
    suffix = path.suffix.lower()
    # A BMP shrinks when it becomes PNG: it is judged after converting, but read only up to MAX_BMP.
    limit = MAX_BMP if suffix == ".bmp" else MAX_INLINE * 3 // 4
    file, size = _files.open_regular(path, typed, keep_text)
    with file:
        if suffix != ".bmp":
            check_size(told, size, typed)
        elif size > limit:
            raise UsageError(f"{typed} is {human_size(size)}: too large a BMP image; save it as PNG or JPEG first.")
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise UsageError(f"Cannot read {typed} ({path}): {_files.reason(exc)}.") from None
    if len(data) > limit:  # it grew after the size was checked
        raise UsageError(f"{typed} grew past {human_size(limit)} while it was read: send it once it is written.")
    if not data:
        raise UsageError(f"{typed} is empty (0 bytes): there is nothing to send. Check that it was saved completely.")
    if told == "video":
        _check_video(data, suffix, typed)
        return inline_block("video", data, VIDEO_TYPES[suffix], typed)
    media_type = sniff_image(data)
    if media_type is None:
        raise UsageError(f"{typed} is not a PNG, JPEG, GIF, WebP or BMP image (its first bytes are not an image header): {CONVERT}")
    if media_type == "image/bmp":
        data, media_type = bmp_to_png(data, typed), "image/png"
    # The content decides the media type: a JPEG saved as .png is still sent as a JPEG.
    return inline_block("image", data, media_type, typed)


CONVERT = "convert it to PNG or JPEG (e.g. open it in an image viewer and export it, or with Pillow) and send that file."


def _check_video(data: bytes, suffix: str, typed: str) -> None:
    """A ``UsageError`` unless ``data`` starts like the container its extension names."""
    expected = _CONTAINERS[suffix]
    found = sniff_video(data)
    if found == expected:
        return
    wanted = f"{typed} is not {_an(_CONTAINER_NAMES[expected])} video"
    if found is None:
        raise UsageError(f"{wanted} (its first bytes are not a video header): send the video file itself, as MP4.")
    raise UsageError(f"{wanted}: it holds {_an(_CONTAINER_NAMES[found])} video. Give it the right extension or convert it to MP4.")


def not_taken(typed: str, fmt: str, *, remote: bool = False) -> str:
    """What to say of a file or URL (``remote``) in an image format the service does not take."""
    return f"{typed} is {_an(fmt)} image, which the service does not take: {'download it and ' if remote else ''}{CONVERT}"


def a(kind: str) -> str:
    """``an image`` or ``a video``."""
    return "an image" if kind == "image" else "a video"


def _an(name: str) -> str:
    """``an HEIC``, ``a TIFF``, ``an MP4 or QuickTime``: the article a format's name is read with."""
    return f"an {name}" if name[0] in "AEFHILMNORSX" else f"a {name}"


def bmp_to_png(data: bytes, label: str) -> bytes:
    """A BMP image's bytes as PNG (the service takes no BMP); a ``UsageError`` without Pillow or for a broken one."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(
            f"{label} is a BMP image, which the service does not take inline: install Pillow "
            "(pip install pillow) and it is converted to PNG for you, or save it as PNG yourself."
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _encode_pil(image)[0]
    except Exception as exc:
        raise UsageError(f"{label}: the BMP image could not be read ({exc}); save it as PNG and try again.") from None


# -- Python objects --------------------------------------------------------------------------


def image_bytes(value: Any) -> tuple[bytes, ImageMediaType] | None:
    """Encoded bytes and media type for an image-like object, or None when it is not one.

    PIL images, matplotlib figures and axes, and PNG/JPEG/GIF/WebP bytes. The libraries
    are only looked up in ``sys.modules``: an object of theirs exists only if they were imported.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        media_type = sniff_image(data)
        # Only the INLINE_IMAGE_TYPES: bytes of a BMP are not an image the service takes.
        return None if media_type is None or media_type == "image/bmp" else (data, media_type)
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(value, pil.Image):
        return _encode_pil(value)
    figure = sys.modules.get("matplotlib.figure")
    if figure is not None and isinstance(value, figure.Figure):
        return _encode_figure(value)
    axes = sys.modules.get("matplotlib.axes")
    if axes is not None and isinstance(value, axes.Axes) and value.figure is not None:
        return _encode_figure(value.figure)
    return None


def _encode_pil(image: Any) -> tuple[bytes, ImageMediaType]:
    """PNG, or JPEG for an image that was read from a JPEG (photos stay small)."""
    if image.format == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg"
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _encode_figure(figure: Any) -> tuple[bytes, ImageMediaType]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue(), "image/png"


# -- what a block looks like elsewhere: history, placeholders, previews ----------------------


def is_media(block: Block) -> TypeGuard[MediaBlockParam]:
    return block["type"] in ("image", "video")


def is_inline(block: Block) -> TypeGuard[MediaBlockParam]:
    """An image or video sent as base64 (what ``keep_media_turns`` detaches)."""
    return block["type"] in ("image", "video") and block["source"]["type"] == "base64"


def source_data(source: MediaSource) -> str:
    """The base64 text of an inline source ("" for one the service fetches)."""
    data = source["data"] if source["type"] == "base64" else ""
    return data if isinstance(data, str) else ""  # the SDK also types file objects; never built here


def _media_type(source: MediaSource) -> str | None:
    return source["media_type"] if source["type"] == "base64" else None


def _inline_size(source: MediaSource) -> int:
    data = source_data(source)
    return len(data) * 3 // 4 - data[-2:].count("=")


def describe(block: MediaBlockParam) -> str:
    """``[image: photo.png (image/png, 1.2 MB)]`` or ``[video: https://…]`` for readers."""
    source = block["source"]
    if source["type"] == "url":
        return f"[{block['type']}: {source['url']}]"
    label = label_of(block) or "inline"
    return f"[{block['type']}: {label} ({_media_type(source)}, {human_size(_inline_size(source))})]"


def placeholder(block: MediaBlockParam) -> TextBlockParam:
    """A short text block standing in for an inline item no longer resent."""
    source = block["source"]
    label = label_of(block) or _media_type(source) or "inline"
    text = f"[{block['type']} sent earlier: {label}, {human_size(_inline_size(source))} — no longer attached]"
    replaced: TextBlockParam = {"type": "text", "text": text}
    if "cache_control" in block:  # an explicit --cache mark stays where the user put it
        replaced["cache_control"] = block["cache_control"]
    return replaced


def preview_bundle(blocks: list[Block]) -> dict[str, str] | None:
    """Static HTML (and plain text) showing the media a prompt sends; None if it has none."""
    media = [b for b in blocks if is_media(b)]
    if not media:
        return None
    cells = [_preview_html(block) for block in media]
    lines = [describe(block) for block in media]
    return {
        "text/html": (
            '<div class="qwen-media" style="display:flex;flex-wrap:wrap;gap:8px;align-items:flex-end;'
            'margin:0.2em 0 0.4em">' + "".join(cells) + "</div>"
        ),
        "text/plain": "Sent with this prompt: " + " ".join(lines),
    }


def show_preview(blocks: list[Block]) -> None:
    """Display the previews of a prompt's media, if it has any."""
    bundle = preview_bundle(blocks)
    if bundle is not None:
        from IPython.display import display

        display(bundle, raw=True)


def _figure(inner: str, caption: str) -> str:
    return (
        '<figure style="margin:0;text-align:center">'
        f"{inner}"
        f'<figcaption style="color:#888;font-size:0.8em;max-width:240px;overflow-wrap:anywhere">'
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _img(src: str) -> str:
    return (
        f'<img src="{html.escape(src, quote=True)}" alt="" '
        f'style="max-height:{PREVIEW_HEIGHT}px;max-width:240px;border:1px solid #ddd">'
    )


def _preview_html(block: MediaBlockParam) -> str:
    kind, source = block["type"], block["source"]
    if source["type"] == "url":
        url = str(source["url"])
        if not url.lower().startswith(("http://", "https://")):  # never a script or file link
            return _figure("", f"{kind}: {url}")
        if kind == "image":
            return _figure(_img(url), _short(url))
        link = (
            f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">'
            f"▶ video: {html.escape(_short(url))}</a>"
        )
        return _figure(link, "")
    label = label_of(block) or _media_type(source) or "inline"
    caption = f"{label} · {human_size(_inline_size(source))}"
    if kind == "video":
        return _figure(f"<span>▶ video: {html.escape(label)}</span>", f"{_media_type(source)}, sent inline")
    thumbnail = _thumbnail(source)
    if thumbnail is None:
        return _figure('<div style="padding:2em 1em;border:1px dashed #ccc">🖼 image</div>', caption)
    return _figure(_img(thumbnail), caption)


def _short(url: str, limit: int = 60) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"


def _thumbnail(source: MediaSource) -> str | None:
    """A ``data:`` URL of a small version of an inline image, or None when none can be made."""
    data, media_type = source_data(source), _media_type(source) or ""
    try:
        from PIL import Image
    except ImportError:
        small = _inline_size(source) <= SMALL_ENOUGH_TO_SHOW
        return f"data:{media_type};base64,{data}" if small else None
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.thumbnail((3 * PREVIEW_HEIGHT, 2 * PREVIEW_HEIGHT))  # twice the shown size: sharp on HiDPI
            buffer = io.BytesIO()
            if image.mode in ("RGB", "L", "CMYK", "YCbCr"):  # no transparency: a small JPEG
                image.convert("RGB").save(buffer, format="JPEG", quality=80)
                thumb_type = "image/jpeg"
            else:
                image.convert("RGBA").save(buffer, format="PNG", optimize=True)
                thumb_type = "image/png"
    except Exception:  # a preview must never stop the question being asked
        return None
    return f"data:{thumb_type};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def detach_media(blocks: list[Block]) -> list[Block]:
    """``blocks`` with each inline item replaced by its placeholder (URL media stays)."""
    if not any(is_inline(b) for b in blocks):
        return blocks
    return [placeholder(b) if is_inline(b) else b for b in blocks]
