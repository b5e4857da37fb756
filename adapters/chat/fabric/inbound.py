"""Turning Fabric payloads into :class:`bridge.messages.Inbound` (strictly).

Every field is checked; a payload that does not have Fabric's Message shape
raises :class:`bridge.errors.BadEvent` with the reason, and the gateway logs
and drops it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from adapters.chat.fabric.rules import content_length, mentioned_user_ids, wakes
from bridge.errors import BadEvent
from bridge.model import Inbound

#: Longest id accepted in any id field (characters).
MAX_ID_CHARS = 200


@attrs.frozen
class ChannelInfo:
    """What the gateway knows of one channel."""

    id: str
    name: str
    x_type: str
    last_seq: int = 0


def valid_text(text: str) -> str:
    """Return ``text`` as valid Unicode: lone surrogates (which JSON can carry but
    UTF-8 cannot) become ``?``, so the text can be stored, posted and piped to an
    agent."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _text(payload: dict[str, Any], key: str, *, limit: int = MAX_ID_CHARS) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"field {key!r} missing or not a non-empty string")
    if len(value) > limit:
        raise BadEvent(f"field {key!r} is longer than {limit} characters")
    return valid_text(value)


def channel_info(payload: Any) -> ChannelInfo:
    """Validate a Channel object from ``GET /channels``.

    Raises:
        BadEvent: on a missing or wrong-typed field.
    """
    if not isinstance(payload, dict):
        raise BadEvent("channel is not an object")
    last = payload.get("lastSeq", 0)
    return ChannelInfo(_text(payload, "id"), _text(payload, "name"),
                       _text(payload, "xType", limit=40),
                       last if isinstance(last, int) and not isinstance(last, bool) else 0)


def normalize_message(
    payload: Any, *, agent: str, guild: str, self_id: str, channel: ChannelInfo,
    author_name: Callable[[str], str], content_limit: int, catch_up: bool = False,
    author_is_bot: Callable[[str], bool] | None = None,
) -> Inbound:
    """Build an Inbound from a ``message.created`` payload or a history item.

    Args:
        payload: The decoded event payload.
        agent: Agent name of the receiving connection.
        guild: Guild node id.
        self_id: The agent's own user id (for wakeup inference and mentions).
        channel: The channel the message is in (already checked against the payload).
        author_name: Maps a user id to a display name.
        content_limit: Longest content accepted, in characters.
        catch_up: True for history items; their wakeup is inferred with
            :func:`adapters.chat.fabric.rules.wakes` since history carries no per-recipient flag.
        author_is_bot: Maps a user id to True for a bot or agent account (None: no one is).

    Raises:
        BadEvent: for a payload without Fabric's Message shape, content over the
            limit, or a deleted message.
    """
    if not isinstance(payload, dict):
        raise BadEvent(f"payload is {type(payload).__name__}, not an object")
    message_id = _text(payload, "messageId")
    if payload.get("channelId") != channel.id:
        raise BadEvent("channelId does not match the channel")
    seq = payload.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadEvent("field 'seq' missing or not a positive integer")
    content = payload.get("content")
    if not isinstance(content, str):
        raise BadEvent("field 'content' missing or not a string")
    if content_length(content) > content_limit:
        raise BadEvent(f"content is {content_length(content)} characters, over the limit "
                       f"{content_limit}")
    if payload.get("isDeleted") is True:
        raise BadEvent("message is deleted")
    content = valid_text(content)
    author = _text(payload, "authorUserId")
    created = payload.get("createdAt")
    wakeup = payload.get("wakeup")
    if catch_up or not isinstance(wakeup, bool):
        wakeup = wakes(x_type=channel.x_type, author_id=author, recipient_id=self_id,
                       content=content)
    return Inbound(
        platform="fabric", agent=agent, space=guild, channel_id=channel.id,
        channel_name=channel.name, is_direct=channel.x_type == "dm", message_id=message_id, seq=seq,
        cursor=str(seq),
        author_id=author, author_name=author_name(author), content=content,
        created_at=created if isinstance(created, str) else "",
        addressed=wakeup, mentioned=self_id in mentioned_user_ids(content), catch_up=catch_up,
        author_is_bot=author_is_bot(author) if author_is_bot is not None else False,
    )
