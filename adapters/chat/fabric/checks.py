"""Fabric's checks for ``bridge doctor`` (:meth:`FabricPlatform.checks`).

For one agent: a Center login with its API key; each bound guild: the session
has it, its channel list answers, the bound channel names or ids exist; each
channel or user *name* in the agent's bindings and access rules: the id it
resolves to, or that it is ambiguous (Fabric does not guarantee unique names,
so the bridge matches by id; see :mod:`bridge.names`).

Every request has one timeout and is never retried, so a down Center costs one
timeout, and once Center was found unreachable (or not a Center API) the
other agents are not checked against it: they would only repeat the line,
each after a timeout. Messages name agents, guilds and URLs, never a key;
doctor redacts them once more before it prints them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from adapters.chat.fabric.config import NAME, FabricIdentity
from adapters.chat.fabric.rest import FabricCenter, FabricGuild, FabricSession
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError, Forbidden, LoginRefused, RetryLater, Unauthorized
from bridge.names import NOT_UNIQUE, channel_entries, resolve_names, user_entries
from bridge.platform import PlatformCheck


class TimeoutSession(requests.Session):
    """A requests session that caps every request at ``timeout_s`` and never retries."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        adapter = HTTPAdapter(max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        """Send a request with this session's timeout (whatever the caller asked)."""
        kwargs["timeout"] = self.timeout_s
        return super().request(*args, **kwargs)


def passed(name: str, message: str) -> PlatformCheck:
    """An ``ok`` finding."""
    return PlatformCheck(name, "ok", message)


def warning(name: str, message: str) -> PlatformCheck:
    """A ``warn`` finding."""
    return PlatformCheck(name, "warn", message)


def failure(name: str, message: str) -> PlatformCheck:
    """A ``fail`` finding."""
    return PlatformCheck(name, "fail", message)


class FabricChecks:
    """Fabric's doctor checks against one Center, one agent at a time.

    Args:
        center_url: Center's API URL (``[platforms.fabric] center_url``).

    Attributes:
        center_down: True once Center was found unreachable or not a Center
            API; later agents then get no line (the first one's says it).
    """

    def __init__(self, center_url: str) -> None:
        self.center_url = center_url
        self.center_down = False

    def run(self, agent: AgentSettings, bindings: Sequence[Binding], *,
            timeout_s: float) -> list[PlatformCheck]:
        """The agent's lines: its login, then one per binding, then its names per guild.

        Args:
            agent: The agent (with a Fabric identity).
            bindings: The agent's bindings on Fabric.
            timeout_s: The limit of each request (seconds).
        """
        if self.center_down:
            return []
        http = TimeoutSession(timeout_s)
        try:
            return list(self._agent(agent, bindings, http))
        finally:
            http.close()

    def _agent(self, agent: AgentSettings, bindings: Sequence[Binding],
               http: requests.Session) -> Iterator[PlatformCheck]:
        url = self.center_url
        name = f"center login ({agent.name})"
        identity = agent.identity(NAME)
        if not isinstance(identity, FabricIdentity):
            yield failure(name, f"agent {agent.name} has no Fabric identity; add "
                                f"[agents.{agent.name}.fabric] with api_key")
            return
        try:
            session = FabricCenter(url, session=http).login(identity.api_key.reveal())
        except LoginRefused as exc:
            yield failure(name, f"Center at {url} refused agent {agent.name}'s API key ({exc}); "
                                f"check api_key in [agents.{agent.name}] "
                                f"(from {identity.api_key.source})")
            return
        except RetryLater as exc:
            self.center_down = True
            yield failure(name, f"Center at {url} unreachable ({exc}); check fabric.center_url "
                                "and that Center is up")
            return
        except ChatError as exc:
            self.center_down = True
            yield failure(name, f"Center at {url} answered unexpectedly ({exc}); check that "
                                "fabric.center_url is a Fabric Center API (ending in /api)")
            return
        guilds = ", ".join(sorted(session.guilds)) or "none"
        yield passed(name, f"Center at {url} accepted agent {agent.name}'s API key "
                           f"(user {session.user_name}, guilds: {guilds})")
        for binding in bindings:
            yield guild_check(agent.name, binding.space, binding.channels, session, http)
        for guild in sorted({b.space for b in bindings}):
            yield from name_checks(agent, [b for b in bindings if b.space == guild], guild,
                                   session, http)


