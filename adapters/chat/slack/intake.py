"""The intake of one Slack app: Socket Mode events in, normalized :class:`Inbound`\\ s out.

Driven by its :class:`bridge.platform.IntakeHost` on one thread, as the chat port
says. slack-sdk's :class:`~slack_sdk.socket_mode.websocket_client.SocketModeClient`
(the ``websocket-client`` variant: its ``on_close`` fires as soon as the TCP
connection drops, so it reconnects at once, where the built-in variant waits for
missed pings, 25-30 s with its defaults: see docs/slack.md) runs the socket on
its own threads; its listener only acks and tells the host, and
:meth:`SlackIntake.handle` does the rest.

- **Ack first.** Every envelope is acked the moment it arrives, before any work
  (Slack redelivers an envelope not acked within 3 s: docs.slack.dev
  apis/events-api/using-socket-mode). Nothing acked is lost: a channel's cursor
  moves only once the host journaled a message, and catch-up starts after it.
- **Dedup.** By ``event_id`` (a retry carries the same one) and by
  ``(channel, ts)``: a channel mention arrives both as ``message`` and as
  ``app_mention`` (:mod:`adapters.chat.slack.events`); the host's journal is
  the last word.
- **Catch-up.** At start, after each reconnect (``hello``) and when the bot
  joins a channel: ``conversations.history`` from the channel's cursor and
  ``conversations.replies`` for threads with newer replies, reaching back at
  most ``catch_up_window_s`` for threads, in at most :data:`MAX_PAGES` pages.
- **Clicks.** A ``block_actions`` payload on one of the bot's messages is handed
  to the host as an :class:`~bridge.model.Action` (the scope checks the run and
  the member).
- **Slash command.** The app's slash command (e.g. ``/agent stop``) becomes
  the message ``/stop`` in its channel, addressed to the agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cachetools
from slack_sdk import WebClient
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.socket_mode.websocket_client import SocketModeClient

from adapters.chat.reconnect import Connect, ReconnectingIntake, connect_failure
from adapters.chat.slack import events
from adapters.chat.slack.api import translated, web_client
from adapters.chat.slack.events import ChannelInfo, SlackMessage
from adapters.chat.slack.session import SlackAccess
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError, NotFound, Unauthorized
from bridge.model import Action, Attachment, Inbound
from bridge.names import ResolvedNames, resolve_connection, user_entries
from bridge.platform import Access, IntakeHost, IntakeStatus

log = logging.getLogger(__name__)

#: Pages of 200 read per channel (and per thread) in one catch-up.
MAX_PAGES = 5
#: Messages per page of history.
PAGE = 200
#: Event ids and (channel, ts) pairs remembered for dedup.
SEEN = 5000
#: Seconds between the intake's checks that its socket is up.
CHECK_S = 5.0
#: Checks in a row that find the socket down before the intake reconnects itself.
DOWN_CHECKS = 6


@attrs.frozen
class _Envelope:
    generation: int
    envelope: Mapping[str, Any]


@attrs.frozen
class _Hello:
    generation: int


@attrs.frozen
class _Closed:
    generation: int


@attrs.frozen
class _Check:
    generation: int


def _seen_before(seen: cachetools.LRUCache[object, bool], key: object) -> bool:
    """Whether ``key`` is among the recent keys; remember it either way."""
    if key in seen:
        return True
    seen[key] = True
    return False


class SlackIntake(ReconnectingIntake):
    """One Slack app's intake (:class:`bridge.platform.Intake`; see the module docstring).

    Args:
        host: The connection's host.
        agent: The agent whose app connects.
        bindings: The agent's Slack bindings.
        api_url: The Web API base URL.
        catch_up_window_s: How far back (seconds) catch-up looks for threads, and
            what it marks stale (context only) when older.
        slash_command: The app's slash command (e.g. ``/agent``); others are ignored.
        ping_interval_s: Seconds between the socket's pings.
        retry_s: First delay before connecting again (seconds; it doubles).
        retry_max_s: Longest delay between attempts (seconds).
    """

    def __init__(self, host: IntakeHost, agent: AgentSettings, bindings: Sequence[Binding], *,
                 api_url: str, catch_up_window_s: float, slash_command: str = "/agent",
                 ping_interval_s: float = 5.0, retry_s: float = 1.0,
                 retry_max_s: float = 60.0) -> None:
        self.host = host
        self.agent = agent
        self.space = host.connection.space
        self.platform = host.connection.platform
        self.bindings = tuple(b for b in bindings
                              if b.agent == agent.name and b.space == self.space)
        self.api_url = api_url
        self.catch_up_window_s = catch_up_window_s
        self.slash_command = slash_command
        self.ping_interval_s = ping_interval_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.generation = 0
        self.socket: SocketModeClient | None = None
        self.web: WebClient | None = None
        self.access: SlackAccess | None = None
        self.channels: dict[str, ChannelInfo] = {}
        #: The newest ts taken per channel (catch-up starts after it).
        self.cursor: dict[str, str] = {}
        self.seen_events: cachetools.LRUCache[object, bool] = cachetools.LRUCache(SEEN)
        self.seen_messages: cachetools.LRUCache[object, bool] = cachetools.LRUCache(SEEN)
        #: Threads the bot posted in (a reply there engages it), and those checked without.
        self.answered: set[tuple[str, str]] = set()
        self.not_answered: set[tuple[str, str]] = set()
        self.users: dict[str, tuple[str, bool]] = {}
        self.names = ResolvedNames()
        self.problems: set[str] = set()
        self.state, self.reason = "connecting", ""
        self.attempts = self.reconnects = self.down_checks = self.hellos = 0
        self.connected_once = False
        self.token_refreshes = 0
        self.last_event_at: float | None = None

    # -- the port ------------------------------------------------------------

    def start(self) -> None:
        """Read the stored cursors, connect, catch up and go live (retrying on its own)."""
        self.cursor.update(self.host.cursors())
        self.names = self.host.names()
        self._publish()
        self._connect()

    def handle(self, message: object) -> bool:
        """Take a message this intake told or scheduled to itself; False for any other."""
        if not isinstance(message, Connect | _Envelope | _Hello | _Closed | _Check):
            return False
        if message.generation != self.generation:
            return True  # from a socket since replaced
        try:
            if isinstance(message, Connect):
                if self.socket is None:
                    self._connect()
            elif isinstance(message, _Envelope):
                self.last_event_at = time.time()
                self._envelope(message.envelope)
            elif isinstance(message, _Hello):
                self._hello()
            elif isinstance(message, _Closed):
                # slack-sdk tells of a close after it opened the next socket: only a
                # socket still down is news.
                if self.socket is not None and not self.socket.is_connected():
                    self.state, self.reason = "reconnecting", "the socket closed"
                    self._publish()
            else:
                self._check()
        except Unauthorized as exc:
            log.error("intake %s: Slack refused the bot token (%s); reconnecting with a "
                      "fresh login", self.host.connection, exc)
            if self.access is not None:
                self.host.invalidate(self.access.token)
            self._restart(str(exc))
        except ChatError as exc:
            log.warning("intake %s: Slack call failed: %s", self.host.connection, exc)
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
            assert isinstance(access, SlackAccess)
            if self.access is not None and access.token != self.access.token:
                self.token_refreshes += 1
            self.access = access
            self.web = web_client(self.api_url, access.token)
            self._load_channels()
            self.socket = self._socket(access, generation)
            with translated("apps.connections.open"):
                self.socket.connect()
        except ChatError as exc:
            self._disconnect()
            self._retry(*connect_failure(exc, self.host, access,
                                         connected_once=self.connected_once))
            return
        self.attempts = 0
        self.down_checks = 0
        self.host.schedule(CHECK_S, _Check(generation))

    def _socket(self, access: SlackAccess, generation: int) -> SocketModeClient:
        """A Socket Mode client whose listener acks each envelope, then tells the host."""
        socket = SocketModeClient(app_token=access.app_token,
                                  web_client=web_client(self.api_url),
                                  auto_reconnect_enabled=True,
                                  ping_interval=self.ping_interval_s)
        tell = self.host.tell

        def on_message(client: Any, message: dict[str, Any], raw: str | None = None) -> None:
            envelope_id = message.get("envelope_id")
            if envelope_id:
                try:  # ack first: Slack redelivers what is not acked within 3 s
                    client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id))
                except Exception as exc:  # the socket went away: Slack will redeliver
                    log.warning("slack socket: ack of %s failed: %s", envelope_id, exc)
                tell(_Envelope(generation, message))
            elif message.get("type") == "hello":
                tell(_Hello(generation))

        socket.message_listeners.append(on_message)
        socket.on_close_listeners.append(lambda _ws: tell(_Closed(generation)))
        return socket

    def _hello(self) -> None:
        """The socket is (again) connected: catch up what passed while it was not."""
        self.hellos += 1
        if self.connected_once:  # every hello after the first is a new socket
            self.reconnects += 1
        self.connected_once = True
        self._catch_up(list(self.channels))
        self.state, self.reason = "connected", ""
        self._publish()

    def _check(self) -> None:
        """Every :data:`CHECK_S` seconds: a socket down for long is replaced by ours."""
        socket = self.socket
        if socket is None:
            return
        if socket.is_connected():
            self.down_checks = 0
        else:
            self.down_checks += 1
            if self.down_checks >= DOWN_CHECKS:
                self._restart(f"the socket stayed down for {DOWN_CHECKS * CHECK_S:.0f}s")
                return
        self.host.schedule(CHECK_S, _Check(self.generation))

    def _restart(self, reason: str) -> None:
        self._disconnect()
        self.generation += 1
        self._retry("reconnecting", reason)

    def _disconnect(self) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            try:
                socket.close()
            except Exception as exc:  # closing must not stop the intake
                log.warning("intake %s: closing the socket: %s", self.host.connection, exc)

    # -- channels --------------------------------------------------------------

    def _web(self) -> WebClient:
        assert self.web is not None
        return self.web

    def _me(self) -> SlackAccess:
        assert self.access is not None
        return self.access

    def _load_channels(self) -> list[str]:
        """Refresh the channels the bot is in; return the ids of those not read before."""
        found: list[ChannelInfo] = []
        cursor = ""
        for _ in range(50):  # 10,000 conversations
            with translated("conversations.list"):
                page = self._web().conversations_list(
                    types="public_channel,private_channel,mpim,im", exclude_archived=True,
                    limit=PAGE, cursor=cursor or None)
            found += [events.channel_info(c) for c in page.get("channels") or []
                      if isinstance(c, dict) and (c.get("is_member") or c.get("is_im"))]
            cursor = events.next_cursor(page)
            if not cursor:
                break
        self._resolve_names(found)
        bound = {c.id: c for c in found if self._binding(c) is not None}
        added = [channel_id for channel_id in bound if channel_id not in self.channels]
        self.channels = bound
        return added

    def _channel(self, channel_id: str) -> ChannelInfo | None:
        """A channel the bot reads; one not known yet (a new DM) is looked up once."""
        known = self.channels.get(channel_id)
        if known is not None or not channel_id:
            return known
        try:
            with translated(f"conversations.info {channel_id}"):
                answer = self._web().conversations_info(channel=channel_id)
        except ChatError as exc:
            log.info("intake %s: channel %s not readable: %s", self.host.connection,
                     channel_id, exc)
            return None
        info = events.channel_info(answer.get("channel") or {})
        if self._binding(info) is None:
            return None
        self.channels[info.id] = info
        self._publish()
        return info

    def _resolve_names(self, channels: list[ChannelInfo]) -> None:
        """Resolve the config's channel and user names (keeping the pins) and publish them."""
        users = None
        if user_entries(self.agent.access):
            with translated("users.list"):
                members = self._web().users_list(limit=PAGE).get("members") or []
            users = {str(m.get("id")): str(m.get("name")) for m in members if isinstance(m, dict)}
        self.names, found = resolve_connection(self.bindings, self.agent.access,
                                               {c.id: c.name for c in channels}, users,
                                               self.names)
        for line in found:
            if line not in self.problems:
                log.warning("intake %s: %s", self.host.connection, line)
        self.problems = set(found)
        self.host.names_resolved(self.names)

    # -- catch-up --------------------------------------------------------------

    def _catch_up(self, channel_ids: Sequence[str]) -> None:
        for channel_id in channel_ids:
            try:
                self._catch_up_channel(channel_id)
            except ChatError as exc:
                if isinstance(exc, Unauthorized):
                    raise
                log.warning("intake %s: catch-up of %s failed: %s", self.host.connection,
                            channel_id, exc)

    def _catch_up_channel(self, channel_id: str) -> None:
        """Take what the channel got after its cursor (threads within the window)."""
        window_start = time.time() - self.catch_up_window_s
        after = self.cursor.get(channel_id) or events.ts_text(window_start)
        scan_from = min(after, events.ts_text(window_start), key=events.ts_position)
        found: dict[str, SlackMessage] = {}
        for raw in self._pages("conversations.history", channel=channel_id, oldest=scan_from):
            message = events.message_of(raw, channel_id)
            if message is None:
                continue
            if events.ts_position(message.ts) > events.ts_position(after):
                found[message.ts] = message
            if message.reply_count and events.ts_position(message.latest_reply) > \
                    events.ts_position(after):
                for reply in self._pages("conversations.replies", channel=channel_id,
                                         ts=message.ts, oldest=after):
                    taken = events.message_of(reply, channel_id)
                    if taken is not None and taken.ts != message.ts and \
                            events.ts_position(taken.ts) > events.ts_position(after):
                        found[taken.ts] = taken
        for ts in sorted(found, key=events.ts_position):
            self._take(found[ts], catch_up=True, stale_before=window_start)

    def _pages(self, method: str, **params: Any) -> list[dict[str, Any]]:
        """The messages of up to :data:`MAX_PAGES` pages of a history call."""
        call = getattr(self._web(), method.replace(".", "_"))
        messages: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            with translated(f"{method} {params.get('channel', '')}"):
                page = call(limit=PAGE, cursor=cursor or None, include_all_metadata=True,
                            **params)
            messages += [m for m in page.get("messages") or [] if isinstance(m, dict)]
            cursor = events.next_cursor(page)
            if not cursor or not page.get("has_more", True):
                break
        return messages

    # -- events ----------------------------------------------------------------

    def _envelope(self, envelope: Mapping[str, Any]) -> None:
        kind = envelope.get("type")
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            log.warning("intake %s: %s envelope without a payload dropped", self.host.connection,
                        kind)
            return
        if kind == "events_api":
            self._event(payload)
        elif kind == "interactive":
            self._interactive(payload)
        elif kind == "slash_commands":
            self._slash(payload, str(envelope.get("envelope_id", "")))
        else:
            log.info("intake %s: %s envelope ignored", self.host.connection, kind)

    def _event(self, payload: Mapping[str, Any]) -> None:
        event = payload.get("event")
        event_id = payload.get("event_id")
        if not isinstance(event, dict):
            log.warning("intake %s: event callback without an event dropped",
                        self.host.connection)
            return
        if event_id and _seen_before(self.seen_events, event_id):
            return  # a redelivery
        kind = event.get("type")
        if kind in ("message", "app_mention"):
            channel = str(event.get("channel", ""))
            message = events.message_of(event, channel)
            if message is None:
                log.debug("intake %s: %s event (subtype %s) ignored", self.host.connection,
                          kind, event.get("subtype"))
                return
            self._take(message, catch_up=False, stale_before=None)
        elif kind == "member_joined_channel" and event.get("user") == self._me().user_id:
            self._catch_up(self._load_channels())
            self._publish()
        elif kind in ("channel_left", "group_left", "channel_archive", "group_archive"):
            self._load_channels()
            self._publish()
        else:
            log.debug("intake %s: %s event ignored", self.host.connection, kind)

    def _take(self, message: SlackMessage, *, catch_up: bool,
              stale_before: float | None) -> None:
        """Accept one message of a bound channel (the bot's own only mark its thread)."""
        channel = self._channel(message.channel)
        if channel is None or _seen_before(self.seen_messages, (message.channel, message.ts)):
            return
        me = self._me()
        if message.user == me.user_id or (message.bot_id and message.bot_id == me.bot_id):
            if message.thread_ts:
                self.answered.add((message.channel, message.thread_ts))
                self.not_answered.discard((message.channel, message.thread_ts))
            self._save_cursor(message)
            return
        binding = self._binding(channel)
        mentioned = events.mentions(message.text, me.user_id)
        reply = bool(message.thread_ts) and message.thread_ts != message.ts
        addressed = channel.direct or mentioned or (
            reply and self._answered_in(message.channel, message.thread_ts))
        thread = message.thread_ts if reply else ("" if channel.direct or not addressed
                                                  else message.ts)
        name, is_bot, known = self._author(message)
        self.host.accept(Inbound(
            platform=self.platform, agent=self.agent.name, space=self.space,
            channel_id=channel.id, channel_name=channel.name, message_id=message.ts,
            seq=events.ts_position(message.ts), cursor=message.ts, author_id=message.author,
            author_name=name, content=message.text,
            created_at=events.iso_of(message.ts), thread=thread,
            per_thread=binding is not None and binding.scope == "thread",
            addressed=addressed, is_direct=channel.direct, mentioned=mentioned,
            catch_up=catch_up,
            stale=stale_before is not None and float(message.ts) < stale_before,
            author_is_bot=is_bot, author_known=known,
            attachments=tuple(Attachment(f.name, f.size_bytes, f.mime_type, f.url)
                              for f in message.files)))
        self.cursor[message.channel] = max(self.cursor.get(message.channel, "0"), message.ts,
                                           key=events.ts_position)

    def _save_cursor(self, message: SlackMessage) -> None:
        latest = self.cursor.get(message.channel, "0")
        if events.ts_position(message.ts) > events.ts_position(latest):
            self.cursor[message.channel] = message.ts
            self.host.save_cursor(message.channel, message.ts, events.ts_position(message.ts))

    def _answered_in(self, channel_id: str, thread_ts: str) -> bool:
        """Whether the bot posted in the thread (looked up once per thread)."""
        key = (channel_id, thread_ts)
        if key in self.answered:
            return True
        if key in self.not_answered:
            return False
        me = self._me()
        try:
            replies = self._pages("conversations.replies", channel=channel_id, ts=thread_ts)
        except NotFound:
            replies = []
        if any(r.get("user") == me.user_id or (me.bot_id and r.get("bot_id") == me.bot_id)
               for r in replies):
            self.answered.add(key)
            return True
        self.not_answered.add(key)
        return False

    def _author(self, message: SlackMessage) -> tuple[str, bool, bool]:
        """The author's (name, is a bot, known); a failed lookup is not known (fail closed)."""
        if not message.user:  # a bot's post (bot_message): no user behind it
            return message.username or message.bot_id or "a bot", True, True
        cached = self.users.get(message.user)
        if cached is None:
            try:
                with translated(f"users.info {message.user}"):
                    user = self._web().users_info(user=message.user).get("user") or {}
            except ChatError as exc:
                if isinstance(exc, Unauthorized):
                    raise
                log.warning("intake %s: user %s not looked up: %s", self.host.connection,
                            message.user, exc)
                return message.user, bool(message.bot_id), False
            cached = events.user_of(user)
            self.users[message.user] = cached
        name, is_bot = cached
        return name, is_bot or bool(message.bot_id), True

    def _interactive(self, payload: Mapping[str, Any]) -> None:
        """A click on a button of one of the bot's messages, handed to its conversation."""
        click = events.click_of(payload)
        if click is None:
            log.info("intake %s: %s payload ignored", self.host.connection, payload.get("type"))
            return
        me = self._me()
        channel = self._channel(click.channel)
        if channel is None or not (click.message_user == me.user_id or (
                me.bot_id and click.message_bot_id == me.bot_id)):
            log.info("intake %s: click on a message that is not the bot's ignored",
                     self.host.connection)
            return
        binding = self._binding(channel)
        per_thread = binding is not None and binding.scope == "thread"
        scope = self.host.connection.scope(channel.id, click.thread_ts if per_thread else "")
        self.host.act(Action(scope, click.user_id, click.action_id, click.value,
                             click.user_name))

    def _slash(self, payload: Mapping[str, Any], envelope_id: str) -> None:
        """The app's slash command: ``/agent stop`` is ``/stop`` in its channel."""
        command = str(payload.get("command", ""))
        if command != self.slash_command:
            log.info("intake %s: slash command %s ignored (the bridge's is %s)",
                     self.host.connection, command, self.slash_command)
            return
        channel = self._channel(str(payload.get("channel_id", "")))
        if channel is None:
            return
        binding = self._binding(channel)
        text = str(payload.get("text", "")).strip()
        now = time.time()
        user_id = str(payload.get("user_id", ""))
        self.host.accept(Inbound(
            platform=self.platform, agent=self.agent.name, space=self.space,
            channel_id=channel.id, channel_name=channel.name,
            message_id=f"slash-{payload.get('trigger_id') or envelope_id}",
            seq=events.ts_position(events.ts_text(now)), author_id=user_id,
            author_name=str(payload.get("user_name") or user_id),
            content=text if text.startswith("/") else f"/{text or 'help'}",
            created_at=events.iso_of(events.ts_text(now)), thread="",
            per_thread=binding is not None and binding.scope == "thread", addressed=True,
            is_direct=channel.direct, mentioned=True), advance_cursor=False)

    def _publish(self) -> None:
        self.host.publish(IntakeStatus(
            state=self.state, reason=self.reason, reconnects=self.reconnects,
            channels=len(self.channels),
            token_at=self.access.issued_at if self.access is not None else None,
            token_refreshes=self.token_refreshes, last_event_at=self.last_event_at))
