"""The cell's text becomes the user turn's content blocks: text, images and videos, in order.

What the text may hold besides prose (README, "Images and video"):

- ``https://host/cat.png``: a bare http(s) URL whose path ends in an image or video
  extension (query and fragment ignored) is sent as a URL block; other URLs stay text.
- ``![alt](url-or-path)``: a markdown image; a video extension makes it a video.
- ``image:URL`` / ``video:URL``: the explicit form, for URLs with no telling extension
  (also ``image:path``, whose extension must agree).
- ``photo.png``, ``~/clips/run.mp4``, ``/data/scan.jpg``: a whole token ending in a media
  extension is a local file, sent inline (base64); a missing file is a ``UsageError``.
  Tokens end at spaces and at CJK or typographic punctuation (``请看 photo.png。``). A name
  with spaces or odd characters (``photo (1).png``) is found when that file exists.
- ``{fig}``, ``{imgs[0]}``, ``{res.figure}``, ``{d["k"]}``: a name from the user's
  namespace, with attribute and constant-index access, is replaced by its value (an image
  for PIL images, matplotlib figures and image bytes, else its text). The expression is
  parsed with ``ast`` and only walked, never evaluated; anything else in braces stays
  as typed.

Nothing inside inline code, fenced or indented code blocks is touched: backticks keep text as typed.
"""

from __future__ import annotations

import ast
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from IPython.core.error import UsageError

from . import _files, _media
from ._code import chunks
from ._text import current_key, mask_key

if TYPE_CHECKING:
    from anthropic.types import TextBlockParam

    from ._blocks import Block
    from ._media import MediaKind

# Spans decided before tokens: markdown images, markdown links (kept as text) and {name}.
_SPANS = re.compile(
    r"(?P<image>!\[[^\]\n]*\]\(\s*(?P<dest><[^>\n]*>|[^\s)]+)(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\))"
    # A link's text may hold [brackets] but not an image: [![](a.png)](url) is a linked image.
    r"|(?P<link>\[(?:[^\[\]\n]|(?<!!)\[[^\[\]\n]*\])*\]\([^)\n]*\))"
    r"|(?P<name>(?<!\{)\{(?P<expr>[^{}\n]{1,200})\}(?!\}))"
)
# Tokens end at spaces, at invisible format characters, at CJK and typographic punctuation
# (Chinese text puts 。，、（ right after a word) and at a comma that starts another URL.
_BREAKS = "\u200b-\u200d\u2060\ufeff\u2014\u2015\u2018\u2019\u201c\u201d\u2026\u3000-\u3003\u3008-\u3011\u3014-\u301f\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f\uff3b\uff3d\uff5b\uff5d\uff61-\uff64"
_TOKEN = re.compile(rf"(?:[^\s,{_BREAKS}]|,(?![A-Za-z][A-Za-z0-9+.-]*://))+")
# CJK, kana and hangul blocks (compared by code point: a regex class of them costs 2 ms to compile at load).
_CJK = ((0x2E80, 0x2FFF), (0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF))
_JOINED_WORDS = 6  # words before a missing file's name tried as part of it (my photo.png)
_NAME_MAX = 255  # characters of a file name tried after Chinese text glued before it
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: C:\ is a drive
_PATH = re.compile(r"^[\w~./+@%=-]+$")
_EXPLICIT = re.compile(r"^(image|video):(.+)$")
# A brace glued to these is LaTeX (\frac{a}{b}, x^{2}), shell (${HOME}) or a template: left alone.
_GLUED = set("\\$^_#%@}")
_F_STRING = re.compile(r"(?<![\w'\"])(?:[rR]?[fF]|[fF][rR])(\"\"\"|'''|\"|')")
_OPENERS, _CLOSERS = "([<\"'*", ").,;:!?]>\"'*"


