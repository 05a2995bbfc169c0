"""The control panel and the live usage footer (ipywidgets, imported only when shown).

Every widget is displayed as one bundle holding the widget view *and* a static
``text/html``/``text/plain`` rendering, so terminals, nbconvert, GitHub and frontends
without the widget manager show text instead of ``HBox(children=...)``.

The panel's controls are linked to the ``QwenMagics`` traits themselves (``traitlets.link``):
the panel, ``%config`` and ``%qwen config`` edit one set of settings. The panel knows the
magics only as a ``Session``: settings to link, totals to show, a conversation to restart.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._ipython import display, update_display

if TYPE_CHECKING:
    from traitlets.utils.bunch import Bunch

    from ._answer import Usage


class Widget(Protocol):
    """An ipywidgets widget, as a display bundle names it (ipywidgets ships no types)."""

    model_id: str


class Spending(Protocol):
    """What one conversation has spent."""

    requests: int
    spent: Usage


class Session(Protocol):
    """What the panel shows and edits (``QwenMagics`` is one): traits, totals, conversations."""

    model: str
    thinking: bool
    thinking_budget: int
    max_tokens: int
    cache: str
    context: str
    requests: int
    totals: Usage

    @property
    def chats(self) -> Mapping[str, Spending]:
        """The conversations by name (read here, never replaced)."""

    def new_conversation(self) -> None:
        """Start the default conversation afresh."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_bundle(widget: Widget, html_text: str, plain: str) -> dict[str, Any]:
    """A display bundle: the live widget where a widget manager exists, static text elsewhere."""
    return {
        WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": widget.model_id},
        "text/html": html_text,
        "text/plain": plain,
    }


class LiveStatus:
    """A one-line widget that shows a streaming answer's progress under it."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.widget = w.HTML(value="")

    def set(self, text: str) -> None:
        """Show ``text`` (a comm message, not a display message: cheap to repeat)."""
        self.widget.value = f'<span class="qwen-status" style="color:#888;font-size:0.85em">{html.escape(text)}</span>'

    def bundle(self, plain: str) -> dict[str, Any]:
        """The widget, with plain text where no widget manager runs."""
        return {
            WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
            "text/plain": plain,
        }

    def close(self) -> None:
        """Release the widget's comm once the answer has settled into static output."""
        self.widget.close()


def live_status() -> LiveStatus | None:
    """A status widget, or None where ipywidgets cannot be used."""
    try:
        return LiveStatus()
    except Exception:  # no ipywidgets, or no comm manager: static output only
        return None


def totals_text(magics: Session) -> str:
    """Session totals in one line."""
    from ._cache import cost_text

    t = magics.totals
    prompt = t.input_tokens + t.cache_read + t.cache_write
    ratio = f"{t.cache_read / prompt:.0%}" if prompt else "–"
    return (
        f"{magics.requests} requests · {t.input_tokens:,} input · {t.output_tokens:,} output · "
        f"{t.cache_read:,} cache read · {t.cache_write:,} cache written · cache hit ratio {ratio} · "
        f"{cost_text(t.input_tokens, t.cache_write, t.cache_read)}"
    )


def savings_text(magics: Session) -> str:
    """What caching saved or cost per conversation, e.g. 'default: saved 81% (40,120 tokens) · x: cost 25% more (…)'."""
    from ._cache import saving_text

    parts = [
        f"{name}: {saving_text(c.spent.input_tokens, c.spent.cache_write, c.spent.cache_read)}"
        for name, c in magics.chats.items()
        if c.requests
    ]
    return "Caching vs full price — " + " · ".join(parts) if parts else ""


def settings_text(magics: Session) -> str:
    """The panel's settings as plain text."""
    budget = f" (budget {magics.thinking_budget:,})" if magics.thinking else ""
    return (
        f"model {magics.model} · thinking {'on' if magics.thinking else 'off'}{budget} · "
        f"max tokens {magics.max_tokens:,} · cache {magics.cache} · context {magics.context}"
    )


