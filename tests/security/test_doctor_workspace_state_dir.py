"""Attack: a run opens ``bridge.db`` because its workspace lies next to it.

A run executes as the bridge's user; from a workspace inside the state dir (or
a workspace root that holds it) it reads every message, session and pending
answer. ``bridge doctor`` warns about each such folder, and only about those.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from adapters.chat.fabric.devguild import DevGuild
from bridge.ops.doctor import run_checks
from tests.support import write_config


def test_doctor_workspace_in_state_dir(tmp_path: Path, devguild: DevGuild) -> None:
    command = f'command = ["{sys.executable}", "-c", "print(1)"]'
    state_dir = tmp_path / "var"
    agents = textwrap.dedent(f"""
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        [agents.inside]
        kind = "command"
        api_key = "fak_dev_echo"
        {command}
        workspace = "{state_dir / 'ws'}"
        [agents.roots]
        kind = "command"
        api_key = "fak_dev_echo"
        {command}
        workspace_roots = ["{tmp_path}"]
        workspace = "{tmp_path / 'work' / 'main'}"
        workspaces = {{ other = "{tmp_path / 'work' / 'other'}", state = "{state_dir / 'x'}" }}
        [agents.fine]
        kind = "command"
        api_key = "fak_dev_echo"
        {command}
        workspace = "{tmp_path / 'elsewhere'}"
        [agents.plain]
        kind = "command"
        api_key = "fak_dev_echo"
        {command}
    """)
    config = write_config(tmp_path, devguild.center_url, agents=agents)
    checks = run_checks(config, timeout_s=3.0)
    warned = {c.name: c for c in checks if "near state dir" in c.name}
    assert sorted(warned) == [
        "agent inside workspace near state dir",
        "agent roots workspace_roots near state dir",
        "agent roots workspaces.state near state dir",
    ]
    assert all(c.level == "warn" for c in warned.values())
    # The default workspace (agent "plain") lies beside the state dir, not inside it.
    assert config.agents["plain"].workspace == tmp_path / "var-workspaces" / "plain"
    inside = warned["agent inside workspace near state dir"].message
    assert "lies inside the state dir" in inside and "set workspace in [agents.inside]" in inside
    assert "holds the state dir" in warned["agent roots workspace_roots near state dir"].message