def build_prompt(
    text: str, namespace: dict[str, Any] | None = None, masked: list[str] | None = None
) -> list[Block]:
    """Content blocks for the cell text, in the order they stand; an empty cell is a ``UsageError``.

    The API key is never sent as part of a ``{name}`` value: it is masked, and the value's
    ``{name}`` is added to ``masked`` (when given) so the caller can say so.
    """
    if not text.strip():
        raise UsageError("The cell is empty: write a question below the %%qwen line.")
    parts: list[Block] = []
    for chunk, code in chunks(text):
        parts.extend([_text(chunk)] if code else _scan(chunk, namespace or {}, masked))
    blocks = _tidy(parts)
    if not blocks:
        raise UsageError("Nothing to send: the cell's text and values are all empty.")
    return _encodable(blocks, "The cell")


def prompt_text(blocks: list[Block]) -> str:
    """The readable text of a user turn (media shown as placeholders)."""
    parts = []
    for block in blocks:
        if block["type"] == "text":
            parts.append(block["text"])
        elif _media.is_media(block):
            parts.append(_media.describe(block))
    return "\n".join(parts)


# -- values of {name} ---------------------------------------------------------------------

Converter = Callable[[Any, str], "list[Block] | None"]


def _image_value(value: Any, label: str) -> list[Block] | None:
    if isinstance(value, (bytes, bytearray, memoryview)) and _media.sniff_image(bytes(value[:18])) == "image/bmp":
        png = _media.bmp_to_png(bytes(value), label)  # as a BMP file is: the service takes no BMP
        return [_media.inline_block("image", png, "image/png", label)]
    encoded = _media.image_bytes(value)
    if encoded is None:
        return None
    return [_media.inline_block("image", encoded[0], encoded[1], label)]


_LOOKED_AT = 64  # items of a list looked at for an image before it is taken as other data


def _image_list(value: Any, label: str) -> list[Block] | None:
    """A list or tuple holding images (in its first ``_LOOKED_AT`` items): one block each, and each
    other item (a caption, a path, a number) as its own value would be, in order."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    images: list[list[Block] | None] = []
    for index, item in enumerate(value):
        images.append(_image_value(item, f"{label}[{index}]"))
        if index + 1 in (_LOOKED_AT, len(value)) and not any(images):
            return None
    blocks: list[Block] = []
    for index, (item, image) in enumerate(zip(value, images, strict=True)):
        where = f"{label}[{index}]"
        parts = image or value_blocks(item, where)  # every converter, a user's own too
        for part in parts:
            last = blocks[-1] if blocks else None
            if part["type"] == "text" and last is not None and last["type"] == "text":  # items apart: one a line
                blocks[-1] = _text(f"{last['text']}\n{part['text']}")
            else:
                blocks.append(part)
    return blocks


def _path_value(value: Any, label: str) -> list[Block] | None:
    """A ``pathlib`` path to an image or video file is that file; any other path its text."""
    if not isinstance(value, PurePath):
        return None
    if _media.kind_of(str(value)) is None and not (_media.unsupported_image(str(value)) and _exists(str(value))):
        return [_text(str(value))]
    return [_media.file_block(str(value))]


def _data_value(value: Any, label: str) -> list[Block] | None:
    """A pandas DataFrame or Series, or a numpy array: a compact summary (see ``_analysis``)."""
    from ._analysis import describe

    summary = describe(value, label.strip("{}"))
    return None if summary is None else [_text(summary)]


def _text_value(value: Any, label: str) -> list[Block]:
    """A string as itself; anything else as its repr, cut at 2,000 characters."""
    from ._analysis import REPR_LIMIT, cut

    if isinstance(value, str):
        return [_text(str.__str__(value))]  # a str subclass's own methods are not run
    try:
        text = repr(value)
    except Exception as exc:  # raised, or returned a non-string (repr raises TypeError then)
        raise UsageError(
            f"{label}: repr() of this {_type_name(value)} value failed ({_failure(exc)}). Fix its __repr__, "
            "or store the text you mean in a variable and write that name, or put it in backticks to send it as typed."
        ) from None
    return [_text(cut(text, REPR_LIMIT))]


# Tried in order; the first that returns blocks wins. Add converters before the last,
# which takes anything (e.g. ``CONVERTERS.insert(-1, dataframe_summary)``).
CONVERTERS: list[Converter] = [_image_value, _image_list, _path_value, _data_value, _text_value]


def value_blocks(value: Any, label: str) -> list[Block]:
    """The blocks a ``{name}`` value becomes; a value that breaks every converter is a ``UsageError``."""
    for convert in CONVERTERS:
        try:
            blocks = convert(value, label)
        except UsageError:
            raise
        except Exception as exc:  # the user's object misbehaved (a property, __len__, savefig …)
            raise UsageError(
                f"{label}: this {_type_name(value)} value could not be sent ({_failure(exc)}). Store the text "
                "you mean in a variable and write that name, or put it in backticks to send it as typed."
            ) from None
        if blocks is not None:
            return blocks
    raise AssertionError("the last converter takes any value")  # pragma: no cover


def _type_name(value: Any) -> str:
    name = getattr(type(value), "__name__", None)
    return name if isinstance(name, str) else "object"


def _failure(exc: BaseException) -> str:
    """``TypeError: what it said``, for any exception, also one that cannot be printed."""
    from ._files import safe_text

    text = safe_text(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NOT_A_KEY = object()


def _key(node: ast.expr) -> Any:
    """The constant of a subscript: a string or an integer, possibly negative."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    return _NOT_A_KEY


