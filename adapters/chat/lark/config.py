"""Feishu/Lark's part of the config file: ``[platforms.lark]`` and ``[agents.NAME.lark]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bridge.config import Aliases
from bridge.config_reader import Reader
from bridge.secrets import Secret


@attrs.frozen
class LarkSettings:
    """The ``[platforms.lark]`` table.

    Attributes:
        domain: Open platform origin, no trailing ``/``: ``https://open.feishu.cn``
            (Feishu) or ``https://open.larksuite.com`` (Lark).
    """

    domain: str = "https://open.feishu.cn"


@attrs.frozen
class LarkIdentity:
    """``[agents.NAME.lark]``: the agent's Feishu/Lark app.

    Attributes:
        app_id: The app id (``cli_``...): an identifier, not a secret (it is in the
            developer console's URLs, e.g. the grant URL a permission error carries,
            which members are shown), so it is not redacted.
        app_secret: The app secret.
    """

    app_id: str
    app_secret: Secret


class LarkSchema:
    """Feishu/Lark's tables (:class:`bridge.config.PlatformSchema`)."""

    name = "lark"
    has_table = True
    identity_keys = ("app_id", "app_secret")
    default_scope = "thread"  # conversations live in topics
    missing_space = ""
    default_space = "tenant"  # an app's tokens reach one tenant: it is the space
    aliases = Aliases()
    extra_tables: tuple[str, ...] = ()

    def read_settings(self, reader: Reader, table: Mapping[str, Any] | None,
                      prefix: str) -> LarkSettings:
        """``[platforms.lark]``: ``domain`` (an http(s) origin; stored without a trailing ``/``)."""
        table = table or {}
        reader.check_keys(table, prefix, {"domain"})
        return LarkSettings(
            domain=reader.url(table, prefix, "domain", LarkSettings().domain).rstrip("/"))

    def read_identity(self, reader: Reader, table: Mapping[str, Any],
                      prefix: str) -> LarkIdentity:
        """``app_id`` (no secret: a literal is accepted) and ``app_secret`` (a reference)."""
        reader.check_keys(table, prefix, set(self.identity_keys))
        return LarkIdentity(app_id=reader.reference(table, prefix, "app_id"),
                            app_secret=reader.secret(table, prefix, "app_secret", literal=False))

    def read_extra(self, reader: Reader, name: str, table: Mapping[str, Any]) -> object:
        """Feishu/Lark owns no other table."""
        raise reader.fail(name, "not a Feishu/Lark table")
