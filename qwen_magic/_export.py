"""A conversation written out as a new notebook: one markdown cell per turn."""

from __future__ import annotations

import base64
import datetime
import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from IPython.core.error import UsageError

from ._conversation import Conversation, Turn
from ._files import check_target, resolve, write_failed
from ._footer import footer_text
from ._markdown import export_html
from ._text import mask_key

if TYPE_CHECKING:
    from nbformat import NotebookNode

    NewCell = Callable[[str], NotebookNode]

TOOL_PREVIEW = 300  # characters of a tool's input or result shown in the summary


def export(chat: Conversation, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``chat`` to ``path`` as a valid notebook; refuse to replace a file unless told to."""
    import nbformat
    from nbformat import v4

    # nbformat leaves these unannotated: what they are, for the type checker.
    new_notebook = cast("Callable[[], NotebookNode]", v4.new_notebook)
    new_markdown_cell = cast("NewCell", v4.new_markdown_cell)
    write = cast("Callable[[NotebookNode, str], None]", nbformat.write)
    target = resolve(path)
    if target.suffix != ".ipynb":
        raise UsageError(f"%qwen export writes a notebook: give a file name ending in .ipynb, not {str(path)!r}.")
    check_target(target, str(path), f"{chat.name}.ipynb")
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; add --force to replace it.")
    if not chat.turns:
        raise UsageError(f"Conversation `{chat.name}` has no turns to export yet.")
    models = sorted({turn.answer.model for turn in chat.turns})
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = [f"# Conversation `{chat.name}`", "", f"{len(chat.turns)} turn(s) with {', '.join(models)}, exported {when}."]
    if chat.system:
        header += ["", "**System prompt:**", "", _quote(chat.system)]
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(new_markdown_cell(mask_key(export_html("\n".join(header)))))
    for number, turn in enumerate(chat.turns, 1):
        nb.cells.append(_turn_cell(new_markdown_cell, turn, number))
    nbformat.validate(nb)
    try:
        write(nb, str(target))
    except OSError as exc:
        raise write_failed(str(path), target, exc) from None
    return target


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _turn_cell(new_markdown_cell: NewCell, turn: Turn, number: int) -> NotebookNode:
    attachments: dict[str, dict[str, str]] = {}
    fragments: list[str] = []

    def own(markup: str) -> str:
        """A placeholder paragraph for markup written here, put back after sanitizing."""
        fragments.append(markup)
        return f"QWENMAGICFRAGMENT{len(fragments) - 1}END"

    def attached(block: Mapping[str, Any]) -> str:
        """An inline image as a cell attachment, placed where it stood.

        nbconvert and JupyterLab resolve ``attachment:`` only in a markdown image, never in
        raw HTML: the image is a paragraph of its own between two HTML blocks (a blank line
        ends one). Its name and alt text hold nothing marked or the math pass could read.
        """
        source = block["source"]
        media_type = source.get("media_type", "image/png")
        name = f"turn{number}-{len(attachments) + 1}.{media_type.split('/')[-1]}"
        attachments[name] = {media_type: source.get("data", "")}
        return own(f"</div>\n\n![image](attachment:{name})\n\n<div>")

    parts = [f"### {number}. You", ""]
    if turn.context is not None:  # the notebook context sent with the prompt, collapsed
        summary, sent = _text(turn.context.summary()), _escape(turn.context.preview())
        parts += [own(f'<details class="qwen-context"><summary>{summary}</summary><pre style="white-space:pre-wrap">'
                      f"{sent}</pre></details>"), ""]
    for sent_block in turn.own_prompt:
        block: Mapping[str, Any] = sent_block  # any kind of block, read by its keys
        kind = block.get("type")
        if kind == "text":
            parts += [_quote(block["text"]), ""]
        elif kind == "image" and block.get("source", {}).get("type") == "base64":
            parts += [attached(block), ""]
        elif kind in ("image", "video"):
            parts += [own(_media(block)), ""]
    answer = turn.answer
    parts += [f"### Qwen ({answer.model})", ""]
    if answer.thinking:
        thinking = f'<pre style="white-space:pre-wrap">{_escape(answer.thinking)}</pre>'
        parts += [own(f"<details><summary>Thinking</summary>{thinking}</details>"), ""]
    for call in _tool_calls(turn):
        parts += [own(call), ""]
    parts += [answer.text or "*(no text)*", "", own(f"<sub>{_text(footer_text(answer))}</sub>")]
    # The model's and the user's text are rendered and cleaned as one document; the markup
    # written here is escaped to one line with no `$` or `\`, like the rendered HTML, so
    # putting it back cannot give JupyterLab's math or markdown step anything to pair.
    source = export_html("\n".join(parts))
    for index, markup in enumerate(fragments):
        placeholder = f"QWENMAGICFRAGMENT{index}END"
        source = source.replace(f"<p>{placeholder}</p>", markup, 1).replace(placeholder, markup, 1)
    cell = new_markdown_cell(mask_key(source))  # the key never goes into a file
    if attachments:
        cell["attachments"] = attachments
    return cell


def _media(block: Mapping[str, Any]) -> str:
    """What the user sent by URL or as a video, as markup of our own: images shown, as in the live preview."""
    source = block.get("source", {})
    if source.get("type") == "url":
        url = _escape(source["url"])
        if block["type"] == "image":
            return f'<img src="{url}" alt="image">' if source["url"].startswith(("http://", "https://")) else url
        return f'<a href="{url}" rel="noopener noreferrer">▶ video: {_text(source["url"])}</a>'
    media_type = source.get("media_type", "application/octet-stream")
    size = len(base64.b64decode(source.get("data", ""), validate=False)) if source.get("data") else 0
    return f"<em>(a {_escape(media_type)} video of {size:,} bytes was sent inline)</em>"


def _tool_calls(turn: Turn) -> list[str]:
    """One collapsed line per tool call made during the turn, with its result if known."""
    blocks = [b for done in turn.answer.rounds for b in (*done.blocks, *done.tool_results)]
    blocks += list(turn.answer.blocks)
    results = {b.get("tool_use_id"): b.get("content") for b in blocks if b.get("type") == "tool_result"}
    lines = []
    for block in blocks:
        if block.get("type") != "tool_use":
            continue
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
        result = results.get(block.get("id"))
        if not isinstance(result, str):
            result = json.dumps(result, ensure_ascii=False, default=str) if result is not None else "(no result)"
        lines.append(
            f"<details><summary>🔧 {_text(block.get('name', '?'))}({_text(_cut(arguments))})</summary>"
            f"<pre>{_escape(_cut(result))}</pre></details>"
        )
    return lines


def _text(text: str) -> str:
    """``_escape`` for text outside ``<pre>``: each ``$`` and ``\\`` also alone in an element, as the
    rendered answer has them, since MathJax reads the page after the browser decodes ``&#36;``."""
    from ._markdown import text_html

    return text_html(text).translate(_ONE_LINE)


def _escape(text: str) -> str:
    """HTML-escaped, on one line, with nothing JupyterLab's math or marked could pair up."""
    return html.escape(text).translate(_ONE_LINE)


_ONE_LINE = str.maketrans({"\n": "&#10;", "$": "&#36;", "\\": "&#92;", "`": "&#96;"})


def _cut(text: str) -> str:
    return text if len(text) <= TOOL_PREVIEW else text[: TOOL_PREVIEW - 1] + "…"
