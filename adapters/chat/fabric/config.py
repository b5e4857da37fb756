"""Fabric's part of the config: ``[platforms.fabric]``, ``[agents.NAME.fabric]``, ``[devguild]``.

:class:`FabricSchema` is what the generic reader (:mod:`bridge.config_reader`)
is told about Fabric, with the older spellings it still accepts: the
``[fabric]`` table, ``api_key`` directly in ``[agents.NAME]``, a binding's
``guild`` and ``engage = "wakeup"``. ``[devguild]`` (the in-process dev guild)
is Fabric's too: when present, its Center is Fabric's default ``center_url``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bridge.config import AgentSettings, Aliases, Config, ConfigError
from bridge.config_reader import Reader
from bridge.secrets import Secret

#: The platform's name in the config and in keys.
NAME = "fabric"
#: The top-level table of the in-process dev guild.
DEVGUILD = "devguild"


@attrs.frozen
class FabricSettings:
    """The ``[platforms.fabric]`` table (the older ``[fabric]`` means the same).

    Attributes:
        center_url: Center API base URL, e.g. ``http://127.0.0.1:7001/api``.
        content_limit: Maximum characters per posted message.
        resync_s: Seconds between channel list resyncs.
        send_per_s: Posts and edits a second one agent may make over all its
            conversations (its outbound budget); 0: no budget. Fabric publishes
            no limit, so the operator sets the guild's.
        send_burst: Most posts and edits at once after a quiet spell.
    """

    center_url: str = ""
    content_limit: int = 8000
    resync_s: float = 60.0
    send_per_s: float = 0.0
    send_burst: int = 20


@attrs.frozen
class FabricIdentity:
    """``[agents.NAME.fabric]`` (or ``api_key`` in ``[agents.NAME]``): the agent's Fabric user.

    Attributes:
        api_key: Its Center API key.
    """

    api_key: Secret


@attrs.frozen
class DevGuildSettings:
    """The ``[devguild]`` table: when present, the dev guild runs in-process.

    Attributes:
        host: Interface to listen on (loopback by default).
        center_port: Center HTTP port (0 lets the OS choose).
        guild_port: Guild HTTP + socket.io port (0 lets the OS choose).
        seed: Seed file with users and channels; None for the seed packaged
            with the bridge (``adapters/chat/fabric/devguild/seed.toml``).
        token_ttl_s: Lifetime of issued tokens, in seconds.
    """

    host: str = "127.0.0.1"
    center_port: int = 7001
    guild_port: int = 7002
    seed: Path | None = None
    token_ttl_s: float = 900.0

    @property
    def center_url(self) -> str:
        """The Center API URL of the dev guild (its configured port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.center_port}/api"


class FabricSchema:
    """Fabric's tables (:class:`bridge.config.PlatformSchema`)."""

    name = NAME
    has_table = True
    identity_keys = ("api_key",)
    default_scope = "channel"  # Fabric has no threads
    missing_space = 'the Fabric guild, e.g. space = "dev"'
    default_space = ""
    aliases = Aliases(tables=("fabric",), identity_keys=("api_key",), space_keys=("guild",),
                      engage_modes={"wakeup": "addressed"})
    extra_tables = (DEVGUILD,)

    def read_settings(self, reader: Reader, table: Mapping[str, Any] | None,
                      prefix: str) -> FabricSettings:
        """``[platforms.fabric]``; ``center_url`` defaults to the dev guild's Center.

        Raises:
            ConfigError: a bad key; or, without a table nor ``[devguild]``, that
                the binding on Fabric (``reader.index``) needs its Center.
        """
        devguild_table = reader.table(reader.data, DEVGUILD, required=False)
        devguild = read_devguild(reader, devguild_table) if devguild_table is not None else None
        if table is None and devguild is None:
            raise ConfigError(
                reader.file, prefix,
                f"missing table: binding {reader.index + 1} is on Fabric, which needs its "
                'Center: add [platforms.fabric] with center_url = "https://HOST/api" '
                "(or a [devguild] table for the built-in dev guild)",
                reader.line_of("bindings", reader.index))
        return read_fabric_settings(reader, table or {}, prefix, devguild)

    def read_identity(self, reader: Reader, table: Mapping[str, Any],
                      prefix: str) -> FabricIdentity:
        """``api_key``: a literal (dev keys) or a secret reference."""
        reader.check_keys(table, prefix, set(self.identity_keys))
        return FabricIdentity(reader.secret(table, prefix, "api_key", literal=True))

    def read_extra(self, reader: Reader, name: str, table: Mapping[str, Any]) -> object:
        """``[devguild]``."""
        return read_devguild(reader, table)


