"""The in-memory chat server: spaces, channels, threads, members and messages.

What a real chat service keeps, without the network: users (members and
agent identities, each with an optional login credential), spaces they
belong to, channels (direct or not) with their members, and messages with an
id, an increasing position per channel, an author, an optional thread (the
id of a top-level message of the same channel) and an optional idempotency
key, and the files posted with it. Members and identities post, edit,
delete, react and click through the same calls. A deleted message keeps its
position (later positions never move) but is no longer read. Reactions are
kept per message as a set of users per reaction name; a file's content is
kept by the server and downloaded by its id by a member of its channel.

Live connections (:meth:`MemoryServer.connect`) get every message posted in
a channel their user is a member of, a :class:`ChannelsChanged` when that
user's channel list changes, and a :class:`Clicked` when a member clicks a
control on a message their user posted (which controls a message carries is
the poster's business: the server takes a click on any). Callbacks run on the posting thread while
the server's lock is held, so they see messages in position order; they must
only hand the event on (a queue), never block or call back into the server
from another thread.

Fault switches, like the Fabric dev guild's: :meth:`MemoryServer.fail_next_posts`,
:meth:`MemoryServer.drop_connections` and :meth:`MemoryServer.expire_tokens`.

One lock guards everything, so tests may act from any thread.
"""

from __future__ import annotations

import datetime
import itertools
import mimetypes
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import attrs

from bridge.errors import (
    BadRequest,
    Forbidden,
    LoginRefused,
    NotFound,
    RetryLater,
    TooLarge,
    Unauthorized,
)
from bridge.model import Control

#: Longest text of one message (characters), unless the server is built with another.
TEXT_CHARS = 4000
#: Longest idempotency key a post may carry (characters).
KEY_CHARS = 200


@attrs.frozen
class User:
    """A member or an agent identity.

    Attributes:
        id: Its id (``U1``, ``U2``, ...).
        name: Its display name.
        bot: True for a bot or agent account.
    """

    id: str
    name: str
    bot: bool = False


@attrs.frozen
class Channel:
    """A channel of one space.

    Attributes:
        id: Its id (``C1``, ...).
        space: The space it is in.
        name: Its name.
        direct: True for a direct conversation.
        members: The ids of its members (only they read and post).
    """

    id: str
    space: str
    name: str
    direct: bool
    members: frozenset[str]


@attrs.frozen
class File:
    """A file posted with a message (its content is kept by the server).

    Attributes:
        id: Its id (``F1``, ...; what :meth:`MemoryServer.download` takes).
        name: Its name as posted.
        size_bytes: Its size in bytes.
        mime_type: Its media type, guessed from the name (empty: unknown).
    """

    id: str
    name: str
    size_bytes: int
    mime_type: str = ""


