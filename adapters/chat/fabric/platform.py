"""Fabric as a chat platform of the bridge (:class:`bridge.platform.ChatPlatform`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import requests

from adapters.chat.fabric.checks import FabricChecks
from adapters.chat.fabric.client import FabricClient
from adapters.chat.fabric.config import FabricSettings, fabric_identity
from adapters.chat.fabric.intake import FabricIntake
from adapters.chat.fabric.render import FabricRenderer
from adapters.chat.fabric.rest import FabricCenter, FabricSession, GuildAccess, http_session
from bridge.config import AgentSettings, Binding
from bridge.model import Target
from bridge.platform import Access, IntakeHost, PlatformCheck, PlatformLimits
from bridge.run_view import RunView

#: The platform's name in config, keys and the store.
NAME = "fabric"


class FabricPlatform:
    """Fabric guilds: Center login, a socket.io intake per guild, REST posts.

    Args:
        settings: The ``[platforms.fabric]`` settings.
        catch_up_window_s: Messages older than this (seconds) fetched from
            history are context only.
    """

    name = NAME

    def __init__(self, settings: FabricSettings, catch_up_window_s: float) -> None:
        self.settings = settings
        self.catch_up_window_s = catch_up_window_s
        self.limits = PlatformLimits(text_chars=settings.content_limit, edit_interval_s=1.0,
                                     send_per_s=settings.send_per_s,
                                     send_burst=settings.send_burst)
        self.renderer = FabricRenderer(settings.content_limit)
        #: One HTTP session per calling thread (each actor posts on its own thread),
        #: so posts reuse their connection without sharing a session across threads.
        self.local = threading.local()
        self._checks = FabricChecks(settings.center_url)

    def spaces(self, bindings: Sequence[Binding]) -> list[str]:
        """The guilds the bindings name, sorted."""
        return sorted({b.space for b in bindings})

    def login(self, agent: AgentSettings) -> FabricSession:
        """Log in through Center with the agent's API key.

        Raises:
            bridge.errors.LoginRefused: the key is refused.
            bridge.errors.RetryLater: Center could not be reached.
        """
        return FabricCenter(self.settings.center_url, self._http()).login(
            fabric_identity(agent).api_key.reveal())

    def open(self, host: IntakeHost, agent: AgentSettings,
             bindings: Sequence[Binding]) -> FabricIntake:
        """The socket.io intake of the agent in the host's guild."""
        return FabricIntake(host, self.settings, self.catch_up_window_s, agent,
                            host.connection.space, bindings)

    def client(self, access: Access) -> FabricClient:
        """REST calls as the identity of ``access`` (a guild access from :meth:`login`)."""
        assert isinstance(access, GuildAccess)
        return FabricClient(access, self._http())

    def live_status(self, access: Access, target: Target, run_id: str) -> None:
        """None: Fabric has no native live status (a posted status message is edited)."""
        return None

    def checks(self, agent: AgentSettings, bindings: Sequence[Binding], *,
               timeout_s: float) -> list[PlatformCheck]:
        """Doctor's lines for the agent: Center login, each bound guild, the config's names.

        See :mod:`adapters.chat.fabric.checks`; once Center was found unreachable,
        later agents get no line.
        """
        return self._checks.run(agent, bindings, timeout_s=timeout_s)

    def _http(self) -> requests.Session:
        """The calling thread's HTTP session (made on its first call)."""
        session: requests.Session | None = getattr(self.local, "http", None)
        if session is None:
            session = self.local.http = http_session()
        return session

    def render_status(self, view: RunView) -> str:
        """Today's Fabric status text (see :class:`FabricRenderer`)."""
        return self.renderer.render_status(view)

    def render_answer(self, text: str, footer: str) -> list[str]:
        """The answer in pieces under the content limit (see :class:`FabricRenderer`)."""
        return self.renderer.render_answer(text, footer)
