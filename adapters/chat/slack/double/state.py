"""The double's workspace: users, apps, conversations, messages, files, streams.

Pure logic, no I/O: the Web API (:mod:`~adapters.chat.slack.double.api`) and the
test-facing :class:`~adapters.chat.slack.double.server.SlackDouble` call in here,
and refusals are :class:`~adapters.chat.slack.double.model.SlackError`. One lock
guards everything. What apps must hear about is handed to ``sink(app_id,
envelope_type, payload)`` while the lock is held, so the order of envelopes is
the order of the changes; the sink must not block nor call back in.

Sources: docs.slack.dev (reference/methods/*, reference/events/message and
app_mention, interactivity/handling-user-interaction, block_actions payload,
slash commands); what is marked *inferred* was not documented.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from adapters.chat.slack.config import TOKEN_PREFIX
from adapters.chat.slack.double.model import (
    CHUNK_TYPES,
    DEFAULT_SCOPES,
    HISTORY_SCOPE,
    TASK_STATUSES,
    TS_PATTERN,
    Channel,
    File,
    Message,
    SlackApp,
    SlackError,
    Stream,
    User,
    find_button,
    format_ts,
    mentions,
    page,
    ts_key,
)

#: ``sink(app_id, envelope_type, payload)``; types: events_api, interactive, slash_commands.
Sink = Callable[[str, str, dict[str, Any]], None]
#: ``observer(change, message)``: ``change`` is ``"posted"`` (a new message, a
#: started stream) or ``"changed"`` (an edit, a stopped stream); ``message`` is a
#: fresh dict as :meth:`Workspace.all_messages` shows it, plus ``channel``.
Observer = Callable[[str, dict[str, Any]], None]
#: Default stream lifetime, in seconds, counted from ``chat.startStream``
#: (about 5 min: python-slack-sdk#1859, node-slack-sdk#2702).
STREAM_EXPIRY_S = 300.0
#: Longest ``text`` Slack keeps, in characters (docs changelog 2018-04).
TEXT_LIMIT = 40_000
#: Longest ``markdown_text``, in characters (docs chat.postMessage).
MARKDOWN_LIMIT = 12_000


def _drop(app_id: str, kind: str, payload: dict[str, Any]) -> None:
    """The default sink: nobody listens."""


class Workspace:
    """One Slack workspace (team) in memory. Every public method takes the one lock.

    Methods acting for someone take the acting user's id (a person, or an
    app's bot user) and check membership as Slack does: a private
    conversation the user is not in is ``channel_not_found``, a public one
    ``not_in_channel``. Returned dicts are fresh copies.
    """

    def __init__(self, *, team_id: str = "T0D0UBLE01", team_name: str = "double",
                 sink: Sink = _drop, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """Create an empty workspace.

        Args:
            team_id: The team id, ``T…``.
            team_name: The team's name (and its domain).
            sink: Receives what apps must be told (see the module docstring).
            clock: Wall clock in seconds (timestamps, ``created``).
            monotonic: Clock for stream lifetimes, in seconds.
        """
        self.team_id = team_id
        self.team_name = team_name
        self.base_url = ""  # the server's root URL, ending in "/", once it listens
        self._sink = sink
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._last_us = 0
        self._users: dict[str, User] = {}
        self._apps: dict[str, SlackApp] = {}
        self._channels: dict[str, Channel] = {}
        self._files: dict[str, File] = {}
        self._uploads: dict[str, str] = {}  # upload key -> file id
        self._tokens: dict[str, tuple[str, SlackApp]] = {}  # token -> (kind, app)
        self._revoked: set[str] = set()
        self._ephemerals: dict[str, list[dict[str, Any]]] = {}
        self._responders: dict[str, dict[str, Any]] = {}
        self._stream_expiry_s = STREAM_EXPIRY_S
        self._observers: list[Observer] = []

    def set_sink(self, sink: Sink) -> None:
        """Replace the sink (before anything is posted)."""
        with self._lock:
            self._sink = sink

    def observe(self, observer: Observer) -> None:
        """Call ``observer(change, message)`` on every message posted or changed from now on.

        It is called while the workspace's lock is held, on the thread that made
        the change (a test's, or the server's loop for Web API calls), in the
        order of the changes: it must be quick, must not block and must not call
        back into the workspace. Observers cannot be removed (they live as long
        as the workspace). See :data:`Observer`.
        """
        with self._lock:
            self._observers.append(observer)

    def _notify(self, change: str, channel: Channel, message: Message) -> None:
        if not self._observers:
            return
        view = self._render(message, metadata=True, full=True)
        view["channel"] = channel.id
        for observer in self._observers:
            observer(change, copy.deepcopy(view) if len(self._observers) > 1 else view)

    # -- ids and time --------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):010d}"

    def _next_ts(self) -> str:
        micros = max(int(self._clock() * 1_000_000), self._last_us + 1)
        self._last_us = micros
        return format_ts(micros)

    def _now(self) -> int:
        return int(self._clock())

    # -- setup ---------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> str:
        """Add a member; return its id (``U…``).

        Args:
            name: Its name (also its display name).
            bot: Whether it is a bot user (not tied to an app of the double).
        """
        with self._lock:
            user = User(self._id("U"), name, is_bot=bot)
            self._users[user.id] = user
            return user.id

    def add_app(self, name: str, *, scopes: Iterable[str] = DEFAULT_SCOPES,
                commands: Iterable[str] = ()) -> SlackApp:
        """Install an app with a bot user; return it with its ids and tokens.

        Args:
            name: The app's and its bot user's name.
            scopes: The bot's granted scopes; calls needing another answer
                ``missing_scope`` and its events of kinds it may not read stay away.
            commands: Slash commands it owns, e.g. ``["/bridge"]``.
        """
        with self._lock:
            app_id, bot_id = self._id("A"), self._id("B")
            user = User(self._id("U"), name, is_bot=True, bot_id=bot_id, app_id=app_id)
            app = SlackApp(
                app_id=app_id, name=name, bot_user_id=user.id, bot_id=bot_id,
                bot_token=_token("bot_token", next(self._ids), next(self._ids),
                                 secrets.token_hex(12)),
                app_token=_token("app_token", 1, app_id, next(self._ids),
                                 secrets.token_hex(16)),
                scopes=tuple(scopes), commands=tuple(commands),
                verification_token=secrets.token_hex(12))
            self._users[user.id] = user
            self._apps[app_id] = app
            self._tokens[app.bot_token] = ("bot", app)
            self._tokens[app.app_token] = ("app", app)
            return app

    def add_channel(self, name: str, members: Iterable[str | SlackApp], *,
                    private: bool = False) -> str:
        """Create a channel; return its id (``C…`` public, ``G…`` private).

        Args:
            name: Its name, unique in the workspace.
            members: User ids, or apps (their bot users join).
            private: A private channel instead of a public one.

        Raises:
            ValueError: On a taken name.
            KeyError: On an unknown member.
        """
        with self._lock:
            if any(c.name == name for c in self._channels.values() if c.kind != "im"):
                raise ValueError(f"channel name taken: {name}")
            ids = [self._member_id(m) for m in members]
            channel = Channel(self._id("G" if private else "C"), name,
                              "group" if private else "channel", list(dict.fromkeys(ids)),
                              self._now(), ids[0] if ids else "")
            self._channels[channel.id] = channel
            return channel.id

    def join(self, channel_id: str, member: str | SlackApp) -> None:
        """Add a member to a channel (no event is sent).

        Raises:
            KeyError: On an unknown channel or user.
        """
        with self._lock:
            user_id = self._member_id(member)
            channel = self._channels[channel_id]
            if user_id not in channel.members:
                channel.members.append(user_id)

    def open_dm(self, user_a: str | SlackApp, user_b: str | SlackApp) -> str:
        """Return the direct-message conversation (``D…``) of two users, made once.

        Raises:
            KeyError: On an unknown user.
        """
        with self._lock:
            a, b = self._member_id(user_a), self._member_id(user_b)
            for channel in self._channels.values():
                if channel.kind == "im" and set(channel.members) == {a, b}:
                    return channel.id
            channel = Channel(self._id("D"), "", "im", [a, b] if a != b else [a],
                              self._now(), a)
            self._channels[channel.id] = channel
            return channel.id

    def revoke(self, token: str) -> None:
        """Revoke a token: calls with it answer ``token_revoked`` from now on."""
        with self._lock:
            self._revoked.add(token)

    def set_stream_expiry(self, seconds: float) -> None:
        """Set how long a stream lives after ``chat.startStream``, in seconds.

        Applies to streams already running too.

        Raises:
            ValueError: If negative.
        """
        if seconds < 0:
            raise ValueError("stream expiry must be >= 0")
        with self._lock:
            self._stream_expiry_s = seconds

    def _member_id(self, member: str | SlackApp) -> str:
        user_id = member.bot_user_id if isinstance(member, SlackApp) else member
        if user_id not in self._users:
            raise KeyError(f"unknown user {user_id}")
        return user_id

    # -- lookups -------------------------------------------------------------

    def authenticate(self, token: str | None) -> tuple[str, SlackApp]:
        """Return ``(kind, app)`` for a token; kind is ``bot`` or ``app``.

        Raises:
            SlackError: ``not_authed`` (no token), ``invalid_auth`` (unknown),
                ``token_revoked``.
        """
        with self._lock:
            if not token:
                raise SlackError("not_authed")
            found = self._tokens.get(token)
            if found is None:
                raise SlackError("invalid_auth")
            if token in self._revoked:
                raise SlackError("token_revoked")
            return found

    def app(self, app_id: str) -> SlackApp:
        """Return an app by id; KeyError if unknown."""
        with self._lock:
            return self._apps[app_id]

    def app_of_command(self, command: str) -> SlackApp:
        """Return the app owning a slash command, or the only app there is.

        Raises:
            KeyError: When no app owns it and there is not exactly one app.
        """
        with self._lock:
            owners = [a for a in self._apps.values() if command in a.commands]
            if not owners and len(self._apps) == 1:
                owners = list(self._apps.values())
            if len(owners) != 1:
                raise KeyError(f"no single app owns {command}")
            return owners[0]

    def channel_kind(self, channel_id: str) -> str:
        """Return a conversation's kind (``channel``, ``group``, ``im``, ``mpim``).

        Raises:
            SlackError: ``channel_not_found``.
        """
        with self._lock:
            return self._channel(channel_id).kind

    def _channel(self, channel_id: str | None) -> Channel:
        channel = self._channels.get(channel_id or "")
        if channel is None:
            raise SlackError("channel_not_found")
        return channel

    def _visible(self, user: str, channel_id: str | None) -> Channel:
        """A conversation the user may see (any public one, or one it is in)."""
        channel = self._channel(channel_id)
        if channel.is_private and user not in channel.members:
            raise SlackError("channel_not_found")
        return channel

    def _joined(self, user: str, channel_id: str | None) -> Channel:
        """A conversation the user is in (to post in, or to read as a bot)."""
        channel = self._visible(user, channel_id)
        if user not in channel.members:
            raise SlackError("not_in_channel")
        return channel

    def _message(self, channel: Channel, ts: str | None) -> Message:
        message = channel.messages.get(ts or "")
        if message is None:
            raise SlackError("message_not_found")
        return message

    # -- rendering -----------------------------------------------------------

    def _file_json(self, file: File) -> dict[str, Any]:
        base = f"{self.base_url}files-pri/{self.team_id}-{file.id}/{quote(file.name)}"
        return {
            "id": file.id, "created": file.created, "timestamp": file.created,
            "name": file.name, "title": file.title, "mimetype": file.mimetype,
            "filetype": file.filetype, "pretty_type": file.filetype.capitalize(),
            "user": file.user, "user_team": self.team_id, "mode": "hosted",
            "editable": False, "is_external": False, "is_public": False,
            "size": len(file.content) if file.content is not None else file.length,
            "url_private": base, "url_private_download": base + "/download",
            "permalink": f"{self.base_url}files/{file.user}/{file.id}/{quote(file.name)}",
            "channels": list(file.channels),
        }

    def _render(self, message: Message, *, metadata: bool,
                full: bool = False) -> dict[str, Any]:
        """A Slack message object; ``full`` adds the test view's extras
        (``chunks`` and ``streaming`` of streamed messages)."""
        out: dict[str, Any] = {"type": "message", "user": message.user,
                               "text": message.text, "ts": message.ts, "team": self.team_id}
        if message.bot_id:
            out.update(bot_id=message.bot_id, app_id=message.app_id, bot_profile={
                "id": message.bot_id, "app_id": message.app_id, "deleted": False,
                "name": self._users[message.user].name, "team_id": self.team_id})
        if message.client_msg_id:
            out["client_msg_id"] = message.client_msg_id
        if message.broadcast:
            out["subtype"] = "thread_broadcast"
        if message.blocks is not None:
            out["blocks"] = copy.deepcopy(message.blocks)
        if message.files:
            out["files"] = [self._file_json(self._files[f]) for f in message.files]
            out["upload"] = True
        if message.edited:
            out["edited"] = dict(message.edited)
        channel = self._channels[message.channel]
        if message.is_reply:
            out["thread_ts"] = message.thread_ts
            parent = channel.messages.get(message.thread_ts or "")
            if parent is not None:
                out["parent_user_id"] = parent.user
        replies = channel.threads.get(message.ts, []) if not message.is_reply else []
        if replies:
            users = list(dict.fromkeys(channel.messages[r].user for r in replies))
            out.update(thread_ts=message.ts, reply_count=len(replies),
                       reply_users_count=len(users), reply_users=users,
                       latest_reply=replies[-1], is_locked=False, subscribed=False)
        if message.reactions:
            out["reactions"] = [{"name": name, "users": list(users), "count": len(users)}
                                for name, users in message.reactions.items()]
        if metadata and message.metadata is not None:
            out["metadata"] = copy.deepcopy(message.metadata)
        if full and message.stream is not None:
            out["chunks"] = copy.deepcopy(message.stream.chunks)
            out["streaming"] = self._streaming(message.stream)
        return out

    def _streaming(self, stream: Stream) -> bool:
        if stream.streaming and (self._monotonic() - stream.started_at
                                 >= self._stream_expiry_s):
            stream.streaming = False  # expired
        return stream.streaming

    # -- events --------------------------------------------------------------

    def _callback(self, app: SlackApp, event: dict[str, Any]) -> dict[str, Any]:
        """An ``event_callback`` payload (docs apis/events-api, "callback field overview")."""
        return {
            "token": app.verification_token, "team_id": self.team_id,
            "context_team_id": self.team_id, "api_app_id": app.app_id, "event": event,
            "type": "event_callback", "event_id": f"Ev{next(self._ids):010d}",
            "event_time": self._now(), "is_ext_shared_channel": False,
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id,
                                "user_id": app.bot_user_id, "is_bot": True,
                                "is_enterprise_install": False}],
        }

    def _listeners(self, channel: Channel) -> list[SlackApp]:
        """Apps whose bot user is in the conversation and may read its messages."""
        return [app for app in self._apps.values()
                if app.bot_user_id in channel.members
                and HISTORY_SCOPE[channel.kind] in app.scopes]

    def _tell(self, channel: Channel, event: dict[str, Any], *, mention_text: str = "") -> None:
        """Send a ``message`` event to every listening app, and ``app_mention`` to those
        whose bot user ``mention_text`` names (not in DMs; docs events/app_mention)."""
        for app in self._listeners(channel):
            self._sink(app.app_id, "events_api", self._callback(app, copy.deepcopy(event)))
            if (mention_text and channel.kind != "im" and "app_mentions:read" in app.scopes
                    and mentions(mention_text, app.bot_user_id)):
                mention: dict[str, Any] = {key: copy.deepcopy(event[key]) for key in
                           ("user", "text", "ts", "channel", "event_ts", "team", "blocks",
                            "thread_ts", "bot_id", "app_id", "files", "client_msg_id")
                           if key in event}
                mention["type"] = "app_mention"
                self._sink(app.app_id, "events_api", self._callback(app, mention))

    def _message_event(self, channel: Channel, message: Message) -> dict[str, Any]:
        """The ``message`` event of a new post (docs events/message)."""
        event = self._render(message, metadata=False)
        for key in ("reply_count", "reply_users_count", "reply_users", "latest_reply",
                    "is_locked", "subscribed", "upload", "reactions"):
            event.pop(key, None)
        if message.files:
            event["subtype"] = "file_share"
            event["upload"] = False
        event.update(channel=channel.id, event_ts=message.ts, channel_type=channel.kind)
        return event

    def _changed(self, channel: Channel, before: dict[str, Any], message: Message) -> None:
        self._notify("changed", channel, message)
        event_ts = self._next_ts()
        self._tell(channel, {
            "type": "message", "subtype": "message_changed", "hidden": True,
            "message": self._render(message, metadata=False), "previous_message": before,
            "channel": channel.id, "ts": event_ts, "event_ts": event_ts,
            "channel_type": channel.kind})

    # -- posting -------------------------------------------------------------

    def _fill_block_ids(self, blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """Copy blocks, giving each one without a ``block_id`` a random one (as Slack does)."""
        if blocks is None:
            return None
        out = copy.deepcopy(blocks)
        for block in out:
            block.setdefault("block_id", secrets.token_urlsafe(4))
        return out

    def _store(self, channel: Channel, message: Message) -> None:
        channel.messages[message.ts] = message
        if message.is_reply and message.thread_ts is not None:
            channel.threads.setdefault(message.thread_ts, []).append(message.ts)

    def _new_message(self, author: str, channel: Channel, text: str,
                     **fields: Any) -> Message:
        user = self._users[author]
        return Message(ts=self._next_ts(), channel=channel.id, user=author, text=text,
                       bot_id=user.bot_id, app_id=user.app_id, **fields)

    def post(self, author: str, channel_id: str, *, text: str = "",
             blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None,
             broadcast: bool = False, metadata: dict[str, Any] | None = None,
             files: list[str] | None = None) -> dict[str, Any]:
        """Post a message and tell the listening apps; return it (with metadata).

        A person's post gets a ``client_msg_id``; an app bot's carries
        ``bot_id``/``app_id``. A ``thread_ts`` that names no message is kept as
        given (Slack accepts any well-formed one; python-slack-sdk#840).

        Args:
            author: The posting user's id.
            channel_id: Where.
            text: The text (mrkdwn).
            blocks: Block Kit blocks (stored with a ``block_id`` each).
            thread_ts: The thread's parent ts, for a reply.
            broadcast: A reply also shown in the channel.
            metadata: ``{"event_type", "event_payload"}``.
            files: Ids of completed uploads to share.

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``,
                ``invalid_thread_ts``, ``msg_too_long``, ``file_not_found``.
        """
        with self._lock:
            return self._post(author, self._joined(author, channel_id), text=text,
                              blocks=blocks, thread_ts=thread_ts, broadcast=broadcast,
                              metadata=metadata, files=files)

    def _post(self, author: str, channel: Channel, *, text: str = "",
              blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None,
              broadcast: bool = False, metadata: dict[str, Any] | None = None,
              files: list[str] | None = None) -> dict[str, Any]:
        """:meth:`post` once the author may post there."""
        if thread_ts is not None and not TS_PATTERN.match(thread_ts):
            raise SlackError("invalid_thread_ts")
        if len(text) > TEXT_LIMIT:
            raise SlackError("msg_too_long")
        for file_id in files or []:
            if file_id not in self._files or not self._files[file_id].completed:
                raise SlackError("file_not_found")
        user = self._users[author]
        message = self._new_message(
            author, channel, text, blocks=self._fill_block_ids(blocks),
            thread_ts=thread_ts or None, broadcast=broadcast and bool(thread_ts),
            metadata=copy.deepcopy(metadata), files=list(files or []),
            client_msg_id=None if user.is_bot else str(uuid.uuid4()))
        self._store(channel, message)
        for file_id in message.files:
            if channel.id not in self._files[file_id].channels:
                self._files[file_id].channels.append(channel.id)
        self._notify("posted", channel, message)
        self._tell(channel, self._message_event(channel, message), mention_text=text)
        return self._render(message, metadata=True)

    def post_files(self, author: str, channel_id: str, text: str, files: Mapping[str, bytes],
                   *, thread_ts: str | None = None, broadcast: bool = False) -> dict[str, Any]:
        """Upload files as ``author`` and share them in one message (see :meth:`post`)."""
        with self._lock:
            self._joined(author, channel_id)
            ids = []
            for name, content in files.items():
                file = self._new_file(author, name, len(content))
                file.content, file.completed = bytes(content), True
                ids.append(file.id)
            return self.post(author, channel_id, text=text, thread_ts=thread_ts,
                             broadcast=broadcast, files=ids)

    def update(self, author: str, channel_id: str, ts: str, *, text: str | None = None,
               blocks: list[dict[str, Any]] | None = None,
               metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Edit a message (its author only) and send ``message_changed``; return it.

        Args:
            author: Who edits.
            channel_id: Where.
            ts: Which message.
            text: New text (None: kept).
            blocks: New blocks (None: kept).
            metadata: New metadata (None: kept).

        Raises:
            SlackError: ``channel_not_found``, ``message_not_found``,
                ``cant_update_message`` (another author), ``streaming_state_conflict``
                (a live stream; reported, not documented).
        """
        with self._lock:
            channel = self._visible(author, channel_id)
            message = self._message(channel, ts)
            if message.user != author:
                raise SlackError("cant_update_message")
            if message.stream is not None and self._streaming(message.stream):
                raise SlackError("streaming_state_conflict")
            if text is not None and len(text) > TEXT_LIMIT:
                raise SlackError("msg_too_long")
            before = self._render(message, metadata=False)
            if text is not None:
                message.text = text
            if blocks is not None:
                message.blocks = self._fill_block_ids(blocks)
            if metadata is not None:
                message.metadata = copy.deepcopy(metadata)
            message.edited = {"user": author, "ts": self._next_ts()}
            self._changed(channel, before, message)
            return self._render(message, metadata=True)

    def delete(self, author: str, channel_id: str, ts: str) -> None:
        """Delete a message (its author only) and send ``message_deleted``.

        Its replies stay (hidden from history, as orphans).

        Raises:
            SlackError: ``channel_not_found``, ``message_not_found``,
                ``cant_delete_message``.
        """
        with self._lock:
            channel = self._visible(author, channel_id)
            message = self._message(channel, ts)
            if message.user != author:
                raise SlackError("cant_delete_message")
            before = self._render(message, metadata=False)
            del channel.messages[ts]
            if message.is_reply and message.thread_ts in channel.threads:
                channel.threads[message.thread_ts].remove(ts)
            event_ts = self._next_ts()
            self._tell(channel, {
                "type": "message", "subtype": "message_deleted", "hidden": True,
                "deleted_ts": ts, "previous_message": before, "channel": channel.id,
                "ts": event_ts, "event_ts": event_ts, "channel_type": channel.kind})

    def post_ephemeral(self, author: str, channel_id: str, user: str, *, text: str = "",
                       blocks: list[dict[str, Any]] | None = None,
                       thread_ts: str | None = None) -> str:
        """Show a message to one user only (stored for :meth:`ephemerals`); return its ts.

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``,
                ``user_not_in_channel``.
        """
        with self._lock:
            channel = self._joined(author, channel_id)
            if user not in channel.members:
                raise SlackError("user_not_in_channel")
            return self._ephemeral(author, channel, user, text, blocks, thread_ts)

    def _ephemeral(self, author: str, channel: Channel, user: str, text: str,
                   blocks: list[dict[str, Any]] | None, thread_ts: str | None) -> str:
        ts = self._next_ts()
        shown: dict[str, Any] = {"type": "message", "subtype": "ephemeral", "user": author,
                                 "channel": channel.id, "text": text, "ts": ts}
        if blocks is not None:
            shown["blocks"] = self._fill_block_ids(blocks)
        if thread_ts:
            shown["thread_ts"] = thread_ts
        author_user = self._users[author]
        if author_user.bot_id:
            shown.update(bot_id=author_user.bot_id, app_id=author_user.app_id)
        self._ephemerals.setdefault(user, []).append(shown)
        return ts

    # -- streaming -------------------------------------------------------------

    @staticmethod
    def _chunks(markdown_text: str | None,
                chunks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """The chunks a stream call adds, checked.

        Raises:
            SlackError: ``cannot_provide_both_markdown_text_and_chunks``,
                ``invalid_chunks`` (*inferred* name), ``msg_too_long``.
        """
        if markdown_text is not None and chunks is not None:
            raise SlackError("cannot_provide_both_markdown_text_and_chunks")
        if markdown_text is not None:
            if len(markdown_text) > MARKDOWN_LIMIT:
                raise SlackError("msg_too_long")
            return [{"type": "markdown_text", "text": markdown_text}] if markdown_text else []
        out = []
        for chunk in chunks or []:
            kind = chunk.get("type") if isinstance(chunk, dict) else None
            required = {"markdown_text": ("text",), "task_update": ("id", "title", "status"),
                        "plan_update": ("title",), "blocks": ("blocks",)}.get(str(kind), ())
            if (kind not in CHUNK_TYPES or not isinstance(chunk, dict)
                    or any(key not in chunk for key in required)
                    or (kind == "task_update" and chunk["status"] not in TASK_STATUSES)):
                raise SlackError("invalid_chunks")
            out.append(copy.deepcopy(chunk))
        return out

    @staticmethod
    def _stream_text(chunks: list[dict[str, Any]]) -> str:
        return "".join(c["text"] for c in chunks if c["type"] == "markdown_text")

    def start_stream(self, author: str, channel_id: str, thread_ts: str | None, *,
                     recipient_user_id: str | None = None,
                     recipient_team_id: str | None = None,
                     markdown_text: str | None = None,
                     chunks: list[dict[str, Any]] | None = None,
                     task_display_mode: str | None = None) -> dict[str, Any]:
        """Start a streamed reply in a thread; tell the listening apps; return it.

        Outside DMs the recipient user and team are required (docs chat.startStream).

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``,
                ``invalid_arguments`` (no thread_ts), ``invalid_thread_ts``,
                ``missing_recipient_user_id``/``missing_recipient_team_id``
                (*inferred* names), and those of :meth:`_chunks`.
        """
        with self._lock:
            channel = self._joined(author, channel_id)
            if not thread_ts:
                raise SlackError("invalid_arguments")
            if not TS_PATTERN.match(thread_ts):
                raise SlackError("invalid_thread_ts")
            if channel.kind != "im":
                if not recipient_user_id:
                    raise SlackError("missing_recipient_user_id")
                if not recipient_team_id:
                    raise SlackError("missing_recipient_team_id")
            added = self._chunks(markdown_text, chunks)
            stream = Stream(added, self._monotonic(), recipient_user_id=recipient_user_id,
                            recipient_team_id=recipient_team_id,
                            task_display_mode=task_display_mode)
            message = self._new_message(author, channel, self._stream_text(added),
                                        thread_ts=thread_ts, stream=stream)
            self._store(channel, message)
            self._notify("posted", channel, message)
            self._tell(channel, self._message_event(channel, message))
            return self._render(message, metadata=True)

    def _live_stream(self, author: str, channel_id: str, ts: str) -> tuple[Channel, Message]:
        channel = self._visible(author, channel_id)
        message = self._message(channel, ts)
        if message.user != author:
            raise SlackError("cant_update_message")
        if message.stream is None or not self._streaming(message.stream):
            raise SlackError("message_not_in_streaming_state")
        return channel, message

    def append_stream(self, author: str, channel_id: str, ts: str, *,
                      markdown_text: str | None = None,
                      chunks: list[dict[str, Any]] | None = None) -> None:
        """Add chunks to a live stream (no event is sent).

        Raises:
            SlackError: ``message_not_found``, ``cant_update_message``,
                ``message_not_in_streaming_state`` (stopped or expired), and
                those of :meth:`_chunks`.
        """
        with self._lock:
            _, message = self._live_stream(author, channel_id, ts)
            assert message.stream is not None
            message.stream.chunks.extend(self._chunks(markdown_text, chunks))
            message.text = self._stream_text(message.stream.chunks)

    def stop_stream(self, author: str, channel_id: str, ts: str, *,
                    markdown_text: str | None = None,
                    chunks: list[dict[str, Any]] | None = None,
                    blocks: list[dict[str, Any]] | None = None,
                    metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """End a live stream, adding last chunks, blocks and metadata; send
        ``message_changed``; return the message.

        Raises:
            SlackError: as :meth:`append_stream`.
        """
        with self._lock:
            channel, message = self._live_stream(author, channel_id, ts)
            stream = message.stream
            assert stream is not None
            added = self._chunks(markdown_text, chunks)
            before = self._render(message, metadata=False)
            stream.chunks.extend(added)
            stream.streaming = False
            message.text = self._stream_text(stream.chunks)
            if blocks is not None:
                message.blocks = self._fill_block_ids(blocks)
            if metadata is not None:
                message.metadata = copy.deepcopy(metadata)
            self._changed(channel, before, message)
            return self._render(message, metadata=True)

    # -- reactions -------------------------------------------------------------

    def react(self, user: str, channel_id: str, ts: str, name: str, *, add: bool = True) -> None:
        """Add (or remove) a reaction (no event is sent).

        Raises:
            SlackError: ``channel_not_found``, ``message_not_found``,
                ``already_reacted``, ``no_reaction``, ``invalid_name`` (empty).
        """
        with self._lock:
            channel = self._visible(user, channel_id)
            message = self._message(channel, ts)
            name = name.strip(":")
            if not name:
                raise SlackError("invalid_name")
            users = message.reactions.get(name, [])
            if add:
                if user in users:
                    raise SlackError("already_reacted")
                message.reactions[name] = [*users, user]
            else:
                if user not in users:
                    raise SlackError("no_reaction")
                users.remove(user)
                if not users:
                    del message.reactions[name]

    def reactions_get(self, user: str, channel_id: str, ts: str) -> dict[str, Any]:
        """``reactions.get``: ``{"type": "message", "channel", "message"}``.

        Raises:
            SlackError: ``channel_not_found``, ``message_not_found``.
        """
        with self._lock:
            channel = self._visible(user, channel_id)
            message = self._render(self._message(channel, ts), metadata=False)
            return {"type": "message", "channel": channel.id, "message": message}

    # -- files -----------------------------------------------------------------

    def _new_file(self, user: str, name: str, length: int, title: str = "") -> File:
        file = File(self._id("F"), name, title or name, user, self._now(), length,
                    secrets.token_urlsafe(16))
        self._files[file.id] = file
        self._uploads[file.upload_key] = file.id
        return file

    def start_upload(self, user: str, filename: str, length: int) -> tuple[str, str]:
        """``files.getUploadURLExternal``: return ``(file_id, upload_url)``.

        Raises:
            SlackError: ``invalid_arguments`` (empty name, length < 1).
        """
        with self._lock:
            if not filename or length < 1:
                raise SlackError("invalid_arguments")
            file = self._new_file(user, filename, length)
            return file.id, f"{self.base_url}upload/v1/{file.upload_key}"

    def put_upload(self, key: str, content: bytes) -> bool:
        """Store the bytes sent to an upload URL; False when the URL is unknown."""
        with self._lock:
            file_id = self._uploads.get(key)
            if file_id is None:
                return False
            self._files[file_id].content = bytes(content)
            return True

    def complete_upload(self, user: str, files: list[dict[str, Any]], *,
                        channel_id: str | None = None, thread_ts: str | None = None,
                        initial_comment: str = "") -> list[dict[str, Any]]:
        """``files.completeUploadExternal``: finish uploads, share them in one message.

        Returns:
            ``[{"id", "title"}]``.

        Raises:
            SlackError: ``invalid_arguments`` (no files), ``file_not_found``
                (unknown, someone else's, or its bytes never sent; *inferred*),
                and those of :meth:`post`.
        """
        with self._lock:
            if not files:
                raise SlackError("invalid_arguments")
            found = []
            for item in files:
                file = self._files.get(str(item.get("id", "")))
                if file is None or file.user != user or file.content is None:
                    raise SlackError("file_not_found")
                found.append((file, item.get("title")))
            if channel_id:
                self._joined(user, channel_id)
            for file, title in found:
                file.completed = True
                if title:
                    file.title = str(title)
            if channel_id:
                self.post(user, channel_id, text=initial_comment, thread_ts=thread_ts,
                          files=[f.id for f, _ in found])
            return [{"id": f.id, "title": f.title} for f, _ in found]

    def file_info(self, file_id: str) -> dict[str, Any]:
        """``files.info``'s file object.

        Raises:
            SlackError: ``file_not_found``.
        """
        with self._lock:
            file = self._files.get(file_id)
            if file is None or not file.completed:
                raise SlackError("file_not_found")
            return self._file_json(file)

    def file_download(self, path_id: str) -> tuple[bytes, str] | None:
        """Bytes and mimetype for a ``url_private`` path part ``T…-F…`` (None: unknown)."""
        with self._lock:
            team, _, file_id = path_id.partition("-")
            file = self._files.get(file_id)
            if team != self.team_id or file is None or file.content is None:
                return None
            return file.content, file.mimetype

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded file.

        Raises:
            KeyError: Unknown file, or its bytes never arrived.
        """
        with self._lock:
            file = self._files[file_id]
            if file.content is None:
                raise KeyError(f"file {file_id} has no content yet")
            return file.content

    # -- conversations -----------------------------------------------------------

    def conversations(self, user: str, kinds: Iterable[str]) -> list[dict[str, Any]]:
        """The conversations ``user`` sees of those kinds: public channels, and the
        private ones, DMs and group DMs it is in; in creation order."""
        with self._lock:
            wanted = set(kinds)
            return [c.to_json(user) for c in self._channels.values()
                    if c.kind in wanted and (not c.is_private or user in c.members)]

    def conversation_info(self, user: str, channel_id: str) -> dict[str, Any]:
        """``conversations.info``.

        Raises:
            SlackError: ``channel_not_found``.
        """
        with self._lock:
            return self._visible(user, channel_id).to_json(user)

    def members(self, user: str, channel_id: str) -> list[str]:
        """``conversations.members``: member ids in joining order.

        Raises:
            SlackError: ``channel_not_found``.
        """
        with self._lock:
            return list(self._visible(user, channel_id).members)

    @staticmethod
    def _window(oldest: str | None, latest: str | None,
                inclusive: bool) -> Callable[[str], bool]:
        """A filter for ts within ``oldest``…``latest`` (bounds kept if ``inclusive``)."""
        try:
            low = ts_key(oldest) if oldest else None
        except ValueError as exc:
            raise SlackError("invalid_ts_oldest") from exc
        try:
            high = ts_key(latest) if latest else None
        except ValueError as exc:
            raise SlackError("invalid_ts_latest") from exc

        def keep(ts: str) -> bool:
            key = ts_key(ts)
            if low is not None and (key < low or (key == low and not inclusive)):
                return False
            return high is None or key < high or (key == high and inclusive)

        return keep

    def history(self, user: str, channel_id: str, *, oldest: str | None = None,
                latest: str | None = None, inclusive: bool = False, limit: int = 100,
                cursor: str | None = None,
                include_all_metadata: bool = False) -> dict[str, Any]:
        """``conversations.history``: top-level messages and thread broadcasts,
        newest first, in pages (docs conversations.history).

        Returns:
            ``{"messages", "has_more", "response_metadata": {"next_cursor"}}``.

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``,
                ``invalid_ts_oldest``, ``invalid_ts_latest``, ``invalid_cursor``.
        """
        with self._lock:
            channel = self._joined(user, channel_id)
            keep = self._window(oldest, latest, inclusive)
            shown = [m for m in reversed(channel.messages.values())
                     if (not m.is_reply or m.broadcast) and keep(m.ts)]
            chosen, next_cursor = page(shown, cursor, limit)
            return {"messages": [self._render(m, metadata=include_all_metadata)
                                 for m in chosen],
                    "has_more": bool(next_cursor),
                    "response_metadata": {"next_cursor": next_cursor}}

    def replies(self, user: str, channel_id: str, ts: str, *, oldest: str | None = None,
                latest: str | None = None, inclusive: bool = False, limit: int = 1000,
                cursor: str | None = None,
                include_all_metadata: bool = False) -> dict[str, Any]:
        """``conversations.replies``: the parent first (on every page), then the
        replies in the window, oldest first; ``limit`` counts replies.

        A ``ts`` naming a reply answers for its thread.

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``,
                ``thread_not_found``, ``invalid_ts_oldest``, ``invalid_ts_latest``,
                ``invalid_cursor``.
        """
        with self._lock:
            channel = self._joined(user, channel_id)
            message = channel.messages.get(ts)
            if message is not None and message.is_reply:
                message = channel.messages.get(message.thread_ts or "")
            if message is None:
                raise SlackError("thread_not_found")
            keep = self._window(oldest, latest, inclusive)
            replies = [channel.messages[r] for r in channel.threads.get(message.ts, [])
                       if keep(r)]
            chosen, next_cursor = page(replies, cursor, limit)
            return {"messages": [self._render(m, metadata=include_all_metadata)
                                 for m in [message, *chosen]],
                    "has_more": bool(next_cursor),
                    "response_metadata": {"next_cursor": next_cursor}}

    def user_info(self, user_id: str) -> dict[str, Any]:
        """``users.info``'s user object.

        Raises:
            SlackError: ``user_not_found``.
        """
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise SlackError("user_not_found")
            return user.to_json(self.team_id)

    def user_name(self, user_id: str) -> str:
        """A user's name; KeyError if unknown."""
        with self._lock:
            return self._users[user_id].name

    # -- interactivity -------------------------------------------------------------

    def _responder(self, app: SlackApp, channel: Channel, user: str,
                   message: Message | None) -> str:
        key = secrets.token_urlsafe(18)
        self._responders[key] = {
            "app": app.app_id, "channel": channel.id, "user": user,
            "ts": message.ts if message else None,
            "thread_ts": message.thread_ts if message and message.is_reply else None}
        return f"{self.base_url}actions/{self.team_id}/{key}"

    def _trigger_id(self) -> str:
        return f"{next(self._ids)}.{self.team_id[1:]}.{secrets.token_hex(16)}"

    def click(self, user: str, channel_id: str, ts: str, action_id: str,
              value: str | None = None) -> dict[str, Any]:
        """A user clicks a button: send a ``block_actions`` payload to the app that
        posted the message (docs reference/interaction-payloads/block_actions-payload).

        Args:
            user: Who clicks (must see the conversation).
            channel_id: Where the message is.
            ts: The message's ts.
            action_id: The button's action_id.
            value: The value sent (None: the button's own ``value``).

        Returns:
            The payload sent.

        Raises:
            SlackError: ``channel_not_found``, ``message_not_found``,
                ``not_an_app_message`` and ``no_such_button`` (the double's own).
        """
        with self._lock:
            channel = self._joined(user, channel_id)
            message = self._message(channel, ts)
            if message.app_id is None:
                raise SlackError("not_an_app_message")
            found = find_button(message.blocks, action_id)
            if found is None:
                raise SlackError("no_such_button")
            block_id, button = found
            app = self._apps[message.app_id]
            name = self._users[user].name
            container: dict[str, Any] = {"type": "message", "message_ts": ts,
                                         "channel_id": channel.id, "is_ephemeral": False}
            if message.is_reply:
                container["thread_ts"] = message.thread_ts
            action: dict[str, Any] = {
                "action_id": action_id, "block_id": block_id, "type": "button",
                "text": copy.deepcopy(button.get("text", {"type": "plain_text", "text": ""})),
                "action_ts": format_ts(int(self._clock() * 1_000_000))}
            chosen = value if value is not None else button.get("value")
            if chosen is not None:
                action["value"] = chosen
            if "style" in button:
                action["style"] = button["style"]
            payload = {
                "type": "block_actions", "token": app.verification_token,
                "api_app_id": app.app_id, "is_enterprise_install": False,
                "enterprise": None,
                "user": {"id": user, "username": name, "name": name, "team_id": self.team_id},
                "team": {"id": self.team_id, "domain": self.team_name},
                "container": container, "trigger_id": self._trigger_id(),
                "channel": {"id": channel.id,
                            "name": channel.name if channel.kind != "im" else "directmessage"},
                "message": self._render(message, metadata=False),
                "state": {"values": {}},
                "response_url": self._responder(app, channel, user, message),
                "actions": [action],
            }
            self._sink(app.app_id, "interactive", copy.deepcopy(payload))
            return payload

    def slash(self, user: str, channel_id: str, command: str, text: str = "",
              app: SlackApp | None = None) -> dict[str, Any]:
        """A user runs a slash command: send a ``slash_commands`` payload (all
        fields strings, as Slack sends them; docs interactivity/implementing-slash-commands).

        Args:
            user: Who runs it.
            channel_id: Where.
            command: E.g. ``"/bridge"``.
            text: What follows the command.
            app: The app to tell (None: the one owning the command, or the only app).

        Returns:
            The payload sent.

        Raises:
            SlackError: ``channel_not_found``.
            KeyError: When no app can be chosen.
        """
        with self._lock:
            channel = self._visible(user, channel_id)
            target = app or self.app_of_command(command)
            payload = {
                "token": target.verification_token, "team_id": self.team_id,
                "team_domain": self.team_name, "channel_id": channel.id,
                "channel_name": channel.name if channel.kind != "im" else "directmessage",
                "user_id": user, "user_name": self._users[user].name, "command": command,
                "text": text, "api_app_id": target.app_id, "is_enterprise_install": "false",
                "response_url": self._responder(target, channel, user, None),
                "trigger_id": self._trigger_id(),
            }
            self._sink(target.app_id, "slash_commands", dict(payload))
            return payload

    def respond(self, key: str, body: Mapping[str, Any]) -> bool:
        """Act on a POST to a ``response_url``; False when the URL is unknown.

        ``delete_original`` deletes the message, ``replace_original`` edits it,
        ``response_type: in_channel`` posts as the app; else the answer is an
        ephemeral message to the user (docs interactivity/handling-user-interaction).

        Raises:
            SlackError: As the posting or editing would.
        """
        with self._lock:
            found = self._responders.get(key)
            if found is None:
                return False
            app = self._apps[found["app"]]
            channel = self._channels[found["channel"]]
            text = str(body.get("text") or "")
            blocks = body.get("blocks")
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            thread_ts = body.get("thread_ts") or found["thread_ts"]
            original = found["ts"]
            if original and _truthy(body.get("delete_original")):
                self.delete(app.bot_user_id, channel.id, original)
            elif original and _truthy(body.get("replace_original")):
                self.update(app.bot_user_id, channel.id, original, text=text, blocks=blocks)
            elif body.get("response_type") == "in_channel":
                # posts even when the app is not in the conversation (*inferred*)
                self._post(app.bot_user_id, channel, text=text, blocks=blocks,
                           thread_ts=thread_ts)
            else:
                self._ephemeral(app.bot_user_id, channel, found["user"], text, blocks,
                                thread_ts)
            return True

    # -- test views ------------------------------------------------------------------

    def all_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Every message (replies too), oldest first, with metadata, chunks, reactions.

        Raises:
            KeyError: On an unknown channel.
        """
        with self._lock:
            channel = self._channels[channel_id]
            return [self._render(m, metadata=True, full=True)
                    for m in channel.messages.values()]

    def one_message(self, channel_id: str, ts: str) -> dict[str, Any]:
        """One message as :meth:`all_messages` shows it.

        Raises:
            KeyError: On an unknown channel or message.
        """
        with self._lock:
            return self._render(self._channels[channel_id].messages[ts], metadata=True,
                                full=True)

    def reaction_sets(self, channel_id: str, ts: str) -> dict[str, set[str]]:
        """``{reaction name: {user ids}}`` of a message.

        Raises:
            KeyError: On an unknown channel or message.
        """
        with self._lock:
            message = self._channels[channel_id].messages[ts]
            return {name: set(users) for name, users in message.reactions.items()}

    def ephemerals(self, user: str) -> list[dict[str, Any]]:
        """The ephemeral messages shown to ``user``, oldest first."""
        with self._lock:
            return copy.deepcopy(self._ephemerals.get(user, []))


def _truthy(value: Any) -> bool:
    """Slack's booleans arrive as JSON booleans or as ``"true"``/``"1"`` strings."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _token(kind: str, *parts: object) -> str:
    """A made-up token of ``kind`` (``bot_token`` or ``app_token``): Slack's prefix for it
    (:data:`adapters.chat.slack.config.TOKEN_PREFIX`), then ``parts`` joined by ``-``."""
    return TOKEN_PREFIX[kind] + "-".join(str(part) for part in parts)
