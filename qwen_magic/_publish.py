"""Sending an answer's repaints: display messages straight to the kernel's IOPub socket.

A streamed answer is repainted five times a second; IPython's ``display`` path flushes
stdout and stderr before each message, a round trip to the kernel's IO thread each, which
costs more than the message. ``publish`` sends through ipykernel's session instead
whenever nothing needs the normal path (an ``Output`` widget capturing).
"""

from __future__ import annotations

from typing import Any

from ._ipython import display, get_ipython, update_display

Bundle = dict[str, str]  # a display's data: MIME type -> content


def publish(display_id: str, bundle: Bundle, *, new: bool = False, metadata: dict[str, Any] | None = None) -> None:
    """Show ``bundle`` in a new output (``new``) or in place of the output ``display_id`` names.

    Through ipykernel's session directly when it can (``_direct_publisher``), else through
    IPython's ``display``/``update_display``.
    """
    publisher = _direct_publisher()
    if publisher is not None:
        publisher.session.send(
            publisher.pub_socket,
            publisher.session.msg(
                "display_data" if new else "update_display_data",
                {"data": bundle, "metadata": metadata or {}, "transient": {"display_id": display_id}},
                parent=publisher.parent_header,
            ),
            ident=publisher.topic,
        )
    elif new:
        display(bundle, raw=True, display_id=display_id, metadata=metadata)
    else:
        update_display(bundle, raw=True, display_id=display_id, metadata=metadata)


def _direct_publisher() -> Any:
    """ipykernel's display publisher, when a streamed repaint may skip its stream flushing.

    ``ZMQDisplayPublisher.publish`` first flushes stdout and stderr, each a round trip to
    the kernel's IO thread; at five repaints a second that is most of a repaint's cost.
    The view flushes once when it starts instead, and nothing prints while it streams.
    With an output hook installed (an ``Output`` widget capturing), the normal path is kept.
    """
    shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    kind: type[object] = type(publisher)
    if publisher is None or not _sends_messages(kind):
        return None
    if getattr(publisher, "_hooks", None):
        return None
    return publisher


def _sends_messages(kind: type[object]) -> bool:
    """Whether a display publisher's class has what a direct send needs (asked once per class:
    reading these traits on an instance at every repaint costs more than the send)."""
    known = _SENDS_MESSAGES.get(kind)
    if known is None:
        needed = ("session", "pub_socket", "topic", "parent_header")
        known = _SENDS_MESSAGES[kind] = all(hasattr(kind, name) for name in needed)
    return known


_SENDS_MESSAGES: dict[type[object], bool] = {}
