"""``bridge doctor``: checks against a real dev guild on loopback and real files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.chat.fabric.devguild import DevGuild, load_seed
from bridge.config import Config
from bridge.ops.doctor import Check, run_checks
from bridge.statefiles import StateLock
from bridge.store import DB_FILE, Store
from tests.support import write_config

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = [sys.executable, str(ROOT / "bin" / "bridge")]
BAD_KEY = "fak_not_a_real_key_4711"


def fails(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.level == "fail"]


def named(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, f"expected one check named {name!r} in {checks}"
    return found[0]


def agent_config(tmp_path: Path, center_url: str, table: str) -> Config:
    """The echo agent plus one more agent (``table``), both bound to guild dev."""
    agents = textwrap.dedent("""
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
    """) + textwrap.dedent(table)
    bindings = textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["*"]
    """)
    return write_config(tmp_path, center_url, agents=agents, bindings=bindings)


def fake_cli(tmp_path: Path, name: str, version: str) -> Path:
    """An executable that prints ``version`` for ``--version``, like the real CLIs."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version}'\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_all_checks_pass_for_the_echo_agent(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url, bindings=textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["general", "work"]
    """))
    checks = run_checks(config, timeout_s=3.0)
    assert [c for c in checks if c.level != "ok"] == []
    assert all(c.ok for c in checks)
    assert str(config.path) in named(checks, "config").message
    assert "no state store yet" in named(checks, "state store").message
    assert not (config.bridge.state_dir / DB_FILE).exists(), "doctor must not create the store"
    assert "accepted agent echo's API key" in named(checks, "center login (echo)").message
    guild = named(checks, "guild dev (echo)").message
    assert "general, work found" in guild
    assert not any("fak_dev_echo" in c.message for c in checks)


def test_existing_store_passes_its_integrity_check(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url)
    Store(config.bridge.state_dir / DB_FILE).close()
    check = named(run_checks(config), "state store")
    assert check.level == "ok" and "integrity" in check.message


