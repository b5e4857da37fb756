"""A Slack app's outbound calls as the chat port's :class:`bridge.platform.ChatClient`.

Posts are ``chat.postMessage`` in the target's thread, each carrying its
idempotency key in message ``metadata`` (docs messaging/message-metadata), so
"did it land?" looks the key up in history, never the text. Buttons are Block
Kit ``actions`` (docs reference/block-kit/blocks/actions-block). Files go up
with slack-sdk's ``files_upload_v2`` and come down from ``url_private`` with the
bot token (without it Slack answers an HTML login page: docs
messaging/working-with-files).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from slack_sdk.web import SlackResponse

from adapters.chat.slack import events, render
from adapters.chat.slack.api import TIMEOUT_S, translated, web_client
from adapters.chat.slack.session import SlackAccess
from bridge.errors import BadRequest, NotFound, TooLarge
from bridge.model import Attachment, Control, Target
from bridge.platform import Access

log = logging.getLogger(__name__)

#: Seconds :meth:`SlackClient.upload` waits for Slack to share the file into the channel.
SHARE_WAIT_S = 3.0
#: History pages read by "did it land?" (200 messages each).
FIND_PAGES = 10
#: Seconds before a piece's recorded first try that "did it land?" still searches.
FIND_SLACK_S = 5.0


def _keys(message: Mapping[str, Any]) -> set[str]:
    """The idempotency keys a message carries: its metadata's, its files' titles."""
    keys = {file.get("title") for file in message.get("files") or [] if isinstance(file, dict)}
    keys.add(render.key_of(message))
    return {key for key in keys if isinstance(key, str) and key}


class SlackClient:
    """Outbound calls of one Slack app (:class:`bridge.platform.ChatClient`).

    Args:
        api_url: The Web API base URL.
        access: The app's access (its bot token and ids).
    """

    def __init__(self, api_url: str, access: Access) -> None:
        assert isinstance(access, SlackAccess)
        self.access = access
        self.web = web_client(api_url, access.token)

    def post(self, target: Target, text: str, *, idempotency_key: str,
             controls: Sequence[Control] = ()) -> str:
        """``chat.postMessage`` into ``target`` with the key in its metadata; its ts.

        Raises:
            bridge.errors.ChatError: see :func:`adapters.chat.slack.api.translated`
                (a server error or no answer is ambiguous: the post may have landed).
        """
        params: dict[str, Any] = {"channel": target.channel, "text": text,
                                  "metadata": render.answer_metadata(idempotency_key),
                                  "unfurl_links": False, "unfurl_media": False}
        if target.thread:
            params["thread_ts"] = target.thread
        if controls:
            params["blocks"] = render.status_blocks(text, controls)
        with translated(f"chat.postMessage to {target.channel}", ambiguous=True):
            answer = self.web.chat_postMessage(**params)
        return str(answer.get("ts", ""))

    def update(self, target: Target, message_id: str, text: str, *,
               controls: Sequence[Control] = ()) -> None:
        """``chat.update``: new text, and the buttons (none takes them off)."""
        with translated(f"chat.update in {target.channel}"):
            self.web.chat_update(channel=target.channel, ts=message_id, text=text,
                                 blocks=render.status_blocks(text, controls) if controls else [])

    def delete(self, target: Target, message_id: str) -> None:
        """``chat.delete`` of one of the bot's messages."""
        with translated(f"chat.delete in {target.channel}"):
            self.web.chat_delete(channel=target.channel, ts=message_id)

    def react(self, target: Target, message_id: str, reaction: str, *,
              on: bool = True) -> None:
        """``reactions.add``/``.remove``; one already there (or already gone) is no error."""
        call = self.web.reactions_add if on else self.web.reactions_remove
        try:
            with translated(f"reactions in {target.channel}"):
                call(channel=target.channel, timestamp=message_id, name=reaction)
        except BadRequest as exc:
            if not any(code in str(exc) for code in ("already_reacted", "no_reaction")):
                raise

    def upload(self, target: Target, path: Path, *, title: str,
               idempotency_key: str) -> str:
        """``files_upload_v2`` of the file at ``path`` into ``target`` with ``title`` as the
        message's text; the ts of the message that carries it (the file id while Slack
        has not shared it yet).

        A file carries no message metadata, so its *title* is the idempotency
        key (:meth:`find_posted` matches it); members see ``title`` as the
        message's text and the file by its name.

        Raises:
            OSError: ``path`` cannot be read.
            bridge.errors.Forbidden: the app may not upload there (``missing_scope``:
                grant ``files:write``).
        """
        params: dict[str, Any] = {"channel": target.channel, "file": str(path),
                                  "filename": path.name, "title": idempotency_key,
                                  "initial_comment": title}
        if target.thread:
            params["thread_ts"] = target.thread
        with translated(f"files_upload_v2 to {target.channel}", ambiguous=True):
            answer = self.web.files_upload_v2(**params)
        file = answer.get("file")
        file_id = str(file.get("id", "")) if isinstance(file, dict) else ""
        # Slack shares the file into the channel after answering: wait for the message.
        deadline = time.monotonic() + SHARE_WAIT_S
        while True:
            landed = self.find_posted(target, idempotency_key, not_before=time.time() - 60)
            if landed is not None or time.monotonic() > deadline:
                return landed or file_id
            time.sleep(0.2)

    def fetch(self, attachment: Attachment, dest: Path, *, max_bytes: int) -> Path:
        """Download a member's file (``attachment.ref`` is its ``url_private``) to ``dest``.

        Raises:
            bridge.errors.TooLarge: it is over ``max_bytes`` (nothing is kept).
            bridge.errors.NotFound: Slack has no such file.
            bridge.errors.BadRequest: Slack answered a page, not the file (the token
                was not accepted for it).
        """
        if attachment.size_bytes > max_bytes:
            raise TooLarge(f"file {attachment.name!r} is {attachment.size_bytes} bytes, "
                           f"over {max_bytes}")
        with requests.get(attachment.ref, headers={"Authorization": f"Bearer {self.access.token}"},
                          stream=True, timeout=TIMEOUT_S) as answer:
            if answer.status_code == 404:
                raise NotFound(f"file {attachment.name!r}: Slack has no such file")
            if answer.status_code >= 400:
                raise BadRequest(f"file {attachment.name!r}: HTTP {answer.status_code}")
            if "text/html" in answer.headers.get("Content-Type", "") and \
                    "html" not in attachment.mime_type:
                raise BadRequest(f"file {attachment.name!r}: Slack answered a login page "
                                 "(the bot token was not accepted for it)")
            size = 0
            with dest.open("wb") as out:
                for chunk in answer.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        break
                    out.write(chunk)
        if size > max_bytes:
            dest.unlink(missing_ok=True)
            raise TooLarge(f"file {attachment.name!r} is over {max_bytes} bytes")
        return dest

    def find_posted(self, target: Target, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None) -> str | None:
        """The ts of the bot's message in ``target`` whose metadata carries the key.

        Reads the thread's replies (or the channel's history) with metadata,
        newest first, back to ``after_seq`` (a ts as :func:`events.ts_position`)
        or ``not_before`` (epoch seconds), at most :data:`FIND_PAGES` pages.
        """
        oldest_s = max(after_seq / 1_000_000, (not_before or 0.0) - FIND_SLACK_S, 0.0)
        params: dict[str, Any] = {"channel": target.channel, "include_all_metadata": True,
                                  "limit": 200}
        if oldest_s:
            params["oldest"] = events.ts_text(oldest_s)
        call: Callable[..., SlackResponse] = self.web.conversations_history
        if target.thread:
            call, params["ts"] = self.web.conversations_replies, target.thread
        cursor = ""
        for _ in range(FIND_PAGES):
            try:
                with translated(f"history of {target.channel}"):
                    page = call(cursor=cursor or None, **params)
            except NotFound:
                return None  # the thread is gone: nothing landed in it
            for message in page.get("messages") or []:
                if not isinstance(message, dict) or idempotency_key not in _keys(message):
                    continue
                if message.get("user") == self.access.user_id or (
                        self.access.bot_id and message.get("bot_id") == self.access.bot_id):
                    return str(message.get("ts", ""))
            cursor = events.next_cursor(page)
            if not cursor:
                return None
        log.warning("find_posted in %s: key not found in %d pages; taken as not landed",
                    target.channel, FIND_PAGES)
        return None

    def notify(self, target: Target, user_id: str, text: str) -> None:
        """``chat.postEphemeral``: ``text`` for ``user_id`` only, in the target's thread."""
        params: dict[str, Any] = {"channel": target.channel, "user": user_id, "text": text}
        if target.thread:
            params["thread_ts"] = target.thread
        with translated(f"chat.postEphemeral in {target.channel}"):
            self.web.chat_postEphemeral(**params)

    def set_busy(self, busy: bool) -> None:
        """Nothing: a bot has no presence it can set (``users.setPresence`` needs a user
        token)."""


__all__ = ["SlackClient"]
