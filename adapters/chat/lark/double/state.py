"""The double's tenant: people, apps, chats, messages, files, reactions, tokens.

What people do here (post, recall, click, leave) makes events for the apps;
what apps do through the open API (``api.py``) is stored and never delivered
(the platform does not send a bot its own messages, nor other bots' ones).

Rules kept here (docs im-v1 message/events/receive, message/create, the
protocol note):

- ``im.message.receive_v1`` reaches every app in the chat: in p2p always
  (scope ``im:message.p2p_msg:readonly``); in groups when the message
  @-mentions its bot (``im:message.group_at_msg:readonly``), or always with
  ``im:message.group_msg``.
- Threads: a top-level message in a topic group opens a thread
  (``thread_id`` ``omt_…``); a reply gets ``root_id`` (its root) and
  ``parent_id`` (what it answers) and the thread of its parent or root; an
  app's ``reply_in_thread`` reply opens a thread on its root.
- One open id per person for every app (the platform gives each app its
  own; a simplification).

Everything is guarded by one re-entrant lock; events go to ``sink`` with
the lock held (the hub never calls back).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from adapters.chat.lark.double.cards import CardStore
from adapters.chat.lark.double.model import (
    BAD_APP,
    BAD_SECRET,
    BAD_TOKEN,
    CANT_RECALL,
    GROUP_MSG_SCOPE,
    IMAGE_EXTENSIONS,
    INVALID,
    NO_TOKEN,
    NOT_IN_CHAT,
    RECALLED,
    AppRecord,
    Chat,
    Clock,
    LarkApp,
    LarkError,
    Msg,
    Person,
    find_button,
    new_id,
    text_of,
    walk,
)

#: ``sink(app_id, envelope, retry)``: hands an event to the long connection.
Sink = Callable[[str, dict[str, Any], bool], None]
#: ``observer(kind, message)``: kind ``posted``/``changed``/``deleted``; see :meth:`Tenant.observe`.
Observer = Callable[[str, dict[str, Any]], None]
#: Default tenant token lifetime, in seconds (docs auth-v3 tenant_access_token: 2 h).
TOKEN_TTL_S = 7200
#: How long a send's ``uuid`` is remembered, in seconds (docs message/create: 1 h).
UUID_WINDOW_S = 3600.0


class Tenant:
    """Everything one tenant holds (see the module docstring)."""

    def __init__(self, sink: Sink, *, token_ttl_s: int = TOKEN_TTL_S) -> None:
        """Create an empty tenant.

        Args:
            sink: Where events go.
            token_ttl_s: Lifetime of tenant tokens, in seconds.
        """
        self.lock = threading.RLock()
        self.sink = sink
        self.tenant_key = secrets.token_hex(8)
        self.token_ttl_s = token_ttl_s
        self.people: dict[str, Person] = {}
        self.apps: dict[str, AppRecord] = {}
        self.bots: dict[str, str] = {}  # bot open id -> app id
        self.chats: dict[str, Chat] = {}
        self.order: dict[str, list[str]] = {}  # chat id -> message ids, oldest first
        self.messages: dict[str, Msg] = {}
        self.files: dict[str, tuple[bytes, str, str]] = {}  # key -> (bytes, name, app id)
        self.reactions: dict[str, list[dict[str, Any]]] = {}
        self.uuids: dict[tuple[str, str], tuple[str, float]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (app id, expiry, wall s)
        self.cards = CardStore()
        self.clock = Clock()
        self._observers: list[Observer] = []

    # -- setup -----------------------------------------------------------------

    def add_app(self, name: str, scopes: Iterable[str], group_messages: bool) -> LarkApp:
        """Install an app with its bot; return its public face."""
        with self.lock:
            app = LarkApp(app_id=new_id("cli_", 8), app_secret=secrets.token_urlsafe(24),
                          bot_open_id=new_id("ou_"), name=name)
            granted = set(scopes) | ({GROUP_MSG_SCOPE} if group_messages else set())
            self.apps[app.app_id] = AppRecord(app, app.app_secret, granted, new_id("on_"))
            self.bots[app.bot_open_id] = app.app_id
            return app

    def add_user(self, name: str) -> str:
        """Add a person; return the open id ``ou_…``."""
        with self.lock:
            person = Person(new_id("ou_"), new_id("on_"), secrets.token_hex(4), name)
            self.people[person.open_id] = person
            return person.open_id

    def add_p2p(self, user: str, app: LarkApp | str) -> str:
        """The p2p chat of a person and an app's bot (made once); return ``oc_…``."""
        with self.lock:
            self.person(user)
            app_id = self.record(app).app.app_id
            for chat in self.chats.values():
                if chat.mode == "p2p" and chat.users == [user] and chat.apps == [app_id]:
                    return chat.chat_id
            return self._new_chat("", "p2p", [user], [app_id])

    def add_group(self, name: str, members: Iterable[str | LarkApp], topic: bool) -> str:
        """A group (``topic``: a topic group) with people and apps; return ``oc_…``.

        Raises:
            KeyError: On an unknown member.
        """
        with self.lock:
            users: list[str] = []
            apps: list[str] = []
            for member in members:
                if isinstance(member, LarkApp) or member in self.apps:
                    apps.append(self.record(member).app.app_id)
                else:
                    users.append(self.person(member).open_id)
            return self._new_chat(name, "topic" if topic else "group", users, apps)

    def _new_chat(self, name: str, mode: str, users: list[str], apps: list[str]) -> str:
        chat = Chat(new_id("oc_"), name, mode, users, apps, users[0] if users else "")
        self.chats[chat.chat_id] = chat
        self.order[chat.chat_id] = []
        return chat.chat_id

    def person(self, open_id: str) -> Person:
        """A person by open id; KeyError if unknown."""
        with self.lock:
            if open_id not in self.people:
                raise KeyError(f"unknown user {open_id}")
            return self.people[open_id]

    def record(self, app: LarkApp | str) -> AppRecord:
        """An app's record, by :class:`LarkApp`, app id or bot open id; KeyError if unknown."""
        with self.lock:
            app_id = app.app_id if isinstance(app, LarkApp) else self.bots.get(app, app)
            if app_id not in self.apps:
                raise KeyError(f"unknown app {app_id}")
            return self.apps[app_id]

    def chat(self, chat_id: str) -> Chat:
        """A chat; 230002 if unknown."""
        chat = self.chats.get(chat_id)
        if chat is None:
            raise LarkError(NOT_IN_CHAT, f"chat not found: {chat_id}")
        return chat

    def chat_of_app(self, app_id: str, chat_id: str) -> Chat:
        """A chat the app's bot is in; 230002 otherwise ("Bot is not in the chat")."""
        chat = self.chat(chat_id)
        if app_id not in chat.apps:
            raise LarkError(NOT_IN_CHAT, "Bot is not in the chat")
        return chat

    def observe(self, observer: Observer) -> None:
        """Call ``observer(kind, message)`` on every message an app sends
        (``posted``), changes (``changed``: edits, card updates) or recalls
        (``deleted``); ``message`` as :meth:`view` shows it. It runs with the
        lock held: quick, no blocking, no calls into the double."""
        with self.lock:
            self._observers.append(observer)

    def notify(self, kind: str, msg: Msg) -> None:
        """Tell the observers (lock held)."""
        if self._observers:
            view = self.view(msg)
            for observer in self._observers:
                observer(kind, view)

    # -- tokens ----------------------------------------------------------------

    def issue_token(self, app_id: str, secret: str) -> tuple[str, int]:
        """A tenant token and its lifetime in seconds.

        Raises:
            LarkError: 10003 for an unknown app, 10014 for a wrong secret (HTTP 200).
        """
        with self.lock:
            record = self.apps.get(app_id)
            if record is None:
                raise LarkError(BAD_APP, "invalid param: app_id", status=200)
            if not secrets.compare_digest(secret.encode(), record.secret.encode()):
                raise LarkError(BAD_SECRET, "app secret invalid", status=200)
            token = "t-" + secrets.token_hex(20)
            self.tokens[token] = (app_id, time.time() + self.token_ttl_s)
            return token, self.token_ttl_s

    def authenticate(self, token: str | None) -> AppRecord:
        """The app a ``Bearer`` tenant token belongs to.

        Raises:
            LarkError: 99991661 when missing, 99991663 when unknown, expired or
                invalidated (HTTP 400).
        """
        with self.lock:
            if not token:
                raise LarkError(NO_TOKEN, "Missing access token for authorization. "
                                          "Please make a request with token attached.")
            found = self.tokens.get(token)
            if found is None or found[1] <= time.time():
                raise LarkError(BAD_TOKEN, "Invalid access token for authorization. "
                                           "Please make a request with token attached.")
            return self.apps[found[0]]

    def expire_tokens(self, app: LarkApp | str) -> int:
        """Invalidate every token issued to an app so far; return how many."""
        with self.lock:
            app_id = self.record(app).app.app_id
            mine = [token for token, (owner, _) in self.tokens.items() if owner == app_id]
            for token in mine:
                self.tokens[token] = (app_id, 0.0)
            return len(mine)

    def rotate_secret(self, app: LarkApp | str) -> str:
        """Give an app a new secret (the old one is refused from now on); return it."""
        with self.lock:
            record = self.record(app)
            record.secret = secrets.token_urlsafe(24)
            return record.secret

    # -- storing and delivering ------------------------------------------------

    def place(self, chat: Chat, parent: Msg | None, in_thread: bool) -> tuple[str, str, str]:
        """``(root_id, parent_id, thread_id)`` for a new message (see the module rules)."""
        if parent is None:
            return "", "", new_id("omt_", 8) if chat.mode == "topic" else ""
        root = self.messages[parent.root_id or parent.message_id]
        thread = parent.thread_id or root.thread_id
        if not thread and (in_thread or chat.mode == "topic"):
            thread = root.thread_id = new_id("omt_", 8)
        return root.message_id, parent.message_id, thread

    def parent(self, message_id: str) -> Msg:
        """A message to reply to: 230001 if unknown, 230011 if recalled."""
        msg = self.messages.get(message_id)
        if msg is None:
            raise LarkError(INVALID, f"invalid message_id: {message_id}")
        if msg.deleted:
            raise LarkError(RECALLED, "The message was recalled")
        return msg

    def store(self, chat: Chat, sender_id: str, app_id: str, msg_type: str, content: str,
              parent: Msg | None, in_thread: bool = False, **extra: Any) -> Msg:
        """Store a new message (lock held)."""
        root_id, parent_id, thread_id = self.place(chat, parent, in_thread)
        now = self.clock.now_ms()
        msg = Msg(new_id("om_"), chat.chat_id, sender_id, app_id, msg_type, content, now, now,
                  root_id, parent_id, thread_id, **extra)
        self.messages[msg.message_id] = msg
        self.order[chat.chat_id].append(msg.message_id)
        return msg

    def envelope(self, app_id: str, event_type: str, event: dict[str, Any],
                 event_id: str = "") -> dict[str, Any]:
        """A schema 2.0 envelope for an app (docs event-subscription, event/context.py)."""
        return {"schema": "2.0",
                "header": {"event_id": event_id or uuid.uuid4().hex, "event_type": event_type,
                           "create_time": str(int(time.time() * 1000)), "token": "",
                           "app_id": app_id, "tenant_key": self.tenant_key},
                "event": event}

    def _deliver_post(self, msg: Msg, chat: Chat) -> None:
        person = self.people[msg.sender_id]
        mentioned = {m["id"]["open_id"] for m in msg.mentions}
        event = {"sender": {"sender_id": person.ids(), "sender_type": "user",
                            "tenant_key": self.tenant_key},
                 "message": {"message_id": msg.message_id, "root_id": msg.root_id,
                             "parent_id": msg.parent_id, "thread_id": msg.thread_id,
                             "create_time": str(msg.create_time),
                             "update_time": str(msg.update_time), "chat_id": chat.chat_id,
                             "chat_type": "p2p" if chat.mode == "p2p" else "group",
                             "message_type": msg.msg_type, "content": msg.content,
                             "mentions": msg.mentions}}
        for app_id in chat.apps:
            record = self.apps[app_id]
            if chat.mode == "p2p":
                wanted = "im:message.p2p_msg:readonly" in record.scopes
            else:
                wanted = GROUP_MSG_SCOPE in record.scopes or (
                    record.app.bot_open_id in mentioned
                    and "im:message.group_at_msg:readonly" in record.scopes)
            if wanted:
                self.sink(app_id, self.envelope(app_id, "im.message.receive_v1", event), True)

    # -- what people do --------------------------------------------------------

    def _member(self, user: str, chat_id: str) -> Chat:
        chat = self.chat(chat_id)
        self.person(user)
        if user not in chat.users:
            raise LarkError(NOT_IN_CHAT, f"{user} is not in the chat")
        return chat

    def post(self, user: str, chat_id: str, text: str, mentions: Iterable[LarkApp | str],
             reply_to: str, files: Mapping[str, bytes] | None) -> str:
        """A person posts (see ``LarkDouble.post``); return the message id."""
        with self.lock:
            chat = self._member(user, chat_id)
            parent = self.parent(reply_to) if reply_to else None
            if parent is not None and parent.chat_id != chat_id:
                raise LarkError(INVALID, "the replied message is in another chat")
            marks: list[dict[str, Any]] = []
            for n, who in enumerate(mentions, 1):
                if isinstance(who, LarkApp) or who in self.apps or who in self.bots:
                    record = self.record(who)
                    ids = {"open_id": record.app.bot_open_id, "union_id": record.union_id,
                           "user_id": ""}
                    name = record.app.name
                else:
                    person = self.person(who)
                    ids, name = person.ids(), person.name
                marks.append({"key": f"@_user_{n}", "id": ids, "name": name,
                              "tenant_key": self.tenant_key})
            keys = " ".join(m["key"] for m in marks)
            body = f"{keys} {text}" if keys else text
            if files:
                lines: list[list[dict[str, Any]]] = [[{"tag": "text", "text": body}]] if body \
                    else []
                stored: set[str] = set()
                for name, data in files.items():
                    image = name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
                    key = new_id("img_v3_" if image else "file_v3_", 12)
                    self.files[key] = (bytes(data), name, "")
                    stored.add(key)
                    lines.append([{"tag": "img", "image_key": key} if image else
                                  {"tag": "media", "file_key": key, "file_name": name}])
                msg = self.store(chat, user, "", "post",
                                 json.dumps({"title": "", "content": lines}, ensure_ascii=False),
                                 parent, mentions=marks, keys=stored)
            else:
                msg = self.store(chat, user, "", "text",
                                 json.dumps({"text": body}, ensure_ascii=False), parent,
                                 mentions=marks)
            self._deliver_post(msg, chat)
            return msg.message_id

    def recall(self, user: str, message_id: str) -> None:
        """A person recalls their message: ``im.message.recalled_v1`` to the chat's apps.

        Raises:
            LarkError: 230001 (unknown), 230011 (already recalled), 230026 (not theirs).
        """
        with self.lock:
            msg = self.parent(message_id)
            if msg.sender_id != user or msg.app_id:
                raise LarkError(CANT_RECALL, "no permission to recall this message")
            msg.deleted = True
            event = {"message_id": msg.message_id, "chat_id": msg.chat_id,
                     "recall_time": str(self.clock.now_ms()), "recall_type": "message_owner"}
            for app_id in self.chats[msg.chat_id].apps:
                self.sink(app_id, self.envelope(app_id, "im.message.recalled_v1", event), True)

    def remove(self, chat_id: str, member: str | LarkApp) -> None:
        """Take a person or a bot out of a chat; a bot's app gets
        ``im.chat.member.bot.deleted_v1`` (operator: the chat's owner).

        Raises:
            KeyError: If the member is not in the chat.
        """
        with self.lock:
            chat = self.chat(chat_id)
            if isinstance(member, LarkApp) or member in self.apps or member in self.bots:
                app_id = self.record(member).app.app_id
                if app_id not in chat.apps:
                    raise KeyError(f"{app_id} is not in {chat_id}")
                chat.apps.remove(app_id)
                owner = self.people.get(chat.owner)
                event = {"chat_id": chat_id, "external": False,
                         "operator_id": owner.ids() if owner else {},
                         "operator_tenant_key": self.tenant_key, "name": chat.name,
                         "i18n_names": {}}
                self.sink(app_id, self.envelope(app_id, "im.chat.member.bot.deleted_v1", event),
                          True)
            else:
                if member not in chat.users:
                    raise KeyError(f"{member} is not in {chat_id}")
                chat.users.remove(member)

    def react(self, user: str, message_id: str, emoji_type: str) -> str:
        """A person reacts to a message (no event); return the reaction id."""
        with self.lock:
            msg = self.parent(message_id)
            self._member(user, msg.chat_id)
            return str(self.add_reaction(msg, user, "user", user, emoji_type)["reaction_id"])

    def add_reaction(self, msg: Msg, operator_id: str, operator_type: str, open_id: str,
                     emoji_type: str) -> dict[str, Any]:
        """Record a reaction (the existing one if the operator made it already; lock held)."""
        mine = self.reactions.setdefault(msg.message_id, [])
        for reaction in mine:
            if reaction["operator_id"] == operator_id and reaction["emoji_type"] == emoji_type:
                return reaction
        reaction = {"reaction_id": secrets.token_urlsafe(18), "operator_id": operator_id,
                    "operator_type": operator_type, "open_id": open_id,
                    "emoji_type": emoji_type, "action_time": self.clock.now_ms()}
        mine.append(reaction)
        return reaction

    def click_event(self, user: str, message_id: str, value: Mapping[str, Any] | None,
                    name: str) -> tuple[str, dict[str, Any]]:
        """The app and ``card.action.trigger`` envelope of a click on a card's button.

        Raises:
            LarkError: On an unknown/recalled message or a non-member.
            LookupError: If the message is no app card or has no such button.
        """
        with self.lock:
            msg = self.parent(message_id)
            self._member(user, msg.chat_id)
            card = self.card_of(msg)
            if not msg.app_id or card is None:
                raise LookupError(f"{message_id} is not an app's card")
            found = find_button(card, name)
            if found is None:
                raise LookupError(f"no button {name or 'with a callback'} in {message_id}")
            button, callback = found
            person = self.people[user]
            operator = {**person.ids(), "tenant_key": self.tenant_key}
            event = {"operator": operator, "token": "c-" + secrets.token_hex(16),
                     "action": {"value": dict(value) if value is not None else callback,
                                "tag": "button", "name": str(button.get("name", ""))},
                     "host": "im_message",
                     "context": {"open_message_id": msg.message_id, "open_chat_id": msg.chat_id}}
            return msg.app_id, self.envelope(msg.app_id, "card.action.trigger", event)

    # -- reading ---------------------------------------------------------------

    def card_of(self, msg: Msg) -> dict[str, Any] | None:
        """The card a message shows (CardKit card's current JSON, or inline), else None."""
        if msg.card_id:
            return self.cards.view(msg.card_id)
        if msg.msg_type == "interactive":
            content: dict[str, Any] = json.loads(msg.content)
            return content
        return None

    def view(self, msg: Msg) -> dict[str, Any]:
        """A message as the test-facing ``history`` shows it (lock held)."""
        content = json.loads(msg.content)
        card = self.card_of(msg)
        streaming = bool(card and card.get("streaming"))
        text = text_of("interactive", card) if card is not None else text_of(msg.msg_type,
                                                                               content)
        return {"message_id": msg.message_id, "chat_id": msg.chat_id,
                "sender_id": msg.sender_id, "sender_type": "app" if msg.app_id else "user",
                "app_id": msg.app_id, "msg_type": msg.msg_type, "content": content,
                "root_id": msg.root_id, "parent_id": msg.parent_id, "thread_id": msg.thread_id,
                "create_time": msg.create_time, "update_time": msg.update_time,
                "uuid": msg.uuid, "mentions": [dict(m) for m in msg.mentions],
                "updated": msg.updated, "deleted": msg.deleted, "card": card,
                "streaming": streaming, "text": text}

    def history(self, chat_id: str) -> list[dict[str, Any]]:
        """Every message of a chat (thread replies too), oldest first, recalled ones left out."""
        with self.lock:
            self.chat(chat_id)
            return [self.view(self.messages[mid]) for mid in self.order[chat_id]
                    if not self.messages[mid].deleted]

    def message(self, message_id: str) -> dict[str, Any]:
        """One message as :meth:`history` shows it (recalled ones too); KeyError if unknown."""
        with self.lock:
            return self.view(self.messages[message_id])

    def reaction_sets(self, message_id: str) -> dict[str, set[str]]:
        """``{emoji_type: {operator open ids}}`` (bots by their open id)."""
        with self.lock:
            sets: dict[str, set[str]] = {}
            for reaction in self.reactions.get(message_id, []):
                sets.setdefault(reaction["emoji_type"], set()).add(reaction["open_id"])
            return sets

    def file_content(self, key: str) -> bytes:
        """The bytes behind a file or image key; KeyError if unknown."""
        with self.lock:
            return self.files[key][0]

    def file_name(self, key: str) -> str:
        """The name a file or image was uploaded (or posted) with; KeyError if unknown."""
        with self.lock:
            return self.files[key][1]

    def keys_in(self, content: dict[str, Any]) -> set[str]:
        """The stored file/image keys a message content names."""
        return {str(node[name]) for node in walk(content) for name in ("image_key", "file_key")
                if isinstance(node.get(name), str) and node[name] in self.files}