def test_missing_bound_channel_fails(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url, bindings=textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["general", "no-such-channel"]
    """))
    check = named(run_checks(config), "guild dev (echo)")
    assert check.level == "fail"
    assert "no-such-channel" in check.message and "fix the binding" in check.message


def test_bad_api_key_fails_naming_the_agent_not_the_key(tmp_path: Path,
                                                        devguild: DevGuild) -> None:
    config = agent_config(tmp_path, devguild.center_url, f"""
        [agents.intruder]
        kind = "echo"
        api_key = "{BAD_KEY}"

        [[bindings]]
        agent = "intruder"
        guild = "dev"
    """)
    checks = run_checks(config)
    bad = named(checks, "center login (intruder)")
    assert bad.level == "fail" and not bad.ok
    assert "refused agent intruder's API key" in bad.message and "check api_key" in bad.message
    assert named(checks, "center login (echo)").level == "ok"
    assert not any(BAD_KEY in c.message or "fak_dev_echo" in c.message for c in checks)


def test_stopped_center_is_unreachable(tmp_path: Path) -> None:
    guild = DevGuild(load_seed(), center_port=0, guild_port=0)
    guild.start()
    url = guild.center_url
    guild.stop()
    config = write_config(tmp_path, url)
    check = named(run_checks(config, timeout_s=2.0), "center login (echo)")
    assert check.level == "fail"
    assert f"Center at {url} unreachable" in check.message


def test_corrupt_store_fails_naming_the_file(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url)
    db = config.bridge.state_dir / DB_FILE
    db.parent.mkdir(parents=True)
    garbage = b"this is not a database, just some bytes " * 200
    db.write_bytes(garbage)
    check = named(run_checks(config), "state store")
    assert check.level == "fail"
    assert str(db) in check.message
    assert db.read_bytes() == garbage, "doctor must leave a broken store as it found it"


def test_codex_binary_missing_fails_with_the_fix(tmp_path: Path, devguild: DevGuild) -> None:
    missing = tmp_path / "nowhere" / "codex"
    config = agent_config(tmp_path, devguild.center_url, f"""
        [agents.coder]
        kind = "codex"
        api_key = "fak_dev_echo"
        binary = "{missing}"
        sandbox = "danger-full-access"
    """)
    checks = run_checks(config)
    binary = named(checks, "agent coder binary")
    assert binary.level == "fail"
    assert str(missing) in binary.message
    assert "npm install -g @openai/codex" in binary.message
    assert 'binary = "/path/to/codex"' in binary.message
    assert named(checks, "agent coder sandbox").level == "warn"
    assert named(checks, "agent coder model key").level == "warn"
    assert named(checks, "agent coder").level == "warn"  # not bound anywhere


def test_codex_binary_on_path_shows_its_version(tmp_path: Path, devguild: DevGuild,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cli = fake_cli(tmp_path, "codex", "codex-cli 0.99.0")
    monkeypatch.setenv("PATH", f"{cli.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DOCTOR_TEST_MODEL_KEY", "sk-doctor-test-model-key")
    config = agent_config(tmp_path, devguild.center_url, f"""
        [agents.coder]
        kind = "codex"
        api_key = "fak_dev_echo"
        model_api_key = "env:DOCTOR_TEST_MODEL_KEY"
        workspace = "{tmp_path / 'work'}"

        [[bindings]]
        agent = "coder"
        guild = "dev"
    """)  # the workspace outside the state dir: the default one in it gets a warning
    checks = run_checks(config)
    binary = named(checks, "agent coder binary")
    assert binary.level == "ok" and "codex-cli 0.99.0" in binary.message
    assert [c for c in checks if c.level != "ok"] == []
    assert not any("sk-doctor-test-model-key" in c.message for c in checks)


def test_claude_bypass_permissions_as_root_fails(tmp_path: Path, devguild: DevGuild) -> None:
    cli = fake_cli(tmp_path, "claude", "2.0.0 (Claude Code)")
    config = agent_config(tmp_path, devguild.center_url, f"""
        [agents.reviewer]
        kind = "claude"
        api_key = "fak_dev_echo"
        binary = "{cli}"
        sandbox = "danger-full-access"

        [[bindings]]
        agent = "reviewer"
        guild = "dev"
    """)
    checks = run_checks(config)
    assert named(checks, "agent reviewer binary").level == "ok"
    permissions = named(checks, "agent reviewer permissions")
    if os.geteuid() != 0:
        assert permissions.level == "ok"
        return
    assert permissions.level == "fail"
    assert "bypassPermissions" in permissions.message and "root" in permissions.message
    assert 'sandbox = "workspace-write"' in permissions.message
    assert 'permission_mode = "acceptEdits"' in permissions.message
    assert "non-root user" in permissions.message


def test_command_agent_program_must_resolve(tmp_path: Path, devguild: DevGuild) -> None:
    config = agent_config(tmp_path, devguild.center_url, """
        [agents.script]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["no-such-program-4711", "--flag"]

        [[bindings]]
        agent = "script"
        guild = "dev"
    """)
    check = named(run_checks(config), "agent script command")
    assert check.level == "fail" and "no-such-program-4711" in check.message


def test_devguild_config_skips_network_checks_without_a_bridge(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/api", extra=textwrap.dedent("""
        [devguild]
    """))
    checks = run_checks(config)
    assert fails(checks) == []
    assert "skipped" in named(checks, "center").message


def test_devguild_config_checks_the_network_while_a_bridge_runs(tmp_path: Path,
                                                                devguild: DevGuild) -> None:
    port = int(devguild.center_url.rsplit(":", 1)[1].split("/", 1)[0])
    config = write_config(tmp_path, devguild.center_url, extra=textwrap.dedent(f"""
        [devguild]
        center_port = {port}
    """))
    with StateLock(config.bridge.state_dir):
        checks = run_checks(config)
    assert f"pid {os.getpid()}" in named(checks, "bridge").message
    assert named(checks, "center login (echo)").level == "ok"
    assert named(checks, "guild dev (echo)").level == "ok"


def run_doctor(config: Config) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, "doctor", "-c", str(config.path), "--timeout", "3"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_exit_codes_and_no_keys_in_output(tmp_path: Path, devguild: DevGuild) -> None:
    (tmp_path / "good").mkdir()
    good = write_config(tmp_path / "good", devguild.center_url)
    result = run_doctor(good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓" in result.stdout and "✗" not in result.stdout
    assert "fak_dev_echo" not in result.stdout + result.stderr

    (tmp_path / "bad").mkdir()
    bad = agent_config(tmp_path / "bad", devguild.center_url, f"""
        [agents.intruder]
        kind = "echo"
        api_key = "{BAD_KEY}"

        [[bindings]]
        agent = "intruder"
        guild = "dev"
    """)
    result = run_doctor(bad)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗" in result.stdout and "intruder" in result.stdout
    for key in (BAD_KEY, "fak_dev_echo"):
        assert key not in result.stdout + result.stderr


def test_cli_help_explains_doctor() -> None:
    result = subprocess.run([*BRIDGE, "doctor", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    assert "--config" in result.stdout and "how to fix" in result.stdout


SLACK_AGENT = textwrap.dedent("""
    [agents.slacker]
    kind = "echo"

    [agents.slacker.slack]
    bot_token = "env:TEST_SLACK_BOT"
    app_token = "env:TEST_SLACK_APP"
""")
SLACK_BINDING = textwrap.dedent("""
    [[bindings]]
    agent = "slacker"
    platform = "slack"
    channels = ["C123"]
""")
SLACK_TOKENS = {"TEST_SLACK_BOT": "xoxb-doctor-test-bot-token",
                "TEST_SLACK_APP": "xapp-doctor-test-app-token"}


def test_slack_only_agent_fails_clearly_without_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SLACK_TOKENS.items():
        monkeypatch.setenv(name, value)
    # No Slack answers on this port: the line says so, without a traceback or a token.
    config = write_config(tmp_path, "http://127.0.0.1:9/api", agents=SLACK_AGENT,
                          bindings=SLACK_BINDING,
                          extra='\n[platforms.slack]\napi_url = "http://127.0.0.1:9/api/"\n')
    check = named(run_checks(config), "slack tokens (slacker)")
    assert check.level == "fail" and not check.ok
    assert "agent slacker" in check.message and "not reached" in check.message
    assert not any(c.name.startswith("center") for c in run_checks(config))

    result = run_doctor(config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"✗ {check.message}" in result.stdout.splitlines()
    for token in SLACK_TOKENS.values():
        assert token not in result.stdout + result.stderr


def test_fabric_agent_is_checked_beside_a_slack_one(tmp_path: Path, devguild: DevGuild,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SLACK_TOKENS.items():
        monkeypatch.setenv(name, value)
    config = agent_config(tmp_path, devguild.center_url, SLACK_AGENT + SLACK_BINDING +
                          '\n[platforms.slack]\napi_url = "http://127.0.0.1:9/api/"\n')
    checks = run_checks(config)
    assert [(c.name, c.level) for c in fails(checks)] == [("slack tokens (slacker)", "fail")]
    assert named(checks, "center login (echo)").level == "ok"
    assert named(checks, "guild dev (echo)").level == "ok"
    assert not any(c.name == "center login (slacker)" for c in checks)
