"""The whole actor tree against the dev guild over real loopback sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.app import BridgeApp
from bridge.board import Board
from bridge.devguild import DevGuild
from tests.conftest import Member, wait_until, write_config


@pytest.fixture
def bridge(tmp_path: Path, devguild: DevGuild) -> Iterator[BridgeApp]:
    """A bridge with the echo agent bound to every channel of the dev guild."""
    app = BridgeApp(write_config(tmp_path, devguild.center_url), Board())
    app.start()
    try:
        wait_until(lambda: (row := app.board.connection("echo", "dev")) and
                   row.state == "connected", what="echo connected")
        yield app
    finally:
        app.stop()


def test_hello_gets_echo_answer(bridge: BridgeApp, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    alice.post("general", "hello")
    reply = alice.wait_reply("echo", "general", lambda c: "hello" in c)
    assert reply == "hello"
