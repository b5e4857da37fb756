"""Feishu/Lark's event and API payloads read into typed values (pure functions, no I/O).

Shapes from lark-oapi 1.7.5 (``api/im/v1/model/event_message.py``,
``event_sender.py``, ``mention_event.py``, ``message.py``) and the open.feishu.cn
docs (im-v1/message/events/receive, im-v1/message/list, "message content"):

- the ``im.message.receive_v1`` event: ``event.sender.sender_id.open_id``,
  ``sender_type`` (``user`` or ``app``), ``event.message`` with ``message_id``,
  ``root_id``, ``parent_id``, ``thread_id``, ``chat_id``, ``chat_type`` (``p2p``
  or ``group``), ``message_type``, ``content`` (a JSON **string**), ``mentions``
  and ``create_time`` (epoch milliseconds, as a string);
- a listed message (``GET im/v1/messages``): the same ids, ``msg_type``,
  ``body.content``, ``sender.id``/``sender_type`` and ``deleted``.

A payload without the fields a value needs is refused (None), never guessed.
Message types the bridge does not read (stickers, merged forwards, cards...)
become a short bracketed note: context at most, never a crash.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

#: Image file extensions: a member's image is fetched with ``type=image``.
IMAGE_TYPES = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp"})
_MENTION_KEY = re.compile(r"@_user_\d+")


@attrs.frozen
class LarkFile:
    """A file or image on a member's message.

    Attributes:
        key: Its ``file_key`` or ``image_key``.
        name: Its file name (an image without one: ``<key>.png``).
        kind: ``file`` or ``image`` (the resource API's ``type``).
    """

    key: str
    name: str
    kind: str


@attrs.frozen
class Mention:
    """One @mention in a message.

    Attributes:
        key: Its placeholder in the text, e.g. ``@_user_1``.
        open_id: The mentioned member's or bot's ``open_id``.
        name: Their name.
    """

    key: str
    open_id: str
    name: str


@attrs.frozen
class LarkMessage:
    """A message as the intake takes it.

    Attributes:
        message_id: Its id (``om_…``).
        chat_id: Its chat (``oc_…``).
        chat_type: ``p2p`` or ``group`` (empty when the payload did not say: a listing).
        sender_id: The author's ``open_id`` (a bot's: its app's bot ``open_id`` or app id).
        sender_type: ``user`` or ``app``.
        msg_type: ``text``, ``post``, ``image``, ``file``, ``interactive``...
        text: Its readable text, mention placeholders replaced by ``@name``.
        create_ms: When it was posted, epoch milliseconds.
        root_id: The first message of its thread or reply chain (empty: none).
        parent_id: The message it replies to (empty: none).
        thread_id: Its topic thread (``omt_…``; empty: none).
        mentions: Who it mentions.
        files: Files and images on it.
        broken: Its ``content`` was not a JSON object (its text says so).
    """

    message_id: str
    chat_id: str
    chat_type: str
    sender_id: str
    sender_type: str
    msg_type: str
    text: str
    create_ms: int
    root_id: str = ""
    parent_id: str = ""
    thread_id: str = ""
    mentions: tuple[Mention, ...] = ()
    files: tuple[LarkFile, ...] = ()
    broken: bool = False

    @property
    def readable(self) -> bool:
        """Whether the bridge reads it: a type of :data:`READABLE_TYPES` whose content
        parsed. Others (stickers, merged forwards, cards, shared chats, garbage) are
        context at most, never a run."""
        return self.msg_type in READABLE_TYPES and not self.broken

    @property
    def thread_root(self) -> str:
        """The id of the first message of its thread: its root, or itself when it starts a
        topic (a topic's first message carries the topic's ``thread_id`` and no root)."""
        return self.root_id or (self.message_id if self.thread_id else "")

    def mentions_of(self, open_id: str) -> bool:
        """Whether the message @mentions ``open_id``."""
        return any(m.open_id == open_id for m in self.mentions)


@attrs.frozen
class CardClick:
    """A member's click on a card button (a ``card.action.trigger`` event).

    Attributes:
        operator_id: Who clicked (``open_id``).
        value: The button's callback value (an object the card carried).
        message_id: The card's message.
        chat_id: Its chat.
    """

    operator_id: str
    value: Mapping[str, Any]
    message_id: str
    chat_id: str


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ms(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def mentions_of(raw: object) -> tuple[Mention, ...]:
    """The ``mentions`` list of an event or listed message."""
    found = []
    for item in raw if isinstance(raw, list) else []:
        item = _dict(item)
        ident = item.get("id")
        open_id = _str(_dict(ident).get("open_id")) if isinstance(ident, dict) else _str(ident)
        key = _str(item.get("key"))
        if key and open_id:
            found.append(Mention(key, open_id, _str(item.get("name"))))
    return tuple(found)


#: The message types whose text or files the bridge reads (docs im-v1/message content).
READABLE_TYPES = frozenset({"text", "post", "image", "file", "media", "audio"})


def content_of(msg_type: str, content: str, mentions: tuple[Mention, ...],
               message_id: str = "") -> tuple[str, tuple[LarkFile, ...]]:
    """A message's readable text and files from its type and ``content`` JSON string.

    Args:
        msg_type: ``text``, ``post``, ``image``, ``file``, ...
        content: The ``content`` JSON string as the platform sends it.
        mentions: Its mentions (their ``@_user_N`` keys become ``@name``).
        message_id: For naming an image that has no file name.

    Returns:
        ``(text, files)``; a type the bridge does not read gives ``[<type>]`` and no files.
    """
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        return f"[{msg_type or 'message'}: unreadable content]", ()
    body = _dict(body)
    files: list[LarkFile] = []
    if msg_type == "text":
        text = _str(body.get("text"))
    elif msg_type == "post":
        text, files = _post_text(body)
    elif msg_type == "image":
        key = _str(body.get("image_key"))
        text = ""
        if key:
            files.append(LarkFile(key, f"{key}.png", "image"))
    elif msg_type in ("file", "media", "audio"):
        key = _str(body.get("file_key"))
        text = ""
        if key:
            files.append(LarkFile(key, _str(body.get("file_name")) or key, "file"))
    else:  # stickers, merged forwards, cards, shared chats...: a note, never a crash
        text = f"[{msg_type or 'message'}]"
    names = {m.key: m.name for m in mentions}
    text = _MENTION_KEY.sub(lambda found: f"@{names.get(found.group(0), 'someone')}", text)
    return text.strip(), tuple(files)


def _post_text(body: dict[str, Any]) -> tuple[str, list[LarkFile]]:
    """A rich-text post's text and files (``{"title", "content": [[element...]...]}``, or
    the same under a locale key such as ``zh_cn``)."""
    if "content" not in body:
        body = next((_dict(v) for v in body.values() if isinstance(v, dict)), {})
    lines = [_str(body.get("title"))] if body.get("title") else []
    files: list[LarkFile] = []
    paragraphs = body.get("content")
    for paragraph in paragraphs if isinstance(paragraphs, list) else []:
        parts: list[str] = []
        for element in paragraph if isinstance(paragraph, list) else []:
            element = _dict(element)
            tag = element.get("tag")
            if tag in ("text", "md", "a", "code_block"):
                parts.append(_str(element.get("text")))
            elif tag == "at":
                parts.append(f"@{_str(element.get('user_name')) or _str(element.get('user_id'))}")
            elif tag == "img" and _str(element.get("image_key")):
                key = _str(element.get("image_key"))
                files.append(LarkFile(key, f"{key}.png", "image"))
            elif tag == "media" and _str(element.get("file_key")):
                key = _str(element.get("file_key"))
                files.append(LarkFile(key, _str(element.get("file_name")) or key, "file"))
        lines.append("".join(parts))
    return "\n".join(line for line in lines if line), files


def message_of_event(event: Mapping[str, Any]) -> LarkMessage | None:
    """The message of an ``im.message.receive_v1`` event's ``event`` object; None when
    it lacks the ids a message needs (its own, its chat's, its sender's)."""
    message = _dict(event.get("message"))
    sender = _dict(event.get("sender"))
    sender_id = _dict(sender.get("sender_id"))
    message_id, chat_id = _str(message.get("message_id")), _str(message.get("chat_id"))
    author = _str(sender_id.get("open_id")) or _str(sender_id.get("app_id"))
    if not message_id or not chat_id or not author:
        return None
    mentions = mentions_of(message.get("mentions"))
    msg_type = _str(message.get("message_type"))
    content = _str(message.get("content"))
    text, files = content_of(msg_type, content, mentions, message_id)
    return LarkMessage(
        message_id=message_id, chat_id=chat_id, chat_type=_str(message.get("chat_type")),
        sender_id=author, sender_type=_str(sender.get("sender_type")) or "user",
        msg_type=msg_type, text=text,
        create_ms=_ms(message.get("create_time")), root_id=_str(message.get("root_id")),
        parent_id=_str(message.get("parent_id")), thread_id=_str(message.get("thread_id")),
        mentions=mentions, files=files, broken=not _is_object(content))


def message_of_item(item: Mapping[str, Any], chat_type: str = "") -> LarkMessage | None:
    """A message of a ``GET im/v1/messages`` page; None when deleted or without ids
    (its own, its chat's, its sender's)."""
    if item.get("deleted"):
        return None
    message_id, chat_id = _str(item.get("message_id")), _str(item.get("chat_id"))
    sender = _dict(item.get("sender"))
    if not message_id or not chat_id or not _str(sender.get("id")):
        return None
    mentions = mentions_of(item.get("mentions"))
    msg_type = _str(item.get("msg_type"))
    content = _str(_dict(item.get("body")).get("content"))
    text, files = content_of(msg_type, content, mentions, message_id)
    return LarkMessage(
        message_id=message_id, chat_id=chat_id, chat_type=chat_type,
        sender_id=_str(sender.get("id")), sender_type=_str(sender.get("sender_type")) or "user",
        msg_type=msg_type, text=text, create_ms=_ms(item.get("create_time")),
        root_id=_str(item.get("root_id")), parent_id=_str(item.get("parent_id")),
        thread_id=_str(item.get("thread_id")), mentions=mentions, files=files,
        broken=not _is_object(content))


def _is_object(content: str) -> bool:
    """Whether ``content`` is a JSON object, as every message's content is."""
    try:
        return isinstance(json.loads(content), dict)
    except ValueError:
        return False


def click_of(event: Mapping[str, Any]) -> CardClick | None:
    """The click of a ``card.action.trigger`` event's ``event`` object; None when it lacks
    the operator, the value object or the message."""
    operator = _dict(event.get("operator"))
    action = _dict(event.get("action"))
    context = _dict(event.get("context"))
    value = action.get("value")
    operator_id = _str(operator.get("open_id"))
    message_id = _str(context.get("open_message_id"))
    if not operator_id or not isinstance(value, dict) or not message_id:
        return None
    return CardClick(operator_id, value, message_id, _str(context.get("open_chat_id")))


def iso_of(create_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC text."""
    return datetime.datetime.fromtimestamp(create_ms / 1000, tz=datetime.UTC).isoformat()


def position_of(create_ms: int, message_id: str) -> int:
    """A message's position in its chat: its time in microseconds, ties broken by its id
    (two messages of one millisecond keep a stable order)."""
    return create_ms * 1000 + (sum(message_id.encode()) % 1000)
