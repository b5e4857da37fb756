"""Shared fixtures: a dev guild on loopback and chat members; a home of the tests' own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild, load_seed
from tests.support import Member, member_factory


@pytest.fixture(autouse=True, scope="session")
def own_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``HOME`` for the whole session: an empty folder, not the machine's.

    Agent children get ``HOME`` from the bridge, and the login shells their
    tools start (Codex and Claude Code run commands with ``bash -l``) read its
    rc files. A machine's ``~/.bashrc`` may run anything there: one with
    ``pyenv init`` takes a lock file in ``~/.pyenv`` on every login shell, and
    a shell killed while holding it (a run stopped under load, after its grace
    period) left every later login shell on the machine waiting 60 s for it,
    so the real-CLI tests failed long after the test that caused it. The tests
    do not depend on the machine's dotfiles, nor change them.
    """
    home = tmp_path_factory.mktemp("home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))
    yield home
    patch.undo()


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
    yield from member_factory(devguild)


@pytest.fixture
def apps() -> Iterator[list[BridgeApp]]:
    """Bridges a test started (append them), stopped at its end."""
    made: list[BridgeApp] = []
    yield made
    for app in made:
        app.stop()
