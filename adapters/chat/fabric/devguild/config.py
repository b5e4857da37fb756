"""What ``bridge devguild`` reads from a config file (the dev guild alone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from adapters.chat.fabric.config import (
    DEVGUILD,
    DevGuildSettings,
    FabricSchema,
    read_devguild,
    read_fabric_settings,
)
from adapters.chat.fabric.devguild.seed import Seed, load_seed
from adapters.chat.fabric.rules import CONTENT_LIMIT
from bridge.config import BridgeSettings, PlatformSchema, read_toml
from bridge.config_reader import Reader


@attrs.frozen
class DevGuildConfig:
    """What ``bridge devguild`` reads from a config file (no Fabric table or agents needed).

    Attributes:
        path: The file it was read from.
        bridge: ``[bridge]`` (defaults when absent).
        devguild: ``[devguild]`` (defaults when absent).
        seed: The dev guild's seed, loaded from ``devguild.seed`` (or the packaged one).
        content_limit: Most characters per message: ``content_limit`` of
            ``[platforms.fabric]`` (or ``[fabric]``) when present, else Fabric's limit.
    """

    path: Path
    bridge: BridgeSettings
    devguild: DevGuildSettings
    seed: Seed
    content_limit: int


def read_devguild_config(reader: Reader, data: Mapping[str, Any]) -> DevGuildConfig:
    """What ``bridge devguild`` needs: ``[devguild]``, ``[bridge]``, Fabric's table if present.

    ``[agents]`` and ``[[bindings]]`` are neither required nor read (their
    secrets may not be set where only the dev guild runs). The seed is
    loaded here, so a bad one is reported at ``devguild.seed``.

    Args:
        reader: The config file's reader.
        data: The parsed file (top-level table name to value).

    Returns:
        The ``[bridge]`` and ``[devguild]`` settings, the loaded seed and
        the content limit (characters: Fabric's table's, else Fabric's).

    Raises:
        ConfigError: at the first bad or unknown key, or a seed file that
            cannot be read or parsed (at ``devguild.seed``).
    """
    reader.known_tables(data)
    bridge = reader.bridge(reader.table(data, "bridge", required=False) or {})
    settings = read_devguild(reader, reader.table(data, DEVGUILD, required=False) or {})
    fabric, prefix = reader.settings_table(data, FabricSchema())
    limit = (read_fabric_settings(reader, fabric, prefix, settings).content_limit
             if fabric is not None else CONTENT_LIMIT)
    try:
        seed = load_seed(settings.seed)
    except OSError as exc:
        raise reader.fail("devguild.seed", f"cannot read seed file {settings.seed}: "
                                         f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise reader.fail("devguild.seed", f"bad seed: {exc}") from None
    return DevGuildConfig(reader.file, bridge, settings, seed, limit)


def load_devguild_config(path: str | Path | None,
                         schemas: Sequence[PlatformSchema]) -> DevGuildConfig:
    """Read and validate what the dev guild needs from a config file.

    Only ``[devguild]``, ``[bridge]`` and (when present) Fabric's table are read;
    ``[agents]`` and ``[[bindings]]`` may be absent and are not checked.

    Args:
        path: The TOML file; None means the embedded default ``conf/bridge.toml``.
        schemas: Every platform's schema (:data:`bridge.cli.compose.SCHEMAS`): the
            file's other platforms' tables are known, not read.

    Returns:
        The validated :class:`DevGuildConfig`, its seed loaded.

    Raises:
        bridge.config.ConfigError: naming the file, line and key of the first problem
            found (a bad or unreadable seed is reported at ``devguild.seed``).
    """
    file, text, data = read_toml(path)
    return read_devguild_config(Reader(file, text, schemas, data), data)