def lookup_path(expr: str) -> tuple[str, list[tuple[str, Any]]] | None:
    """``'res.figs[0]'`` → ``('res', [('attr', 'figs'), ('item', 0)])``; None for anything else.

    Only names, public attributes and constant subscripts are accepted: calls, operators,
    slices and the rest leave the braces as typed. Nothing is evaluated here.
    """
    if expr != expr.strip():
        return None
    try:
        node = ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    steps: list[tuple[str, Any]] = []
    while not isinstance(node, ast.Name):
        if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
            steps.append(("attr", node.attr))
        elif isinstance(node, ast.Subscript) and (key := _key(node.slice)) is not _NOT_A_KEY:
            steps.append(("item", key))
        else:
            return None
        node = node.value
    return node.id, steps[::-1]


def _resolve(expr: str, namespace: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, value)`` for a lookup rooted in the namespace, else ``(False, None)``."""
    path = lookup_path(expr)
    if path is None or path[0] not in namespace:
        return False, None
    value = namespace[path[0]]
    try:
        for how, key in path[1]:
            value = getattr(value, key) if how == "attr" else value[key]
    except Exception as exc:
        raise UsageError(
            f"{{{expr}}}: {_failure(exc)}. Fix the name, or put it in backticks to send it as typed."
        ) from None
    return True, value


# -- scanning the text ----------------------------------------------------------------------


def _text(text: str) -> TextBlockParam:
    return {"type": "text", "text": text}


def _scan(text: str, namespace: dict[str, Any], masked: list[str] | None = None) -> list[Block]:
    """Blocks for prose: text with media and ``{name}`` values put where they stood."""
    replacements: list[tuple[int, int, list[Block]]] = []
    taken: list[tuple[int, int]] = []  # spans tokens must not overlap
    for match in _SPANS.finditer(text):
        taken.append(match.span())
        if match.group("image"):
            replacements.append((*match.span(), [_markdown_image(match.group("dest"))]))
        elif match.group("name") and _substitutable(text, match.start(), match.end()):
            found, value = _resolve(match.group("expr"), namespace)
            if found:
                label = match.group("name")
                blocks = _without_key(_encodable(value_blocks(value, label), label), label, masked)
                replacements.append((*match.span(), blocks))
    words: list[int] = []  # where the words since the last media or span start
    for token in _TOKEN.finditer(text):
        start, end = token.span()
        if any(s < end and start < e for s, e in taken):
            words = []
            continue
        core_start, core_end = _trim(text, start, end)
        made = _token(text[core_start:core_end])
        media = (core_start, core_end, made) if made is not None else _file(text, core_start, core_end, words)
        if media is None:
            words.append(core_start)
        else:
            replacements.append(media)
            words = []
    parts: list[Block] = []
    position = 0
    for start, end, blocks in sorted(replacements, key=lambda r: r[0]):
        parts += [_text(text[position:start]), *blocks]
        position = end
    parts.append(_text(text[position:]))
    return parts


def _encodable(blocks: list[Block], label: str) -> list[Block]:
    """``blocks``, or a ``UsageError`` when their text cannot be encoded to be sent (lone surrogates)."""
    for block in blocks:
        if block["type"] == "text":
            try:
                block["text"].encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = block["text"][exc.start : exc.end]
                raise UsageError(
                    f"{label}: its text holds {bad!r}, half of a character (a lone surrogate, e.g. from a file "
                    "name read with errors='surrogateescape'), which cannot be sent. Clean it first, e.g. "
                    "text.encode('utf-8', 'replace').decode(), and send that."
                ) from None
    return blocks


def _without_key(blocks: list[Block], label: str, masked: list[str] | None) -> list[Block]:
    """``blocks`` with the API key masked in their text; ``label`` noted in ``masked`` if it was there."""
    key = current_key()
    if key is None or not any(b["type"] == "text" and key in b["text"] for b in blocks):
        return blocks
    if masked is not None and label not in masked:
        masked.append(label)
    return [_text(mask_key(b["text"], key)) if b["type"] == "text" else b for b in blocks]


def _substitutable(text: str, start: int, end: int) -> bool:
    """Whether a ``{…}`` stands on its own: not glued to a word, LaTeX or shell, not in an f-string."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if _word(before) or before in _GLUED or _word(after) or after == "_":
        return False
    line = text[text.rfind("\n", 0, start) + 1 : start]
    opened = list(_F_STRING.finditer(line))
    # Inside f"…{x}…" when the last f-string quote on the line is not closed before the brace.
    return not opened or opened[-1].group(1) in line[opened[-1].end() :]


