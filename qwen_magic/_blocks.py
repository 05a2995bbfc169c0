"""The shapes of what is sent: content blocks, messages and requests, as the SDK's TypedDicts.

Every block the package builds is a plain dict that the SDK sends as JSON. Typing them
with the SDK's own ``anthropic.types.*Param`` TypedDicts lets mypy check each block where
it is made (a misspelt key or a wrong ``type`` is an error). DashScope takes one block the
SDK does not know, ``video`` (an image's sources, any video media type): typed here.

The names are for the type checker only: importing ``anthropic`` costs about a second
(``_client`` imports it lazily), so at run time a ``Block`` is just a ``dict``. The few
functions below are the only places where a value crosses, unchecked, between the typed
blocks and the plain dicts ``Answer`` keeps (built from the stream's events), or from a
``Request`` to the SDK's keyword arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from typing import Literal, TypeAlias

    from anthropic.types import (
        Base64ImageSourceParam,
        CacheControlEphemeralParam,
        FileImageSourceParam,
        ImageBlockParam,
        RedactedThinkingBlockParam,
        TextBlockParam,
        ThinkingBlockParam,
        ThinkingConfigParam,
        ToolChoiceParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
        URLImageSourceParam,
    )
    from typing_extensions import NotRequired, Required, TypedDict

    class Base64VideoSourceParam(TypedDict):
        """An inline video: its media type (``video/mp4`` …) and base64 data."""

        type: Literal["base64"]
        media_type: str
        data: str

    class VideoBlockParam(TypedDict, total=False):
        """DashScope's ``video`` block (the SDK has none): a URL or inline source, like an image."""

        type: Required[Literal["video"]]
        source: Required[Base64VideoSourceParam | URLImageSourceParam]
        cache_control: CacheControlEphemeralParam | None

    MediaBlockParam: TypeAlias = ImageBlockParam | VideoBlockParam
    Block: TypeAlias = (
        TextBlockParam
        | ImageBlockParam
        | VideoBlockParam
        | ToolUseBlockParam
        | ToolResultBlockParam
        | ThinkingBlockParam
        | RedactedThinkingBlockParam
    )
    """A content block of a message this package sends or keeps in history."""

    class Message(TypedDict):
        """A message as the package builds it: content is always a list of blocks."""

        role: Literal["user", "assistant"]
        content: list[Block]

    class Request(TypedDict):
        """The keyword arguments of ``client.messages.stream`` / ``create``, as the package builds them.

        ``MessageCreateParams``' fields that the package uses, with ``Message`` for the
        SDK's ``MessageParam`` (which has no ``video`` block) and the body extras that
        DashScope reads (``temperature``, which SDK 2.x has no keyword for).
        """

        model: str
        max_tokens: int
        messages: list[Message]
        thinking: ThinkingConfigParam
        system: NotRequired[str | list[TextBlockParam]]
        tools: NotRequired[list[ToolParam]]
        tool_choice: NotRequired[ToolChoiceParam]
        extra_body: NotRequired[dict[str, object]]

    MediaSource: TypeAlias = Base64ImageSourceParam | Base64VideoSourceParam | URLImageSourceParam | FileImageSourceParam
    ImageMediaType: TypeAlias = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]


def from_answer(blocks: list[dict[str, Any]]) -> list[Block]:
    """``Answer``'s blocks (plain dicts, made from the stream's events) as the blocks they are."""
    return cast("list[Block]", blocks)


def to_answer(blocks: list[Block]) -> list[dict[str, Any]]:
    """Blocks for ``Answer`` (``tool_results``), which keeps plain dicts."""
    return cast("list[dict[str, Any]]", blocks)


def calls_of(blocks: list[dict[str, Any]]) -> list[ToolUseBlockParam]:
    """``Answer.tool_calls`` (plain dicts with ``type`` ``tool_use``) as ``tool_use`` blocks."""
    return cast("list[ToolUseBlockParam]", blocks)


def sdk_arguments(request: Request) -> dict[str, Any]:
    """``request`` as the keyword arguments the SDK is called with.

    The SDK's ``MessageParam`` has no ``video`` block, and a ``Message`` (content: a list)
    is not one of its TypedDicts to mypy, though the JSON is the same: the one crossing.
    """
    return cast("dict[str, Any]", request)
