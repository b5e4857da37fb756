"""Outbound calls of one Feishu/Lark app (:class:`bridge.platform.ChatClient`).

- **Where.** A target without a thread is its chat (``POST im/v1/messages``,
  ``receive_id_type=chat_id``); a target with one is a reply to the thread's
  first message (``POST im/v1/messages/:id/reply``), in the topic
  (``reply_in_thread``) where the chat has topics (docs im-v1/message/reply).
- **Exactly once.** Every send carries a ``uuid`` derived from the piece's
  idempotency key (:func:`uuid_of`); the platform answers a repeated ``uuid``
  within an hour with the first message instead of a new one (docs
  im-v1/message/create, "uuid"). So "did it land?" is answered by sending again:
  :meth:`LarkClient.find_posted` says "not found" inside that hour and the
  runtime's next post with the same key is the same message. Never by text.
- **Fallback chain.** Text goes as a JSON 2.0 card (Markdown, buttons); a card
  the platform refuses as content (``230001``/``230099`` and other bad-request
  codes) goes as a rich-text ``post``, and a refused post as plain ``text``:
  the answer is never lost to a rendering failure.
- **Buttons** carry signed values (:mod:`adapters.chat.lark.buttons`).
- **Files** (``im:resource``): uploads go through ``im/v1/files`` or
  ``im/v1/images`` and are sent as a ``file``/``image`` message; a member's file
  is fetched with the message resource API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cachetools
from lark_oapi.api.im.v1 import (
    CreateFileRequest,
    CreateFileRequestBody,
    CreateImageRequest,
    CreateImageRequestBody,
    GetMessageResourceRequest,
)

from adapters.chat.lark import render
from adapters.chat.lark.api import LarkApi
from adapters.chat.lark.events import IMAGE_TYPES
from adapters.chat.lark.session import LarkAccess
from bridge.errors import BadRequest, ChatError, NotFound, TooLarge
from bridge.model import Attachment, Control, Target
from bridge.platform import Unsupported

log = logging.getLogger(__name__)

#: Receipt names of the config (Slack's emoji names by default) as Feishu/Lark
#: ``emoji_type`` values (docs im-v1/message-reaction/emojis-introduce); any other
#: name is sent as written, so a config may name any ``emoji_type``.
EMOJI = {"eyes": "GLANCE", "white_check_mark": "DONE", "heavy_check_mark": "DONE",
         "x": "THUMBSDOWN", "thumbsup": "THUMBSUP", "+1": "THUMBSUP", "ok": "OK"}
#: Largest upload the platform takes (bytes; docs im-v1/file/create: 30 MB).
MAX_UPLOAD_BYTES = 30 * 1024 * 1024
#: Chats whose mode is remembered (a topic chat's replies go in the topic).
CHAT_CACHE = 2000
#: Reaction ids remembered (a receipt is removed minutes after it was added).
REACTION_CACHE = 4096

#: Signs a control into the callback value its button carries: (control, target) -> value.
ButtonValue = Callable[[Control, Target], Mapping[str, str]]


def uuid_of(idempotency_key: str) -> str:
    """The send ``uuid`` of a piece: 32 hex characters of SHA-256 of its key (the
    platform takes at most 50 characters)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


