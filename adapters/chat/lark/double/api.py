"""The open API under ``/open-apis`` (after the tenant token was checked), as an app calls it.

Routes are path templates as lark-oapi 1.7.5 writes them
(``api/im/v1/model/*_request.py``, ``api/cardkit/v1/model/*_request.py``); a
handler answers ``data`` (wrapped as ``{"code": 0, "msg": "success", "data"}``)
or a whole response. Refusals raise :class:`LarkError`.

Choices made where the docs say little:

- ``GET /im/v1/messages`` with ``container_id_type=chat`` leaves thread
  replies out (docs message/list: a chat listing has no messages inside
  threads; the thread's root stays), ``thread`` lists the root and its
  replies. Recalled messages are listed with ``deleted: true``.
- Items show the content as sent (a CardKit card as its ``{"type": "card"}``
  reference; the platform renders cards into another shape).
- A bot's ``sender`` is ``{id: app_id, id_type: "app_id", sender_type: "app"}``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
from aiohttp import web

from adapters.chat.lark.double.model import (
    BAD_PARAMS,
    CANT_RECALL,
    CARD_INVALID,
    CARD_SENT,
    CHAT_NO_ACCESS,
    INVALID,
    NO_PERMISSION,
    NO_REACTION,
    NO_SCOPE,
    RESOURCE_NOT_IN_MSG,
    AppRecord,
    LarkError,
    Msg,
    loads_object,
)
from adapters.chat.lark.double.state import UUID_WINDOW_S, Tenant

#: Content size limits in bytes: text 150 KB, others 30 KB (docs message/create, reported).
TEXT_LIMIT = 150 * 1024
OTHER_LIMIT = 30 * 1024
MSG_TYPES = ("text", "post", "image", "file", "audio", "media", "sticker", "interactive",
             "share_chat", "share_user", "system")
SEND_SCOPES = ("im:message", "im:message:send_as_bot")
READ_SCOPES = ("im:message", "im:message:readonly")
REACT_SCOPES = ("im:message.reactions:write_only", "im:message.reactions:read")
CHAT_SCOPES = ("im:chat:readonly", "im:chat")
CONTACT_SCOPES = ("contact:user.base:readonly", "contact:contact.base:readonly")
# The platform's Chinese half of the 99991672 message (full-width punctuation, as sent).
_CN_DENIED = "应用尚未开通所需的应用身份权限\uff1a"
_CN_COMMA = "\uff0c"
_CN_LINK = "点击链接申请并开通任一权限即可\uff1a"


@attrs.frozen
class Call:
    """One API call: the caller, path parameters, query and body (JSON or form fields)."""

    app: AppRecord
    params: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    files: dict[str, tuple[str, bytes]]


Handler = Callable[["WebApi", Call], Any]


def scope_error(app_id: str, scopes: tuple[str, ...]) -> LarkError:
    """99991672 with the grant URL, as the platform words it (m1heng/clawdbot-feishu#149)."""
    names = ", ".join(scopes)
    url = (f"https://open.feishu.cn/app/{app_id}/auth?q={','.join(scopes)}"
           f"&op_from=openapi&token_type=tenant")
    return LarkError(NO_SCOPE, f"Access denied. One of the following scopes is required: "
                               f"[{names}].{_CN_DENIED}[{names}]{_CN_COMMA}{_CN_LINK}{url}")


def _int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise LarkError(BAD_PARAMS, f"field validation failed: {name}") from exc
    if not low <= value <= high:
        raise LarkError(BAD_PARAMS, f"field validation failed: {name} must be {low}..{high}")
    return value


def _page(items: list[Any], query: dict[str, str], default: int, high: int) -> dict[str, Any]:
    size = _int(query, "page_size", default, 1, high)
    start = _int(query, "page_token", 0, 0, 1 << 31)
    chunk = items[start:start + size]
    more = start + size < len(items)
    return {"items": chunk, "has_more": more, "page_token": str(start + size) if more else ""}


class WebApi:
    """The ``/open-apis`` handlers over a :class:`Tenant` (see the module docstring)."""

    #: ``(method, template, scopes (any one suffices), handler)``.
    ROUTES: list[tuple[str, str, tuple[str, ...], Handler]] = []

    def __init__(self, tenant: Tenant) -> None:
        """Serve ``tenant``."""
        self.tenant = tenant

    def route(self, key: str) -> tuple[tuple[str, ...], Handler]:
        """The scopes and handler of ``"METHOD /open-apis/…"``; KeyError if none."""
        for method, template, scopes, handler in self.ROUTES:
            if f"{method} {template}" == key:
                return scopes, handler
        raise KeyError(key)

    def call(self, key: str, call: Call) -> Any:
        """Run a route for an app whose token was checked: scopes, then the handler.

        Raises:
            LarkError: The refusal.
        """
        scopes, handler = self.route(key)
        if scopes and not set(scopes) & call.app.scopes:
            raise scope_error(call.app.app.app_id, scopes)
        with self.tenant.lock:
            return handler(self, call)

    # -- helpers (lock held) ---------------------------------------------------

    def item(self, msg: Msg) -> dict[str, Any]:
        """A message as the API shows it (lark-oapi ``im/v1/model/message.py``)."""
        t = self.tenant
        if msg.app_id:
            sender = {"id": msg.app_id, "id_type": "app_id", "sender_type": "app"}
        else:
            sender = {"id": msg.sender_id, "id_type": "open_id", "sender_type": "user"}
        sender["tenant_key"] = t.tenant_key
        content = json.dumps({"text": "This message was recalled"}) if msg.deleted \
            else msg.content
        item: dict[str, Any] = {
            "message_id": msg.message_id, "msg_type": msg.msg_type,
            "create_time": str(msg.create_time), "update_time": str(msg.update_time),
            "deleted": msg.deleted, "updated": msg.updated, "chat_id": msg.chat_id,
            "sender": sender, "body": {"content": content},
            "mentions": [{"key": m["key"], "id": m["id"]["open_id"], "id_type": "open_id",
                          "name": m["name"], "tenant_key": m["tenant_key"]}
                         for m in msg.mentions]}
        for name in ("root_id", "parent_id", "thread_id"):
            if getattr(msg, name):
                item[name] = getattr(msg, name)
        return item

    def own(self, call: Call) -> Msg:
        """The message of the path, sent by the caller, in a chat it is in.

        Raises:
            LarkError: 230001, 230011, 230002, 230027.
        """
        msg = self.tenant.parent(call.params["message_id"])
        self.tenant.chat_of_app(call.app.app.app_id, msg.chat_id)
        if msg.app_id != call.app.app.app_id:
            raise LarkError(NO_PERMISSION, "Lack of necessary permissions: "
                                           "not a message this app sent")
        return msg

    def visible(self, call: Call) -> Msg:
        """The message of the path, in a chat the caller is in (recalled ones too).

        Raises:
            LarkError: 230001, 230002.
        """
        msg = self.tenant.messages.get(call.params["message_id"])
        if msg is None:
            raise LarkError(INVALID, f"invalid message_id: {call.params['message_id']}")
        self.tenant.chat_of_app(call.app.app.app_id, msg.chat_id)
        return msg

    def content(self, msg_type: str, raw: Any, app_id: str) -> tuple[str, str]:
        """Check a message's ``content`` string; return it and the CardKit card id it shows.

        Raises:
            LarkError: 99992402, 230001, 230025 (too long), 230099, 300301, 300315.
        """
        if msg_type not in MSG_TYPES or not isinstance(raw, str):
            raise LarkError(BAD_PARAMS, "field validation failed: msg_type/content")
        limit = TEXT_LIMIT if msg_type == "text" else OTHER_LIMIT
        if len(raw.encode()) > limit:
            raise LarkError(230025, f"message content too long: over {limit} bytes")
        parsed = loads_object(raw, CARD_INVALID if msg_type == "interactive" else INVALID)
        card_id = ""
        if msg_type == "text" and not isinstance(parsed.get("text"), str):
            raise LarkError(INVALID, "invalid text content: no text")
        if msg_type in ("image", "file"):
            key = parsed.get(f"{msg_type}_key")
            if not isinstance(key, str) or key not in self.tenant.files:
                raise LarkError(INVALID, f"invalid {msg_type}_key")
        if msg_type == "interactive" and parsed.get("type") == "card":
            data = parsed.get("data")
            card_id = str(data.get("card_id", "")) if isinstance(data, dict) else ""
            card = self.tenant.cards.get(card_id, app_id)
            if card.message_id:
                raise LarkError(CARD_SENT, "the card entity was already sent")
        return raw, card_id

    def deliver(self, call: Call, chat_id: str, parent: Msg | None) -> dict[str, Any]:
        """Send (or reply) for the caller, with uuid dedupe; return the item."""
        t = self.tenant
        app_id = call.app.app.app_id
        body = call.body
        token = str(body.get("uuid") or "")
        if token:
            found = t.uuids.get((app_id, token))
            if found is not None and time.monotonic() - found[1] < UUID_WINDOW_S:
                return self.item(t.messages[found[0]])
        msg_type = str(body.get("msg_type", ""))
        content, card_id = self.content(msg_type, body.get("content"), app_id)
        chat = t.chat_of_app(app_id, chat_id)
        msg = t.store(chat, call.app.app.bot_open_id, app_id, msg_type, content, parent,
                      bool(body.get("reply_in_thread")), uuid=token, card_id=card_id,
                      keys=t.keys_in(json.loads(content)))
        if card_id:
            t.cards.cards[card_id].message_id = msg.message_id
        if token:
            t.uuids[(app_id, token)] = (msg.message_id, time.monotonic())
        t.notify("posted", msg)
        return self.item(msg)

    def changed_card(self, card_id: str) -> dict[str, Any]:
        """Tell observers of the message showing a card; return ``{}``."""
        message_id = self.tenant.cards.cards[card_id].message_id
        if message_id:
            msg = self.tenant.messages[message_id]
            msg.update_time = self.tenant.clock.now_ms()
            self.tenant.notify("changed", msg)
        return {}

    # -- handlers --------------------------------------------------------------

    def bot_info(self, call: Call) -> web.Response:
        """``GET /open-apis/bot/v3/info``: the bot at top level (no ``data``)."""
        app = call.app.app
        return web.json_response({"code": 0, "msg": "ok", "bot": {
            "activate_status": 2, "app_name": app.name, "avatar_url": "", "ip_white_list": [],
            "open_id": app.bot_open_id}})

    def send(self, call: Call) -> dict[str, Any]:
        """``POST /im/v1/messages?receive_id_type=…``."""
        t = self.tenant
        kind = call.query.get("receive_id_type", "")
        receive_id = str(call.body.get("receive_id", ""))
        if kind == "chat_id":
            return self.deliver(call, receive_id, None)
        if kind not in ("open_id", "union_id", "user_id"):
            raise LarkError(BAD_PARAMS, "field validation failed: receive_id_type")
        person = next((p for p in t.people.values() if getattr(p, kind) == receive_id), None)
        if person is None:
            raise LarkError(INVALID, "invalid receive_id")
        return self.deliver(call, t.add_p2p(person.open_id, call.app.app), None)

    def reply(self, call: Call) -> dict[str, Any]:
        """``POST /im/v1/messages/:message_id/reply``."""
        parent = self.tenant.parent(call.params["message_id"])
        return self.deliver(call, parent.chat_id, parent)

    def list_messages(self, call: Call) -> dict[str, Any]:
        """``GET /im/v1/messages`` (see the module docstring)."""
        t, q = self.tenant, call.query
        kind, container = q.get("container_id_type", ""), q.get("container_id", "")
        if kind == "chat":
            t.chat_of_app(call.app.app.app_id, container)
            msgs = [t.messages[mid] for mid in t.order[container]]
            msgs = [m for m in msgs if not (m.thread_id and m.root_id)]
        elif kind == "thread":
            msgs = [m for m in t.messages.values() if m.thread_id == container]
            if not msgs:
                raise LarkError(INVALID, f"invalid container_id: {container}")
            t.chat_of_app(call.app.app.app_id, msgs[0].chat_id)
            msgs.sort(key=lambda m: m.create_time)
        else:
            raise LarkError(BAD_PARAMS, "field validation failed: container_id_type")
        start = _int(q, "start_time", 0, 0, 1 << 40)
        end = _int(q, "end_time", 1 << 40, 0, 1 << 40)
        msgs = [m for m in msgs if start <= m.create_time // 1000 <= end]
        sort = q.get("sort_type", "ByCreateTimeAsc")
        if sort not in ("ByCreateTimeAsc", "ByCreateTimeDesc"):
            raise LarkError(BAD_PARAMS, "field validation failed: sort_type")
        if sort == "ByCreateTimeDesc":
            msgs.reverse()
        return _page([self.item(m) for m in msgs], q, 20, 50)

    def get_message(self, call: Call) -> dict[str, Any]:
        """``GET /im/v1/messages/:message_id`` → ``{items: [message]}``."""
        return {"items": [self.item(self.visible(call))]}

    def patch_message(self, call: Call) -> dict[str, Any]:
        """``PATCH /im/v1/messages/:message_id {content}``: cards only."""
        msg = self.own(call)
        if msg.msg_type != "interactive" or msg.card_id:
            raise LarkError(INVALID, "only a card message (not a card entity) can be patched")
        msg.content, _ = self.content("interactive", call.body.get("content"), msg.app_id)
        msg.updated, msg.update_time = True, self.tenant.clock.now_ms()
        self.tenant.notify("changed", msg)
        return {}

    def update_message(self, call: Call) -> dict[str, Any]:
        """``PUT /im/v1/messages/:message_id {msg_type, content}``: text and post only."""
        msg = self.own(call)
        msg_type = str(call.body.get("msg_type", ""))
        if msg.msg_type not in ("text", "post") or msg_type not in ("text", "post"):
            raise LarkError(INVALID, "only text and post messages can be updated")
        msg.content, _ = self.content(msg_type, call.body.get("content"), msg.app_id)
        msg.msg_type = msg_type
        msg.updated, msg.update_time = True, self.tenant.clock.now_ms()
        self.tenant.notify("changed", msg)
        return self.item(msg)

    def delete_message(self, call: Call) -> dict[str, Any]:
        """``DELETE /im/v1/messages/:message_id``: the app's own messages."""
        msg = self.tenant.parent(call.params["message_id"])
        if msg.app_id != call.app.app.app_id:
            raise LarkError(CANT_RECALL, "no permission to recall this message")
        msg.deleted = True
        self.tenant.notify("deleted", msg)
        return {}

    def _reaction(self, reaction: dict[str, Any]) -> dict[str, Any]:
        return {"reaction_id": reaction["reaction_id"],
                "operator": {"operator_id": reaction["operator_id"],
                             "operator_type": reaction["operator_type"]},
                "action_time": str(reaction["action_time"]),
                "reaction_type": {"emoji_type": reaction["emoji_type"]}}

    def add_reaction(self, call: Call) -> dict[str, Any]:
        """``POST …/reactions {reaction_type: {emoji_type}}``."""
        msg = self.visible(call)
        kind = call.body.get("reaction_type")
        emoji = kind.get("emoji_type") if isinstance(kind, dict) else None
        if not isinstance(emoji, str) or not emoji:
            raise LarkError(BAD_PARAMS, "field validation failed: reaction_type")
        app = call.app.app
        return self._reaction(self.tenant.add_reaction(msg, app.app_id, "app",
                                                       app.bot_open_id, emoji))

    def list_reactions(self, call: Call) -> dict[str, Any]:
        """``GET …/reactions[?reaction_type=]``."""
        msg = self.visible(call)
        wanted = call.query.get("reaction_type", "")
        items = [self._reaction(r) for r in self.tenant.reactions.get(msg.message_id, [])
                 if not wanted or r["emoji_type"] == wanted]
        return _page(items, call.query, 20, 50)

    def delete_reaction(self, call: Call) -> dict[str, Any]:
        """``DELETE …/reactions/:reaction_id``: the app's own reactions."""
        msg = self.visible(call)
        mine = self.tenant.reactions.get(msg.message_id, [])
        for reaction in mine:
            if reaction["reaction_id"] == call.params["reaction_id"] \
                    and reaction["operator_id"] == call.app.app.app_id:
                mine.remove(reaction)
                return self._reaction(reaction)
        raise LarkError(NO_REACTION, "reaction not found")

    def resource(self, call: Call) -> web.Response:
        """``GET …/resources/:file_key?type=image|file``: the bytes of a key in that message."""
        msg = self.visible(call)
        key = call.params["file_key"]
        if call.query.get("type") not in ("image", "file"):
            raise LarkError(BAD_PARAMS, "field validation failed: type")
        if key not in msg.keys:
            raise LarkError(RESOURCE_NOT_IN_MSG, "the resource is not in this message")
        data, name, _ = self.tenant.files[key]
        return web.Response(body=data, content_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{name}"'})

    def upload(self, call: Call, field: str, prefix: str, extra: str) -> str:
        """Store a multipart upload's ``field``; return its new key."""
        if field not in call.files or not call.body.get(extra):
            raise LarkError(BAD_PARAMS, f"field validation failed: {field}/{extra}")
        filename, data = call.files[field]
        if not data:
            raise LarkError(BAD_PARAMS, "field validation failed: empty file")
        key = prefix + secrets.token_hex(12)
        name = str(call.body.get("file_name") or filename or key)
        self.tenant.files[key] = (data, name, call.app.app.app_id)
        return key

    def create_file(self, call: Call) -> dict[str, Any]:
        """``POST /im/v1/files`` (multipart ``file_type``, ``file_name``, ``file``)."""
        return {"file_key": self.upload(call, "file", "file_v3_", "file_type")}

    def create_image(self, call: Call) -> dict[str, Any]:
        """``POST /im/v1/images`` (multipart ``image_type``, ``image``)."""
        return {"image_key": self.upload(call, "image", "img_v3_", "image_type")}

    def list_chats(self, call: Call) -> dict[str, Any]:
        """``GET /im/v1/chats``: the groups the bot is in."""
        t = self.tenant
        items = [{"chat_id": c.chat_id, "name": c.name, "avatar": "", "description": "",
                  "owner_id": c.owner, "owner_id_type": "open_id", "external": False,
                  "tenant_key": t.tenant_key, "chat_status": "normal"}
                 for c in t.chats.values()
                 if c.mode != "p2p" and call.app.app.app_id in c.apps]
        return _page(items, call.query, 20, 100)

    def get_user(self, call: Call) -> dict[str, Any]:
        """``GET /contact/v3/users/:user_id?user_id_type=open_id`` → ``{user: {open_id,
        union_id, user_id, name}}`` (people only; 41050 "no user authority" otherwise)."""
        if call.query.get("user_id_type", "open_id") != "open_id":
            raise LarkError(BAD_PARAMS, "the double knows open ids only")
        try:
            person = self.tenant.person(call.params["user_id"])
        except KeyError:
            raise LarkError(41050, "no user authority error") from None
        return {"user": {**person.ids(), "name": person.name}}

    def get_chat(self, call: Call) -> dict[str, Any]:
        """``GET /im/v1/chats/:chat_id`` (a topic group: ``chat_mode`` ``topic`` and
        ``group_message_type`` ``thread``)."""
        chat = self.tenant.chat(call.params["chat_id"])
        if call.app.app.app_id not in chat.apps:
            raise LarkError(CHAT_NO_ACCESS, "The bot is not in the chat")
        return {"name": chat.name, "description": "", "avatar": "", "chat_mode": chat.mode,
                "chat_type": "private" if chat.mode != "p2p" else "p2p",
                "group_message_type": "thread" if chat.mode == "topic" else "chat",
                "owner_id": chat.owner, "owner_id_type": "open_id", "external": False,
                "tenant_key": self.tenant.tenant_key, "chat_status": "normal",
                "user_count": str(len(chat.users)), "bot_count": str(len(chat.apps))}

    def card_create(self, call: Call) -> dict[str, Any]:
        """``POST /cardkit/v1/cards``."""
        return {"card_id": self.tenant.cards.create(call.app.app.app_id, call.body).card_id}

    def card_content(self, call: Call) -> dict[str, Any]:
        """``PUT /cardkit/v1/cards/:card_id/elements/:element_id/content``."""
        card = self.tenant.cards.content(call.app.app.app_id, call.params["card_id"],
                                         call.params["element_id"], call.body)
        return self.changed_card(card.card_id)

    def card_settings(self, call: Call) -> dict[str, Any]:
        """``PATCH /cardkit/v1/cards/:card_id/settings``."""
        card = self.tenant.cards.settings(call.app.app.app_id, call.params["card_id"],
                                          call.body)
        return self.changed_card(card.card_id)

    def card_update(self, call: Call) -> dict[str, Any]:
        """``PUT /cardkit/v1/cards/:card_id``."""
        card = self.tenant.cards.update(call.app.app.app_id, call.params["card_id"], call.body)
        return self.changed_card(card.card_id)


_M = "/open-apis/im/v1/messages"
_C = "/open-apis/cardkit/v1/cards"
WebApi.ROUTES = [
    ("GET", "/open-apis/bot/v3/info", (), WebApi.bot_info),
    ("POST", _M, SEND_SCOPES, WebApi.send),
    ("GET", _M, READ_SCOPES, WebApi.list_messages),
    ("POST", _M + "/:message_id/reply", SEND_SCOPES, WebApi.reply),
    ("GET", _M + "/:message_id", READ_SCOPES, WebApi.get_message),
    ("PATCH", _M + "/:message_id", SEND_SCOPES, WebApi.patch_message),
    ("PUT", _M + "/:message_id", SEND_SCOPES, WebApi.update_message),
    ("DELETE", _M + "/:message_id", SEND_SCOPES, WebApi.delete_message),
    ("POST", _M + "/:message_id/reactions", REACT_SCOPES, WebApi.add_reaction),
    ("GET", _M + "/:message_id/reactions", REACT_SCOPES, WebApi.list_reactions),
    ("DELETE", _M + "/:message_id/reactions/:reaction_id", REACT_SCOPES,
     WebApi.delete_reaction),
    ("GET", _M + "/:message_id/resources/:file_key", ("im:resource",), WebApi.resource),
    ("POST", "/open-apis/im/v1/files", ("im:resource",), WebApi.create_file),
    ("POST", "/open-apis/im/v1/images", ("im:resource",), WebApi.create_image),
    ("GET", "/open-apis/im/v1/chats", CHAT_SCOPES, WebApi.list_chats),
    ("GET", "/open-apis/im/v1/chats/:chat_id", CHAT_SCOPES, WebApi.get_chat),
    ("GET", "/open-apis/contact/v3/users/:user_id", CONTACT_SCOPES, WebApi.get_user),
    ("POST", _C, ("cardkit:card:write",), WebApi.card_create),
    ("PUT", _C + "/:card_id/elements/:element_id/content", ("cardkit:card:write",),
     WebApi.card_content),
    ("PATCH", _C + "/:card_id/settings", ("cardkit:card:write",), WebApi.card_settings),
    ("PUT", _C + "/:card_id", ("cardkit:card:write",), WebApi.card_update),
]