def guild_check(agent: str, guild: str, bound: tuple[str, ...], session: FabricSession,
                http: requests.Session) -> PlatformCheck:
    """Whether one binding's guild answers and shows its bound channels.

    Args:
        agent: The agent's name.
        guild: The binding's guild.
        bound: The binding's channel names or ids (``*``: all).
        session: The agent's Center session.
        http: The session requests go through.
    """
    name = f"guild {guild} ({agent})"
    access = session.guilds.get(guild)
    if access is None:
        known = ", ".join(sorted(session.guilds)) or "none"
        return failure(name, f"agent {agent} has no access to guild {guild} (its guilds: "
                             f"{known}); fix the binding's guild or add the agent to the guild")
    try:
        channels = FabricGuild(access, session=http).channels()
    except RetryLater as exc:
        return failure(name, f"guild {guild} at {access.endpoint} unreachable ({exc}); check "
                             "that the guild node is up and reachable from this host")
    except (Unauthorized, Forbidden) as exc:
        return failure(name, f"guild {guild} refused agent {agent}'s token ({exc}); check the "
                             "agent's membership of the guild")
    except ChatError as exc:
        return failure(name, f"guild {guild} at {access.endpoint} answered unexpectedly "
                             f"({exc}); check the guild's endpoint in Center")
    names = {str(c.get("name", "")) for c in channels} | {str(c.get("id", "")) for c in channels}
    visible = ", ".join(sorted(str(c.get("name", "?")) for c in channels)) or "none"
    if "*" in bound:
        if not channels:
            return warning(name, f"guild {guild} reachable, but agent {agent} sees no channel; "
                                 "add the agent to a channel")
        return passed(name, f"guild {guild} at {access.endpoint} reachable; agent {agent} sees "
                            f"{len(channels)} channel(s): {visible}")
    missing = [c for c in bound if c not in names]
    if missing:
        return failure(name, f"guild {guild}: agent {agent} cannot see bound channel(s) "
                             f"{', '.join(missing)} (it sees: {visible}); fix the binding's "
                             "channels or add the agent to them")
    return passed(name, f"guild {guild} at {access.endpoint} reachable; bound channel(s) "
                        f"{', '.join(bound)} found")


def name_checks(agent: AgentSettings, bindings: Sequence[Binding], guild: str,
                session: FabricSession, http: requests.Session) -> Iterator[PlatformCheck]:
    """What each channel or user name in the agent's bindings and access rules resolves to.

    One line per name entry (an id entry matches as written and is not shown):
    ``ok`` with the id when exactly one channel (user) carries the name, ``warn``
    when several do (the bridge refuses it) or none does. Channels missing
    from a binding are reported by :func:`guild_check` already.

    Args:
        agent: The agent.
        bindings: The agent's bindings in ``guild``.
        guild: The guild.
        session: The agent's Center session.
        http: The session requests go through.
    """
    access = session.guilds.get(guild)
    if access is None:
        return  # reported by the guild check
    rest = FabricGuild(access, session=http)
    try:
        channels = {str(c.get("id", "")): str(c.get("name", "")) for c in rest.channels()}
    except ChatError:
        return  # reported by the guild check
    bound = {entry.casefold() for b in bindings for entry in b.channels}
    where = f"agent {agent.name} in guild {guild}"
    checks = [("channel", entry, channels) for entry in channel_entries(bindings, agent.access)]
    wanted = user_entries(agent.access)
    if wanted:
        try:
            users = rest.users()
        except ChatError as exc:
            yield warning(f"user names ({agent.name}@{guild})",
                          f"{where}: cannot list the guild's users ({exc}), so the names in "
                          f"admins/allowed_users cannot be checked, and the bridge matches a "
                          f"name only once it resolves; write user ids in "
                          f"[agents.{agent.name}]")
        else:
            checks += [("user", entry, users) for entry in wanted]
    for what, entry, known in checks:
        resolved, problems = resolve_names([entry], known)
        name = f"{what} name {entry!r} ({agent.name}@{guild})"
        if resolved:
            yield passed(name, f"{where}: {what} name {entry!r} resolves to id "
                               f"{resolved[entry.casefold()]} ({NOT_UNIQUE})")
        for problem in problems:
            if problem.kind == "unknown" and (what == "user" or entry.casefold() not in bound):
                yield warning(name, f"{where}: {problem.describe(what)}, so it matches "
                                    f"nothing; fix the entry or write the id")
            elif problem.kind == "ambiguous":
                yield warning(name, f"{where}: {problem.describe(what)} ({NOT_UNIQUE})")
