"""Slack's event and API payloads read into typed values (pure functions, no I/O).

Shapes from docs.slack.dev: reference/events/message (and its subtypes),
reference/events/app_mention, reference/interaction-payloads/block_actions-payload,
reference/methods/conversations.list and conversations.history. A payload
without the fields a value needs is refused (None), never guessed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from adapters.chat.slack.render import key_of

#: Message subtypes that are a member's (or another bot's) message; every other
#: subtype (``message_changed``, ``message_deleted``, ``channel_join``, ...) never
#: starts a run (docs reference/events/message, "Message subtypes").
TAKEN_SUBTYPES = frozenset({"", "file_share", "thread_broadcast", "bot_message", "me_message"})


@attrs.frozen
class ChannelInfo:
    """A conversation the bot is in.

    Attributes:
        id: Its id (``C…``, ``G…`` or ``D…``).
        name: Its name (a DM: ``dm-<user id>``).
        direct: True for a DM with the bot (``is_im``).
    """

    id: str
    name: str
    direct: bool = False


@attrs.frozen
class SlackFile:
    """A file shared with a message.

    Attributes:
        id: The file id (``F…``).
        name: Its file name.
        size_bytes: Its size in bytes.
        mime_type: Its MIME type.
        url: ``url_private`` (downloading it needs the bot token).
    """

    id: str
    name: str
    size_bytes: int
    mime_type: str
    url: str


@attrs.frozen
class SlackMessage:
    """A message as the intake takes it.

    Attributes:
        channel: Its channel id.
        ts: Its timestamp (its id in the channel), e.g. ``1700000000.000100``.
        text: Its text (mrkdwn as Slack stores it).
        user: The author's user id (empty for a ``bot_message`` without one).
        bot_id: The posting bot's id, when a bot posted it.
        username: The name a ``bot_message`` shows.
        thread_ts: Its thread's parent ts (a reply, or a parent: its own ts); empty
            for a message outside threads.
        files: The files shared with it.
        reply_count: Replies in its thread (a parent in history).
        latest_reply: The ts of its thread's latest reply (a parent in history).
        metadata_key: The idempotency key the bridge put in its metadata, if any.
    """

    channel: str
    ts: str
    text: str
    user: str = ""
    bot_id: str = ""
    username: str = ""
    thread_ts: str = ""
    files: tuple[SlackFile, ...] = ()
    reply_count: int = 0
    latest_reply: str = ""
    metadata_key: str = ""

    @property
    def author(self) -> str:
        """Who posted it: the user id, else the bot id."""
        return self.user or self.bot_id


@attrs.frozen
class Click:
    """A member's click on a button (a ``block_actions`` payload's first action).

    Attributes:
        user_id: Who clicked.
        user_name: Their name as the payload gives it (may be empty).
        channel: The channel of the clicked message.
        message_ts: The clicked message's ts.
        thread_ts: Its thread's parent ts (empty outside threads).
        message_user: The clicked message's author user id.
        message_bot_id: The clicked message's bot id.
        action_id: The button's ``action_id`` (the control's name).
        value: The button's ``value``.
    """

    user_id: str
    user_name: str
    channel: str
    message_ts: str
    thread_ts: str
    message_user: str
    message_bot_id: str
    action_id: str
    value: str


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ts_position(ts: str) -> int:
    """A ts as an orderable integer (microseconds since the epoch); 0 when malformed."""
    seconds, _, fraction = ts.partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        return 0
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0")[:6])


def ts_text(epoch_s: float) -> str:
    """Epoch seconds as a Slack ts (six decimals)."""
    return f"{epoch_s:.6f}"


def iso_of(ts: str) -> str:
    """A ts as ISO 8601 text (UTC); empty when malformed."""
    position = ts_position(ts)
    if not position:
        return ""
    moment = datetime.datetime.fromtimestamp(position / 1_000_000, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


class _Answer(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


def next_cursor(page: _Answer | Mapping[str, Any]) -> str:
    """A paged answer's ``response_metadata.next_cursor``; empty on the last page.

    Args:
        page: The answer (a dict, or slack-sdk's ``SlackResponse``).
    """
    meta = page.get("response_metadata")
    return _text(meta.get("next_cursor")) if isinstance(meta, dict) else ""


def mentions(text: str, user_id: str) -> bool:
    """Whether ``text`` mentions ``user_id`` (``<@U123>`` or ``<@U123|name>``)."""
    return bool(user_id) and (f"<@{user_id}>" in text or f"<@{user_id}|" in text)


def channel_info(channel: Mapping[str, Any]) -> ChannelInfo:
    """A ``conversations.list``/``.info`` channel object as a :class:`ChannelInfo`."""
    direct = bool(channel.get("is_im"))
    name = _text(channel.get("name")) or (f"dm-{_text(channel.get('user'))}" if direct else "")
    return ChannelInfo(_text(channel.get("id")), name or _text(channel.get("id")), direct)


def user_of(user: Mapping[str, Any]) -> tuple[str, bool]:
    """A ``users.info`` user as (display name, is a bot)."""
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    assert isinstance(profile, dict)
    name = (_text(profile.get("display_name")) or _text(user.get("real_name"))
            or _text(user.get("name")) or _text(user.get("id")))
    return name, bool(user.get("is_bot")) or _text(user.get("id")) == "USLACKBOT"


def message_of(raw: Mapping[str, Any], channel: str) -> SlackMessage | None:
    """A ``message``/``app_mention`` event, or a history message, as a :class:`SlackMessage`.

    Args:
        raw: The event or message object.
        channel: The channel it is in (history messages do not say).

    Returns:
        None for a subtype that is not a message to take (edits, deletes, joins),
        or when ``ts`` or the channel is missing.
    """
    subtype = _text(raw.get("subtype"))
    ts = _text(raw.get("ts"))
    channel = _text(raw.get("channel")) or channel
    if subtype not in TAKEN_SUBTYPES or not ts_position(ts) or not channel:
        return None
    files = tuple(SlackFile(_text(f.get("id")), _text(f.get("name")) or _text(f.get("id")),
                            int(f.get("size") or 0), _text(f.get("mimetype")),
                            _text(f.get("url_private")))
                  for f in raw.get("files") or [] if isinstance(f, dict) and f.get("id"))
    reply_count = raw.get("reply_count")
    return SlackMessage(
        channel=channel, ts=ts, text=_text(raw.get("text")), user=_text(raw.get("user")),
        bot_id=_text(raw.get("bot_id")), username=_text(raw.get("username")),
        thread_ts=_text(raw.get("thread_ts")), files=files,
        reply_count=reply_count if isinstance(reply_count, int) else 0,
        latest_reply=_text(raw.get("latest_reply")), metadata_key=key_of(raw) or "")


def click_of(payload: Mapping[str, Any]) -> Click | None:
    """A ``block_actions`` payload's first button as a :class:`Click`; None otherwise."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    user = payload.get("user")
    container = payload.get("container")
    message = payload.get("message")
    channel = payload.get("channel")
    if not (isinstance(actions, list) and actions and isinstance(actions[0], dict)
            and isinstance(user, dict) and isinstance(container, dict)):
        return None
    message = message if isinstance(message, dict) else {}
    channel_id = _text(container.get("channel_id")) or (
        _text(channel.get("id")) if isinstance(channel, dict) else "")
    message_ts = _text(container.get("message_ts")) or _text(message.get("ts"))
    if not channel_id or not message_ts or not _text(actions[0].get("action_id")):
        return None
    return Click(user_id=_text(user.get("id")),
                 user_name=_text(user.get("name")) or _text(user.get("username")),
                 channel=channel_id, message_ts=message_ts,
                 thread_ts=_text(container.get("thread_ts")) or _text(message.get("thread_ts")),
                 message_user=_text(message.get("user")),
                 message_bot_id=_text(message.get("bot_id")),
                 action_id=_text(actions[0].get("action_id")),
                 value=_text(actions[0].get("value")))
