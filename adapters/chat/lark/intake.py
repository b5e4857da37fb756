"""The intake of one Feishu/Lark app: long-connection events in, :class:`Inbound`\\ s out.

Driven by its :class:`bridge.platform.IntakeHost` on one thread, as the chat port
says. The long connection (:mod:`adapters.chat.lark.longconn`) runs on the
process's long-connection loop; its handlers only tell the host (lark-oapi
acks the frame when the handler returns: the platform wants that within
3 s, docs "long connection mode"), and :meth:`LarkIntake.handle` does the rest.

- **Nothing acked is lost.** A chat's cursor (the newest ``create_time`` taken)
  moves only once the host journaled the message; catch-up starts from it.
- **Dedup** by ``message_id`` (the docs' advice over ``event_id``: a re-push
  carries the same message), in memory for redeliveries, and by the host's
  journal across restarts.
- **Addressing.** p2p: every message, one conversation per chat. Groups: an
  @mention of the bot, or a reply in a thread (or to a message) the bot
  answered in; a mention starts a conversation of its own, answered as a reply
  to it (in its topic where the chat has topics), and the thread's later
  messages belong to it. In a topic group every message is in its topic's
  conversation (the topic's first message too, addressed or not). The bot's
  own messages and edits/recalls never start runs.
- **Catch-up** at connect, after every reconnect and when the bot is added to a
  chat: ``GET im/v1/messages`` per chat from its cursor (at most
  ``catch_up_window_s`` back), then the topics seen there, in at most
  :data:`MAX_PAGES` pages each.
- **Clicks** (``card.action.trigger``) are checked by :mod:`adapters.chat.lark.buttons`
  on the loop (signature, expiry, single use, operator) and answered with a
  toast at once; a click that passes is handed to the host as an :class:`Action`.
- **Watchdog.** Every :data:`CHECK_S` seconds the intake checks that its socket is
  up; a socket that dropped is replaced, with backoff, and a catch-up.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cachetools
import lark_oapi as lark
from lark_oapi.event.callback.model.p2_card_action_trigger import (
    P2CardActionTrigger,
    P2CardActionTriggerResponse,
)

from adapters.chat.lark import events
from adapters.chat.lark.api import LarkApi
from adapters.chat.lark.buttons import ButtonSigner, Refused, thread_of
from adapters.chat.lark.client import ref_of
from adapters.chat.lark.events import LarkMessage
from adapters.chat.lark.longconn import LongConnection
from adapters.chat.lark.session import LarkAccess
from adapters.chat.reconnect import Connect, ReconnectingIntake, connect_failure
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError, Unauthorized
from bridge.model import Action, Attachment, Inbound
from bridge.names import ResolvedNames, resolve_connection
from bridge.platform import IntakeHost, IntakeStatus

log = logging.getLogger(__name__)

#: Pages of :data:`PAGE` read per chat (and per topic) in one catch-up.
MAX_PAGES = 5
#: Messages per page of a listing (the platform's most: docs im-v1/message/list).
PAGE = 50
#: Message ids remembered for dedup.
SEEN = 5000
#: Seconds between the watchdog's checks that the socket is up.
CHECK_S = 2.0
#: Topics looked up per catch-up of one chat.
MAX_TOPICS = 20
#: Pages of a chat, from a reply chain's root on, searched for the bot's answer there.
ANSWER_PAGES = 2


@attrs.frozen
class ChatInfo:
    """A chat the bot is in.

    Attributes:
        id: Its id (``oc_…``).
        name: Its name (a p2p chat: ``p2p-<id>``).
        direct: True for a p2p chat with the bot.
    """

    id: str
    name: str
    direct: bool = False


@attrs.frozen
class _Check:
    generation: int


@attrs.frozen
class _Event:
    generation: int
    kind: str
    event: Mapping[str, Any]


@attrs.frozen
class _Click:
    generation: int
    chat_id: str
    thread: str
    operator_id: str
    name: str
    run_id: str


def _senders(items: Sequence[Mapping[str, Any]]) -> set[str]:
    """The sender ids of listed messages (a bot's: its app id)."""
    senders = (i.get("sender") for i in items)
    return {str(sender.get("id", "")) for sender in senders if isinstance(sender, dict)}


def _payload(data: Any) -> dict[str, Any]:
    """An SDK event object as the JSON dict it came as."""
    found = json.loads(lark.JSON.marshal(data))
    return found if isinstance(found, dict) else {}


class LarkIntake(ReconnectingIntake):
    """One Feishu/Lark app's intake (:class:`bridge.platform.Intake`; see the module docstring).

    Args:
        host: The connection's host.
        agent: The agent whose app connects.
        bindings: The agent's Feishu/Lark bindings.
        signer: Checks the callback values of the app's buttons.
        catch_up_window_s: How far back (seconds) catch-up looks; older messages are
            context only.
        retry_s: First delay before connecting again (seconds; it doubles).
        retry_max_s: Longest delay between attempts (seconds).
    """

    def __init__(self, host: IntakeHost, agent: AgentSettings, bindings: Sequence[Binding], *,
                 signer: ButtonSigner, catch_up_window_s: float, retry_s: float = 1.0,
                 retry_max_s: float = 60.0) -> None:
        self.host = host
        self.agent = agent
        self.space = host.connection.space
        self.platform = host.connection.platform
        self.bindings = tuple(b for b in bindings
                              if b.agent == agent.name and b.space == self.space)
        self.signer = signer
        self.catch_up_window_s = catch_up_window_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.generation = 0
        self.conn: LongConnection | None = None
        self.access: LarkAccess | None = None
        self.api: LarkApi | None = None
        self.chats: dict[str, ChatInfo] = {}
        #: The newest create_time (ms, as text) taken per chat.
        self.cursor: dict[str, str] = {}
        self.seen: cachetools.LRUCache[str, bool] = cachetools.LRUCache(SEEN)
        #: Thread roots the bot answered in (a later message there engages it).
        self.answered: cachetools.LRUCache[tuple[str, str], bool] = cachetools.LRUCache(SEEN)
        #: Names by open id, an hour each (a renamed person shows the new name after it).
        self.users: cachetools.TTLCache[str, str] = cachetools.TTLCache(4096, 3600.0)
        self.names = ResolvedNames()
        self.problems: set[str] = set()
        self.state, self.reason = "connecting", ""
        self.attempts = self.reconnects = 0
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
        if not isinstance(message, Connect | _Check | _Event | _Click):
            return False
        if isinstance(message, Connect | _Check) and message.generation != self.generation:
            return True  # for a connection since replaced (events and clicks were acked:
            # they are handled whatever connection brought them; the journal dedupes)
        try:
            if isinstance(message, Connect):
                if self.conn is None:
                    self._connect()
            elif isinstance(message, _Check):
                self._check()
            elif isinstance(message, _Event):
                self.last_event_at = time.time()
                self._event(message.kind, message.event)
            else:
                self._click(message)
        except Unauthorized as exc:
            log.error("intake %s: Feishu/Lark refused the app's token (%s); reconnecting "
                      "with a fresh login", self.host.connection, exc)
            if self.access is not None:
                self.host.invalidate(self.access.token)
            self._restart(str(exc))
        except ChatError as exc:
            log.warning("intake %s: Feishu/Lark call failed: %s", self.host.connection, exc)
        return True

    # -- connecting ------------------------------------------------------------

    def _connect(self) -> None:
        if self.host.stopping:
            return
        self.generation += 1
        generation = self.generation
        access = None
        try:
            access = self.host.access()
            assert isinstance(access, LarkAccess)
            if self.access is not None and access.token != self.access.token:
                self.token_refreshes += 1
            self.access, self.api = access, access.api()
            self._load_chats()
            conn = LongConnection(access.app_id, access.app_secret, access.domain,
                                  self._handler(generation))
            conn.open()
            self.conn = conn
        except ChatError as exc:
            self._disconnect()
            self._retry(*connect_failure(exc, self.host, access,
                                         connected_once=self.connected_once))
            return
        if self.connected_once:
            self.reconnects += 1
        self.connected_once = True
        self.attempts = 0
        # p2p chats are not listed by GET im/v1/chats: those with a stored cursor are
        # caught up too (looked up on their first message).
        self._catch_up(list(dict.fromkeys([*self.chats, *self.cursor])))
        self.state, self.reason = "connected", ""
        self._publish()
        self.host.schedule(CHECK_S, _Check(generation))

    def _handler(self, generation: int) -> lark.EventDispatcherHandler:
        """The app's event handlers: each only tells the host (see the module docstring)."""
        tell = self.host.tell

        def message(data: Any) -> None:
            tell(_Event(generation, "message", _payload(data).get("event") or {}))

        def added(data: Any) -> None:
            tell(_Event(generation, "added", _payload(data).get("event") or {}))

        def removed(data: Any) -> None:
            tell(_Event(generation, "removed", _payload(data).get("event") or {}))

        def ignored(data: Any) -> None:
            return None

        def clicked(data: P2CardActionTrigger) -> P2CardActionTriggerResponse:
            return self._clicked(generation, _payload(data).get("event") or {})

        return (lark.EventDispatcherHandler.builder("", "")
                .register_p2_im_message_receive_v1(message)
                .register_p2_im_chat_member_bot_added_v1(added)
                .register_p2_im_chat_member_bot_deleted_v1(removed)
                .register_p2_im_message_recalled_v1(ignored)
                .register_p2_im_message_message_read_v1(ignored)
                .register_p2_card_action_trigger(clicked)
                .build())

    def _check(self) -> None:
        """The watchdog: a connection whose socket dropped is replaced."""
        if self.conn is None:
            return
        if not self.conn.alive():
            self._restart("the long connection dropped")
            return
        self.host.schedule(CHECK_S, _Check(self.generation))

    def _restart(self, reason: str) -> None:
        self._disconnect()
        self.generation += 1
        self.state, self.reason = "reconnecting", reason
        self._publish()
        self._retry("reconnecting", reason)

    def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    # -- chats -----------------------------------------------------------------

    def _api(self) -> LarkApi:
        assert self.api is not None
        return self.api

    def _me(self) -> LarkAccess:
        assert self.access is not None
        return self.access

    def _load_chats(self) -> list[str]:
        """Refresh the chats the bot is in; return the ids of those not read before."""
        found: list[ChatInfo] = []
        token = ""
        for _ in range(50):  # 5,000 chats
            query = [("page_size", "100")] + ([("page_token", token)] if token else [])
            page = self._api().call("GET", "/open-apis/im/v1/chats", what="chats", query=query)
            for item in page.get("items") or []:
                if isinstance(item, dict) and item.get("chat_id"):
                    found.append(self._chat_info(item))
            token = str(page.get("page_token") or "")
            if not token or not page.get("has_more"):
                break
        self.names, problems = resolve_connection(self.bindings, self.agent.access,
                                                  {c.id: c.name for c in found}, None,
                                                  self.names)
        for line in problems:
            if line not in self.problems:
                log.warning("intake %s: %s", self.host.connection, line)
        self.problems = set(problems)
        self.host.names_resolved(self.names)
        bound = {c.id: c for c in found if self._binding(c) is not None}
        added = [chat_id for chat_id in bound if chat_id not in self.chats]
        self.chats.update(bound)
        for gone in set(self.chats) - set(bound):
            if not self.chats[gone].direct:  # p2p chats may be missing from the list
                del self.chats[gone]
        return added

    @staticmethod
    def _chat_info(item: Mapping[str, Any]) -> ChatInfo:
        chat_id = str(item.get("chat_id", ""))
        direct = item.get("chat_mode") == "p2p" or item.get("chat_type") == "p2p"
        return ChatInfo(chat_id, str(item.get("name") or f"p2p-{chat_id}"), direct)

    def _chat(self, chat_id: str, chat_type: str = "") -> ChatInfo | None:
        """A chat the bot reads; one not known yet (a new p2p chat) is looked up once."""
        known = self.chats.get(chat_id)
        if known is not None or not chat_id:
            return known
        try:
            item = self._api().call("GET", "/open-apis/im/v1/chats/:chat_id",
                                    what=f"chat {chat_id}", paths={"chat_id": chat_id})
        except ChatError as exc:
            if isinstance(exc, Unauthorized):
                raise
            log.info("intake %s: chat %s not readable: %s", self.host.connection, chat_id, exc)
            return None
        info = self._chat_info({**item, "chat_id": chat_id,
                                "chat_type": chat_type or item.get("chat_type")})
        if self._binding(info) is None:
            return None
        self.chats[chat_id] = info
        self._publish()
        return info

    # -- catch-up --------------------------------------------------------------

    def _catch_up(self, chat_ids: Sequence[str]) -> None:
        for chat_id in chat_ids:
            try:
                self._catch_up_chat(chat_id)
            except ChatError as exc:
                if isinstance(exc, Unauthorized):
                    raise
                log.warning("intake %s: catch-up of %s failed: %s", self.host.connection,
                            chat_id, exc)

    def _catch_up_chat(self, chat_id: str) -> None:
        """Take what the chat (and its topics) got after its cursor, within the window."""
        window_start_ms = int((time.time() - self.catch_up_window_s) * 1000)
        after_ms = int(self.cursor.get(chat_id) or 0)
        start_s = max(after_ms, window_start_ms) // 1000
        found: dict[str, LarkMessage] = {}
        topics: list[str] = []
        for item in self._pages("chat", chat_id, start_s):
            message = events.message_of_item(item)
            if message is None:
                continue
            if message.thread_id and message.thread_id not in topics:
                topics.append(message.thread_id)
            if message.create_ms > after_ms:
                found[message.message_id] = message
        for thread_id in topics[-MAX_TOPICS:]:
            for item in self._pages("thread", thread_id, start_s):
                message = events.message_of_item(item)
                if message is not None and message.create_ms > after_ms:
                    found[message.message_id] = message
        for message in sorted(found.values(),
                              key=lambda m: events.position_of(m.create_ms, m.message_id)):
            self._take(message, catch_up=True, stale_before_ms=window_start_ms)

    def _pages(self, kind: str, container: str, start_s: int,
               max_pages: int = MAX_PAGES) -> list[dict[str, Any]]:
        """Up to ``max_pages`` pages of a chat's or topic's messages, oldest first."""
        items: list[dict[str, Any]] = []
        token = ""
        for _ in range(max_pages):
            query = [("container_id_type", kind), ("container_id", container),
                     ("sort_type", "ByCreateTimeAsc"), ("page_size", str(PAGE))]
            if kind == "chat":
                query.append(("start_time", str(start_s)))
            if token:
                query.append(("page_token", token))
            page = self._api().call("GET", "/open-apis/im/v1/messages",
                                    what=f"messages of {container}", query=query)
            items += [i for i in page.get("items") or [] if isinstance(i, dict)]
            token = str(page.get("page_token") or "")
            if not token or not page.get("has_more"):
                break
        return items

    # -- events ----------------------------------------------------------------

    def _event(self, kind: str, event: Mapping[str, Any]) -> None:
        if kind == "message":
            message = events.message_of_event(event)
            if message is None:
                log.warning("intake %s: message event without ids dropped",
                            self.host.connection)
                return
            self._take(message, catch_up=False, stale_before_ms=None)
        elif kind == "added":
            self._catch_up(self._load_chats())
            self._publish()
        elif kind == "removed":
            chat_id = str(event.get("chat_id", ""))
            if self.chats.pop(chat_id, None) is not None:
                log.info("intake %s: the bot was removed from chat %s", self.host.connection,
                         chat_id)
            self._publish()

    def _own(self, message: LarkMessage) -> bool:
        me = self._me()
        return message.sender_id in (me.user_id, me.app_id)

    def _take(self, message: LarkMessage, *, catch_up: bool,
              stale_before_ms: int | None) -> None:
        """Accept one message of a bound chat (the bot's own only mark its thread)."""
        chat = self._chat(message.chat_id, message.chat_type)
        if chat is None or message.message_id in self.seen:
            return
        if self._own(message):
            if message.thread_root:
                self.answered[(message.chat_id, message.thread_root)] = True
            self._save_cursor(message)
            self.seen[message.message_id] = True
            return
        binding = self._binding(chat)
        me = self._me()
        mentioned = message.mentions_of(me.user_id)
        root = message.thread_root
        in_thread = bool(root) and root != message.message_id
        addressed = message.readable and (chat.direct or mentioned or (
            in_thread and self._answered_in(message)))
        # A topic's first message is in its topic (its own id) even when not addressed.
        thread = "" if chat.direct else (root or (message.message_id if addressed else ""))
        if thread and addressed:  # the agent answers there: later messages engage it
            self.answered[(chat.id, thread)] = True
        self.host.accept(Inbound(
            platform=self.platform, agent=self.agent.name, space=self.space,
            channel_id=chat.id, channel_name=chat.name, message_id=message.message_id,
            seq=events.position_of(message.create_ms, message.message_id),
            cursor=str(message.create_ms), author_id=message.sender_id,
            author_name=self._author_name(message), content=message.text,
            created_at=events.iso_of(message.create_ms), thread=thread,
            per_thread=binding is not None and binding.scope == "thread",
            addressed=addressed, is_direct=chat.direct, mentioned=mentioned,
            catch_up=catch_up,
            stale=stale_before_ms is not None and message.create_ms < stale_before_ms,
            author_is_bot=message.sender_type != "user",
            attachments=tuple(
                Attachment(f.name, 0, mimetypes.guess_type(f.name)[0] or "",
                           ref_of(message.message_id, f.kind, f.key))
                for f in message.files)))
        # Seen only once the host took it: a lookup that failed above (a refused token)
        # leaves it to the catch-up after the reconnect.
        self.seen[message.message_id] = True
        if message.create_ms > int(self.cursor.get(message.chat_id) or 0):
            self.cursor[message.chat_id] = str(message.create_ms)

    def _save_cursor(self, message: LarkMessage) -> None:
        if message.create_ms > int(self.cursor.get(message.chat_id) or 0):
            self.cursor[message.chat_id] = str(message.create_ms)
            self.host.save_cursor(message.chat_id, str(message.create_ms),
                                  events.position_of(message.create_ms, message.message_id))

    def _answered_in(self, message: LarkMessage) -> bool:
        """Whether the bot was engaged or posted in the message's thread (its topic, or
        the chain of replies its root starts); a yes is remembered.

        Not remembered (after a restart): a topic's messages are listed. In a chain of
        replies (no topic) the parent is read first; when it is not the bot's, the chat
        from the root's time on (:data:`ANSWER_PAGES` pages) is searched for the bot's
        replies to that root: a member's reply to their own question after the bot
        answered it is in the bot's conversation too.
        """
        root = message.thread_root
        key = (message.chat_id, root)
        if key in self.answered:
            return True
        me = self._me()
        mine = {me.user_id, me.app_id}
        try:
            if message.thread_id:
                items = self._pages("thread", message.thread_id, 0)
            else:
                items = self._message(message.parent_id or root)
                if not _senders(items) & mine:
                    first = items if (message.parent_id or root) == root \
                        else self._message(root)
                    roots = (events.message_of_item(i) for i in first)
                    start_ms = min((m.create_ms for m in roots if m is not None), default=0)
                    items = [i for i in self._pages("chat", message.chat_id, start_ms // 1000,
                                                    ANSWER_PAGES)
                             if i.get("root_id") == root]
        except ChatError as exc:
            if isinstance(exc, Unauthorized):
                raise
            log.info("intake %s: thread of %s not read: %s", self.host.connection,
                     message.message_id, exc)
            return False
        if _senders(items) & mine:
            self.answered[key] = True
            return True
        return False

    def _message(self, message_id: str) -> list[dict[str, Any]]:
        """One message as a listing's items (``GET im/v1/messages/:id``)."""
        found = self._api().call("GET", "/open-apis/im/v1/messages/:message_id",
                                 what=f"message {message_id}",
                                 paths={"message_id": message_id})
        return [i for i in found.get("items") or [found] if isinstance(i, dict)]

    def _author_name(self, message: LarkMessage) -> str:
        """The author's name where the app may read contacts; else their ``open_id``."""
        if message.sender_type != "user":
            return message.sender_id
        return self._user_name(message.sender_id)

    def _user_name(self, open_id: str) -> str:
        """A person's name (``GET contact/v3/users/:id``, permission
        ``contact:user.base:readonly``), cached; their ``open_id`` when it cannot be read."""
        cached = self.users.get(open_id)
        if cached is None:
            try:
                data = self._api().call(
                    "GET", "/open-apis/contact/v3/users/:user_id",
                    what=f"user {open_id}", paths={"user_id": open_id},
                    query=[("user_id_type", "open_id")])
                user = data.get("user") if isinstance(data.get("user"), dict) else {}
                cached = str((user or {}).get("name") or open_id)
            except ChatError as exc:
                if isinstance(exc, Unauthorized):
                    raise
                log.debug("intake %s: user %s not looked up: %s", self.host.connection,
                          open_id, exc)
                cached = open_id
            self.users[open_id] = cached
        return cached

    # -- clicks ----------------------------------------------------------------

    def _clicked(self, generation: int, event: Mapping[str, Any]) -> P2CardActionTriggerResponse:
        """On the loop: check a click's signed value and answer with a toast at once."""
        click = events.click_of(event)
        if click is None:
            log.info("intake %s: a card callback without operator, value or message refused",
                     self.host.connection)
            return _toast("error", "This button is not available.")
        try:
            claims = self.signer.check(click.value, clicker=click.operator_id,
                                       chat_id=click.chat_id)
        except Refused as exc:
            log.info("intake %s: click by %s refused: %s", self.host.connection,
                     click.operator_id, exc)
            return _toast("error", "This button is not available.")
        except Exception:  # e.g. the key file unreadable: refuse, never a 500 and a re-push
            log.exception("intake %s: click by %s not checked", self.host.connection,
                          click.operator_id)
            return _toast("error", "This button is not available.")
        self.host.tell(_Click(generation, claims.chat_id, thread_of(claims), click.operator_id,
                              claims.action, claims.run_id))
        return _toast("info", "Stopping the run…" if claims.action == "stop" else "Done.")

    def _click(self, click: _Click) -> None:
        """A checked click: hand it to its conversation (which checks the run is live)."""
        chat = self._chat(click.chat_id)
        if chat is None:
            return
        self.host.act(Action(self.host.connection.scope(click.chat_id, click.thread),
                             click.operator_id, click.name, click.run_id,
                             self._user_name(click.operator_id)))

    def _publish(self) -> None:
        self.host.publish(IntakeStatus(
            state=self.state, reason=self.reason, reconnects=self.reconnects,
            channels=len(self.chats),
            token_at=self.access.issued_at if self.access is not None else None,
            token_refreshes=self.token_refreshes, last_event_at=self.last_event_at))


def _toast(kind: str, text: str) -> P2CardActionTriggerResponse:
    """The answer to a card callback: a toast (docs "card callback" response body)."""
    return P2CardActionTriggerResponse({"toast": {"type": kind, "content": text}})