def read_fabric_settings(reader: Reader, table: Mapping[str, Any], prefix: str,
                         devguild: DevGuildSettings | None) -> FabricSettings:
    """Fabric's table (``prefix``: ``platforms.fabric`` or ``fabric``).

    ``center_url`` defaults to the dev guild's Center when ``devguild`` is given.

    Raises:
        ConfigError: a bad or unknown key, or no ``center_url`` and no dev guild.
    """
    reader.check_keys(table, prefix, {"center_url", "content_limit", "resync_s", "send_per_s",
                                      "send_burst"})
    default = devguild.center_url if devguild is not None else attrs.NOTHING
    limit = reader.at_least(table, prefix, "content_limit", 8000, 100)
    return FabricSettings(
        center_url=reader.url(table, prefix, "center_url", default).rstrip("/"),
        content_limit=limit,
        resync_s=reader.positive(table, prefix, "resync_s", 60.0) or 60.0,
        send_per_s=reader.positive(table, prefix, "send_per_s", 0.0),
        send_burst=reader.at_least(table, prefix, "send_burst", 20, 1),
    )


def read_devguild(reader: Reader, table: Mapping[str, Any]) -> DevGuildSettings:
    """The ``[devguild]`` table.

    Raises:
        ConfigError: a bad or unknown key.
    """
    reader.check_keys(table, DEVGUILD,
                      {"host", "center_port", "guild_port", "seed", "token_ttl_s"})
    ttl = reader.positive(table, DEVGUILD, "token_ttl_s", 900.0)
    if ttl <= 0:
        raise reader.fail(f"{DEVGUILD}.token_ttl_s", "must be more than zero")
    seed = reader.get(table, DEVGUILD, "seed", str, "")  # "": the packaged seed
    return DevGuildSettings(
        host=reader.get(table, DEVGUILD, "host", str, "127.0.0.1"),
        center_port=reader.port(table, DEVGUILD, "center_port", 7001),
        guild_port=reader.port(table, DEVGUILD, "guild_port", 7002),
        seed=reader.path(seed) if seed.strip() else None,
        token_ttl_s=ttl,
    )


def fabric_settings(config: Config) -> FabricSettings:
    """The config's ``[platforms.fabric]`` settings.

    Raises:
        LookupError: the config does not use Fabric (no table, no binding on it).
    """
    settings = config.platforms.get(NAME)
    if not isinstance(settings, FabricSettings):
        raise LookupError(f"{config.path}: the config does not use Fabric: add "
                          '[platforms.fabric] with center_url = "https://HOST/api"')
    return settings


def fabric_identity(agent: AgentSettings) -> FabricIdentity:
    """The agent's Fabric identity.

    Raises:
        LookupError: the agent has none (the message names the table to add).
    """
    identity = agent.identity(NAME)
    if not isinstance(identity, FabricIdentity):
        raise LookupError(f"agent {agent.name} has no Fabric identity "
                          f"([agents.{agent.name}.fabric])")
    return identity


def devguild_settings(config: Config) -> DevGuildSettings | None:
    """The config's ``[devguild]`` settings, or None when it has no such table."""
    settings = config.extras.get(DEVGUILD)
    return settings if isinstance(settings, DevGuildSettings) else None


def with_center_url(config: Config, center_url: str) -> Config:
    """A copy of ``config`` that talks to another Center (e.g. a dev guild on a chosen port).

    A config that does not use Fabric yet gets Fabric's defaults with that Center.
    """
    current = config.platforms.get(NAME)
    settings = current if isinstance(current, FabricSettings) else FabricSettings()
    platforms = {**config.platforms, NAME: attrs.evolve(settings, center_url=center_url)}
    return attrs.evolve(config, platforms=platforms)
