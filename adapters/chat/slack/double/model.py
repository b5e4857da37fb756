"""The double's records (users, apps, channels, messages, files) and small pure helpers.

Everything here is plain data; :class:`~adapters.chat.slack.double.state.Workspace`
owns the records and holds the lock. Shapes follow Slack's docs
(docs.slack.dev, reference/objects and reference/methods); fields marked
*inferred* were not documented and are chosen to be plausible.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from typing import Any

import attrs

#: Chunk types a stream accepts (slack_sdk 3.48 models/messages/chunk.py).
CHUNK_TYPES = ("markdown_text", "task_update", "plan_update", "blocks")
#: Task states a ``task_update`` chunk may carry (same source).
TASK_STATUSES = ("pending", "in_progress", "complete", "error")
#: A well-formed message timestamp: seconds, a dot, digits.
TS_PATTERN = re.compile(r"^\d{1,12}\.\d{1,6}$")
#: Conversation kinds: Slack's ``channel_type`` values.
KINDS = ("channel", "group", "im", "mpim")
#: ``conversations.list`` ``types`` names per kind.
TYPE_NAMES = {"public_channel": "channel", "private_channel": "group", "im": "im",
              "mpim": "mpim"}
#: Every scope the double knows; an app gets all of them unless told otherwise.
DEFAULT_SCOPES = (
    "app_mentions:read", "channels:history", "channels:read", "chat:write", "commands",
    "files:read", "files:write", "groups:history", "groups:read", "im:history", "im:read",
    "im:write", "mpim:history", "mpim:read", "reactions:read", "reactions:write", "users:read",
)
#: The history scope a bot needs to get ``message`` events and history of a kind.
HISTORY_SCOPE = {"channel": "channels:history", "group": "groups:history",
                 "im": "im:history", "mpim": "mpim:history"}
#: The read scope for a kind's ``conversations.*`` metadata.
READ_SCOPE = {"channel": "channels:read", "group": "groups:read", "im": "im:read",
              "mpim": "mpim:read"}


class SlackError(Exception):
    """A refusal, answered as HTTP 200 ``{"ok": false, "error": ...}``.

    The test-facing methods of the double raise it too (e.g. posting where the
    user is no member).

    Attributes:
        error: Slack's error code, e.g. ``"channel_not_found"``.
        extra: More fields for the answer (e.g. ``needed``/``provided`` for
            ``missing_scope``).
    """

    def __init__(self, error: str, **extra: Any) -> None:
        """Create the error.

        Args:
            error: Slack's error code.
            **extra: More fields for the JSON answer.
        """
        super().__init__(error)
        self.error = error
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        """Return the answer body ``{"ok": false, "error": ..., **extra}``."""
        return {"ok": False, "error": self.error, **self.extra}


@attrs.frozen
class SlackApp:
    """An installed Slack app with its bot user (all ids and tokens fixed at creation).

    Attributes:
        app_id: ``A…``.
        name: The app's name (also its bot user's name).
        bot_user_id: The bot user's id, ``U…`` (what ``<@…>`` mentions name).
        bot_id: ``B…``, carried by the bot's messages.
        bot_token: ``xoxb-…``, for the Web API.
        app_token: ``xapp-…``, for ``apps.connections.open`` (Socket Mode).
        scopes: The bot's granted scopes (sent as ``x-oauth-scopes``).
        commands: Slash commands the app owns, e.g. ``("/bridge",)``.
        verification_token: The legacy token carried in payloads (``token``).
    """

    app_id: str
    name: str
    bot_user_id: str
    bot_id: str
    bot_token: str = attrs.field(repr=False)
    app_token: str = attrs.field(repr=False)
    scopes: tuple[str, ...]
    commands: tuple[str, ...] = ()
    verification_token: str = attrs.field(default="", repr=False)


@attrs.define
class User:
    """A workspace member: a person, or a bot user (of an app or not)."""

    id: str
    name: str
    is_bot: bool
    bot_id: str | None = None
    app_id: str | None = None

    def to_json(self, team_id: str) -> dict[str, Any]:
        """Return a ``users.info`` user object (the fields a client reads)."""
        profile: dict[str, Any] = {"real_name": self.name, "display_name": self.name,
                                   "team": team_id}
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        if self.app_id:
            profile["api_app_id"] = self.app_id
        return {"id": self.id, "team_id": team_id, "name": self.name, "deleted": False,
                "real_name": self.name, "is_bot": self.is_bot, "is_app_user": False,
                "updated": 0, "profile": profile}


@attrs.define
class Channel:
    """A conversation: ``kind`` is ``channel`` (public), ``group`` (private), ``im`` or
    ``mpim``; ``messages`` is keyed by ts in posting order (timestamps only grow)."""

    id: str
    name: str
    kind: str
    members: list[str]
    created: int
    creator: str
    messages: dict[str, Message] = attrs.Factory(dict)
    #: Parent ts -> its replies' ts, in order.
    threads: dict[str, list[str]] = attrs.Factory(dict)

    @property
    def is_private(self) -> bool:
        """Whether non-members may not see it (everything but public channels)."""
        return self.kind != "channel"

    def to_json(self, viewer: str) -> dict[str, Any]:
        """Return a ``conversations.info``/``.list`` object as ``viewer`` sees it."""
        if self.kind == "im":
            other = next((m for m in self.members if m != viewer), viewer)
            return {"id": self.id, "created": self.created, "is_im": True,
                    "is_org_shared": False, "user": other, "is_user_deleted": False,
                    "priority": 0, "is_open": True}
        empty = {"value": "", "creator": "", "last_set": 0}
        return {
            "id": self.id, "name": self.name, "name_normalized": self.name,
            "is_channel": self.kind == "channel", "is_group": self.kind == "group",
            "is_im": False, "is_mpim": self.kind == "mpim", "is_private": self.is_private,
            "created": self.created, "creator": self.creator, "is_archived": False,
            "is_general": False, "unlinked": 0, "is_shared": False, "is_org_shared": False,
            "is_ext_shared": False, "is_pending_ext_shared": False,
            "is_member": viewer in self.members, "num_members": len(self.members),
            "topic": dict(empty), "purpose": dict(empty),
        }


@attrs.define
class Stream:
    """A message's streaming state (``chat.startStream`` … ``chat.stopStream``)."""

    chunks: list[dict[str, Any]]
    started_at: float
    streaming: bool = True
    recipient_user_id: str | None = None
    recipient_team_id: str | None = None
    task_display_mode: str | None = None


