"""Fabric intake: one per (agent, guild) connection, owning the socket.io connection.

It is driven by its host, the connection's gateway actor (see
:mod:`bridge.platform`): every method runs on the host's thread.

It joins the bound channels on connect and on ``channel.joined``, resyncs the
channel list every 60 s, reconnects after any drop with backoff (1 s doubling
to 60 s, with jitter), drops its own messages, orders messages by ``seq`` per
channel, and fills gaps (and everything missed while away) from the history
call. Each accepted message goes to the host (``accept``), which journals and routes it.

First sight is an outage like any other: a channel the gateway has never seen
(a new DM, a channel it was just added to, every channel at the very first
start) is caught up from history, at most :data:`FIRST_SIGHT_MESSAGES` back;
messages inside ``catch_up_window_s`` are handled normally, older ones are
context only, and the skipped older history is logged with its reason.

Intake liveness: at each channel resync the gateway compares each channel's
``lastSeq`` from the channel list with the last seq it saw. A message that the
list showed at one resync and that has still not arrived at the next one means
the socket went silent while it looks connected: the gateway logs it, catches
up from history and reconnects (noticed within two resync periods).

Author lookups never block intake: authors come from a bounded cache; a
message by an author not in it is held (not yet journaled, and the channel's
persisted last seq stays before it, so a crash refetches it) while a lookup
runs as a coroutine on the chat loop, and is released when the answer comes. When the
lookup keeps failing the message goes on with its author's kind unknown, and
such a message never engages an agent (fail closed; it is kept as context).

Socket callbacks run on the I/O loop's thread; they only queue, tagged with
the connection generation so events of an old connection are ignored: events
go into an :class:`~adapters.chat.inflow.Inflow` whose doorbell tells the
host once per burst, so a burst is handled (and journaled) in one go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs

from adapters.chat.fabric.authors import AuthorBook
from adapters.chat.fabric.config import FabricSettings
from adapters.chat.fabric.events import (
    AuthorResolved,
    AuthorRetry,
    Connect,
    EventsWaiting,
    Resync,
    SocketClosed,
    SocketEvent,
)
from adapters.chat.fabric.inbound import ChannelInfo, channel_info, normalize_message
from adapters.chat.fabric.realtime import FabricSocket
from adapters.chat.fabric.rest import FabricGuild, GuildAccess, http_session
from adapters.chat.fabric.rules import HISTORY_LIMIT_MAX
from adapters.chat.inflow import Inflow
from bridge.backoff import backoff_delay
from bridge.config import AgentSettings, Binding
from bridge.errors import BadEvent, ChatError, LoginRefused, Unauthorized
from bridge.isotime import is_stale
from bridge.model import Inbound
from bridge.names import (
    NOT_UNIQUE,
    NameProblem,
    ResolvedNames,
    channel_entries,
    resolve_names,
    user_entries,
)
from bridge.platform import IntakeHost, IntakeStatus

log = logging.getLogger(__name__)

#: Most messages of a channel's history fetched when the channel is seen for the
#: first time (one history page): older ones are skipped, with a log line.
FIRST_SIGHT_MESSAGES = HISTORY_LIMIT_MAX
#: Most messages of one channel caught up after an outage (five history pages);
#: older ones are skipped with a log line (they could only be context by then,
#: unless a channel said more than this within ``catch_up_window_s``).
CATCH_UP_MESSAGES = 5 * HISTORY_LIMIT_MAX
#: Lookups of one author before its messages go on with the kind unknown.
AUTHOR_LOOKUP_ATTEMPTS = 3
#: The user list (for user names in the access rules) is reloaded at most this
#: often (seconds), unless its last load failed.
USER_LIST_REFRESH_S = 3600.0
#: The board's "last event" time is republished at most this often (seconds).
EVENT_PUBLISH_INTERVAL_S = 1.0


class FabricIntake:
    """The intake of one agent identity in one guild (see the module docstring).

    Args:
        host: The connection's gateway (journal, routing, timers, credentials).
        settings: The Fabric settings (content limit, resync period).
        catch_up_window_s: Messages older than this (seconds) fetched from history
            are context only.
        agent: The agent's settings.
        guild: Guild node id.
        bindings: The bindings of this agent in this guild (their channels are joined).
    """

    def __init__(self, host: IntakeHost, settings: FabricSettings, catch_up_window_s: float,
                 agent: AgentSettings, guild: str, bindings: Sequence[Binding]) -> None:
        self.host = host
        self.settings = settings
        self.catch_up_window_s = catch_up_window_s
        self.agent = agent
        self.guild = guild
        self.bindings = tuple(bindings)
        self.http = http_session()
        self.generation = 0
        self.socket: FabricSocket | None = None
        #: Socket events waiting for this intake (put on the I/O loop's thread).
        self.inflow: Inflow[SocketEvent] = Inflow(lambda: self._tell(EventsWaiting()))
        self.access: GuildAccess | None = None
        self.rest: FabricGuild | None = None
        self.channels: dict[str, ChannelInfo] = {}
        self.last_seq: dict[str, int] = {}
        self.authors = AuthorBook(f"{agent.name}@{guild}", host.tell)
        #: Messages waiting for their author's lookup, per author id.
        self.held: dict[str, list[Inbound]] = {}
        self.lookup_attempts: dict[str, int] = {}
        #: When the guild's user list was last loaded for name resolution (monotonic s).
        self.users_loaded_at: float | None = None
        self.state = "connecting"
        self.reason = ""
        self.attempts = 0
        self.reconnects = 0
        self.connected_once = False
        self.stopping = False
        self.token_refreshes = 0
        self.last_event_at: float | None = None
        #: The ``last_event_at`` last published (republished at most once a second).
        self.event_shown: float | None = None
        #: Per channel: the listed lastSeq at the previous resync when it was ahead of us.
        self.behind: dict[str, int] = {}
        self.silences = 0
        #: The config's names resolved to ids, pinned (kept by the host across restarts).
        self.names = host.names()
        #: Name problems already logged (each is logged once while it lasts).
        self.name_problems: set[tuple[str, NameProblem]] = set()
        self.users_failed = False
        self.names_published = False

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Read the stored cursors, then connect (retrying with backoff on failure)."""
        self.last_seq = {channel: int(cursor) for channel, cursor in self.host.cursors().items()
                         if cursor.isdigit()}
        self._publish()
        self._connect()

    def handle(self, message: object) -> bool:
        """Take one of the intake's own messages (see the module docstring).

        Returns:
            False when ``message`` is not the intake's.
        """
        if isinstance(message, Connect):
            if message.generation == self.generation and self.socket is None:
                self._connect()
        elif isinstance(message, EventsWaiting):
            for event in self.inflow.take():
                if event.generation == self.generation and not self.host.stopping:
                    self._saw_event()
                    self._event(event.name, event.payload)
        elif isinstance(message, SocketClosed):
            if message.generation == self.generation and self.socket is not None:
                self._dropped(message.reason)
        elif isinstance(message, AuthorResolved):
            self._author_resolved(message)
        elif isinstance(message, AuthorRetry):
            if message.user_id in self.held:
                self._look_up(message.user_id)
        elif isinstance(message, Resync):
            if message.generation == self.generation and self.socket is not None:
                self._resync()
                self._check_liveness()
                if message.generation == self.generation:  # not reconnecting after a silence
                    self._schedule(self.settings.resync_s, Resync(self.generation))
        else:
            return False
        return True

    def close(self) -> None:
        """Close the socket and show the connection as stopped."""
        self.stopping = True
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        self.authors.close()
        self.state, self.reason = "stopped", ""
        self._publish()

    # -- connecting ------------------------------------------------------

    def _connect(self) -> None:
        self.generation += 1
        generation = self.generation
        try:
            access = self._get_access()
            self.access = access
            self.rest = FabricGuild(access, self.http)
            self._load_channels()
            socket = FabricSocket(
                access.endpoint, self._socket_token,
                on_event=lambda name, payload: self.inflow.put(
                    SocketEvent(generation, name, payload)),
                on_closed=lambda reason: self._tell(SocketClosed(generation, reason)),
            )
            socket.connect()
        except LoginRefused as exc:
            self._retry("failed", str(exc))
            return
        except Unauthorized as exc:
            if self.access is not None:
                self._invalidate(self.access.token)
            self._retry(self._retry_state(), str(exc))
            return
        except ChatError as exc:
            self._retry(self._retry_state(), str(exc))
            return
        self.socket = socket
        if self.connected_once:
            self.reconnects += 1
        self.connected_once = True
        self.attempts = 0
        self.state, self.reason = "connected", ""
        for channel_id in self.channels:
            self._join(channel_id)
        self._catch_up()
        self._publish()
        log.info("gateway %s@%s connected (%d channels)", self.agent.name, self.guild,
                 len(self.channels))
        self._schedule(self.settings.resync_s, Resync(generation))

    def _retry_state(self) -> str:
        return "reconnecting" if self.connected_once else "connecting"

    def _retry(self, state: str, reason: str) -> None:
        self.attempts += 1
        delay = backoff_delay(self.attempts)
        self.state, self.reason = state, reason
        log.warning("gateway %s@%s %s: %s; retry in %.1fs", self.agent.name, self.guild, state,
                    reason, delay)
        self._publish()
        self._schedule(delay, Connect(self.generation))

    def _dropped(self, reason: str) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.stopping:
            return
        self.generation += 1
        self._retry("reconnecting", f"socket closed ({reason})")

    def _get_access(self) -> GuildAccess:
        access = self.host.access()
        assert isinstance(access, GuildAccess)
        if self.access is not None and access.token != self.access.token:
            self.token_refreshes += 1
        return access

    def _socket_token(self) -> str:
        """Called by the socket library on each connect attempt (a fresh token)."""
        return self.access.token if self.access is not None else ""

    def _invalidate(self, token: str) -> None:
        self.host.invalidate(token)

    # -- channels --------------------------------------------------------

    def _bound(self, channel: ChannelInfo) -> bool:
        return any(b.matches(channel.id, channel.name, self.names.channels)
                   for b in self.bindings)

    def _load_channels(self) -> list[str]:
        """Refresh the channel list; return the ids of newly bound channels."""
        assert self.rest is not None
        seen: list[ChannelInfo] = []
        for raw in self._rest_call(self.rest.channels):
            try:
                info = channel_info(raw)
            except BadEvent as exc:
                log.warning("gateway %s@%s: bad channel in list dropped: %s", self.agent.name,
                            self.guild, exc)
                continue
            seen.append(info)
        self._resolve_names({info.id: info.name for info in seen})
        fresh = {info.id: info for info in seen if self._bound(info)}
        added = [cid for cid in fresh if cid not in self.channels]
        for cid in added:
            if cid not in self.last_seq:
                self._first_sight(fresh[cid])
        self.channels = fresh
        return added

    def _resolve_names(self, channels: dict[str, str]) -> None:
        """Resolve the config's channel and user names to ids, keeping earlier pins.

        See :mod:`bridge.names`: a name carried by several channels (or users)
        is refused and logged as an error; a newcomer carrying a pinned name is
        logged as a warning. The user list is loaded only when the access rules
        list users; when it cannot be loaded, user names keep their earlier
        pins (id entries match as written). The result goes to the host.

        Args:
            channels: Id to name of every channel this identity can see.
        """
        assert self.rest is not None
        access = self.agent.access
        found: list[tuple[str, NameProblem]] = []
        channel_ids, problems = resolve_names(channel_entries(self.bindings, access), channels,
                                              self.names.channels)
        found += [("channel", problem) for problem in problems]
        user_ids = dict(self.names.users)
        wanted = user_entries(access)
        now = time.monotonic()
        if wanted and (self.users_failed or self.users_loaded_at is None
                       or now - self.users_loaded_at >= USER_LIST_REFRESH_S):
            self.users_loaded_at = now
            try:
                users = self._rest_call(self.rest.users)
            except ChatError as exc:
                if not self.users_failed:
                    log.warning("gateway %s@%s: user list failed (%s): user names in the access "
                                "rules keep the ids they resolved to before (%d); ids match as "
                                "written", self.agent.name, self.guild, exc, len(user_ids))
                self.users_failed = True
            else:
                self.users_failed = False
                user_ids, problems = resolve_names(wanted, users, self.names.users)
                found += [("user", problem) for problem in problems]
        for what, old, new in (("channel", self.names.channels, channel_ids),
                               ("user", self.names.users, user_ids)):
            for name, key in new.items():
                if name not in old:
                    log.info("gateway %s@%s: %s name %r resolved to id %s (pinned)",
                             self.agent.name, self.guild, what, name, key)
        for what, problem in found:
            if (what, problem) in self.name_problems:
                continue
            line = f"gateway {self.agent.name}@{self.guild}: {problem.describe(what)}"
            if problem.kind == "ambiguous":
                log.error("%s (%s)", line, NOT_UNIQUE)
            elif problem.kind == "second":
                log.warning("%s", line)
            else:
                log.info("%s", line)
        self.name_problems = set(found)
        self.names = ResolvedNames({**self.names.channels, **channel_ids},
                                   {**self.names.users, **user_ids})
        self.host.names_resolved(self.names)

    def _first_sight(self, channel: ChannelInfo) -> None:
        """Start a channel never seen before a bounded stretch back in its history.

        Its last :data:`FIRST_SIGHT_MESSAGES` messages are then caught up like
        after an outage (inside the catch-up window: handled; older: context);
        anything older is skipped, and the skip is logged with its reason.
        """
        start = max(0, channel.last_seq - FIRST_SIGHT_MESSAGES)
        self.last_seq[channel.id] = start
        self.host.save_cursor(channel.id, str(start), start)
        if start > 0:
            log.info("gateway %s@%s: first sight of %s (scope %s): seq 1..%d skipped (older "
                     "than the last %d messages), catching up from seq %d", self.agent.name,
                     self.guild, channel.name, self._scope_key(channel.id), start,
                     FIRST_SIGHT_MESSAGES, start + 1)
        else:
            log.info("gateway %s@%s: first sight of %s (scope %s): catching up its %d "
                     "messages", self.agent.name, self.guild, channel.name,
                     self._scope_key(channel.id), channel.last_seq)

    def _join(self, channel_id: str) -> None:
        if self.socket is not None and not self.socket.join(channel_id):
            log.warning("gateway %s@%s: join of %s not confirmed", self.agent.name, self.guild,
                        self.channels[channel_id].name if channel_id in self.channels else
                        channel_id)

    def _resync(self) -> None:
        try:
            added = self._load_channels()
        except ChatError as exc:
            log.warning("gateway %s@%s: channel resync failed: %s", self.agent.name, self.guild,
                        exc)
            return
        for channel_id in added:
            channel = self.channels[channel_id]
            log.info("gateway %s@%s: joining new channel %s", self.agent.name, self.guild,
                     channel.name)
            self._join(channel_id)
            self._catch_up_channel(channel)
        self._publish()

    def _check_liveness(self) -> None:
        """Reconnect when a message listed at the previous resync has still not arrived.

        Run by the periodic resync only (a whole period between two checks).
        Events reach the socket within moments of a post, so a channel whose
        listed ``lastSeq`` stayed ahead of what the socket delivered for a
        whole resync period means the socket is silent although connected.
        The reconnect catches up from history (see :meth:`_connect`).
        """
        silent = [(cid, seq) for cid, seq in self.behind.items()
                  if cid in self.channels and self.last_seq.get(cid, 0) < seq]
        self.behind = {cid: info.last_seq for cid, info in self.channels.items()
                       if info.last_seq > self.last_seq.get(cid, 0)}
        if not silent:
            return
        cid, seq = silent[0]
        since = "never" if self.last_event_at is None else \
            f"{time.time() - self.last_event_at:.0f}s ago"
        log.warning("gateway %s@%s: socket silent: %s has seq %d listed since the last resync "
                    "but only %d arrived (%d channels behind, last event %s); reconnecting "
                    "(and catching up)", self.agent.name, self.guild, self.channels[cid].name,
                    seq, self.last_seq.get(cid, 0), len(silent), since)
        self.silences += 1
        self.behind = {}
        self._dropped("silent: no events while channels had newer messages")

    # -- inbound ---------------------------------------------------------

    def _event(self, name: str, payload: Any) -> None:
        try:
            if name == "message.created":
                self._message(payload)
            elif name in ("channel.joined", "channel.left") and isinstance(payload, dict) and (
                payload.get("userId") == self._self_id()
            ):
                self._resync()
        except BadEvent as exc:
            log.warning("gateway %s@%s: %s dropped: %s", self.agent.name, self.guild, name, exc)
        except ChatError as exc:
            log.warning("gateway %s@%s: %s not handled: %s", self.agent.name, self.guild, name,
                        exc)

    def _self_id(self) -> str:
        return self.access.user_id if self.access is not None else ""

    def _message(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise BadEvent(f"payload is {type(payload).__name__}, not an object")
        channel_id = str(payload.get("channelId"))[:80]
        channel = self.channels.get(channel_id)
        if channel is None:
            raise BadEvent(f"message for a channel this agent is not in ({channel_id})")
        try:
            inbound = self._normalize(channel, payload, catch_up=False)
        except BadEvent as exc:
            self._fill_from_history(channel, payload.get("seq"))
            raise BadEvent(f"{exc} (scope {self._scope_key(channel.id)})") from None
        last = self.last_seq.get(channel.id, 0)
        if inbound.seq <= last:
            log.debug("gateway %s@%s: seq %d already seen (last %d; scope %s): duplicate "
                      "dropped", self.agent.name, self.guild, inbound.seq, last,
                      self._scope_key(channel.id))
            return
        if inbound.seq > last + 1:
            self._fetch(channel, last + 1, inbound.seq - 1)
            filled = self.last_seq.get(channel.id, 0)
            if filled < inbound.seq - 1:
                # The guild stores a message before it sends it, so its history has every
                # seq below a real one: this event's seq is made up.
                raise BadEvent(f"seq {inbound.seq} is ahead of the channel's history (last "
                               f"{filled}; scope {self._scope_key(channel.id)})")
        self._route(inbound)

    def _fill_from_history(self, channel: ChannelInfo, seq: Any) -> None:
        """After a live event failed validation, take its seq from history instead.

        The history is the guild's record: the real message at that seq is
        handled (or counted as seen when it is bad there too), so the channel's
        last seq moves on and a dropped event never looks like a silent socket.
        A made-up seq finds nothing.
        """
        last = self.last_seq.get(channel.id, 0)
        if isinstance(seq, int) and not isinstance(seq, bool) and last < seq <= last + \
                HISTORY_LIMIT_MAX:
            try:
                self._fetch(channel, last + 1, seq)
            except ChatError as exc:
                log.warning("gateway %s@%s: history after a bad event failed: %s",
                            self.agent.name, self.guild, exc)

    def _catch_up(self) -> None:
        """Fetch everything after the last seen seq in each channel (after a reconnect)."""
        for channel in list(self.channels.values()):
            self._catch_up_channel(channel)

    def _catch_up_channel(self, channel: ChannelInfo) -> None:
        """Fetch what was said after the last seen seq in one channel; log a failure.

        At most :data:`CATCH_UP_MESSAGES` back from the channel's listed last
        seq: a channel far behind (a long outage, a channel the agent left and
        rejoined) skips its older messages, with a log line that says so.
        """
        last = self.last_seq.get(channel.id, 0)
        start = channel.last_seq - CATCH_UP_MESSAGES
        if start > last:
            log.warning("gateway %s@%s: %s (scope %s) is %d messages behind: seq %d..%d "
                        "skipped (more than %d to catch up), catching up from seq %d",
                        self.agent.name, self.guild, channel.name,
                        self._scope_key(channel.id), channel.last_seq - last, last + 1, start,
                        CATCH_UP_MESSAGES, start + 1)
            self.last_seq[channel.id] = last = start
            self._persist_seq(channel.id)
        try:
            self._fetch(channel, last + 1, None)
        except ChatError as exc:
            log.warning("gateway %s@%s: catch-up of %s failed: %s", self.agent.name,
                        self.guild, channel.name, exc)

    def _fetch(self, channel: ChannelInfo, seq_from: int, seq_to: int | None) -> None:
        assert self.rest is not None
        rest = self.rest
        while seq_to is None or seq_from <= seq_to:
            start = seq_from
            page = self._rest_call(
                lambda s=start: rest.history(channel.id, s, seq_to, HISTORY_LIMIT_MAX))
            highest = seq_from - 1
            for item in page:
                seq = item.get("seq")
                if isinstance(seq, int) and not isinstance(seq, bool):
                    highest = max(highest, seq)
                try:
                    self._accept(channel, item, catch_up=True)
                except BadEvent as exc:
                    log.warning("gateway %s@%s: history item dropped (scope %s): %s",
                                self.agent.name, self.guild, self._scope_key(channel.id), exc)
            if highest > self.last_seq.get(channel.id, 0):
                # Dropped items (deleted, malformed) were seen too: never fetch them again.
                self.last_seq[channel.id] = highest
                self._persist_seq(channel.id)
            if len(page) < HISTORY_LIMIT_MAX:
                break
            seq_from = highest + 1

    def _scope_key(self, channel_id: str) -> str:
        return str(self.host.connection.scope(channel_id))

    def _normalize(self, channel: ChannelInfo, payload: Any, *, catch_up: bool) -> Inbound:
        return normalize_message(
            payload, agent=self.agent.name, guild=self.guild, self_id=self._self_id(),
            channel=channel, author_name=self.authors.name, author_is_bot=self.authors.is_bot,
            content_limit=self.settings.content_limit, catch_up=catch_up)

    def _accept(self, channel: ChannelInfo, payload: Any, *, catch_up: bool) -> None:
        seq = payload.get("seq") if isinstance(payload, dict) else None
        if isinstance(seq, int) and seq <= self.last_seq.get(channel.id, 0):
            return
        self._route(self._normalize(channel, payload, catch_up=catch_up))

    def _route(self, inbound: Inbound) -> None:
        """Advance the last seen seq and accept the message (not our own).

        A message whose author is not in the cache is held until the lookup
        answers (see the module docstring).
        """
        self.last_seq[inbound.channel_id] = inbound.seq
        if inbound.author_id == self._self_id():
            self._persist_seq(inbound.channel_id)
            return
        if inbound.catch_up and is_stale(inbound.created_at,
                                         self.catch_up_window_s):
            inbound = attrs.evolve(inbound, stale=True)
        if inbound.author_id not in self.authors:
            self._hold(inbound)
            return
        self._accept_known(inbound)

    def _accept_known(self, inbound: Inbound) -> None:
        """Hand the message to the host, which journals and routes it.

        The journal write commits before the message is routed; a message id
        already in the journal is a duplicate and is dropped there. The
        channel's persisted last seq moves with it unless an earlier message
        of the channel is still held.
        """
        held = any(m.channel_id == inbound.channel_id and m.seq < inbound.seq
                   for waiting in self.held.values() for m in waiting)
        self.host.accept(inbound, advance_cursor=not held)

    def _persist_seq(self, channel_id: str) -> None:
        """Store the channel's last seen seq, but never past a message still held."""
        seq = self.last_seq.get(channel_id, 0)
        held = [m.seq for waiting in self.held.values() for m in waiting
                if m.channel_id == channel_id]
        if held:
            seq = min(seq, min(held) - 1)
        self.host.save_cursor(channel_id, str(seq), seq)

    # -- authors -----------------------------------------------------------

    def _hold(self, inbound: Inbound) -> None:
        waiting = self.held.setdefault(inbound.author_id, [])
        waiting.append(inbound)
        if len(waiting) == 1:
            self._look_up(inbound.author_id)

    def _look_up(self, user_id: str) -> None:
        """Start a lookup of ``user_id`` off the intake; the answer is told back."""
        self.authors.look_up(user_id, self.rest.access if self.rest is not None else None)

    def _author_resolved(self, result: AuthorResolved) -> None:
        user_id = result.user_id
        if result.found is not None:
            self.authors.remember(user_id, result.found)
            self.lookup_attempts.pop(user_id, None)
            self._release(user_id, result.found[0], self.authors.is_bot(user_id), known=True)
            return
        if result.unauthorized:
            self._renew_access()
        if result.failed:
            attempts = self.lookup_attempts.get(user_id, 0) + 1
            self.lookup_attempts[user_id] = attempts
            if attempts < AUTHOR_LOOKUP_ATTEMPTS:
                self._schedule(backoff_delay(attempts), AuthorRetry(user_id))
                return
            self.lookup_attempts.pop(user_id, None)
            log.warning("gateway %s@%s: lookup of author %s failed %d times (%s); %d message(s) "
                        "go on with the author's kind unknown: they never engage (kept as "
                        "context); the next message retries the lookup", self.agent.name,
                        self.guild, user_id[:8], attempts, result.error,
                        len(self.held.get(user_id, ())))
        else:
            log.warning("gateway %s@%s: the guild does not know author %s; its message(s) "
                        "never engage (kept as context)", self.agent.name, self.guild,
                        user_id[:8])
        self._release(user_id, user_id[:8], False, known=False)

    def _release(self, user_id: str, name: str, is_bot: bool, *, known: bool) -> None:
        """Accept the messages held for one author, by channel and seq."""
        waiting = sorted(self.held.pop(user_id, []), key=lambda m: (m.channel_id, m.seq))
        for inbound in waiting:
            self._accept_known(attrs.evolve(inbound, author_name=name, author_is_bot=is_bot,
                                            author_known=known))
        for channel_id in {m.channel_id for m in waiting}:
            self._persist_seq(channel_id)

    def _renew_access(self) -> None:
        """Drop a token the guild refused and fetch a fresh one for later calls."""
        if self.access is None or self.rest is None:
            return
        self._invalidate(self.access.token)
        try:
            self.access = self._get_access()
        except ChatError as exc:
            log.warning("gateway %s@%s: token renewal failed: %s", self.agent.name, self.guild,
                        exc)
            return
        self.rest.access = self.access

    def _rest_call(self, call: Any) -> Any:
        """Run a REST call; on 401 drop the token, log in again and retry once."""
        try:
            return call()
        except Unauthorized:
            if self.access is not None:
                self._invalidate(self.access.token)
            self.access = self._get_access()
            assert self.rest is not None
            self.rest.access = self.access
            return call()

    # -- helpers ---------------------------------------------------------

    def _saw_event(self) -> None:
        """Note that the socket delivered an event (shown as the time since the last one)."""
        now = time.time()
        self.last_event_at = now
        if self.event_shown is None or now - self.event_shown >= EVENT_PUBLISH_INTERVAL_S:
            self._publish()

    def _tell(self, message: Any) -> None:
        self.host.tell(message)

    def _schedule(self, delay_s: float, message: Any) -> None:
        self.host.schedule(delay_s, message)

    def _publish(self) -> None:
        self.host.publish(IntakeStatus(
            state=self.state, reason=self.reason, reconnects=self.reconnects,
            channels=len(self.channels),
            token_at=self.access.issued_at if self.access is not None else None,
            token_refreshes=self.token_refreshes, last_event_at=self.last_event_at,
            silences=self.silences))
        self.event_shown = self.last_event_at
