"""TokenCache: one per agent identity; logs in through Center and caches the session."""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.messages import GetAccess, Init, Invalidate, PresenceSettle, RunActive
from actors.runtime import Runtime, SupervisedActor
from adapters.chat.fabric.rest import (
    FabricCenter,
    FabricGuild,
    FabricSession,
    GuildAccess,
    http_session,
)
from adapters.chat.fabric.rules import SESSION_CACHE_TTL_S
from bridge.config import AgentSettings
from bridge.errors import ChatError, NotFound

log = logging.getLogger(__name__)

#: Seconds the run count must hold before the presence is set (coalesces bursts).
PRESENCE_SETTLE_S = 1.0


class TokenCache(SupervisedActor):
    """One agent identity: caches its Center session for at most 8 minutes, and sets
    its presence (``busy`` while it has runs in a guild, ``idle`` after).

    Replies to ``GetAccess(guild)`` asks with a :class:`GuildAccess`, logging
    in on a miss, after the TTL, or after ``Invalidate`` of a token in use.
    The 8-minute TTL is the Fabric plugins' ``TOKEN_TTL_MS``; guild tokens
    live 900 s, so a cached one is never near expiry.

    Args:
        runtime: Shared services.
        child_id: ``tokens:<agent>``.
        agent: The identity's settings (its API key).
        ttl_s: Session cache lifetime in seconds.

    Asks raise :class:`bridge.errors.LoginRefused` for a bad key,
    :class:`bridge.errors.RetryLater` when Center is unreachable, and
    :class:`bridge.errors.NotFound` when the identity has no access to the guild.
    """

    def __init__(self, runtime: Runtime, child_id: str, agent: AgentSettings,
                 ttl_s: float = SESSION_CACHE_TTL_S) -> None:
        super().__init__(runtime, child_id)
        self.agent = agent
        self.ttl_s = ttl_s
        self.center = FabricCenter(runtime.config.fabric.center_url)
        self.session: FabricSession | None = None
        self.logins = 0
        self.active: dict[str, int] = {}
        self.shown: dict[str, str] = {}
        self.presence_generation: dict[str, int] = {}
        self.http = http_session()

    def on_receive(self, message: Any) -> Any:
        """Handle ``Init``, ``GetAccess`` (ask) and ``Invalidate``."""
        if isinstance(message, Init):
            return None
        if isinstance(message, GetAccess):
            return self._access(message.guild)
        if isinstance(message, RunActive):
            self._presence(message)
            return None
        if isinstance(message, PresenceSettle):
            self._settle(message)
            return None
        if isinstance(message, Invalidate):
            if self.session is not None and (
                message.token == self.session.access_token
                or any(g.token == message.token for g in self.session.guilds.values())
            ):
                log.info("tokens %s: token refused, will log in again", self.agent.name)
                self.session = None
            return None
        return super().on_receive(message)

    def _presence(self, message: RunActive) -> None:
        """Count runs per guild; the presence follows after :data:`PRESENCE_SETTLE_S`.

        Waiting lets a burst of short runs (echo answers in milliseconds) cost
        no presence calls at all, while a run that lasts shows ``busy``.
        """
        self.active[message.guild] = max(0, self.active.get(message.guild, 0) + message.delta)
        generation = self.presence_generation.get(message.guild, 0) + 1
        self.presence_generation[message.guild] = generation
        self.runtime.timers.schedule(PRESENCE_SETTLE_S, self.actor_ref,
                                     PresenceSettle(message.guild, generation))

    def _settle(self, message: PresenceSettle) -> None:
        if message.generation != self.presence_generation.get(message.guild):
            return
        status = "busy" if self.active.get(message.guild, 0) else "idle"
        if self.shown.get(message.guild, "idle") == status:
            return
        try:
            FabricGuild(self._access(message.guild), self.http).set_presence(status)
            self.shown[message.guild] = status
        except ChatError as exc:
            log.info("tokens %s: presence %s not set in %s: %s", self.agent.name, status,
                     message.guild, exc)

    def _access(self, guild: str) -> GuildAccess:
        now = time.time()
        if self.session is None or now - self.session.issued_at >= self.ttl_s:
            self.session = self._login()
        access = self.session.guilds.get(guild)
        if access is None:
            raise NotFound(f"identity {self.agent.name} has no access to guild {guild!r}")
        return access

    def _login(self) -> FabricSession:
        try:
            session = self.center.login(self.agent.api_key.reveal())
        except ChatError as exc:
            log.warning("tokens %s: login failed: %s", self.agent.name, exc)
            raise
        self.logins += 1
        log.info("tokens %s: logged in as %s (login #%d)", self.agent.name, session.user_name,
                 self.logins)
        return session
