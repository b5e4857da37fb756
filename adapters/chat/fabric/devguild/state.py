"""The dev guild's in-memory state: users, channels, members, messages, tokens.

Pure logic, no HTTP: the server translates requests into calls here and
:class:`GuildError` into JSON error answers. One lock guards everything, so
tests may read from any thread while the server's loop thread writes.

Tokens are opaque random strings; real Fabric issues JWTs, which clients must
treat as opaque too.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from adapters.chat.fabric import rules
from adapters.chat.fabric.devguild.seed import Seed, validate_seed

#: Lifetime of refresh tokens, in seconds (*inferred*; Fabric's was not seen).
REFRESH_TOKEN_TTL_S = 7 * 24 * 3600.0
#: Token kinds: Center access, Center refresh, guild access.
TOKEN_KINDS = ("access", "refresh", "guild")


class GuildError(Exception):
    """A request the guild refuses, carrying the HTTP status to answer.

    Attributes:
        status: HTTP status code (400, 401, 403, 404, 409, 413).
        message: Short text for the JSON ``{"error": ...}`` body.
    """

    def __init__(self, status: int, message: str) -> None:
        """Create the error.

        Args:
            status: HTTP status code.
            message: Short human-readable reason (never a secret).
        """
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.define
class User:
    """A guild member (human or agent)."""

    id: str
    name: str
    kind: str
    email: str
    api_key: str

    def to_json(self) -> dict[str, Any]:
        """Return ``{"id", "name", "kind"}`` (the inferred ``/users`` shape)."""
        return {"id": self.id, "name": self.name, "kind": self.kind}


@attrs.define
class Message:
    """A stored message; ``wakeup_user_id`` is kept for wakeups, not shown.

    ``nonce`` is the client's idempotency key for the post, if it sent one
    (:data:`rules.MESSAGE_NONCE_FIELD`, *inferred*); it is shown as sent.
    """

    message_id: str
    channel_id: str
    seq: int
    content: str
    author_user_id: str
    created_at: str
    wakeup_user_id: str | None = None
    edited_at: str | None = None
    deleted_at: str | None = None
    nonce: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the protocol's Message dict (plus the *inferred* nonce field)."""
        return {
            "messageId": self.message_id,
            "channelId": self.channel_id,
            "seq": self.seq,
            "content": self.content,
            "authorUserId": self.author_user_id,
            "createdAt": self.created_at,
            "editedAt": self.edited_at,
            "deletedAt": self.deleted_at,
            "isDeleted": self.deleted_at is not None,
            "attachments": [],
            rules.MESSAGE_NONCE_FIELD: self.nonce,
        }


@attrs.define
class Channel:
    """A channel with its members, wake list and messages (index = seq - 1)."""

    id: str
    guild_id: str
    name: str
    x_type: str
    is_public: bool
    purpose: str
    created_at: str
    members: set[str]
    wake_list: set[str]
    closed: bool = False
    messages: list[Message] = attrs.Factory(list)

    def to_json(self) -> dict[str, Any]:
        """Return the protocol's Channel dict."""
        return {
            "id": self.id,
            "guildId": self.guild_id,
            "name": self.name,
            "xType": self.x_type,
            "kind": rules.channel_kind(self.x_type),
            "isPublic": self.is_public,
            "closed": self.closed,
            "lastSeq": len(self.messages),
            "createdAt": self.created_at,
            "purpose": self.purpose,
        }


@attrs.frozen
class Posted:
    """A stored post and what is needed to tell each recipient about it.

    Attributes:
        message: The Message dict.
        x_type: The channel's xType.
        wake_list: The channel's wake list at the time of the post.
        wakeup_user_id: The post's ``wakeupUserId``, if any.
    """

    message: dict[str, Any]
    x_type: str
    wake_list: frozenset[str]
    wakeup_user_id: str | None

    def event_for(self, recipient_id: str) -> dict[str, Any]:
        """Return the ``message.created`` payload for one recipient.

        Args:
            recipient_id: User id of the socket's user.

        Returns:
            The Message dict plus ``xType`` and ``wakeup`` (per :func:`rules.wakes`).
        """
        wakeup = rules.wakes(
            x_type=self.x_type,
            author_id=self.message["authorUserId"],
            recipient_id=recipient_id,
            content=self.message["content"],
            wake_list=self.wake_list,
            wakeup_user_id=self.wakeup_user_id,
        )
        return {**self.message, "xType": self.x_type, "wakeup": wakeup}


