"""Feishu/Lark as a chat platform of the bridge (:class:`bridge.platform.ChatPlatform`).

One connection per app (its one tenant is the space ``tenant``): a long-connection
intake (:mod:`adapters.chat.lark.intake`), REST posts through lark-oapi
(:mod:`adapters.chat.lark.client`), a CardKit live status with a signed Stop
button (:mod:`adapters.chat.lark.live`, :mod:`adapters.chat.lark.buttons`),
Markdown cards (:mod:`adapters.chat.lark.render`) and doctor's checks
(:mod:`adapters.chat.lark.checks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adapters.chat.lark import render
from adapters.chat.lark.buttons import ButtonSigner
from adapters.chat.lark.checks import lark_checks
from adapters.chat.lark.client import LarkClient
from adapters.chat.lark.config import LarkIdentity, LarkSettings
from adapters.chat.lark.intake import LarkIntake
from adapters.chat.lark.live import LarkLiveStatus
from adapters.chat.lark.session import TENANT, LarkAccess, LarkSession, login
from bridge.config import AgentSettings, Binding
from bridge.errors import LoginRefused
from bridge.model import Target
from bridge.platform import Access, IntakeHost, PlatformCheck, PlatformLimits
from bridge.run_view import RunView

#: The platform's name in config, keys and the store.
NAME = "lark"


def lark_identity(agent: AgentSettings) -> LarkIdentity:
    """The agent's ``[agents.NAME.lark]`` app.

    Raises:
        bridge.errors.LoginRefused: the agent has no Feishu/Lark identity.
    """
    identity = agent.identities.get(NAME)
    if not isinstance(identity, LarkIdentity):
        raise LoginRefused(f"agent {agent.name} has no [agents.{agent.name}.lark] app")
    return identity


#: An app's sends a second, sustained: 1,000 a minute; at most 50 in one second
#: (docs im-v1/message/create, "frequency control": 1000 per minute, 50 per second).
SEND_PER_S = 1000 / 60
SEND_BURST = 50

class LarkPlatform:
    """Feishu/Lark tenants through the long connection and the open platform's REST API.

    Args:
        settings: The ``[platforms.lark]`` settings.
        catch_up_window_s: How far back (seconds) catch-up looks; older messages fetched
            from history are context only.
        state_dir: The bridge's state dir (the key that signs buttons lives there).
        retry_s: First delay before an intake connects again (seconds; it doubles).
    """

    name = NAME

    def __init__(self, settings: LarkSettings, catch_up_window_s: float, state_dir: Path, *,
                 retry_s: float = 1.0) -> None:
        self.settings = settings
        self.catch_up_window_s = catch_up_window_s
        self.retry_s = retry_s
        self.signer = ButtonSigner(state_dir)
        # A tenant token lasts two hours (docs "tenant_access_token"): log in again
        # hourly; lark-oapi's cache renews it by itself in between.
        self.limits = PlatformLimits(text_chars=render.LARK_TEXT_CHARS, edit_interval_s=1.0,
                                     threads=True, buttons=True, reactions=True, files=True,
                                     native_status=True, session_ttl_s=3600.0,
                                     idempotent_sends=True, send_per_s=SEND_PER_S,
                                     send_burst=SEND_BURST)

    def spaces(self, bindings: Sequence[Binding]) -> list[str]:
        """The app's tenant, named as the bindings name it (``tenant`` by default)."""
        return sorted({b.space for b in bindings}) or [TENANT]

    def login(self, agent: AgentSettings) -> LarkSession:
        """Fetch the app's tenant token and bot identity.

        Raises:
            bridge.errors.LoginRefused: no app, or the platform refused its secret.
            bridge.errors.RetryLater: the platform could not be reached.
        """
        return login(self.settings.domain, lark_identity(agent))

    def open(self, host: IntakeHost, agent: AgentSettings,
             bindings: Sequence[Binding]) -> LarkIntake:
        """The long-connection intake of the agent's app."""
        return LarkIntake(host, agent, bindings, signer=self.signer,
                          catch_up_window_s=self.catch_up_window_s, retry_s=self.retry_s)

    def client(self, access: Access) -> LarkClient:
        """REST calls as the app of ``access``."""
        assert isinstance(access, LarkAccess)
        return LarkClient(access, self.signer.value)

    def live_status(self, access: Access, target: Target, run_id: str) -> LarkLiveStatus:
        """A CardKit streaming card with a Stop button, sent once as the run's status."""
        assert isinstance(access, LarkAccess)
        return LarkLiveStatus(self.client(access), target, run_id)

    def checks(self, agent: AgentSettings, bindings: Sequence[Binding], *,
               timeout_s: float) -> list[PlatformCheck]:
        """Doctor's lines: the app's token, its bot, its chats and permissions (see
        :mod:`adapters.chat.lark.checks`)."""
        return lark_checks(self.settings.domain, agent, bindings, timeout_s=timeout_s)

    def render_status(self, view: RunView) -> str:
        """The status card's Markdown (see :func:`adapters.chat.lark.render.render_status`)."""
        return render.render_status(view)

    def render_answer(self, text: str, footer: str) -> list[str]:
        """The answer as Markdown pieces (see :func:`adapters.chat.lark.render.render_answer`)."""
        return render.render_answer(text, footer)