def _word(char: str) -> bool:
    # ASCII only: Chinese text puts {fig} right after a character, with no space.
    return char.isascii() and char.isalnum()


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The token without the punctuation around it: ``(see photo.png).`` → ``photo.png``."""
    while start < end and _around(text[start], _OPENERS):
        start += 1
    while end > start and _around(text[end - 1], _CLOSERS):
        closer = text[end - 1]
        # A URL may end in a bracket of its own (…/Foo_(bar)): keep it while it is balanced.
        opener = {")": "(", "]": "["}.get(closer)
        if opener and text.count(opener, start, end) >= text.count(closer, start, end):
            break
        end -= 1
    return start, end


def _around(char: str, ascii_ones: str) -> bool:
    """Whether ``char`` may stand around a path or URL: ``ascii_ones``, or any other punctuation or format character."""
    if char.isascii():
        return char in ascii_ones
    category = unicodedata.category(char)
    return category[0] == "P" or category == "Cf"


def _token(token: str) -> list[Block] | None:
    """A whole token that is a media URL or an explicit ``image:``/``video:``."""
    explicit = _EXPLICIT.match(token)
    if explicit is not None:
        told_kind, target = explicit.groups()
        kind: MediaKind = "image" if told_kind == "image" else "video"
        if _SCHEME.match(target):
            return [_url(target, kind, f"{kind}:{target}")]
        if _PATH.match(target) and ("." in target or "/" in target):
            return [_media.file_block(target, kind)]
        return None
    scheme = _SCHEME.match(token)
    if scheme is not None:
        if scheme.group(1).lower() in ("http", "https"):
            seen = _media.url_kind(token)
            return None if seen is None or not _is_url(token) else [_media.url_block(seen, token)]
        told = _media.url_kind(token)
        if told is not None and token[scheme.end() :].startswith("//"):
            _url(token, told, token)  # raises: clearly media, under a scheme that cannot be sent
    return None


def _file(text: str, start: int, end: int, words: list[int]) -> tuple[int, int, list[Block]] | None:
    """The local file ``text[start:end]`` names, as ``(start, end, blocks)``; None for other words.

    A name that is no file may still be part of one: the name inside ``_emphasis_``, the end
    of a word glued to Chinese text (``描述照片.png``), or the name with the words before it
    (``my photo.png``). Each is sent only if it exists. A plain name that stays missing is a
    ``UsageError``; odd characters (``it's.png``) are sent only when the file exists.
    """
    token = text[start:end]
    if not _media_name(token.rstrip("_")):  # most words: nothing to look up
        return None
    for first, last in _names(text, start, end, words):
        name = text[first:last]
        if _media_name(name) and _exists(name):
            return first, last, [_media.file_block(name)]
    if _PATH.match(token) and _media.kind_of(token) is not None:
        return start, end, [_media.file_block(token)]  # says the file is missing
    return None


def _names(text: str, start: int, end: int, words: list[int]) -> Iterator[tuple[int, int]]:
    """Where a file's name may stand around ``text[start:end]``, most likely first."""
    yield start, end
    token = text[start:end]
    inner = token.strip("_")
    if inner and token[0] == token[-1] == "_":
        first = start + token.index(inner)
        yield first, first + len(inner)
    for index in range(max(1, len(token) - _NAME_MAX), len(token)):  # a longer name is no file's
        if any(low <= ord(token[index - 1]) <= high for low, high in _CJK):
            yield start + index, end
    for first in reversed(words[-_JOINED_WORDS:]):
        if "\n" not in text[first:start]:
            yield first, end


def _media_name(name: str) -> bool:
    """Whether ``name`` ends in an image or video extension, one the service takes or not."""
    return _media.kind_of(name) is not None or _media.unsupported_image(name) is not None


def _exists(typed: str) -> bool:
    """Whether a file (or a link, even a broken one) is at ``typed``; never raises."""
    try:
        return os.path.lexists(_files.resolve(typed))
    except UsageError:
        return False


def _markdown_image(dest: str) -> Block:
    """``![alt](dest)``: a URL (video if its extension says so, else image) or a local file."""
    dest = dest[1:-1].strip() if dest.startswith("<") else dest
    if _SCHEME.match(dest):
        return _url(dest, _media.url_kind(dest) or "image", f"![…]({dest})")
    return _media.file_block(dest)


def _is_url(url: str) -> bool:
    return bool(urlsplit(url).netloc) and not any(c in url for c in '<>"')


def _url(url: str, kind: MediaKind, typed: str) -> Block:
    """A URL block from a media position; only http(s) URLs may be sent."""
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        hint = {
            "file": "write the file's path itself, e.g. /tmp/photo.png, and it is sent inline",
            "data": "save the image to a file and write its path, or put the image object in the cell as {name}",
        }.get(scheme, "download it and write the local path, or use an http(s) URL")
        raise UsageError(f"{_short(typed)}: {scheme}: URLs cannot be sent as {kind}s; only http(s) URLs can: {hint}.")
    if not _is_url(url):
        raise UsageError(f"{_short(typed)} is not a valid http(s) URL.")
    told = _media.url_kind(url)
    if kind == "image" and told is None and (fmt := _media.unsupported_image(urlsplit(url).path)) is not None:
        # Sent, the service would answer with a 400 about the image; a bare URL in the text stays a link.
        raise UsageError(_media.not_taken(_short(typed), fmt, remote=True))
    if told is not None and told != kind:
        raise UsageError(
            f"{_short(typed)}: the URL ends in {_media.a(told)} extension; write {told}:{url} or leave out the prefix."
        )
    return _media.url_block(kind, url)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tidy(parts: list[Block]) -> list[Block]:
    """Adjacent text merged, each text part stripped, empty ones dropped (the service rejects them)."""
    merged: list[Block] = []
    for part in parts:
        if part["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = _text(merged[-1]["text"] + part["text"])
        else:
            merged.append(part)
    tidy: list[Block] = []
    for part in merged:
        if part["type"] == "text":
            if not part["text"].strip():
                continue
            part = _text(part["text"].strip())
        tidy.append(part)
    return tidy
