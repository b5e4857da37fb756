"""The dev guild: a local Fabric (Center, one Guild, realtime) for development and tests.

Run it standalone with ``bin/bridge devguild`` or in-process::

    with DevGuild(load_seed()) as guild:
        guild.center_url, guild.guild_url
"""

from adapters.chat.fabric.devguild.seed import Seed, SeedChannel, SeedUser, load_seed
from adapters.chat.fabric.devguild.server import DevGuild
from adapters.chat.fabric.devguild.state import GuildError, GuildState

__all__ = ["DevGuild", "GuildError", "GuildState", "Seed", "SeedChannel", "SeedUser", "load_seed"]
