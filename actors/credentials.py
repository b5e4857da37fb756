"""Credentials: one per agent identity on one platform; logs in, caches, sets presence."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import pykka

from actors.messages import (
    GetAccess,
    Init,
    Invalidate,
    PresenceSettle,
    RefreshLogin,
    RunActive,
)
from actors.runtime import PooledSupervisedActor, Runtime, send
from actors.timers import IdleTimer
from bridge.config import AgentSettings
from bridge.errors import ChatError, NotFound, RetryLater
from bridge.model import ConnectionKey
from bridge.platform import Access, ChatPlatform, Session

log = logging.getLogger(__name__)

#: Seconds to wait for the credentials actor when the cache has no usable access.
ACCESS_ASK_TIMEOUT_S = 15.0
#: The share of the session lifetime after which the identity logs in again.
REFRESH_AT = 0.8
#: Seconds the run count must hold before the presence is set (coalesces bursts).
PRESENCE_SETTLE_S = 1.0


def credentials_id(connection: ConnectionKey) -> str:
    """The child id of the credentials actor of ``connection``'s identity."""
    return f"credentials:{connection.platform}:{connection.agent}"


def access_of(runtime: Runtime, connection: ConnectionKey) -> Access:
    """The identity's access to ``connection``'s space: from the shared cache, else asked.

    The ask (a blocking round trip to the credentials actor, which logs in)
    happens only on a cold or expired cache, never on every post.

    Raises:
        bridge.errors.RetryLater: the credentials actor is restarting or did not answer.
        bridge.errors.LoginRefused, bridge.errors.NotFound: from the login.
    """
    cached = runtime.credentials.get(connection)
    if cached is not None:
        return cached
    credentials = runtime.directory.get(credentials_id(connection))
    if credentials is None:
        raise RetryLater("credentials are restarting")
    try:
        return cast(Access, credentials.ask(GetAccess(connection.space),
                                            timeout=ACCESS_ASK_TIMEOUT_S))
    except (pykka.Timeout, pykka.ActorDeadError):
        raise RetryLater("credentials did not answer") from None


def invalidate(runtime: Runtime, connection: ConnectionKey, token: str) -> None:
    """Report a token the platform refused: dropped from the cache, the next access logs in."""
    runtime.credentials.invalidate(connection, token)
    send(runtime, credentials_id(connection), Invalidate(token))


