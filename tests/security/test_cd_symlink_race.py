"""Attack: a workspace alias is swapped between the check and the run's start.

An admin ``/cd``s to an alias that is a symlink inside ``workspace_roots``.
Someone (a run, a local user) re-points the link outside the roots right
after the bridge checked it. Before, the run got the alias and its process
followed the link to wherever it pointed by then (in a race test, 10 runs of
40 ran outside the roots). The run must get the real path that was checked.

The race is made deterministic: the check itself is wrapped so that the link
moves the moment the check returns.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import actors.scope
from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board
from bridge.cli.compose import bridge_app
from bridge.policy import check_workspace
from tests.support import Member, wait_until, write_config

CWD_AGENT = "import os, sys; sys.stdin.read(); print('cwd=' + os.getcwd())"


@pytest.fixture
def started() -> Iterator[list[BridgeApp]]:
    """Bridges to stop at the end."""
    apps: list[BridgeApp] = []
    yield apps
    for app in apps:
        app.stop()


def test_cd_symlink_swapped_after_the_check(tmp_path: Path, devguild: DevGuild,
                                            members: Callable[[str], Member],
                                            monkeypatch: pytest.MonkeyPatch,
                                            started: list[BridgeApp]) -> None:
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    for folder in (roots / "main", roots / "real", outside):
        folder.mkdir(parents=True)
    link = roots / "proj"
    link.symlink_to(roots / "real")
    script = tmp_path / "cwd.py"
    script.write_text(CWD_AGENT, encoding="utf-8")
    agents = textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["{sys.executable}", "{script}"]
        admins = ["{devguild.user_id('alice')}"]
        workspace_roots = ["{roots}"]
        workspace = "{roots / 'main'}"
        workspaces = {{ proj = "{link}" }}
    """)
    armed: list[Path] = []

    def check_then_swap(path: Path | str, roots: object = ()) -> Path:
        real = check_workspace(path, roots)  # type: ignore[arg-type]
        if armed and Path(path) == link:  # the race: the link moves right after the check
            link.unlink()
            link.symlink_to(outside)
            armed.clear()
        return real

    monkeypatch.setattr(actors.scope, "check_workspace", check_then_swap)
    config = write_config(tmp_path, devguild.center_url, agents=agents, debounce_s=0.05)
    app = bridge_app(config, Board())
    started.append(app)
    app.start()
    wait_until(lambda: (row := app.board.connection("echo", "dev")) is not None
               and row.state == "connected", what="echo connected")
    alice = members("alice")
    alice.post("general", "/cd proj")
    alice.wait_reply("echo", "general", lambda c: c.startswith("echo: workspace is now proj"))
    armed.append(link)
    alice.post("general", "where are you?")
    answer = alice.wait_reply("echo", "general", lambda c: c.startswith("cwd="))
    assert not armed, "the run started without checking its workspace"
    assert os.readlink(link) == str(outside)  # the swap did happen before the run started
    assert answer == f"cwd={os.path.realpath(roots / 'real')}"
