"""Slack's part of the config file: ``[platforms.slack]`` and ``[agents.NAME.slack]``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from bridge.config import Aliases
from bridge.config_reader import Reader
from bridge.secrets import Secret

#: What each token starts with.
TOKEN_PREFIX = {"bot_token": "xoxb-", "app_token": "xapp-"}


@attrs.frozen
class SlackSettings:
    """The ``[platforms.slack]`` table.

    Attributes:
        api_url: Web API base URL, ending in ``/`` (a local test server in tests).
        slash_command: The app's one slash command (e.g. ``/agent stop``); the
            manifest in ``conf/slack-app-manifest.yaml`` registers ``/agent``.
        live_status: ``stream``: a run's status is a streamed message in its thread
            (``chat.startStream``), falling back to ``message`` on any refusal;
            ``message``: always one posted status message edited in place.
    """

    api_url: str = "https://slack.com/api/"
    slash_command: str = "/agent"
    live_status: str = "stream"


@attrs.frozen
class SlackIdentity:
    """``[agents.NAME.slack]``: the agent's Slack app.

    Attributes:
        bot_token: The bot token (``xoxb-``), for the Web API.
        app_token: The app-level token (``xapp-``), for Socket Mode.
    """

    bot_token: Secret
    app_token: Secret


class SlackSchema:
    """Slack's tables (:class:`bridge.config.PlatformSchema`)."""

    name = "slack"
    has_table = True
    identity_keys = ("bot_token", "app_token")
    default_scope = "thread"  # conversations live in threads
    missing_space = ""
    default_space = "workspace"  # an app's tokens reach one workspace: it is the space
    aliases = Aliases()
    extra_tables: tuple[str, ...] = ()

    def read_settings(self, reader: Reader, table: Mapping[str, Any] | None,
                      prefix: str) -> SlackSettings:
        """``[platforms.slack]``: ``api_url`` (an http(s) URL; stored ending in ``/``),
        ``slash_command`` (``/`` and a word, e.g. ``/agent``) and ``live_status``
        (``stream`` or ``message``).

        Raises:
            ConfigError: an unknown key, a bad URL or slash command.
        """
        table = table or {}
        reader.check_keys(table, prefix, {"api_url", "slash_command", "live_status"})
        url = reader.url(table, prefix, "api_url", SlackSettings().api_url)
        command = str(reader.get(table, prefix, "slash_command", str,
                                 SlackSettings().slash_command))
        if not re.fullmatch(r"/[a-z0-9_-]{1,31}", command):
            raise reader.fail(f"{prefix}.slash_command", f"{command[:40]!r} is not a slash "
                                                         "command: write / and a lowercase word, "
                                                         'e.g. "/agent"')
        live = str(reader.get(table, prefix, "live_status", str, SlackSettings().live_status))
        if live not in ("stream", "message"):
            raise reader.fail(f"{prefix}.live_status", f"{live[:40]!r}: write \"stream\" (a "
                                                       "streamed message, the default) or "
                                                       "\"message\" (a status message edited "
                                                       "in place)")
        return SlackSettings(api_url=url.rstrip("/") + "/", slash_command=command,
                             live_status=live)

    def read_identity(self, reader: Reader, table: Mapping[str, Any],
                      prefix: str) -> SlackIdentity:
        """Both tokens, as secret references (never literal), each with its prefix.

        Raises:
            ConfigError: a missing, literal or unknown key, or a token without
                its prefix (the message names its source, never its value).
        """
        reader.check_keys(table, prefix, set(self.identity_keys))
        secrets = {key: reader.secret(table, prefix, key, literal=False)
                   for key in self.identity_keys}
        for key, start in TOKEN_PREFIX.items():
            if not secrets[key].reveal().startswith(start):
                raise reader.fail(f"{prefix}.{key}", f"must be a token starting {start}; the "
                                                     f"one from {secrets[key].source} is not")
        return SlackIdentity(**secrets)

    def read_extra(self, reader: Reader, name: str, table: Mapping[str, Any]) -> object:
        """Slack owns no other table."""
        raise reader.fail(name, "not a Slack table")
