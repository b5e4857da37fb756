"""The intake of one (identity, space) connection to the in-memory server.

Driven by its :class:`bridge.platform.IntakeHost` on one thread, as the chat
port says: the server's callbacks only ``tell`` the host; :meth:`MemoryIntake.handle`
does the rest. On start (and after each reconnect) it loads the identity's
channels that a binding covers, resolves the config's names, and catches up
every channel after its cursor; a channel without one is seen for the first
time and starts :data:`FIRST_SIGHT` messages back. Live messages are taken in
position order per channel: one already seen is dropped, one after a gap
fetches the gap first. The identity's own messages only move the cursor.

A message is addressed to the agent in a direct channel, or when it mentions
the identity (``<@USER_ID>``, see :func:`mention`). Files posted with a message
become its attachments (their ``ref`` is the server's file id). A member's
click on a control of one of the identity's messages in a bound channel is
handed to the host as an :class:`bridge.model.Action` of that message's
conversation (clicks are live only: one made while disconnected is lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import attrs

from adapters.chat.memory.server import (
    Channel,
    ChannelsChanged,
    Clicked,
    Connection,
    Event,
    MemoryServer,
    Message,
    Posted,
)
from adapters.chat.reconnect import Connect, ReconnectingIntake, connect_failure
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError
from bridge.model import Action, Attachment, Inbound
from bridge.names import ResolvedNames, resolve_connection, user_entries
from bridge.platform import Access, IntakeHost, IntakeStatus

log = logging.getLogger(__name__)

#: Messages of a channel seen for the first time that are caught up (the older are skipped).
FIRST_SIGHT = 100


def mention(user_id: str) -> str:
    """The text that mentions a user in a message."""
    return f"<@{user_id}>"


@attrs.frozen
class _Event:
    generation: int
    event: Event


@attrs.frozen
class _Closed:
    generation: int
    reason: str


class MemoryIntake(ReconnectingIntake):
    """One connection's intake (:class:`bridge.platform.Intake`; see the module docstring).

    Args:
        server: The server.
        host: The connection's host.
        agent: The agent whose identity connects.
        bindings: The agent's bindings in the host's space.
        platform: The platform's name (the Inbounds' ``platform``).
        first_sight: Messages caught up in a channel seen for the first time.
        retry_s: Delay before the first reconnect attempt (seconds); it doubles
            up to ``retry_max_s`` while attempts fail.
        retry_max_s: Longest delay between attempts (seconds).
    """

    def __init__(self, server: MemoryServer, host: IntakeHost, agent: AgentSettings,
                 bindings: Sequence[Binding], *, platform: str, first_sight: int = FIRST_SIGHT,
                 retry_s: float = 1.0, retry_max_s: float = 30.0) -> None:
        self.server = server
        self.host = host
        self.agent = agent
        self.space = host.connection.space
        self.bindings = tuple(b for b in bindings
                              if b.agent == agent.name and b.space == self.space)
        self.platform = platform
        self.first_sight = first_sight
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.generation = 0
        self.connection: Connection | None = None
        self.access: Access | None = None
        self.channels: dict[str, Channel] = {}
        #: The last position taken per channel (catch-up starts after it).
        self.last: dict[str, int] = {}
        self.names = ResolvedNames()
        self.problems: set[str] = set()
        self.state, self.reason = "connecting", ""
        self.attempts = 0
        self.reconnects = 0
        self.connected_once = False
        self.token_refreshes = 0
        self.last_event_at: float | None = None

    # -- the port ------------------------------------------------------------

    def start(self) -> None:
        """Read the stored cursors, connect, catch up and go live (retrying on its own)."""
        for channel_id, cursor in self.host.cursors().items():
            try:
                self.last[channel_id] = int(cursor)
            except ValueError:
                log.warning("intake %s: cursor %r of %s is not a position; the channel "
                            "starts as seen for the first time", self.host.connection, cursor,
                            channel_id)
        self.names = self.host.names()
        self._publish()
        self._connect()

    def handle(self, message: object) -> bool:
        """Take a message this intake told or scheduled to itself; False for any other."""
        if isinstance(message, Connect):
            if message.generation == self.generation and self.connection is None:
                self._connect()
        elif isinstance(message, _Event):
            if message.generation == self.generation and self.connection is not None:
                self.last_event_at = time.time()
                try:
                    self._event(message.event)
                except ChatError as exc:
                    self._dropped(f"server call failed: {exc}")
        elif isinstance(message, _Closed):
            if message.generation == self.generation and self.connection is not None:
                self._dropped(message.reason)
        else:
            return False
        return True

    # -- connecting ------------------------------------------------------------

    def _connect(self) -> None:
        if self.host.stopping:
            return
        self.generation += 1
        generation = self.generation
        access: Access | None = None
        try:
            access = self.host.access()
            self.connection = self.server.connect(
                access.token, self.space,
                on_event=lambda event: self.host.tell(_Event(generation, event)),
                on_closed=lambda reason: self.host.tell(_Closed(generation, reason)))
            if self.access is not None and access.token != self.access.token:
                self.token_refreshes += 1
            self.access = access
            self._load_channels()
            self._catch_up(list(self.channels))
        except ChatError as exc:
            self._disconnect()
            self._retry(*connect_failure(exc, self.host, access,
                                         connected_once=self.connected_once))
            return
        if self.connected_once:
            self.reconnects += 1
        self.connected_once = True
        self.attempts = 0
        self.state, self.reason = "connected", ""
        self._publish()

    def _disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _retry_delay(self) -> float:
        """``retry_s`` doubling to ``retry_max_s``, without jitter (deterministic retries)."""
        return float(min(self.retry_max_s, self.retry_s * 2 ** (self.attempts - 1)))

    def _dropped(self, reason: str) -> None:
        self._disconnect()
        self.generation += 1
        self._retry("reconnecting", f"connection closed ({reason})")

    # -- channels --------------------------------------------------------------

    def _user_id(self) -> str:
        assert self.access is not None
        return self.access.user_id

    def _load_channels(self) -> list[str]:
        """Refresh the channels read; return the ids of those not read before."""
        seen = self.server.channels(self.space, self._user_id())
        self._resolve_names(seen)
        bound = {c.id: c for c in seen if self._binding(c) is not None}
        added = [channel_id for channel_id in bound if channel_id not in self.channels]
        for channel_id in added:
            if channel_id not in self.last:
                self._first_sight(bound[channel_id])
        self.channels = bound
        return added

    def _resolve_names(self, channels: list[Channel]) -> None:
        """Resolve the config's channel and user names (keeping the pins) and publish them."""
        users = ({u.id: u.name for u in self.server.users(self.space)}
                 if user_entries(self.agent.access) else None)
        self.names, found = resolve_connection(self.bindings, self.agent.access,
                                               {c.id: c.name for c in channels}, users,
                                               self.names)
        for line in found:
            if line not in self.problems:
                log.warning("intake %s: %s", self.host.connection, line)
        self.problems = set(found)
        self.host.names_resolved(self.names)

    def _first_sight(self, channel: Channel) -> None:
        """Start a channel never read before :attr:`first_sight` messages back."""
        history = self.server.history(channel.id, self._user_id())
        start = max(0, (history[-1].position if history else 0) - self.first_sight)
        self.last[channel.id] = start
        self.host.save_cursor(channel.id, str(start), start)
        if start:
            log.info("intake %s: first sight of %s: positions 1..%d skipped", self.host.connection,
                     channel.name, start)

    # -- messages --------------------------------------------------------------

    def _catch_up(self, channel_ids: Sequence[str]) -> None:
        for channel_id in channel_ids:
            self._catch_up_channel(channel_id)

    def _catch_up_channel(self, channel_id: str) -> None:
        after = self.last.get(channel_id, 0)
        for message in self.server.history(channel_id, self._user_id(), after=after):
            self._take(message, catch_up=True)

    def _event(self, event: Event) -> None:
        if isinstance(event, ChannelsChanged):
            self._catch_up(self._load_channels())
            self._publish()
        elif isinstance(event, Posted):
            message = event.message
            if message.channel not in self.channels:
                return
            last = self.last.get(message.channel, 0)
            if message.position <= last:
                return  # taken already (a catch-up fetched it)
            if message.position > last + 1:
                self._catch_up_channel(message.channel)  # the gap, then this one
            else:
                self._take(message, catch_up=False)
        elif isinstance(event, Clicked):
            self._clicked(event)

    def _clicked(self, event: Clicked) -> None:
        """Hand a member's click on one of the identity's messages to the host."""
        message = event.message
        channel = self.channels.get(message.channel)
        if channel is None or message.author != self._user_id() or event.user == message.author:
            return
        binding = self._binding(channel)
        per_thread = binding is not None and binding.scope == "thread"
        scope = self.host.connection.scope(channel.id, message.thread if per_thread else "")
        self.host.act(Action(scope, event.user, event.name, event.value,
                             self.server.user(event.user).name))

    def _take(self, message: Message, *, catch_up: bool) -> None:
        """Move the channel's position past ``message`` and accept it, unless it is our own."""
        self.last[message.channel] = message.position
        me = self._user_id()
        if message.author == me:
            self.host.save_cursor(message.channel, str(message.position), message.position)
            return
        channel = self.channels[message.channel]
        binding = self._binding(channel)
        author = self.server.user(message.author)
        mentioned = mention(me) in message.text
        self.host.accept(Inbound(
            platform=self.platform, agent=self.agent.name, space=self.space,
            channel_id=channel.id, channel_name=channel.name, message_id=message.id,
            seq=message.position, cursor=str(message.position), author_id=author.id,
            author_name=author.name, content=message.text, created_at=message.created_iso,
            thread=message.thread, per_thread=binding is not None and binding.scope == "thread",
            addressed=channel.direct or mentioned, is_direct=channel.direct,
            mentioned=mentioned, catch_up=catch_up, author_is_bot=author.bot,
            attachments=tuple(Attachment(f.name, f.size_bytes, f.mime_type, f.id)
                              for f in message.files)))

    def _publish(self) -> None:
        self.host.publish(IntakeStatus(
            state=self.state, reason=self.reason, reconnects=self.reconnects,
            channels=len(self.channels),
            token_at=self.access.issued_at if self.access is not None else None,
            token_refreshes=self.token_refreshes, last_event_at=self.last_event_at))
