"""An identity on the in-memory server: its login session, its access, its outbound calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from adapters.chat.memory.server import MemoryServer
from bridge.errors import TooLarge
from bridge.model import Attachment, Control, Target
from bridge.platform import Access


@attrs.frozen
class MemoryAccess:
    """An identity's access to one space (:class:`bridge.platform.Access`).

    Attributes:
        token: The bearer token (never logged).
        user_id: The identity's user id.
        issued_at: Epoch seconds when the token was obtained.
    """

    token: str = attrs.field(repr=False)
    user_id: str
    issued_at: float


@attrs.frozen
class MemorySession:
    """One login of an identity (:class:`bridge.platform.Session`).

    Attributes:
        user_name: The identity's display name.
        issued_at: Epoch seconds of the login.
        user_id: The identity's user id.
        token: The token of the login (never logged).
        spaces: The spaces the identity was in at login.
    """

    user_name: str
    issued_at: float
    user_id: str
    token: str = attrs.field(repr=False)
    spaces: frozenset[str]

    def access(self, space: str) -> MemoryAccess | None:
        """The access to ``space``, or None when the identity is not in it."""
        if space not in self.spaces:
            return None
        return MemoryAccess(self.token, self.user_id, self.issued_at)

    def holds(self, token: str) -> bool:
        """Whether ``token`` is this login's."""
        return token == self.token


class MemoryClient:
    """Outbound calls of one identity in one space (:class:`bridge.platform.ChatClient`).

    Each call presents the access's token: an expired one raises
    :class:`bridge.errors.Unauthorized`. Errors are the server's
    :mod:`bridge.errors` classes.

    Args:
        server: The server.
        access: The identity's access.
    """

    def __init__(self, server: MemoryServer, access: Access) -> None:
        self.server = server
        self.access = access

    def _me(self) -> str:
        return self.server.authenticate(self.access.token)

    def post(self, target: Target, text: str, *, idempotency_key: str,
             controls: Sequence[Control] = ()) -> str:
        """Post ``text`` (with buttons: ``controls``) to ``target`` carrying
        ``idempotency_key``; return the message id."""
        return self.server.post(target.channel, self._me(), text, thread=target.thread,
                                key=idempotency_key, controls=controls).id

    def update(self, target: Target, message_id: str, text: str, *,
               controls: Sequence[Control] = ()) -> None:
        """Replace the text and the buttons of a message the identity posted."""
        self.server.edit(target.channel, message_id, self._me(), text, controls=controls)

    def delete(self, target: Target, message_id: str) -> None:
        """Delete a message the identity posted."""
        self.server.delete(target.channel, message_id, self._me())

    def react(self, target: Target, message_id: str, reaction: str, *,
              on: bool = True) -> None:
        """Add (``on``) or remove the identity's ``reaction`` on a message (idempotent)."""
        self.server.react(target.channel, message_id, self._me(), reaction, on=on)

    def upload(self, target: Target, path: Path, *, title: str,
               idempotency_key: str) -> str:
        """Post the file at ``path`` (named as it is) with ``title`` as its text.

        Returns:
            The id of the message that carries the file (:meth:`find_posted` finds
            it by ``idempotency_key``).

        Raises:
            OSError: ``path`` cannot be read.
        """
        content = path.read_bytes()
        return self.server.post(target.channel, self._me(), title, thread=target.thread,
                                key=idempotency_key, files={path.name: content}).id

    def fetch(self, attachment: Attachment, dest: Path, *, max_bytes: int) -> Path:
        """Write a member's file (``attachment.ref`` is its file id) to ``dest``.

        Raises:
            bridge.errors.TooLarge: The file is over ``max_bytes`` (nothing is written).
            bridge.errors.NotFound: No such file (or its message was deleted).
        """
        file, content = self.server.download(attachment.ref, self._me())
        if file.size_bytes > max_bytes:
            raise TooLarge(f"file {file.name!r} is {file.size_bytes} bytes, over {max_bytes}")
        dest.write_bytes(content)
        return dest

    def find_posted(self, target: Target, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None) -> str | None:
        """The id of the identity's message in ``target`` that carries ``idempotency_key``.

        Searches the messages after position ``after_seq`` (and not created before
        ``not_before``), by key only, never by text.

        Returns:
            The message id, or None when no such post landed.
        """
        me = self._me()
        for message in self.server.history(target.channel, me, after=after_seq):
            if (message.author == me and message.key == idempotency_key
                    and message.thread == target.thread
                    and (not_before is None or message.created_at >= not_before)):
                return message.id
        return None

    def notify(self, target: Target, user_id: str, text: str) -> None:
        """Show ``text`` to ``user_id`` only (the server keeps it apart from the channel).

        Raises:
            bridge.errors.NotFound: no such channel.
            bridge.errors.Forbidden: the identity or the member is not in the channel.
        """
        self.server.notify(target.channel, self._me(), user_id, text)

    def set_busy(self, busy: bool) -> None:
        """Show the identity as busy or idle."""
        self.server.set_presence(self._me(), busy)
