"""Attack: another local user reads the state store (every message, session and answer).

Before, ``bridge.db``, its ``-wal`` and ``-shm`` were 0644 and the state dir
0755. After ``bridge start`` the dir is 0700 and the bridge's files in it 0600,
including files an older bridge left with wider modes.
"""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from adapters.chat.fabric.devguild import DevGuild
from bridge import statefiles
from bridge.statefiles import secure_state_dir
from bridge.store import open_store
from tests.security.bridge_process import bridge_process

FILES = ("bridge.db", "bridge.db-wal", "bridge.db-shm", "status.json", "bridge.lock")


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_permissions(tmp_path: Path, devguild: DevGuild) -> None:
    state_dir = tmp_path / "var"
    open_store(state_dir).close()  # a store an older bridge left behind, world-readable
    state_dir.chmod(0o755)
    (state_dir / "bridge.db").chmod(0o644)
    (state_dir / "status.json").write_text("{}", encoding="utf-8")
    (state_dir / "status.json").chmod(0o644)
    config = tmp_path / "bridge.toml"
    config.write_text(textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        [fabric]
        center_url = "{devguild.center_url}"
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        [[bindings]]
        agent = "echo"
        guild = "dev"
    """), encoding="utf-8")
    with bridge_process(config, state_dir, {}, tmp_path / "bridge.log"):
        modes = {name: oct(mode(state_dir / name)) for name in FILES}
        dir_mode = oct(mode(state_dir))
    assert dir_mode == oct(0o700)
    assert modes == {name: oct(0o600) for name in FILES}


def test_secure_state_dir_leaves_other_files_and_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statefiles, "_operator_umask", None)
    state_dir = tmp_path / "var"
    workspace = state_dir / "workspaces" / "tool"
    workspace.mkdir(parents=True)
    script = workspace / "run.sh"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    (state_dir / "bridge.db-wal").write_bytes(b"")
    (state_dir / "bridge.db-wal").chmod(0o644)
    before = os.umask(0o022)
    try:
        changed = secure_state_dir(state_dir)
        assert statefiles.operator_umask() == 0o022  # what agent children get
    finally:
        os.umask(before)
    assert state_dir in changed and state_dir / "bridge.db-wal" in changed
    assert mode(state_dir / "bridge.db-wal") == 0o600
    assert mode(script) == 0o755 and mode(workspace) != 0o600