class LarkClient:
    """Posts and edits as one app (see the module docstring).

    Args:
        access: The app's access.
        button_value: Makes a control's signed callback value; None: no buttons.
    """

    _chat_modes: cachetools.LRUCache[tuple[str, str], bool] = cachetools.LRUCache(CHAT_CACHE)
    _modes_lock = threading.Lock()
    #: The reaction ids of the app's own reactions, by (app, message, emoji type), so
    #: removing a receipt is one call, not a listing and a call.
    _reactions: cachetools.LRUCache[tuple[str, str, str], str] = cachetools.LRUCache(
        REACTION_CACHE)

    def __init__(self, access: LarkAccess, button_value: ButtonValue | None = None) -> None:
        self.access = access
        self.api: LarkApi = access.api()
        self.button_value = button_value

    # -- posting ---------------------------------------------------------------

    def post(self, target: Target, text: str, *, idempotency_key: str,
             controls: Sequence[Control] = ()) -> str:
        """Send ``text`` as a card (falling back to a post, then text); return its id.

        Raises:
            bridge.errors.ChatError: the platform refused every form, or could not be
                reached (``RetryLater``, ambiguous: the next try sends the same ``uuid``).
        """
        card = render.card(text, buttons=self._buttons(controls, target),
                           summary=text.split("\n", 1)[0])
        uuid = uuid_of(idempotency_key)
        forms = [("interactive", render.card_content(card)),
                 ("post", render.post_content(text)), ("text", render.text_content(text))]
        for number, (msg_type, content) in enumerate(forms):
            try:
                return self._send(target, msg_type, content, uuid if number == 0
                                  else uuid_of(f"{idempotency_key}:{msg_type}"))
            except (BadRequest, TooLarge) as exc:
                if number == len(forms) - 1:
                    raise
                log.warning("lark %s: a %s to %s was refused (%s); sending it as %s",
                            self.access.app_id, msg_type, target.channel, exc,
                            forms[number + 1][0])
        raise AssertionError("unreachable")  # pragma: no cover

    def send_card(self, target: Target, content: str, *, uuid: str) -> str:
        """Send an ``interactive`` message with ``content`` (a card, or a CardKit
        reference); return its id.

        Raises:
            bridge.errors.ChatError: the platform refused it.
        """
        return self._send(target, "interactive", content, uuid)

    def _send(self, target: Target, msg_type: str, content: str, uuid: str) -> str:
        if target.thread:
            data = self.api.call(
                "POST", "/open-apis/im/v1/messages/:message_id/reply",
                what=f"reply in {target.channel}", paths={"message_id": target.thread},
                body={"msg_type": msg_type, "content": content, "uuid": uuid,
                      "reply_in_thread": self._topics(target.channel)}, ambiguous=True)
        else:
            data = self.api.call(
                "POST", "/open-apis/im/v1/messages", what=f"send to {target.channel}",
                query=[("receive_id_type", "chat_id")],
                body={"receive_id": target.channel, "msg_type": msg_type, "content": content,
                      "uuid": uuid}, ambiguous=True)
        message_id = str(data.get("message_id", ""))
        if not message_id:
            raise BadRequest(f"send to {target.channel}: the answer named no message")
        return message_id

    def _topics(self, chat_id: str) -> bool:
        """Whether the chat has topics (replies there go in the topic); looked up once."""
        key = (self.access.app_id, chat_id)
        with self._modes_lock:
            known = self._chat_modes.get(key)
        if known is not None:
            return known
        try:
            data = self.api.call("GET", "/open-apis/im/v1/chats/:chat_id",
                                 what=f"chat {chat_id}", paths={"chat_id": chat_id})
        except ChatError as exc:
            log.info("lark %s: chat %s not looked up (%s): replying in place",
                     self.access.app_id, chat_id, exc)
            return False
        topics = data.get("chat_mode") == "topic" or data.get("group_message_type") == "thread"
        with self._modes_lock:
            self._chat_modes[key] = topics
        return topics

    def _buttons(self, controls: Sequence[Control], target: Target) -> list[dict[str, Any]]:
        if not controls:
            return []
        if self.button_value is None:
            raise Unsupported("this Feishu/Lark client signs no buttons")
        buttons = []
        for control in controls:
            try:
                buttons.append(render.button(control.label, self.button_value(control, target),
                                             name=control.name))
            except ValueError as exc:  # e.g. no one named who may press it: no button
                log.warning("lark %s: %s button not signed (%s): left out",
                            self.access.app_id, control.name, exc)
        return buttons

    def update(self, target: Target, message_id: str, text: str, *,
               controls: Sequence[Control] = ()) -> None:
        """Replace a card's text and buttons (``PATCH``); a post or text the fallback
        chain sent is replaced with ``PUT``.

        Raises:
            bridge.errors.ChatError: the platform refused both.
        """
        card = render.card(text, buttons=self._buttons(controls, target))
        try:
            self.api.call("PATCH", "/open-apis/im/v1/messages/:message_id",
                          what=f"edit {message_id}", paths={"message_id": message_id},
                          body={"content": render.card_content(card)})
            return
        except BadRequest as exc:
            log.info("lark %s: card edit of %s refused (%s): replacing it as a post",
                     self.access.app_id, message_id, exc)
        self.api.call("PUT", "/open-apis/im/v1/messages/:message_id",
                      what=f"replace {message_id}", paths={"message_id": message_id},
                      body={"msg_type": "post", "content": render.post_content(text)})

    def delete(self, target: Target, message_id: str) -> None:
        """Recall a message the app sent."""
        self.api.call("DELETE", "/open-apis/im/v1/messages/:message_id",
                      what=f"delete {message_id}", paths={"message_id": message_id})

    def react(self, target: Target, message_id: str, reaction: str, *,
              on: bool = True) -> None:
        """Add or remove the app's reaction (``reaction``: a name of :data:`EMOJI` or an
        ``emoji_type``)."""
        emoji = EMOJI.get(reaction, reaction)
        key = (self.access.app_id, message_id, emoji)
        if on:
            added = self.api.call("POST", "/open-apis/im/v1/messages/:message_id/reactions",
                                  what=f"react on {message_id}",
                                  paths={"message_id": message_id},
                                  body={"reaction_type": {"emoji_type": emoji}})
            if added.get("reaction_id"):
                with self._modes_lock:
                    self._reactions[key] = str(added["reaction_id"])
            return
        with self._modes_lock:
            known = self._reactions.pop(key, None)
        if known is not None:
            try:
                self.api.call(
                    "DELETE", "/open-apis/im/v1/messages/:message_id/reactions/:reaction_id",
                    what=f"unreact on {message_id}",
                    paths={"message_id": message_id, "reaction_id": known})
                return
            except (NotFound, BadRequest):  # gone already, or another id: list them
                pass
        data = self.api.call("GET", "/open-apis/im/v1/messages/:message_id/reactions",
                             what=f"reactions of {message_id}", paths={"message_id": message_id},
                             query=[("reaction_type", emoji)])
        for item in data.get("items") or []:
            operator = item.get("operator") if isinstance(item, dict) else None
            if isinstance(operator, dict) and operator.get("operator_type") == "app" and \
                    item.get("reaction_id"):
                self.api.call(
                    "DELETE", "/open-apis/im/v1/messages/:message_id/reactions/:reaction_id",
                    what=f"unreact on {message_id}",
                    paths={"message_id": message_id, "reaction_id": str(item["reaction_id"])})

    # -- files -----------------------------------------------------------------

    def upload(self, target: Target, path: Path, *, title: str, idempotency_key: str) -> str:
        """Upload ``path`` (an image as an image) and send it; return the message id.

        A Feishu/Lark file message shows the file's name and no caption, so ``title``
        is not shown (docs im-v1/message content: ``file`` is ``{file_key}``).

        Raises:
            bridge.errors.TooLarge: the file is over :data:`MAX_UPLOAD_BYTES`.
            bridge.errors.Forbidden: the app lacks ``im:resource`` (the message names
                the console URL that grants it: :func:`adapters.chat.lark.api.grant_url`).
        """
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise TooLarge(f"{path.name} is {size} bytes; Feishu/Lark takes at most "
                           f"{MAX_UPLOAD_BYTES}")
        image = path.suffix.lower().lstrip(".") in IMAGE_TYPES
        with path.open("rb") as handle:
            if image:
                request = CreateImageRequest.builder().request_body(
                    CreateImageRequestBody.builder().image_type("message").image(handle)
                    .build()).build()
                response = self.api.typed(self.api.client.im.v1.image.create, request,
                                          what=f"upload {path.name}")
                content = json.dumps({"image_key": response.data.image_key})
            else:
                request = CreateFileRequest.builder().request_body(
                    CreateFileRequestBody.builder().file_type("stream").file_name(path.name)
                    .file(handle).build()).build()
                response = self.api.typed(self.api.client.im.v1.file.create, request,
                                          what=f"upload {path.name}")
                content = json.dumps({"file_key": response.data.file_key})
        return self._send(target, "image" if image else "file", content,
                          uuid_of(idempotency_key))

    def fetch(self, attachment: Attachment, dest: Path, *, max_bytes: int) -> Path:
        """Download a member's file (``attachment.ref``: ``<message id>/<kind>/<key>``).

        Raises:
            bridge.errors.TooLarge: over ``max_bytes``.
            bridge.errors.BadRequest: a reference this adapter did not make.
        """
        if attachment.size_bytes and attachment.size_bytes > max_bytes:
            raise TooLarge(f"{attachment.name} is {attachment.size_bytes} bytes "
                           f"(limit {max_bytes})")
        message_id, _, rest = attachment.ref.partition("/")
        kind, _, key = rest.partition("/")
        if not message_id or kind not in ("image", "file") or not key:
            raise BadRequest(f"not a Feishu/Lark file reference: {attachment.ref[:80]}")
        request = GetMessageResourceRequest.builder().message_id(message_id).file_key(key) \
            .type(kind).build()
        response = self.api.typed(self.api.client.im.v1.message_resource.get, request,
                                  what=f"download {attachment.name}")
        stream = response.file
        written = 0
        with dest.open("wb") as out:
            while True:
                chunk = stream.read(65536)
                if not chunk:
                    break
                written += len(chunk)
                if written > max_bytes:
                    out.close()
                    dest.unlink(missing_ok=True)
                    raise TooLarge(f"{attachment.name} is over {max_bytes} bytes")
                out.write(chunk)
        return dest

    # -- the rest of the port --------------------------------------------------

    def find_posted(self, target: Target, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None) -> str | None:
        """Always None: a send again with the piece's key carries the same ``uuid``, which
        the platform answers with the message that landed (see the module docstring)."""
        return None

    def notify(self, target: Target, user_id: str, text: str) -> None:
        """Feishu/Lark's messages for one member only need a card of their own
        (``ephemeral/v1``): not used.

        Raises:
            Unsupported: always.
        """
        raise Unsupported("Feishu/Lark: no message for one member only")

    def set_busy(self, busy: bool) -> None:
        """Bots have no presence on Feishu/Lark: nothing to do."""


def ref_of(message_id: str, kind: str, key: str) -> str:
    """An :class:`~bridge.model.Attachment` reference for :meth:`LarkClient.fetch`."""
    return f"{message_id}/{kind}/{key}"