class Credentials(PooledSupervisedActor):
    """One agent identity on one platform: its login session and its presence.

    Answers ``GetAccess(space)`` asks with the identity's access to that space,
    logging in on a miss, after the platform's session lifetime
    (``limits.session_ttl_s``), or after ``Invalidate`` of a token in use. Every
    access it obtains goes into the runtime's credential cache, which gateways
    and deliveries read without asking. It logs in at start and again after
    :data:`REFRESH_AT` of the session lifetime, and at once after a refused
    token, filling the cache for all its spaces: a reader asks only when a
    login failed.
    Presence is ``busy`` while the identity has runs in a space and ``idle`` after.

    It is a pooled actor (:mod:`actors.pool`): idle nearly always, it costs no
    thread. A login or a presence call holds one pool worker while it runs (at
    most the platform's HTTP timeouts). Nothing it handles asks another actor,
    so no cycle of asks can pass through it; a pooled asker (a delivery) counts
    as blocked while it waits, so the pool starts another worker to run this
    actor (``tests/test_pool.py``), and a thread-based asker (a gateway, a
    runner) waits at most :data:`ACCESS_ASK_TIMEOUT_S`.

    Args:
        runtime: Shared services.
        child_id: ``credentials:<platform>:<agent>``.
        platform: The chat platform.
        agent: The identity's settings.
        spaces: The spaces its gateways connect to (their access is kept warm).

    Asks raise :class:`bridge.errors.LoginRefused` for refused credentials,
    :class:`bridge.errors.RetryLater` when the platform is unreachable, and
    :class:`bridge.errors.NotFound` when the identity has no access to the space.
    """

    def __init__(self, runtime: Runtime, child_id: str, platform: ChatPlatform,
                 agent: AgentSettings, spaces: Sequence[str] = ()) -> None:
        super().__init__(runtime, child_id)
        self.platform = platform
        self.agent = agent
        self.spaces = tuple(spaces)
        self.refresh_generation = 0
        self.ttl_s = platform.limits.session_ttl_s
        self.session: Session | None = None
        self.logins = 0
        self.active: dict[str, int] = {}
        self.shown: dict[str, bool] = {}
        # One settle timer per space, pending at most once (IdleTimer): a burst of
        # runs does not put a timer, a wake-up and a turn behind every run.
        self.settle_timers: dict[str, IdleTimer] = {}

    def on_receive(self, message: Any) -> Any:
        """Handle ``Init``, ``GetAccess`` (ask), ``Invalidate``, ``RunActive``."""
        if isinstance(message, Init):
            self._refresh()
            return None
        if isinstance(message, RefreshLogin):
            if message.generation == self.refresh_generation:
                self._refresh()
            return None
        if isinstance(message, GetAccess):
            return self._access(message.space)
        if isinstance(message, RunActive):
            self._presence(message)
            return None
        if isinstance(message, PresenceSettle):
            self._settle(message)
            return None
        if isinstance(message, Invalidate):
            if self.session is not None and self.session.holds(message.token):
                log.info("credentials %s@%s: token refused, logging in again",
                         self.agent.name, self.platform.name)
                self.session = None
                self._refresh()
            return None
        return super().on_receive(message)

    def _presence(self, message: RunActive) -> None:
        """Count runs per space; the presence follows after :data:`PRESENCE_SETTLE_S`.

        Waiting lets a burst of short runs (echo answers in milliseconds) cost
        no presence calls at all, while a run that lasts shows ``busy``.
        """
        self.active[message.space] = max(0, self.active.get(message.space, 0) + message.delta)
        timer = self.settle_timers.get(message.space)
        if timer is None:
            timer = IdleTimer(self.runtime.timers, self.actor_ref, PRESENCE_SETTLE_S,
                              PresenceSettle(message.space))
            self.settle_timers[message.space] = timer
        timer.touch()

    def _settle(self, message: PresenceSettle) -> None:
        timer = self.settle_timers.get(message.space)
        if timer is None or not timer.expired():  # a change since: it waits again
            return
        busy = bool(self.active.get(message.space, 0))
        if self.shown.get(message.space, False) == busy:
            return
        try:
            self.platform.client(self._access(message.space)).set_busy(busy)
            self.shown[message.space] = busy
        except ChatError as exc:
            log.info("credentials %s@%s: presence %s not set in %s: %s", self.agent.name,
                     self.platform.name, "busy" if busy else "idle", message.space, exc)

    def _refresh(self) -> None:
        """Log in now and fill the cache for every space of the identity, then schedule
        the next login before the session lifetime ends, so that gateways and
        deliveries find a fresh access in the cache instead of asking (a failed
        login is logged; the next ask or the next refresh tries again)."""
        self.refresh_generation += 1
        self.runtime.timers.schedule(self.ttl_s * REFRESH_AT, self.actor_ref,
                                     RefreshLogin(self.refresh_generation))
        try:
            self.session = self._login()
        except ChatError:
            return
        for space in self.spaces:
            access = self.session.access(space)
            if access is not None:
                self.runtime.credentials.put(
                    ConnectionKey(self.platform.name, self.agent.name, space), access)

    def _access(self, space: str) -> Access:
        now = time.time()
        if self.session is None or now - self.session.issued_at >= self.ttl_s:
            self.session = self._login()
        access = self.session.access(space)
        if access is None:
            raise NotFound(f"identity {self.agent.name} has no access to {self.platform.name} "
                           f"space {space!r}")
        self.runtime.credentials.put(ConnectionKey(self.platform.name, self.agent.name, space),
                                     access)
        return access

    def _login(self) -> Session:
        try:
            session = self.platform.login(self.agent)
        except ChatError as exc:
            log.warning("credentials %s@%s: login failed: %s", self.agent.name,
                        self.platform.name, exc)
            raise
        self.logins += 1
        log.info("credentials %s@%s: logged in as %s (login #%d)", self.agent.name,
                 self.platform.name, session.user_name, self.logins)
        return session
