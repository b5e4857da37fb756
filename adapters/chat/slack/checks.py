"""Doctor's lines for a Slack app: its two tokens, its scopes, the bound channels.

- The bot token with ``auth.test``; its granted scopes (the ``x-oauth-scopes``
  header of that answer, docs.slack.dev authentication/tokens) against
  :data:`BOT_SCOPES`, the scopes of ``conf/slack-app-manifest.yaml``.
- The app-level token with ``apps.connections.open`` (it only issues a socket
  URL; no socket is opened).
- Each binding: its space is the app's workspace, and the bot is a member of
  every channel it names (``conversations.info`` ``is_member``).
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.chat.slack.api import translated, web_client
from adapters.chat.slack.config import SlackIdentity
from adapters.chat.slack.session import SlackSession, login
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError, LoginRefused
from bridge.platform import PlatformCheck

#: The bot scopes the bridge needs; ``conf/slack-app-manifest.yaml`` grants exactly these.
BOT_SCOPES = ("app_mentions:read", "channels:history", "channels:read", "chat:write",
              "commands", "files:read", "files:write", "groups:history", "groups:read",
              "im:history", "im:read", "mpim:history", "mpim:read", "reactions:write",
              "users:read")


def slack_checks(api_url: str, agent: AgentSettings, bindings: Sequence[Binding], *,
                 timeout_s: float) -> list[PlatformCheck]:
    """The agent's app: one line for its tokens and scopes, then one per binding.

    Args:
        api_url: The Web API base URL.
        agent: The agent whose app is checked.
        bindings: The agent's Slack bindings.
        timeout_s: Longest wait for one call (seconds; slack-sdk's timeout is whole seconds).
    """
    name = f"slack tokens ({agent.name})"
    identity = agent.identities.get("slack")
    if not isinstance(identity, SlackIdentity):
        return [PlatformCheck(name, "fail", f"agent {agent.name} has no [agents.{agent.name}"
                                            ".slack] bot_token and app_token")]
    try:
        session = login(api_url, identity)
    except LoginRefused as exc:
        return [PlatformCheck(name, "fail", f"Slack refused agent {agent.name}'s bot token "
                                            f"({exc}); reinstall the app and copy its "
                                            "Bot User OAuth Token")]
    except ChatError as exc:
        return [PlatformCheck(name, "fail", f"agent {agent.name}: Slack at {api_url} not "
                                            f"reached ({exc})")]
    found = [_tokens(api_url, agent, identity, session, timeout_s)]
    for binding in bindings:
        found.append(_binding(api_url, agent, session, binding, timeout_s))
    return found


def _tokens(api_url: str, agent: AgentSettings, identity: SlackIdentity, session: SlackSession,
            timeout_s: float) -> PlatformCheck:
    name = f"slack tokens ({agent.name})"
    app = web_client(api_url, identity.app_token.reveal())
    app.timeout = max(1, int(timeout_s))
    try:
        with translated("apps.connections.open"):
            app.apps_connections_open(app_token=identity.app_token.reveal())
    except ChatError as exc:
        return PlatformCheck(name, "fail", f"agent {agent.name}: the app-level token from "
                                           f"{identity.app_token.source} cannot open Socket "
                                           f"Mode ({exc}); make one with connections:write "
                                           "and turn Socket Mode on")
    who = f"bot {session.user_name} in team {session.access_.team_id}"
    missing = [scope for scope in BOT_SCOPES if scope not in session.scopes]
    if session.scopes and missing:
        return PlatformCheck(name, "warn", f"agent {agent.name}: {who}; the bot token lacks "
                                           f"scope(s) {', '.join(missing)}: add them (see "
                                           "conf/slack-app-manifest.yaml) and reinstall")
    return PlatformCheck(name, "ok", f"agent {agent.name}: {who}; Socket Mode can connect"
                                     + ("" if session.scopes else
                                        " (Slack did not list the granted scopes)"))


def _binding(api_url: str, agent: AgentSettings, session: SlackSession, binding: Binding,
             timeout_s: float) -> PlatformCheck:
    name = f"slack {binding.space} ({agent.name})"
    access = session.access(binding.space)
    if access is None:
        return PlatformCheck(name, "fail", f"binding space {binding.space!r} is not agent "
                                           f"{agent.name}'s Slack workspace (write space = "
                                           f"\"workspace\" or {session.access_.team_id})")
    bot = web_client(api_url, access.token)
    bot.timeout = max(1, int(timeout_s))
    absent: list[str] = []
    for channel in binding.channels:
        if channel == "*":
            continue
        try:
            with translated(f"conversations.info {channel}"):
                info = bot.conversations_info(channel=channel).get("channel") or {}
        except ChatError as exc:
            absent.append(f"{channel} ({exc})")
            continue
        if not (info.get("is_member") or info.get("is_im")):
            absent.append(channel)
    if absent:
        return PlatformCheck(name, "fail", f"agent {agent.name}'s bot is not in bound "
                                           f"channel(s) {', '.join(absent)}: invite it "
                                           "(/invite @bot) or fix the binding")
    listed = ", ".join(c for c in binding.channels) or "none"
    return PlatformCheck(name, "ok", f"agent {agent.name}'s bot is in the bound channels "
                                     f"({listed})")
