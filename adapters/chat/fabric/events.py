"""What the Fabric intake tells itself: socket events, timers and author lookups."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Connect:
    """Timer: try to (re)connect; ignored unless ``generation`` is current."""

    generation: int


@attrs.frozen
class SocketEvent:
    """Socket thread: one server event on connection ``generation`` (it waits in
    the intake's :class:`~adapters.chat.inflow.Inflow`)."""

    generation: int
    name: str
    payload: Any


@attrs.frozen
class EventsWaiting:
    """Socket thread: socket events wait in the intake's inflow (its doorbell)."""


@attrs.frozen
class SocketClosed:
    """Socket thread: connection ``generation`` ended."""

    generation: int
    reason: str


@attrs.frozen
class Resync:
    """Timer: refresh the channel list (every ``resync_s``)."""

    generation: int


@attrs.frozen
class AuthorResolved:
    """Chat loop: an author lookup ended.

    Attributes:
        user_id: The author looked up.
        found: ``(display name, kind)``, or None when there is no answer.
        failed: True when the lookup failed (network, 5xx, 401): it is retried;
            False with ``found`` None: the guild does not know the user.
        error: What went wrong, for the log.
        unauthorized: True when the guild refused the token (401): the token is
            renewed before the retry.
    """

    user_id: str
    found: tuple[str, str] | None
    failed: bool = False
    error: str = ""
    unauthorized: bool = False


@attrs.frozen
class AuthorRetry:
    """Timer: look ``user_id`` up again."""

    user_id: str