@attrs.frozen
class Message:
    """A posted message.

    Attributes:
        id: Its id (``M1``, ...; unique on the server).
        channel: The channel it is in.
        position: Its place in the channel: 1, 2, ... in posting order.
        author: The author's user id.
        text: The text (its latest edit).
        created_at: Epoch seconds of the post.
        thread: The id of the thread's top-level message; empty at the top level.
        key: The idempotency key the post carried (empty: none).
        edited: True once the text was edited.
        files: The files posted with it.
        deleted: True once its author deleted it (it is no longer read).
        controls: The buttons on it (a click names one of them).
    """

    id: str
    channel: str
    position: int
    author: str
    text: str
    created_at: float
    thread: str = ""
    key: str = ""
    edited: bool = False
    files: tuple[File, ...] = ()
    deleted: bool = False
    controls: tuple[Control, ...] = ()

    @property
    def created_iso(self) -> str:
        """:attr:`created_at` as ISO 8601 in UTC with milliseconds."""
        moment = datetime.datetime.fromtimestamp(self.created_at, datetime.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class Posted:
    """Event: ``message`` was posted in a channel the connection's user is a member of."""

    message: Message


@attrs.frozen
class ChannelsChanged:
    """Event: the connection's user joined or left a channel of the space."""

    space: str


@attrs.frozen
class Clicked:
    """Event: ``user`` clicked the control ``name`` (carrying ``value``) on ``message``,
    which the connection's user posted."""

    message: Message
    user: str
    name: str
    value: str


Event = Posted | ChannelsChanged | Clicked


class Connection:
    """A live connection of one user to one space (see :meth:`MemoryServer.connect`).

    Attributes:
        user_id: Whose connection it is.
        space: The space it listens to.
    """

    def __init__(self, server: MemoryServer, user_id: str, space: str,
                 on_event: Callable[[Event], None], on_closed: Callable[[str], None]) -> None:
        self.server = server
        self.user_id = user_id
        self.space = space
        self.on_event = on_event
        self.on_closed = on_closed
        self.open = True

    def close(self) -> None:
        """Disconnect (``on_closed`` is not called for a close asked by the client)."""
        self.server._forget(self)


@attrs.frozen
class _Token:
    user_id: str
    issued_at: float


@attrs.define
class _PostFailures:
    count: int = 0
    landed: bool = False
    author: str | None = None
    retry_after_s: float | None = None


class MemoryServer:
    """The in-memory chat service (see the module docstring). Every public method is thread-safe.

    Args:
        text_chars: Longest text of one message, in characters.
        clock: Epoch seconds (injectable).
    """

    def __init__(self, *, text_chars: int = TEXT_CHARS,
                 clock: Callable[[], float] = time.time) -> None:
        self.text_chars = text_chars
        self._clock = clock
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._users: dict[str, User] = {}
        self._credentials: dict[str, str] = {}
        self._spaces: dict[str, tuple[str, set[str]]] = {}
        self._channels: dict[str, Channel] = {}
        self._messages: dict[str, list[Message]] = {}
        #: Message id -> reaction name -> the users who reacted so.
        self._reactions: dict[str, dict[str, set[str]]] = {}
        #: File id -> (the channel it was posted in, its content).
        self._files: dict[str, tuple[str, bytes]] = {}
        self._tokens: dict[str, _Token] = {}
        self._presence: dict[str, bool] = {}
        #: User -> what was shown to them only: (channel, author, text).
        self._notices: dict[str, list[tuple[str, str, str]]] = {}
        self._connections: list[Connection] = []
        self._fail = _PostFailures()

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # -- setting up ----------------------------------------------------------

    def add_user(self, name: str, *, credential: str = "", bot: bool = False) -> str:
        """Create a user; return its id.

        Args:
            name: Display name.
            credential: What :meth:`login` takes for it (empty: it cannot log in).
            bot: True for a bot or agent account.
        """
        with self._lock:
            user = User(self._new_id("U"), name, bot)
            self._users[user.id] = user
            if credential:
                self._credentials[credential] = user.id
            return user.id

    def add_space(self, name: str, members: Iterable[str] = ()) -> str:
        """Create a space with these user ids as members; return its id."""
        with self._lock:
            space = self._new_id("S")
            self._spaces[space] = (name, set())
        for user in members:
            self.join_space(space, user)
        return space

    def join_space(self, space: str, user: str) -> None:
        """Make ``user`` a member of ``space``."""
        with self._lock:
            self._space(space)[1].add(self._user(user).id)

    def add_channel(self, space: str, name: str, members: Iterable[str], *,
                    direct: bool = False) -> str:
        """Create a channel in ``space`` with these members; return its id.

        Raises:
            NotFound: The space or a member does not exist.
            Forbidden: A member is not in the space.
        """
        with self._lock:
            joined = frozenset(members)
            for user in joined:
                self._in_space(space, user)
            channel = Channel(self._new_id("C"), space, name, direct, joined)
            self._channels[channel.id] = channel
            self._messages[channel.id] = []
            self._tell(joined, space, ChannelsChanged(space))
            return channel.id

    def add_member(self, channel_id: str, user: str) -> None:
        """Add a member of the channel's space to the channel."""
        with self._lock:
            channel = self._channel(channel_id)
            self._in_space(channel.space, user)
            self._channels[channel_id] = attrs.evolve(channel, members=channel.members | {user})
            self._tell({user}, channel.space, ChannelsChanged(channel.space))

    def remove_member(self, channel_id: str, user: str) -> None:
        """Remove a member from the channel."""
        with self._lock:
            channel = self._channel(channel_id)
            self._channels[channel_id] = attrs.evolve(channel, members=channel.members - {user})
            self._tell({user}, channel.space, ChannelsChanged(channel.space))

    # -- identities ------------------------------------------------------------

    def login(self, credential: str) -> tuple[str, str, float]:
        """Log a user in by its credential.

        Returns:
            ``(user_id, token, issued_at)``: a fresh bearer token and when it was issued.

        Raises:
            LoginRefused: No user has this credential.
        """
        with self._lock:
            user = self._credentials.get(credential) if credential else None
            if user is None:
                raise LoginRefused("unknown credential")
            token = _Token(user, self._clock())
            value = secrets.token_urlsafe(24)
            self._tokens[value] = token
            return user, value, token.issued_at

    def authenticate(self, token: str) -> str:
        """The user id a token belongs to.

        Raises:
            Unauthorized: The token is unknown or expired.
        """
        with self._lock:
            found = self._tokens.get(token)
            if found is None:
                raise Unauthorized("token refused")
            return found.user_id

    def spaces_of(self, user: str) -> list[str]:
        """The spaces ``user`` is a member of, in creation order."""
        with self._lock:
            return [space for space, (_, members) in self._spaces.items() if user in members]

    # -- reading -----------------------------------------------------------------

    def user(self, user_id: str) -> User:
        """The user with this id.

        Raises:
            NotFound: No such user.
        """
        with self._lock:
            return self._user(user_id)

    def users(self, space: str) -> list[User]:
        """The members of ``space``."""
        with self._lock:
            return [self._users[user] for user in sorted(self._space(space)[1])]

    def channels(self, space: str, user: str) -> list[Channel]:
        """The channels of ``space`` that ``user`` is a member of, in creation order."""
        with self._lock:
            return [c for c in self._channels.values() if c.space == space and user in c.members]

    def history(self, channel_id: str, reader: str, *, after: int = 0) -> list[Message]:
        """The channel's messages after position ``after``, oldest first (threads included;
        deleted ones left out).

        Raises:
            NotFound: No such channel.
            Forbidden: ``reader`` is not a member.
        """
        with self._lock:
            self._member(channel_id, reader)
            return [m for m in self._messages[channel_id][max(0, after):] if not m.deleted]

    def reactions(self, channel_id: str, message_id: str, reader: str) -> dict[str, frozenset[str]]:
        """The reactions on a message: reaction name -> the ids of the users who reacted so.

        Raises:
            NotFound: No such channel or message.
            Forbidden: ``reader`` is not a member.
        """
        with self._lock:
            self._member(channel_id, reader)
            self._message(channel_id, message_id)
            return {name: frozenset(users)
                    for name, users in self._reactions.get(message_id, {}).items() if users}

    def download(self, file_id: str, reader: str) -> tuple[File, bytes]:
        """A posted file and its content.

        Raises:
            NotFound: No such file, or its message was deleted.
            Forbidden: ``reader`` is not a member of the file's channel.
        """
        with self._lock:
            found = self._files.get(file_id)
            if found is None:
                raise NotFound(f"no file {file_id}")
            channel_id, content = found
            self._member(channel_id, reader)
            for message in self._messages[channel_id]:
                for file in message.files:
                    if file.id == file_id and not message.deleted:
                        return file, content
            raise NotFound(f"file {file_id} was deleted")

    def presence(self, user: str) -> bool:
        """True when ``user`` shows as busy."""
        with self._lock:
            return self._presence.get(user, False)

    # -- writing -----------------------------------------------------------------

    def post(self, channel_id: str, author: str, text: str, *, thread: str = "",
             key: str = "", files: Mapping[str, bytes] | None = None,
             controls: Iterable[Control] = ()) -> Message:
        """Post ``text`` as ``author`` and tell the channel's live connections.

        Args:
            channel_id: The channel.
            author: A member's user id.
            text: At most :attr:`text_chars` characters; not blank unless files come with it.
            thread: The id of a top-level message of the channel to reply under.
            key: The post's idempotency key, kept with the message.
            files: Files posted with it: name -> content.
            controls: Buttons on it.

        Returns:
            The stored message.

        Raises:
            NotFound: No such channel, or ``thread`` is not a top-level message of it.
            Forbidden: ``author`` is not a member.
            TooLarge: ``text`` is over the limit.
            BadRequest: ``text`` is blank or ``key`` too long.
            RetryLater: an injected failure (:meth:`fail_next_posts`); ``ambiguous``.
        """
        with self._lock:
            self._member(channel_id, author)
            if not text.strip() and not files:
                raise BadRequest("empty text")
            if len(text) > self.text_chars:
                raise TooLarge(f"text is {len(text)} characters, over {self.text_chars}")
            if len(key) > KEY_CHARS:
                raise BadRequest(f"idempotency key over {KEY_CHARS} characters")
            messages = self._messages[channel_id]
            if thread and not any(m.id == thread and not m.thread for m in messages):
                raise NotFound(f"no thread {thread} in {channel_id}")
            fail = self._fail
            failing = fail.count > 0 and fail.author in (None, author)
            if failing:
                fail.count -= 1
                if not fail.landed:
                    raise RetryLater("injected failure", fail.retry_after_s, ambiguous=True)
            stored = tuple(self._store_file(channel_id, name, content)
                           for name, content in (files or {}).items())
            message = Message(self._new_id("M"), channel_id, len(messages) + 1, author, text,
                              self._clock(), thread, key, files=stored,
                              controls=tuple(controls))
            messages.append(message)
            channel = self._channels[channel_id]
            self._tell(channel.members, channel.space, Posted(message))
            if failing:
                raise RetryLater("injected failure (landed)", fail.retry_after_s,
                                 ambiguous=True)
            return message

    def edit(self, channel_id: str, message_id: str, author: str, text: str, *,
             controls: Iterable[Control] = ()) -> Message:
        """Replace the text and the buttons (``controls``) of a message ``author`` posted.

        Raises:
            NotFound: No such channel or message.
            Forbidden: ``author`` is not a member, or not the message's author.
            TooLarge: ``text`` is over the limit.
            BadRequest: ``text`` is blank.
        """
        with self._lock:
            self._member(channel_id, author)
            if not text.strip():
                raise BadRequest("empty text")
            if len(text) > self.text_chars:
                raise TooLarge(f"text is {len(text)} characters, over {self.text_chars}")
            index = self._own(channel_id, message_id, author)
            messages = self._messages[channel_id]
            messages[index] = attrs.evolve(messages[index], text=text, edited=True,
                                           controls=tuple(controls))
            return messages[index]

    def delete(self, channel_id: str, message_id: str, author: str) -> None:
        """Delete a message ``author`` posted (its files and reactions go with it).

        Raises:
            NotFound: No such channel or message (or it is deleted already).
            Forbidden: ``author`` is not a member, or not the message's author.
        """
        with self._lock:
            self._member(channel_id, author)
            index = self._own(channel_id, message_id, author)
            messages = self._messages[channel_id]
            messages[index] = attrs.evolve(messages[index], text="", files=(), deleted=True)
            self._reactions.pop(message_id, None)

    def react(self, channel_id: str, message_id: str, user: str, reaction: str, *,
              on: bool = True) -> None:
        """Add (``on``) or remove ``user``'s ``reaction`` on a message; both are idempotent.

        Raises:
            NotFound: No such channel or message.
            Forbidden: ``user`` is not a member.
            BadRequest: ``reaction`` is blank.
        """
        with self._lock:
            self._member(channel_id, user)
            self._message(channel_id, message_id)
            if not reaction.strip():
                raise BadRequest("empty reaction")
            users = self._reactions.setdefault(message_id, {}).setdefault(reaction, set())
            if on:
                users.add(user)
            else:
                users.discard(user)

    def click(self, channel_id: str, message_id: str, user: str, name: str,
              value: str = "") -> None:
        """``user`` clicks the control ``name`` on a message; its author's connections are told.

        Any ``name`` and ``value`` may be sent, whatever controls the message
        carries (:attr:`Message.controls`): a forged click is what the bridge
        must withstand.

        Raises:
            NotFound: No such channel or message.
            Forbidden: ``user`` is not a member.
            BadRequest: ``name`` is blank.
        """
        with self._lock:
            channel = self._member(channel_id, user)
            message = self._message(channel_id, message_id)
            if not name.strip():
                raise BadRequest("empty control name")
            self._tell({message.author}, channel.space, Clicked(message, user, name, value))

    def notify(self, channel_id: str, author: str, user: str, text: str) -> None:
        """``author`` shows ``text`` to ``user`` only (an ephemeral message).

        Raises:
            NotFound: No such channel.
            Forbidden: ``author`` or ``user`` is not a member.
        """
        with self._lock:
            self._member(channel_id, author)
            self._member(channel_id, user)
            self._notices.setdefault(user, []).append((channel_id, author, text))

    def notices(self, user: str) -> list[tuple[str, str, str]]:
        """What was shown to ``user`` only: (channel, author, text), oldest first."""
        with self._lock:
            return list(self._notices.get(user, []))

    def set_presence(self, user: str, busy: bool) -> None:
        """Show ``user`` as busy or idle."""
        with self._lock:
            self._presence[self._user(user).id] = busy

    def connect(self, token: str, space: str, on_event: Callable[[Event], None],
                on_closed: Callable[[str], None]) -> Connection:
        """Open a live connection for the token's user to ``space``.

        Args:
            token: A token from :meth:`login`.
            space: A space the user is a member of.
            on_event: Called with each :data:`Event` (see the module docstring).
            on_closed: Called with a reason when the server drops the connection.

        Raises:
            Unauthorized: The token is refused.
            NotFound: No such space.
            Forbidden: The user is not in the space.
        """
        with self._lock:
            user = self.authenticate(token)
            self._in_space(space, user)
            connection = Connection(self, user, space, on_event, on_closed)
            self._connections.append(connection)
            return connection

    # -- fault switches ----------------------------------------------------------

    def fail_next_posts(self, count: int, *, landed: bool = False, author: str | None = None,
                        retry_after_s: float | None = None) -> None:
        """Make the next ``count`` posts fail with an ambiguous :class:`RetryLater`.

        Args:
            count: How many posts fail.
            landed: When True the post is stored and announced but still fails
                (an answer lost after the write): a client must not post it twice.
            author: Only posts by this user id fail (None: any author).
            retry_after_s: The delay the failure asks for.

        Raises:
            ValueError: On a negative count.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._fail = _PostFailures(count, landed, author, retry_after_s)

    def drop_connections(self, user: str | None = None) -> int:
        """Drop the live connections (of ``user`` only, when given); return how many.

        Each dropped connection's ``on_closed`` is called with ``dropped by the server``.
        """
        with self._lock:
            dropped = [c for c in self._connections if user in (None, c.user_id)]
            for connection in dropped:
                self._forget(connection)
                connection.on_closed("dropped by the server")
            return len(dropped)

    def expire_tokens(self) -> None:
        """Expire every token issued so far (the next call with one is Unauthorized)."""
        with self._lock:
            self._tokens.clear()

    # -- helpers (the lock is held) ----------------------------------------------

    def _forget(self, connection: Connection) -> None:
        with self._lock:
            connection.open = False
            if connection in self._connections:
                self._connections.remove(connection)

    def _tell(self, users: Iterable[str], space: str, event: Event) -> None:
        wanted = set(users)
        for connection in list(self._connections):
            if connection.user_id in wanted and connection.space == space:
                connection.on_event(event)

    def _user(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        return user

    def _space(self, space: str) -> tuple[str, set[str]]:
        found = self._spaces.get(space)
        if found is None:
            raise NotFound(f"no space {space}")
        return found

    def _in_space(self, space: str, user: str) -> None:
        if self._user(user).id not in self._space(space)[1]:
            raise Forbidden(f"{user} is not in space {space}")

    def _channel(self, channel_id: str) -> Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}")
        return channel

    def _message(self, channel_id: str, message_id: str) -> Message:
        found = next((m for m in self._messages[channel_id] if m.id == message_id), None)
        if found is None or found.deleted:
            raise NotFound(f"no message {message_id} in {channel_id}")
        return found

    def _own(self, channel_id: str, message_id: str, author: str) -> int:
        """The index of ``author``'s live message ``message_id`` in the channel's list."""
        messages = self._messages[channel_id]
        index = next((i for i, m in enumerate(messages)
                      if m.id == message_id and not m.deleted), None)
        if index is None:
            raise NotFound(f"no message {message_id} in {channel_id}")
        if messages[index].author != author:
            raise Forbidden("only the author changes a message")
        return index

    def _store_file(self, channel_id: str, name: str, content: bytes) -> File:
        if not name.strip() or "/" in name:
            raise BadRequest(f"bad file name {name[:80]!r}")
        file = File(self._new_id("F"), name, len(content),
                    mimetypes.guess_type(name)[0] or "")
        self._files[file.id] = (channel_id, content)
        return file

    def _member(self, channel_id: str, user: str) -> Channel:
        channel = self._channel(channel_id)
        if user not in channel.members:
            raise Forbidden(f"{user} is not a member of {channel_id}")
        return channel
