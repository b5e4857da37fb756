"""Attack: an agent run reads the bridge's secrets from ``/proc/<bridge pid>/environ``.

A run executes as the bridge's user, and the bridge's pid is in ``bridge.lock``.
Linux shows in that file the environment block a process was started with;
``os.environ`` changes and ``unsetenv`` do not rewrite it, so the bridge
re-executes itself without the secret variables (see ``bridge/secrets.py``).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from adapters.chat.fabric.devguild import DevGuild
from bridge.statefiles import running_pid
from tests.security.bridge_process import bridge_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="/proc/<pid>/environ is Linux's")

#: Secret variables and their values (the echo key is the dev guild's, so it logs in).
SECRETS = {
    "BRIDGE_T_ECHO_KEY": "fak_dev_echo",
    "BRIDGE_T_MODEL_KEY": "sk-test-model-3c9f0d1e7b25a",
    "BRIDGE_T_LOCAL_KEY": "local-test-token-8e41b7a06d",
}


def test_secret_not_in_proc_environ(tmp_path: Path, devguild: DevGuild) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        [fabric]
        center_url = "{devguild.center_url}"
        [agents.echo]
        kind = "echo"
        api_key = "env:BRIDGE_T_ECHO_KEY"
        [agents.coder]
        kind = "codex"
        api_key = "env:BRIDGE_T_ECHO_KEY"
        model_api_key = "env:BRIDGE_T_MODEL_KEY"
        env = {{ LOCAL_KEY = "env:BRIDGE_T_LOCAL_KEY" }}
        [[bindings]]
        agent = "echo"
        guild = "dev"
    """), encoding="utf-8")
    state_dir = tmp_path / "var"
    with bridge_process(config, state_dir, SECRETS, tmp_path / "bridge.log") as process:
        # Connected: the echo key reached the bridge. Now look as a run would.
        pid = running_pid(state_dir)
        assert pid == process.pid  # the re-exec keeps the pid
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    readable = [name for name, value in SECRETS.items()
                if value.encode() in environ or value.encode() in cmdline]
    assert not readable, f"the values of {readable} are readable in /proc/{pid}"
    named = [name for name in SECRETS if f"{name}=".encode() in environ]
    assert not named, f"{named} are still in the bridge's environment"