class Panel:
    """Settings controls bound to the magics' traits, plus live session totals."""

    def __init__(self, magics: Session, models: Sequence[str] = ()) -> None:
        import ipywidgets as w
        from traitlets import link

        self.magics = magics
        self.display_id: str | None = None
        style = {"description_width": "initial"}
        self.model = w.Combobox(
            options=list(models), value=magics.model, description="Model", ensure_option=False, style=style
        )
        self.thinking = w.ToggleButton(value=magics.thinking, description="Thinking", icon="lightbulb-o")
        self.budget = w.BoundedIntText(
            value=magics.thinking_budget, min=1, max=1_000_000, step=512, description="Thinking budget", style=style
        )
        self.max_tokens = w.BoundedIntText(
            value=magics.max_tokens, min=1, max=1_000_000, step=512, description="Max tokens", style=style
        )
        self.cache = w.Dropdown(options=["auto", "manual", "off"], value=magics.cache, description="Cache", style=style)
        self.context = w.ToggleButton(
            value=magics.context == "auto", description="Context", icon="book",
            tooltip="Send the cells run since the last question (QwenMagics.context)",
        )
        # ipywidgets gives buttons a fixed width that cuts this label to "New conversat…".
        self.new = w.Button(description="New conversation", icon="refresh", layout=w.Layout(width="auto"))
        self.totals = w.HTML(value=self._totals_html())
        self.status = w.HTML(value="")
        self.links = [
            link((magics, "model"), (self.model, "value")),
            link((magics, "thinking"), (self.thinking, "value")),
            link((magics, "thinking_budget"), (self.budget, "value")),
            link((magics, "max_tokens"), (self.max_tokens, "value")),
            link((magics, "cache"), (self.cache, "value")),
            link((magics, "context"), (self.context, "value"), transform=(lambda v: v == "auto", _auto_or_off)),
        ]
        self.budget.disabled = not magics.thinking
        self.thinking.observe(self._on_thinking, names="value")
        self.new.on_click(self._on_new)
        layout = w.Layout(flex_flow="row wrap", align_items="center", gap="0.5em")
        self.widget = w.VBox(
            [
                w.HBox([self.model, self.thinking, self.budget, self.max_tokens, self.cache, self.context, self.new], layout=layout),
                self.totals,
                self.status,
            ]
        )

    def _on_thinking(self, change: Bunch) -> None:
        self.budget.disabled = not change["new"]

    def _on_new(self, _button: object) -> None:
        self.magics.new_conversation()
        self.status.value = '<span style="color:#888">New conversation: the next cell starts afresh.</span>'

    def _totals_html(self) -> str:
        savings = savings_text(self.magics)
        return (
            f'<span style="color:#666;font-size:0.9em">Session: {html.escape(totals_text(self.magics))}'
            + (f"<br>{html.escape(savings)}" if savings else "")
            + "</span>"
        )

    def refresh(self) -> None:
        """Show the latest totals (called when an answer ends), in the widget and its fallback."""
        self.totals.value = self._totals_html()
        self.status.value = ""
        if self.display_id is not None:
            # Keeps the static text current for nbconvert, GitHub and frontends without widgets.
            update_display(self.bundle(), raw=True, display_id=self.display_id)

    def bundle(self) -> dict[str, Any]:
        """The panel with its text fallback."""
        savings = savings_text(self.magics)
        text = f"Qwen: {settings_text(self.magics)}\nSession: {totals_text(self.magics)}" + (
            f"\n{savings}" if savings else ""
        )
        static = (
            '<div class="qwen-panel" style="color:#666;font-size:0.9em">'
            f"<b>Qwen</b> · {html.escape(settings_text(self.magics))}<br>"
            f"Session: {html.escape(totals_text(self.magics))}"
            + (f"<br>{html.escape(savings)}" if savings else "")
            + "</div>"
        )
        return widget_bundle(self.widget, static, text)


def _auto_or_off(on: bool) -> str:
    return "auto" if on else "off"


def show_panel(magics: Session, kernel: bool, models: Sequence[str] = ()) -> Panel | None:
    """Display the control panel under a kernel (the caller keeps it); elsewhere, print the settings."""
    if not kernel:
        savings = savings_text(magics)
        print(f"Qwen: {settings_text(magics)}\nSession: {totals_text(magics)}" + (f"\n{savings}" if savings else ""))
        print("(%qwen config key=value to change)")
        return None
    panel = Panel(magics, models)
    panel.display_id = uuid.uuid4().hex
    display(panel.bundle(), raw=True, display_id=panel.display_id)
    return panel
