"""Fabric's outbound calls as the chat port's :class:`bridge.platform.ChatClient`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import requests

from adapters.chat.fabric.aiopost import send_on_loop
from adapters.chat.fabric.rest import FabricGuild, GuildAccess, edit_request, post_request
from bridge.model import Attachment, Control, Target
from bridge.platform import Unsupported


class FabricClient:
    """Posts, edits, deletes, "did it land?" and presence as one identity in one guild.

    Fabric has no threads: a target's thread is ignored (the platform declares
    ``threads = False``, so the runtime never makes one). It has no reactions
    and takes no files: those calls raise :class:`bridge.platform.Unsupported`
    (its limits say so). Posts and edits go through the chat loop's aiohttp
    session (:mod:`adapters.chat.fabric.aiopost`); the other calls through
    ``requests``.

    Args:
        access: The identity's access to the guild.
        session: A requests session to reuse.
    """

    def __init__(self, access: GuildAccess, session: requests.Session | None = None) -> None:
        self.guild = FabricGuild(access, session)

    def post(self, target: Target, text: str, *, idempotency_key: str,
             controls: Sequence[Control] = ()) -> str:
        """Post ``text``; return the message id (empty when the guild gave none).

        Raises:
            Unsupported: ``controls`` given (Fabric has no buttons).
            bridge.errors.ChatError: typed by status (see :mod:`adapters.chat.fabric.rest`).
        """
        _no_controls(controls)
        posted = send_on_loop(self.guild.access, post_request(
            target.channel, text, idempotency_key=idempotency_key))
        found = posted.get("messageId") if isinstance(posted, dict) else None
        return found if isinstance(found, str) else ""

    def update(self, target: Target, message_id: str, text: str, *,
               controls: Sequence[Control] = ()) -> None:
        """Replace the text of one of the identity's messages.

        Raises:
            Unsupported: ``controls`` given (Fabric has no buttons).
        """
        _no_controls(controls)
        send_on_loop(self.guild.access, edit_request(target.channel, message_id, text))

    def delete(self, target: Target, message_id: str) -> None:
        """Delete one of the identity's messages.

        Raises:
            bridge.errors.ChatError: typed by status (403: not the author; 409: deleted
                already or the channel is closed).
        """
        self.guild.delete(target.channel, message_id)

    def react(self, target: Target, message_id: str, reaction: str, *,
              on: bool = True) -> NoReturn:
        """Fabric has no reactions.

        Raises:
            Unsupported: always.
        """
        raise Unsupported("Fabric has no reactions (its limits say reactions = False)")

    def upload(self, target: Target, path: Path, *, title: str,
               idempotency_key: str) -> NoReturn:
        """Fabric takes no files from the bridge.

        Raises:
            Unsupported: always.
        """
        raise Unsupported("Fabric takes no file uploads (its limits say files = False)")

    def fetch(self, attachment: Attachment, dest: Path, *, max_bytes: int) -> NoReturn:
        """The bridge fetches no files from Fabric.

        Raises:
            Unsupported: always.
        """
        raise Unsupported("Fabric files are not fetched (its limits say files = False)")

    def find_posted(self, target: Target, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None) -> str | None:
        """The id of the identity's message that carries ``idempotency_key``, if it landed.

        Fabric keeps the key as the message's nonce; the search pages the
        history back to ``after_seq`` or ``not_before`` (see
        :meth:`adapters.chat.fabric.rest.FabricGuild.find_posted`).
        """
        landed = self.guild.find_posted(target.channel, idempotency_key, after_seq=after_seq,
                                        not_before=not_before)
        if landed is None:
            return None
        found = landed.get("messageId")
        return found if isinstance(found, str) else ""

    def notify(self, target: Target, user_id: str, text: str) -> NoReturn:
        """Fabric has no messages for one member only.

        Raises:
            Unsupported: always.
        """
        raise Unsupported("Fabric cannot show a message to one member only")

    def set_busy(self, busy: bool) -> None:
        """Set the agent's presence to ``busy`` or ``idle``."""
        self.guild.set_presence("busy" if busy else "idle")


def _no_controls(controls: Sequence[Control]) -> None:
    """Refuse buttons: Fabric messages carry none (its limits say buttons = False)."""
    if controls:
        raise Unsupported("Fabric messages carry no buttons (its limits say buttons = False)")
