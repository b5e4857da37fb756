"""What an intake shows and does after a failed connect (shared by the chat adapters).

:class:`ReconnectingIntake` is the lifecycle the Slack, Feishu/Lark and
in-memory intakes share: closing, a retry with backoff after a drop or a failed
connect (told back to the intake as :class:`Connect` of its generation), and
the binding that covers a channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import attrs

from bridge.backoff import backoff_delay
from bridge.config import Binding
from bridge.errors import ChatError, LoginRefused, NotFound, Unauthorized
from bridge.names import ResolvedNames
from bridge.platform import Access, IntakeHost

log = logging.getLogger(__name__)


@attrs.frozen
class Connect:
    """Time to (re)connect; the intake ignores it unless ``generation`` is its current one."""

    generation: int


class Named(Protocol):
    """A channel as a binding matches it: its id and its name."""

    @property
    def id(self) -> str:
        """The platform's channel id."""

    @property
    def name(self) -> str:
        """The channel's name."""


class ReconnectingIntake:
    """The lifecycle an intake shares with the others (see the module docstring).

    A subclass sets the attributes below in its ``__init__`` and provides
    :meth:`_disconnect` and :meth:`_publish`; it handles :class:`Connect` by
    connecting when the generation is current.
    """

    host: IntakeHost
    bindings: Sequence[Binding]
    names: ResolvedNames
    generation: int
    state: str
    reason: str
    attempts: int
    retry_s: float
    retry_max_s: float

    def close(self) -> None:
        """Disconnect; events still queued are ignored (a new generation)."""
        self.generation += 1
        self._disconnect()
        self.state, self.reason = "stopped", ""
        try:
            self._publish()
        except Exception:  # close must not raise
            log.exception("intake %s: publishing the stop failed", self.host.connection)

    def _disconnect(self) -> None:
        """Close the platform connection, if any (never raises)."""
        raise NotImplementedError

    def _publish(self) -> None:
        """Show the intake's state on the board."""
        raise NotImplementedError

    def _retry_delay(self) -> float:
        """Seconds before the next connect: ``retry_s`` doubling to ``retry_max_s``, jittered."""
        return backoff_delay(self.attempts, first_s=self.retry_s, max_s=self.retry_max_s)

    def _retry(self, state: str, reason: str) -> None:
        """Show ``state`` with ``reason``; connect again after the backoff (not once stopping)."""
        if self.host.stopping:
            return
        self.attempts += 1
        delay = self._retry_delay()
        self.state, self.reason = state, reason
        log.warning("intake %s %s: %s; retry in %.1fs", self.host.connection, state, reason,
                    delay)
        self._publish()
        self.host.schedule(delay, Connect(self.generation))

    def _binding(self, channel: Named) -> Binding | None:
        """The first binding that covers ``channel`` (by id or name), or None."""
        return next((b for b in self.bindings
                     if b.matches(channel.id, channel.name, self.names.channels)), None)


def connect_failure(exc: ChatError, host: IntakeHost, access: Access | None, *,
                    connected_once: bool) -> tuple[str, str]:
    """The intake's ``(state, reason)`` after a failed connect; a refused token is reported.

    Args:
        exc: Why the connect failed.
        host: The intake's host (told of a refused token, so the next access logs in).
        access: The access the connect used, if it got one.
        connected_once: Whether the intake was ever connected.

    Returns:
        ``failed`` for refused credentials or a space the identity may not use (only
        a config change helps; it is still retried), else ``reconnecting`` (or
        ``connecting`` before the first connect), with ``exc`` as the reason.
    """
    if isinstance(exc, LoginRefused | NotFound):
        return "failed", str(exc)
    if isinstance(exc, Unauthorized) and access is not None:
        host.invalidate(access.token)
    return ("reconnecting" if connected_once else "connecting"), str(exc)
