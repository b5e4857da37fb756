"""Shared fixtures: a dev guild on loopback and chat members."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bridge.devguild import DevGuild, load_seed
from tests.support import Member


@pytest.fixture
def devguild() -> Iterator[DevGuild]:
    """The seeded dev guild on OS-chosen loopback ports."""
    guild = DevGuild(load_seed(), center_port=0, guild_port=0)
    guild.start()
    try:
        yield guild
    finally:
        guild.stop()


@pytest.fixture
def members(devguild: DevGuild) -> Iterator[Callable[[str], Member]]:
    """Factory of connected members; all are closed at the end."""
    made: list[Member] = []

    def make(name: str) -> Member:
        member = Member(devguild, name)
        made.append(member)
        return member

    yield make
    for member in made:
        member.close()
