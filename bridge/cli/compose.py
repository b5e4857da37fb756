"""Composition: the registries of chat platforms and agent kinds, and the app built on them.

This is the one place (with the CLI and the operator tools) that knows every
layer: it builds the platforms a config uses, the side services it asks for
(the Fabric dev guild of ``[devguild]``), and hands them to
:class:`actors.app.BridgeApp`, which itself knows no platform.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.app import BridgeApp
from adapters.agents import build_agent
from adapters.chat.fabric.config import (
    FabricSchema,
    devguild_settings,
    fabric_settings,
    with_center_url,
)
from adapters.chat.fabric.platform import FabricPlatform
from adapters.chat.fabric.rules import CONTENT_LIMIT
from adapters.chat.lark.config import LarkSchema
from adapters.chat.memory.config import MemorySchema
from adapters.chat.slack.config import SlackSchema, SlackSettings
from bridge import config as core_config
from bridge.board import Board
from bridge.config import Config, PlatformSchema
from bridge.platform import ChatPlatform

__all__ = ["SCHEMAS", "DevGuildMissing", "DevGuildService", "bridge_app", "devguild_of",
           "load_config", "platform", "platforms"]

if TYPE_CHECKING:  # the dev guild's server needs aiohttp, an extra
    from adapters.chat.fabric.devguild import DevGuild

log = logging.getLogger(__name__)

#: The config schema of every chat platform, in the order messages list them; the
#: first is a binding's default platform.
SCHEMAS: tuple[PlatformSchema, ...] = (FabricSchema(), SlackSchema(), LarkSchema(),
                                       MemorySchema())


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file with every platform's schema.

    Args:
        path: The TOML file; None means the embedded default ``conf/bridge.toml``.

    Raises:
        bridge.config.ConfigError: naming the file, line and key of the first problem.
    """
    return core_config.load_config(path, SCHEMAS)


def platforms(config: Config) -> dict[str, ChatPlatform]:
    """The chat platforms the config's bindings use, by name.

    Raises:
        ValueError: a platform the code cannot build from a config (see :func:`platform`).
    """
    return {name: platform(config, name)
            for name in sorted({b.platform for b in config.bindings})}


def platform(config: Config, name: str) -> ChatPlatform:
    """The chat platform ``name`` (a schema's in :data:`SCHEMAS`) built from the config.

    Raises:
        ValueError: a platform the code cannot build from a config (not yet
            supported, or the in-memory one); the message says which and why.
    """
    if name == "fabric":
        return FabricPlatform(fabric_settings(config), config.bridge.catch_up_window_s)
    if name == "slack":
        from adapters.chat.slack.platform import SlackPlatform  # slack-sdk: the slack extra

        settings = config.platforms.get("slack")
        return SlackPlatform(settings if isinstance(settings, SlackSettings) else SlackSettings(),
                             config.bridge.catch_up_window_s)
    if name == "lark":
        from adapters.chat.lark.config import LarkSettings
        from adapters.chat.lark.platform import LarkPlatform  # lark-oapi: the lark extra

        found = config.platforms.get("lark")
        return LarkPlatform(found if isinstance(found, LarkSettings) else LarkSettings(),
                            config.bridge.catch_up_window_s, config.bridge.state_dir)
    if name == "memory":
        raise ValueError("platform 'memory' is the in-memory platform for tests: a "
                         "program builds it (adapters.chat.memory) and hands it to "
                         "BridgeApp; a config file cannot run it")
    raise ValueError(f"platform {name!r} is configured but not supported by this "
                     "version of the bridge yet")


class DevGuildMissing(RuntimeError):
    """The config asks for the dev guild but its server's dependencies are not installed."""


class DevGuildService:
    """The in-process Fabric dev guild of a config's ``[devguild]`` table.

    Started by :class:`BridgeApp` after it took the state-dir lock, before the
    actors; the config the actors get talks to it.
    """

    def __init__(self) -> None:
        self.devguild: DevGuild | None = None

    def start(self, config: Config) -> Config:
        """Start the dev guild; return the config pointed at its Center.

        Raises:
            OSError: a port is taken.
            DevGuildMissing: the ``devguild`` extra is not installed.
        """
        settings = devguild_settings(config)
        assert settings is not None
        try:
            from adapters.chat.fabric.devguild import DevGuild, load_seed
        except ImportError as exc:  # aiohttp is an extra: pip install '.[devguild]'
            raise DevGuildMissing(
                f"the config's [devguild] needs the dev guild's server ({exc.name} is not "
                "installed): pip install -e '.[devguild]', or remove [devguild] and point "
                "[platforms.fabric] center_url at a real Fabric") from None
        self.devguild = DevGuild(load_seed(settings.seed), host=settings.host,
                                 center_port=settings.center_port,
                                 guild_port=settings.guild_port,
                                 token_ttl_s=settings.token_ttl_s,
                                 content_limit=self._content_limit(config))
        self.devguild.start()
        log.info("dev guild: center %s, guild %s", self.devguild.center_url,
                 self.devguild.guild_url)
        return with_center_url(config, self.devguild.center_url)

    @staticmethod
    def _content_limit(config: Config) -> int:
        """Fabric's ``content_limit`` when the config uses Fabric, else Fabric's own limit."""
        try:
            return fabric_settings(config).content_limit
        except LookupError:
            return CONTENT_LIMIT

    def stop(self) -> None:
        """Stop the dev guild (idempotent)."""
        if self.devguild is not None:
            self.devguild.stop()
            self.devguild = None


def bridge_app(config: Config, board: Board | None = None, **kwargs: Any) -> BridgeApp:
    """The bridge for ``config``, composed with its platforms, agent kinds and services.

    Args:
        config: The validated config.
        board: Board to publish on (one is made when None).
        **kwargs: Passed to :class:`BridgeApp` (e.g. ``scope_class`` in tests).
    """
    services = [DevGuildService()] if devguild_settings(config) is not None else []
    return BridgeApp(config, board, platforms=platforms, agents=build_agent,
                     services=services, **kwargs)


def devguild_of(app: BridgeApp) -> DevGuild | None:
    """The dev guild an app started (its config's ``[devguild]``), if it runs one."""
    return next((s.devguild for s in app.services if isinstance(s, DevGuildService)), None)
