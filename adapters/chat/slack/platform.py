"""Slack as a chat platform of the bridge (:class:`bridge.platform.ChatPlatform`).

One connection per app (its one workspace is the space ``workspace``): a
Socket Mode intake (:mod:`adapters.chat.slack.intake`), Web API posts
(:mod:`adapters.chat.slack.client`), mrkdwn rendering
(:mod:`adapters.chat.slack.render`) and doctor's checks
(:mod:`adapters.chat.slack.checks`).
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.chat.slack import render
from adapters.chat.slack.checks import slack_checks
from adapters.chat.slack.client import SlackClient
from adapters.chat.slack.config import SlackIdentity, SlackSettings
from adapters.chat.slack.intake import SlackIntake
from adapters.chat.slack.live import SlackLiveStatus
from adapters.chat.slack.session import WORKSPACE, SlackSession, login
from bridge.config import AgentSettings, Binding
from bridge.errors import LoginRefused
from bridge.model import Target
from bridge.platform import Access, IntakeHost, PlatformCheck, PlatformLimits
from bridge.run_view import RunView

#: The platform's name in config, keys and the store.
NAME = "slack"


def slack_identity(agent: AgentSettings) -> SlackIdentity:
    """The agent's ``[agents.NAME.slack]`` tokens.

    Raises:
        bridge.errors.LoginRefused: the agent has no Slack identity.
    """
    identity = agent.identities.get(NAME)
    if not isinstance(identity, SlackIdentity):
        raise LoginRefused(f"agent {agent.name} has no [agents.{agent.name}.slack] tokens")
    return identity


#: An app's posts and edits a second in one workspace, sustained: chat.postMessage
#: allows "several hundred messages per minute" workspace-wide (docs.slack.dev
#: apis/web-api/rate-limits, "Posting messages"); 300 a minute, with bursts.
SEND_PER_S = 5.0
SEND_BURST = 50

class SlackPlatform:
    """Slack workspaces through Socket Mode and the Web API.

    Args:
        settings: The ``[platforms.slack]`` settings.
        catch_up_window_s: How far back (seconds) catch-up looks; older
            messages fetched from history are context only.
        ping_interval_s: Seconds between the socket's pings.
        retry_s: First delay before an intake connects again (seconds; it doubles).
    """

    name = NAME

    def __init__(self, settings: SlackSettings, catch_up_window_s: float, *,
                 ping_interval_s: float = 5.0, retry_s: float = 1.0) -> None:
        self.settings = settings
        self.catch_up_window_s = catch_up_window_s
        self.ping_interval_s = ping_interval_s
        self.retry_s = retry_s
        # A bot token lasts until revoked: auth.test again hourly to notice that.
        self.limits = PlatformLimits(text_chars=render.SLACK_TEXT_CHARS, edit_interval_s=1.0,
                                     threads=True, buttons=True, reactions=True, files=True,
                                     native_status=settings.live_status == "stream",
                                     session_ttl_s=3600.0, send_per_s=SEND_PER_S,
                                     send_burst=SEND_BURST)

    def spaces(self, bindings: Sequence[Binding]) -> list[str]:
        """The app's workspace, named as the bindings name it (``workspace`` by default)."""
        return sorted({b.space for b in bindings}) or [WORKSPACE]

    def login(self, agent: AgentSettings) -> SlackSession:
        """``auth.test`` with the agent's bot token.

        Raises:
            bridge.errors.LoginRefused: no tokens, or Slack refused the bot token.
            bridge.errors.RetryLater: Slack could not be reached.
        """
        return login(self.settings.api_url, slack_identity(agent))

    def open(self, host: IntakeHost, agent: AgentSettings,
             bindings: Sequence[Binding]) -> SlackIntake:
        """The Socket Mode intake of the agent's app."""
        return SlackIntake(host, agent, bindings, api_url=self.settings.api_url,
                           catch_up_window_s=self.catch_up_window_s,
                           slash_command=self.settings.slash_command,
                           ping_interval_s=self.ping_interval_s, retry_s=self.retry_s)

    def client(self, access: Access) -> SlackClient:
        """Web API calls as the app of ``access``."""
        return SlackClient(self.settings.api_url, access)

    def live_status(self, access: Access, target: Target, run_id: str) -> SlackLiveStatus | None:
        """A streamed status message in the run's thread (``live_status = "stream"``); None
        at a DM's top level (streams live in threads) or with ``live_status = "message"``."""
        if not target.thread or self.settings.live_status != "stream":
            return None
        return SlackLiveStatus(self.client(access), target, run_id)

    def checks(self, agent: AgentSettings, bindings: Sequence[Binding], *,
               timeout_s: float) -> list[PlatformCheck]:
        """Doctor's lines: the tokens, the granted scopes, the bound channels
        (see :mod:`adapters.chat.slack.checks`)."""
        return slack_checks(self.settings.api_url, agent, bindings, timeout_s=timeout_s)

    def render_status(self, view: RunView) -> str:
        """The status message's mrkdwn (see
        :func:`adapters.chat.slack.render.render_status_text`)."""
        return render.render_status_text(view)

    def render_answer(self, text: str, footer: str) -> list[str]:
        """The answer as mrkdwn pieces (see :func:`adapters.chat.slack.render.render_answer`)."""
        return render.render_answer(text, footer)
