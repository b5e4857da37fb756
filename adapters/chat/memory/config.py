"""The in-memory platform's part of the config file: a name and nothing else.

It has no settings table and no identity table: the program that builds a
:class:`~adapters.chat.memory.platform.MemoryPlatform` on its own server (a
test) gives each agent a :class:`MemoryIdentity` in code. A config file may
bind an agent on it, but the composition does not build it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bridge.config import Aliases
from bridge.config_reader import Reader
from bridge.secrets import Secret

#: The platform's name in the config and in keys.
NAME = "memory"


@attrs.frozen
class MemoryIdentity:
    """An agent's identity on an in-memory server.

    Attributes:
        credential: The credential the server knows (``MemoryServer.add_user``).
    """

    credential: Secret


class MemorySchema:
    """The in-memory platform's config (:class:`bridge.config.PlatformSchema`)."""

    name = NAME
    has_table = False
    identity_keys: tuple[str, ...] = ()  # identities are given in code
    default_scope = "channel"
    missing_space = ""
    default_space = ""
    aliases = Aliases()
    extra_tables: tuple[str, ...] = ()

    def read_settings(self, reader: Reader, table: Mapping[str, Any] | None,
                      prefix: str) -> object:
        """No settings (the platform has no table)."""
        return None

    def read_identity(self, reader: Reader, table: Mapping[str, Any],
                      prefix: str) -> MemoryIdentity:
        """Never called: the platform has no identity keys (identities are given in code)."""
        raise reader.fail(prefix, "the in-memory platform's identities are given in code")

    def read_extra(self, reader: Reader, name: str, table: Mapping[str, Any]) -> object:
        """The platform owns no other table."""
        raise reader.fail(name, "not a table of the in-memory platform")
