"""A Slack app's login: ``auth.test`` with its bot token, as the chat port's Session/Access.

A bot token does not expire and is not refreshed (docs.slack.dev, "Token types":
bot tokens last until revoked); a login is ``auth.test``, which tells who the
bot is (its user id and bot id: its own posts carry them) and in which
workspace. The app's one workspace is its space: a binding names it
``workspace`` (the config's default) or by its team id.
"""

from __future__ import annotations

import time

import attrs

from adapters.chat.slack.api import translated, web_client
from adapters.chat.slack.config import SlackIdentity
from bridge.errors import LoginRefused, Unauthorized

#: The space name of an app's workspace in bindings (see the module docstring).
WORKSPACE = "workspace"


@attrs.frozen
class SlackAccess:
    """The app's access to its workspace (:class:`bridge.platform.Access`).

    Attributes:
        token: The bot token (never logged).
        user_id: The bot user's id (``U…``): mentions name it, its posts carry it.
        issued_at: Epoch seconds of the ``auth.test`` that checked the token.
        bot_id: The bot's id (``B…``), carried by its posts as ``bot_id``.
        team_id: The workspace's id (``T…``).
        app_token: The app-level token for Socket Mode (never logged).
    """

    token: str = attrs.field(repr=False)
    user_id: str
    issued_at: float
    bot_id: str = ""
    team_id: str = ""
    app_token: str = attrs.field(default="", repr=False)


@attrs.frozen
class SlackSession:
    """One login of a Slack app (:class:`bridge.platform.Session`).

    Attributes:
        user_name: The bot user's name.
        issued_at: Epoch seconds of the login.
        access_: The access to the app's workspace.
        scopes: The bot token's granted OAuth scopes (from ``x-oauth-scopes``).
    """

    user_name: str
    issued_at: float
    access_: SlackAccess
    scopes: frozenset[str] = frozenset()

    def access(self, space: str) -> SlackAccess | None:
        """The access when ``space`` is the app's workspace (``workspace`` or its team id)."""
        return self.access_ if space in (WORKSPACE, self.access_.team_id) else None

    def holds(self, token: str) -> bool:
        """Whether ``token`` is this login's bot token."""
        return token == self.access_.token


def login(api_url: str, identity: SlackIdentity) -> SlackSession:
    """Check the app's bot token with ``auth.test``.

    Args:
        api_url: The Web API base URL.
        identity: The app's tokens.

    Raises:
        bridge.errors.LoginRefused: Slack refused the token (revoked, invalid).
        bridge.errors.RetryLater: Slack could not be reached or asked to wait.
    """
    client = web_client(api_url, identity.bot_token.reveal())
    try:
        with translated("auth.test"):
            answer = client.auth_test()
    except Unauthorized as exc:
        raise LoginRefused(f"{exc} for the bot token from {identity.bot_token.source}") from None
    scopes = answer.headers.get("x-oauth-scopes") or answer.headers.get("X-OAuth-Scopes") or ""
    now = time.time()
    access = SlackAccess(identity.bot_token.reveal(), str(answer.get("user_id", "")), now,
                         bot_id=str(answer.get("bot_id", "")),
                         team_id=str(answer.get("team_id", "")),
                         app_token=identity.app_token.reveal())
    return SlackSession(str(answer.get("user", "")), now, access,
                        frozenset(s.strip() for s in str(scopes).split(",") if s.strip()))
