"""The dev guild: a local Fabric (Center, one Guild, realtime) for development and tests.

Run it standalone with ``bin/bridge devguild`` or in-process::

    with DevGuild(load_seed()) as guild:
        guild.center_url, guild.guild_url
"""

from bridge.devguild.seed import Seed, SeedChannel, SeedUser, load_seed
from bridge.devguild.server import DevGuild
from bridge.devguild.state import GuildError, GuildState

__all__ = ["DevGuild", "GuildError", "GuildState", "Seed", "SeedChannel", "SeedUser", "load_seed"]