@attrs.define
class Message:
    """A stored message. ``thread_ts`` is set on replies (the parent's ts);
    ``broadcast`` marks a reply also shown in the channel (``thread_broadcast``)."""

    ts: str
    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    broadcast: bool = False
    metadata: dict[str, Any] | None = None
    files: list[str] = attrs.Factory(list)
    reactions: dict[str, list[str]] = attrs.Factory(dict)
    bot_id: str | None = None
    app_id: str | None = None
    edited: dict[str, str] | None = None
    client_msg_id: str | None = None
    stream: Stream | None = None

    @property
    def is_reply(self) -> bool:
        """Whether it lives in a thread other than its own."""
        return self.thread_ts is not None and self.thread_ts != self.ts


@attrs.define
class File:
    """An uploaded file; ``content`` is None until its bytes were sent."""

    id: str
    name: str
    title: str
    user: str
    created: int
    length: int
    upload_key: str
    content: bytes | None = None
    completed: bool = False
    channels: list[str] = attrs.Factory(list)

    @property
    def mimetype(self) -> str:
        """The type guessed from the name (``application/octet-stream`` if unknown)."""
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    @property
    def filetype(self) -> str:
        """Slack's short type: ``text`` for ``.txt``, else the extension (``binary``)."""
        ext = self.name.rpartition(".")[2].lower() if "." in self.name else ""
        return {"txt": "text", "md": "markdown", "py": "python", "": "binary"}.get(ext, ext)


def ts_key(ts: str) -> int:
    """Return a timestamp in microseconds, for ordering.

    Raises:
        ValueError: When ``ts`` is not of the form ``"1700000000.000100"``.
    """
    if not TS_PATTERN.match(ts):
        raise ValueError(f"not a message timestamp: {ts!r}")
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0"))


def format_ts(micros: int) -> str:
    """Return microseconds as a Slack ts: ``"1700000000.000100"``."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def encode_cursor(offset: int) -> str:
    """Return an opaque page cursor for ``offset`` (base64, like Slack's)."""
    return base64.b64encode(f"next:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """Return the offset in a cursor from :func:`encode_cursor` (0 for none).

    Raises:
        SlackError: ``invalid_cursor``.
    """
    if not cursor:
        return 0
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SlackError("invalid_cursor") from exc
    if prefix != "next" or offset < 0:
        raise SlackError("invalid_cursor")
    return offset


def page(items: list[Any], cursor: str | None, limit: int) -> tuple[list[Any], str]:
    """Cut one page from ``items``.

    Args:
        items: Everything, in answer order.
        cursor: The caller's cursor (empty or None: the first page).
        limit: Most items per page (at least 1).

    Returns:
        ``(the page, next_cursor)``; ``next_cursor`` is ``""`` on the last page.

    Raises:
        SlackError: ``invalid_cursor``.
    """
    start = decode_cursor(cursor)
    end = start + max(1, limit)
    return items[start:end], encode_cursor(end) if end < len(items) else ""


def mentions(text: str, user_id: str) -> bool:
    """Whether ``text`` mentions ``user_id`` as ``<@U…>`` or ``<@U…|name>``."""
    return re.search(rf"<@{re.escape(user_id)}(\|[^>]*)?>", text) is not None


def find_button(blocks: list[dict[str, Any]] | None,
                action_id: str) -> tuple[str, dict[str, Any]] | None:
    """Find a button by ``action_id`` in ``actions`` elements or section accessories.

    Returns:
        ``(block_id, element)`` or None when no button has that action_id.
    """
    for block in blocks or []:
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            elements.append(accessory)
        for element in elements:
            if (isinstance(element, dict) and element.get("type") == "button"
                    and element.get("action_id") == action_id):
                return str(block.get("block_id", "")), element
    return None