@attrs.frozen
class _Token:
    kind: str
    user_id: str
    expires_at: float


class GuildState:
    """The in-memory guild. Every public method takes the one lock.

    Methods that act for a caller take its user id (already authenticated) and
    raise :class:`GuildError` for refusals. Returned dicts are fresh copies.
    """

    def __init__(
        self,
        seed: Seed,
        *,
        token_ttl_s: float = rules.GUILD_TOKEN_TTL_S,
        content_limit: int = rules.CONTENT_LIMIT,
        endpoint: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build the guild from a seed.

        Args:
            seed: Users and channels to start with.
            token_ttl_s: Lifetime of access and guild tokens, in seconds.
            content_limit: Most characters a posted content may hold.
            endpoint: The guild's base URL (without ``/api``) shown in sessions.
            clock: Monotonic seconds, injectable for tests.

        Raises:
            ValueError: If the seed is inconsistent.
        """
        validate_seed(seed)
        self._lock = threading.RLock()
        self._clock = clock
        self.node_id = seed.node_id
        self.guild_name = seed.name
        self.guild_purpose = seed.purpose
        self.endpoint = endpoint
        self.content_limit = content_limit
        self._token_ttl_s = token_ttl_s
        self._tokens: dict[str, _Token] = {}
        self._presence: dict[str, str] = {}
        self._users = {u.id: User(u.id, u.display_name or u.name, u.kind, u.email, u.api_key)
                       for u in seed.users}
        by_name = {u.name: u.id for u in seed.users}
        created = now_iso()
        self._channels: dict[str, Channel] = {
            c.id: Channel(
                id=c.id,
                guild_id=seed.node_id,
                name=c.name,
                x_type=c.x_type,
                is_public=c.is_public,
                purpose=c.purpose,
                created_at=created,
                members={by_name[n] for n in c.members},
                wake_list={by_name[n] for n in c.wake},
            )
            for c in seed.channels
        }

    # -- names ------------------------------------------------------------

    def user_id(self, name: str) -> str:
        """Return the id of the user called ``name``; KeyError if none."""
        with self._lock:
            for user in self._users.values():
                if user.name == name:
                    return user.id
        raise KeyError(f"no user named {name!r}")

    def channel_id(self, name: str) -> str:
        """Return the id of the first channel called ``name``; KeyError if none."""
        with self._lock:
            for channel in self._channels.values():
                if channel.name == name:
                    return channel.id
        raise KeyError(f"no channel named {name!r}")

    def api_key(self, name: str) -> str:
        """Return the API key of the user called ``name``; KeyError if none."""
        with self._lock:
            return self._users[self.user_id(name)].api_key

    # -- tokens -----------------------------------------------------------

    def _issue(self, kind: str, user_id: str, ttl_s: float) -> str:
        token = f"dg{kind[0]}_{secrets.token_urlsafe(24)}"
        self._tokens[token] = _Token(kind, user_id, self._clock() + ttl_s)
        return token

    def _guilds(self) -> list[dict[str, Any]]:
        return [
            {
                "nodeId": self.node_id,
                "name": self.guild_name,
                "endpoint": self.endpoint,
                "status": "online",
                "purpose": self.guild_purpose,
            }
        ]

    def _guild_tokens(self, user_id: str) -> list[dict[str, Any]]:
        token = self._issue("guild", user_id, self._token_ttl_s)
        return [{"guildNodeId": self.node_id, "token": token}]

    def _session(self, user: User) -> dict[str, Any]:
        return {
            "accessToken": self._issue("access", user.id, self._token_ttl_s),
            "refreshToken": self._issue("refresh", user.id, REFRESH_TOKEN_TTL_S),
            "user": {"id": user.id, "email": user.email, "name": user.name},
            "guilds": self._guilds(),
            "guildAccessTokens": self._guild_tokens(user.id),
        }

    def login(self, api_key: str) -> dict[str, Any]:
        """Log a user in by API key (humans too: that is how ``chat --as`` works).

        Returns:
            A Session dict with fresh access, refresh and guild tokens.

        Raises:
            GuildError: 401 on an unknown key.
        """
        with self._lock:
            for user in self._users.values():
                if secrets.compare_digest(user.api_key, api_key):
                    return self._session(user)
        raise GuildError(401, "invalid api key")

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Exchange a refresh token for a new Session (the old one stays valid).

        Raises:
            GuildError: 401 on an unknown, expired or non-refresh token.
        """
        with self._lock:
            user_id = self.authenticate(refresh_token, "refresh")
            return self._session(self._users[user_id])

    def my_guilds(self, user_id: str) -> dict[str, Any]:
        """Return ``{"guilds", "guildAccessTokens"}`` with a fresh guild token."""
        with self._lock:
            return {"guilds": self._guilds(), "guildAccessTokens": self._guild_tokens(user_id)}

    def authenticate(self, token: str | None, kind: str = "guild") -> str:
        """Return the user id a token stands for.

        Args:
            token: The bearer token, or None when the request had none.
            kind: The kind required: ``"access"``, ``"refresh"`` or ``"guild"``.

        Returns:
            The user id.

        Raises:
            GuildError: 401 when missing, unknown, expired or of another kind.
        """
        if not token:
            raise GuildError(401, "missing token")
        with self._lock:
            info = self._tokens.get(token)
            if info is None or info.kind != kind:
                raise GuildError(401, "invalid token")
            if self._clock() >= info.expires_at:
                del self._tokens[token]
                raise GuildError(401, "token expired")
            return info.user_id

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far."""
        with self._lock:
            self._tokens.clear()

    def set_token_ttl(self, seconds: float) -> None:
        """Set the lifetime of access and guild tokens issued from now on.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("token ttl must be >= 0")
        with self._lock:
            self._token_ttl_s = seconds

    # -- users, presence ----------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Return every user as ``{"id", "name", "kind"}``."""
        with self._lock:
            return [u.to_json() for u in self._users.values()]

    def user(self, user_id: str) -> dict[str, Any]:
        """Return one user as ``{"id", "name", "kind"}``; GuildError 404 if unknown."""
        with self._lock:
            return self._user(user_id).to_json()

    def _user(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise GuildError(404, "user not found")
        return user

    def set_presence(self, caller: str, user_id: str, status: str) -> None:
        """Store a user's presence; only the user may set its own.

        Raises:
            GuildError: 400 unknown status, 404 unknown user, 403 another user.
        """
        if status not in rules.PRESENCE_STATES:
            raise GuildError(400, f"status must be one of {', '.join(rules.PRESENCE_STATES)}")
        with self._lock:
            self._user(user_id)
            if caller != user_id:
                raise GuildError(403, "may only set your own presence")
            self._presence[user_id] = status

    def presence(self, user_id: str) -> str | None:
        """Return the last presence status stored for a user, or None."""
        with self._lock:
            return self._presence.get(user_id)

    # -- channels -----------------------------------------------------------

    def _channel(self, channel_id: str) -> Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise GuildError(404, "channel not found")
        return channel

    def _readable(self, caller: str, channel_id: str) -> Channel:
        channel = self._channel(channel_id)
        if not channel.is_public and caller not in channel.members:
            # A private channel's existence is not revealed to non-members.
            raise GuildError(404, "channel not found")
        return channel

    def _membered(self, caller: str, channel_id: str) -> Channel:
        channel = self._readable(caller, channel_id)
        if caller not in channel.members:
            raise GuildError(403, "not a member of this channel")
        return channel

    def channel(self, channel_id: str) -> dict[str, Any]:
        """Return one Channel dict (for tests); GuildError 404 if unknown."""
        with self._lock:
            return self._channel(channel_id).to_json()

    def list_channels(self, caller: str, guild_id: str) -> list[dict[str, Any]]:
        """Return public channels plus those the caller is a member of.

        Raises:
            GuildError: 404 when ``guild_id`` is not this guild.
        """
        with self._lock:
            if guild_id != self.node_id:
                raise GuildError(404, "guild not found")
            return [
                c.to_json() for c in self._channels.values() if c.is_public or caller in c.members
            ]

    def create_channel(
        self,
        caller: str,
        *,
        guild_id: str,
        name: str,
        x_type: str,
        is_public: bool,
        member_ids: list[str],
        purpose: str = "",
        wake_ids: list[str] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """Create a channel; the caller always becomes a member (*inferred*).

        Returns:
            The Channel dict and the member ids (each gets ``channel.joined``).

        Raises:
            GuildError: 404 other guild, 400 bad name, xType or unknown user id.
        """
        if x_type not in rules.X_TYPES:
            raise GuildError(400, f"xType must be one of {', '.join(rules.X_TYPES)}")
        if not name.strip():
            raise GuildError(400, "name must not be empty")
        with self._lock:
            if guild_id != self.node_id:
                raise GuildError(404, "guild not found")
            wake = list(wake_ids or [])
            if any(u not in self._users for u in [*member_ids, *wake]):
                raise GuildError(400, "unknown user id")
            members = {caller, *member_ids}
            channel = Channel(
                id=str(uuid.uuid4()),
                guild_id=guild_id,
                name=name,
                x_type=x_type,
                is_public=is_public,
                purpose=purpose,
                created_at=now_iso(),
                members=members,
                wake_list=set(wake),
            )
            self._channels[channel.id] = channel
            return channel.to_json(), sorted(members)

    def members(self, caller: str, channel_id: str) -> list[dict[str, Any]]:
        """Return ``[{"userId", "bypass"}]``; ``bypass`` is always False (*inferred*).

        Raises:
            GuildError: 404 unknown channel, or private and the caller not a member.
        """
        with self._lock:
            channel = self._readable(caller, channel_id)
            return [{"userId": u, "bypass": False} for u in sorted(channel.members)]

    def is_member(self, user_id: str, channel_id: str) -> bool:
        """Return whether a user is a member of a channel (False if unknown)."""
        with self._lock:
            channel = self._channels.get(channel_id)
            return channel is not None and user_id in channel.members

    def x_type(self, channel_id: str) -> str:
        """Return a channel's xType; GuildError 404 if unknown."""
        with self._lock:
            return self._channel(channel_id).x_type

    def add_member(self, caller: str, channel_id: str, user_id: str) -> bool:
        """Add a member (*inferred* path); members may add, and anyone may add
        itself to a public channel.

        Returns:
            True when the user was not a member before.

        Raises:
            GuildError: 404 unknown channel or user, 403 caller not allowed.
        """
        with self._lock:
            channel = self._readable(caller, channel_id)
            self._user(user_id)
            allowed = caller in channel.members or (channel.is_public and caller == user_id)
            if not allowed:
                raise GuildError(403, "not a member of this channel")
            added = user_id not in channel.members
            channel.members.add(user_id)
            return added

    def remove_member(self, caller: str, channel_id: str, user_id: str) -> bool:
        """Remove a member (*inferred* path); any member may remove any member.

        Returns:
            True when the user was a member.

        Raises:
            GuildError: 404 unknown channel, 403 caller not a member.
        """
        with self._lock:
            channel = self._membered(caller, channel_id)
            removed = user_id in channel.members
            channel.members.discard(user_id)
            return removed

    def join(self, user_id: str, channel_id: str) -> tuple[bool, bool]:
        """Decide a realtime ``join_channel``.

        Members may join; anyone may join a public channel, and joining one makes
        the user a member, so that its posts are allowed and it gets wakeups
        (*inferred*: Fabric may keep watchers apart from members).

        Returns:
            ``(allowed, became_member)``; ``(False, False)`` for unknown channels.
        """
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                return False, False
            if user_id in channel.members:
                return True, False
            if channel.is_public:
                channel.members.add(user_id)
                return True, True
            return False, False

    def close(self, caller: str, channel_id: str) -> dict[str, Any]:
        """Close a channel (members only); idempotent. History stays readable.

        Raises:
            GuildError: 404 unknown channel, 403 not a member.
        """
        with self._lock:
            channel = self._membered(caller, channel_id)
            channel.closed = True
            return channel.to_json()

    # -- messages -----------------------------------------------------------

    def _check_content(self, content: str) -> str:
        # *Inferred*: the limit applies to the content as sent, before the
        # name-mention rewrite, so that a client can split text predictably.
        if not content:
            raise GuildError(400, "content must not be empty")
        if rules.content_length(content) > self.content_limit:
            raise GuildError(413, f"content over {self.content_limit} characters")
        by_name = {u.name: u.id for u in self._users.values()}
        return rules.rewrite_name_mentions(content, by_name.get)

    def post(
        self,
        caller: str,
        channel_id: str,
        content: str,
        wakeup_user_id: str | None = None,
        nonce: str | None = None,
    ) -> Posted:
        """Store a post with the next seq (1, 2, ... per channel).

        Args:
            caller: Author's user id.
            channel_id: Channel id.
            content: Text as sent (name mentions are rewritten).
            wakeup_user_id: The one user to wake, if any.
            nonce: The client's idempotency key (*inferred* field), stored and
                returned with the message; at most
                :data:`rules.MESSAGE_NONCE_MAX` characters. A repeated nonce is
                stored again: the guild does not deduplicate posts.

        Raises:
            GuildError: 404 unknown channel, 403 not a member, 409 closed,
                413 content over the limit, 400 empty content or a bad nonce.
        """
        if nonce is not None and not (isinstance(nonce, str)
                                      and 0 < len(nonce) <= rules.MESSAGE_NONCE_MAX):
            raise GuildError(
                400, f"{rules.MESSAGE_NONCE_FIELD} must be a string of 1 to "
                f"{rules.MESSAGE_NONCE_MAX} characters")
        with self._lock:
            channel = self._membered(caller, channel_id)
            if channel.closed:
                raise GuildError(409, "channel is closed")
            stored = self._check_content(content)
            message = Message(
                message_id=str(uuid.uuid4()),
                channel_id=channel.id,
                seq=len(channel.messages) + 1,
                content=stored,
                author_user_id=caller,
                created_at=now_iso(),
                wakeup_user_id=wakeup_user_id,
                nonce=nonce,
            )
            channel.messages.append(message)
            return Posted(
                message=message.to_json(),
                x_type=channel.x_type,
                wake_list=frozenset(channel.wake_list),
                wakeup_user_id=wakeup_user_id,
            )

    def _own_message(self, caller: str, channel_id: str, message_id: str) -> Message:
        channel = self._readable(caller, channel_id)
        for message in channel.messages:
            if message.message_id == message_id:
                if message.author_user_id != caller:
                    raise GuildError(403, "only the author may change a message")
                if message.deleted_at is not None:
                    raise GuildError(409, "message is deleted")
                if channel.closed:
                    raise GuildError(409, "channel is closed")
                return message
        raise GuildError(404, "message not found")

    def edit(self, caller: str, channel_id: str, message_id: str, content: str) -> dict[str, Any]:
        """Edit a message's content (author only).

        Raises:
            GuildError: 404 unknown, 403 not the author, 409 deleted or closed,
                413 too long, 400 empty.
        """
        with self._lock:
            message = self._own_message(caller, channel_id, message_id)
            message.content = self._check_content(content)
            message.edited_at = now_iso()
            return message.to_json()

    def delete(self, caller: str, channel_id: str, message_id: str) -> dict[str, Any]:
        """Delete a message (author only); it keeps its seq with empty content
        and ``isDeleted`` true, so history has no holes (*inferred*).

        Raises:
            GuildError: 404 unknown, 403 not the author, 409 already deleted or closed.
        """
        with self._lock:
            message = self._own_message(caller, channel_id, message_id)
            message.content = ""
            message.deleted_at = now_iso()
            return message.to_json()

    def history(
        self,
        caller: str,
        channel_id: str,
        *,
        seq_from: int | None = None,
        seq_to: int | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Return ``{"items", "page"}``: messages ascending by seq.

        With ``seq_from`` the first ``limit`` messages from it (inclusive), up to
        ``seq_to`` (inclusive); otherwise the last ``limit`` up to ``seq_to``.
        ``limit`` defaults to 50 and is clamped to 200; ``page`` echoes the
        request with the effective limit.

        Raises:
            GuildError: 404 unknown (or private and not a member), 400 limit < 1.
        """
        if limit is None:
            limit = rules.HISTORY_LIMIT_DEFAULT
        if limit < 1:
            raise GuildError(400, "limit must be >= 1")
        limit = min(limit, rules.HISTORY_LIMIT_MAX)
        with self._lock:
            channel = self._readable(caller, channel_id)
            chosen = [
                m
                for m in channel.messages
                if (seq_from is None or m.seq >= seq_from) and (seq_to is None or m.seq <= seq_to)
            ]
            chosen = chosen[:limit] if seq_from is not None else chosen[-limit:]
            return {
                "items": [m.to_json() for m in chosen],
                "page": {"seqFrom": seq_from, "seqTo": seq_to, "limit": limit},
            }

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Return every Message dict of a channel, by seq (for tests); KeyError if unknown."""
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise KeyError(channel_id)
            return [m.to_json() for m in channel.messages]
