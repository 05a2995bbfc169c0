"""The notebook view's repaints, without a kernel: every output it publishes is safe as a whole."""

from __future__ import annotations

import pytest

from qwen_magic import _view, _widgets
from qwen_magic._answer import Answer
from qwen_magic._markdown import sanitize

ADVERSARIAL = [
    # Safe apart, unsafe joined: the `$` of the heading pairs with the paragraph's first one.
    "# T $\n\nx $ <img src=x onerror=alert(1)> $\n\nmore text\n",
    "```\ncode\n  ```\n\n$ <img src=x onerror=alert(1)> $\n```\n",
    "Intro with a [link](https://qwen.ai).\n\n" * 40 + "<script>alert(1)</script>\n\n$a$ and $b\n\n$ <b onclick=x>c</b>\n",
]


@pytest.fixture
def published(monkeypatch):
    """Capture every bundle the view publishes, by display id, instead of sending it."""
    outputs: list[tuple[str, dict]] = []
    monkeypatch.setattr(_view, "_publish", lambda display_id, bundle, new=False, metadata=None: outputs.append((display_id, bundle)))
    monkeypatch.setattr(_view, "display", lambda *args, **kwargs: None)
    monkeypatch.setattr(_widgets, "live_status", lambda: None)
    return outputs


def stream(text: str, size: int, commit_at: int = 600) -> None:
    view = _view.NotebookView()
    view.INTERVAL = 0  # repaint on every delta: the most intermediate states
    view.COMMIT_AT = commit_at
    view.start(Answer(model="m"))
    for i in range(0, len(text), size):
        view.text(text[i : i + size])
    answer = Answer(model="m", text=text)
    view.finish(answer)


@pytest.mark.parametrize("doc", ADVERSARIAL)
@pytest.mark.parametrize("size", [1, 3, 7, 50])
@pytest.mark.parametrize("commit_at", [0, 600, 100_000])
def test_every_published_markdown_is_safe_as_a_whole(published, doc, size, commit_at):
    stream(doc, size, commit_at)
    shown = [bundle["text/markdown"] for _, bundle in published if "text/markdown" in bundle]
    assert shown
    for markdown in shown:
        assert sanitize(markdown) == markdown, markdown


def test_committed_plain_text_is_the_answer(published):
    doc = "# Title\n\n" + "A paragraph of text.\n\n" * 60 + "```python\nprint(1)\n```\n"
    stream(doc, 9)
    final: dict[str, dict] = {}
    for display_id, bundle in published:
        final[display_id] = bundle
    plain = "".join(b["text/plain"] for b in final.values() if "text/markdown" in b)
    assert plain == doc
