
"""Access, engage modes, commands, workspaces and secrets through the dev guild.

Real loopback sockets, the whole actor tree. The dev guild's seed is the
packaged one plus a second agent user, ``helper``, in every channel.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild, load_seed
from adapters.chat.fabric.devguild.seed import Seed
from bridge.cli.compose import devguild_of, load_config
from bridge.logs import remove_logging, setup_logging
from bridge.model import ScopeKey
from bridge.policy import DEFAULT_REFUSAL
from tests.support import (
    GATED_AGENT,
    Member,
    member_factory,
    start_bridge,
    wait_until,
    with_helper,
    write_config,
)

ECHO = textwrap.dedent("""
    [agents.echo]
    kind = "echo"
    api_key = "fak_dev_echo"
""")
BIND_ECHO = textwrap.dedent("""
    [[bindings]]
    agent = "echo"
    guild = "dev"
    channels = ["*"]
""")


@pytest.fixture
def guild() -> Iterator[DevGuild]:
    """The dev guild with the extra agent ``helper``."""
    with DevGuild(with_helper(load_seed()), center_port=0, guild_port=0) as running:
        yield running


@pytest.fixture
def people(guild: DevGuild) -> Iterator[Callable[[str], Member]]:
    """Factory of connected members of ``guild``."""
    yield from member_factory(guild)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line of the test, as ``bridge start --no-tui`` writes them (redacted)."""
    stream = io.StringIO()
    handlers = setup_logging(None, "DEBUG", stream)
    try:
        yield stream
    finally:
        remove_logging(handlers)


@pytest.fixture
def bridge(tmp_path: Path, guild: DevGuild) -> Iterator[Callable[..., BridgeApp]]:
    """Factory of a started bridge (``write_config`` arguments); stopped at the end."""
    apps: list[BridgeApp] = []

    def make(**kwargs: str) -> BridgeApp:
        app = start_bridge(write_config(tmp_path, guild.center_url, debounce_s=0.05, **kwargs))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def key(guild: DevGuild, agent: str, channel: str) -> str:
    return str(ScopeKey("fabric", agent, "dev", guild.channel_id(channel)))


def settled(app: BridgeApp, scope: str, received: int) -> None:
    """Wait until ``scope`` took ``received`` messages, is idle and delivered everything."""
    def done() -> bool:
        row = app.board.scope(scope)
        store = app.store
        return bool(row and row.received == received and row.state == "idle" and store and
                    not store.outbox_counts(scope).get("pending"))
    wait_until(done, what=f"{scope} settled after {received} messages")


def test_two_agents_in_one_channel_each_answer_once(
        bridge: Callable[..., BridgeApp], guild: DevGuild,
        people: Callable[[str], Member]) -> None:
    app = bridge(agents=ECHO + textwrap.dedent("""
        [agents.helper]
        kind = "echo"
        api_key = "fak_dev_helper"
    """), bindings=BIND_ECHO + textwrap.dedent("""
        [[bindings]]
        agent = "helper"
        guild = "dev"
        channels = ["general"]
    """))
    alice = people("alice")
    alice.post("general", "hello both")
    alice.wait_reply("echo", "general", lambda c: c == "hello both")
    alice.wait_reply("helper", "general", lambda c: c == "hello both")
    # Each scope sees alice's message and the other agent's answer (a bot: context only).
    for agent in ("echo", "helper"):
        settled(app, key(guild, agent, "general"), received=2)
        row = app.board.scope(key(guild, agent, "general"))
        assert row is not None and (row.engaged, row.runs) == (1, 1)
    assert alice.messages_from("echo", "general") == ["hello both"]
    assert alice.messages_from("helper", "general") == ["hello both"]


def test_member_not_allowed_is_refused_once_then_silent(
        bridge: Callable[..., BridgeApp], guild: DevGuild, people: Callable[[str], Member],
        captured: io.StringIO) -> None:
    app = bridge(agents=ECHO + 'allowed_users = ["alice"]\n')
    bob, alice = people("bob"), people("alice")
    bob.post("general", "do something")
    refusal = bob.wait_reply("echo", "general", lambda c: True)
    assert refusal == DEFAULT_REFUSAL
    bob.post("general", "please?")
    bob.post("general", "/status")
    alice.post("general", "ping")
    alice.wait_reply("echo", "general", lambda c: c == "ping")
    settled(app, key(guild, "echo", "general"), received=3)  # /status is not counted
    assert alice.messages_from("echo", "general") == [DEFAULT_REFUSAL, "ping"]
    log = captured.getvalue()
    scope = key(guild, "echo", "general")
    assert f"scope {scope}: message" in log and "author is not in allowed_users; refused" in log
    assert f"scope {scope}: /status from bob not run (author is not in allowed_users)" in log


def test_mention_sticky_conversation(bridge: Callable[..., BridgeApp], guild: DevGuild,
                                     people: Callable[[str], Member]) -> None:
    app = bridge(agents=ECHO, bindings=BIND_ECHO + 'engage = "mention-sticky"\n')
    alice = people("alice")
    mention = f"<@{guild.user_id('echo')}>"
    alice.post("general", "before any mention")
    alice.post("general", f"{mention} first question")
    alice.wait_reply("echo", "general", lambda c: c.endswith("first question"))
    alice.post("general", "follow-up without a mention")
    alice.wait_reply("echo", "general", lambda c: c == "follow-up without a mention")
    alice.post("general", "/release")
    alice.wait_reply("echo", "general", lambda c: "released" in c)
    alice.post("general", "after the release")
    alice.post("general", f"{mention} again")
    alice.wait_reply("echo", "general", lambda c: c.endswith("again"))
    settled(app, key(guild, "echo", "general"), received=5)
    answers = alice.messages_from("echo", "general")
    assert answers == [f"{mention} first question", "follow-up without a mention",
                       "echo: released; mention me to talk again", f"{mention} again"]


CWD_AGENT = "import os, sys; sys.stdin.read(); print('cwd=' + os.getcwd())"


def test_cd_to_a_forbidden_path(tmp_path: Path, bridge: Callable[..., BridgeApp],
                                guild: DevGuild, people: Callable[[str], Member]) -> None:
    roots = tmp_path / "roots"
    for name in ("main", "backend", "target"):
        (roots / name).mkdir(parents=True)
    (roots / "moving").symlink_to(roots / "target")
    script = tmp_path / "cwd.py"
    script.write_text(CWD_AGENT, encoding="utf-8")
    agents = textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["{sys.executable}", "{script}"]
        admins = ["alice"]
        workspace_roots = ["{roots}"]
        workspace = "{roots / 'main'}"
        workspaces = {{ backend = "{roots / 'backend'}", moving = "{roots / 'moving'}" }}
    """)
    app = bridge(agents=agents)
    # After the config was checked, the alias is pointed at a system folder.
    (roots / "moving").unlink()
    (roots / "moving").symlink_to("/etc")
    alice, bob = people("alice"), people("bob")
    alice.post("general", "/cd /etc")
    alice.wait_reply("echo", "general", lambda c: "is not a workspace alias" in c)
    alice.post("general", "/cd moving")
    refused = alice.wait_reply("echo", "general", lambda c: c.startswith("/cd moving"))
    assert "refused" in refused and "too broad" in refused
    bob.post("general", "/cd backend")
    alice.wait_reply("echo", "general", lambda c: c == "/cd: admins only")
    alice.post("general", "where are you?")
    alice.wait_reply("echo", "general", lambda c: c == f"cwd={roots / 'main'}")
    alice.post("general", "/cd backend")
    alice.wait_reply("echo", "general", lambda c: c.startswith("echo: workspace is now backend"))
    alice.post("general", "/ws")
    listing = alice.wait_reply("echo", "general", lambda c: c.startswith("echo workspaces"))
    assert f"backend: {roots / 'backend'} (current)" in listing
    alice.post("general", "and now?")
    alice.wait_reply("echo", "general", lambda c: c == f"cwd={roots / 'backend'}")
    record = app.store.session(key(guild, "echo", "general")) if app.store else None
    assert record is not None and record.workspace == str(roots / "backend")


def test_secrets_never_appear_in_any_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: io.StringIO,
        people: Callable[[str], Member]) -> None:
    echo_key, helper_key = "fak_secret_echo_5f1c2a9e7d", "fak_secret_helper_93b04c1e6a"
    model_key = "sk-secret-model-0a7e55c2d91f"
    monkeypatch.setenv("BRIDGE_TEST_ECHO_KEY", echo_key)
    monkeypatch.setenv("BRIDGE_TEST_MODEL_KEY", model_key)
    (tmp_path / "helper.key").write_text(helper_key + "\n", encoding="utf-8")
    base = load_seed()
    seed = with_helper(attrs.evolve(base, users=tuple(
        attrs.evolve(u, api_key=echo_key) if u.name == "echo" else u for u in base.users)),
        helper_key)
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text(seed_toml(seed), encoding="utf-8")
    answer = tmp_path / "answer.py"
    answer.write_text("import sys; print('done: ' + sys.stdin.read()[-20:].strip())",
                      encoding="utf-8")
    config_file = tmp_path / "bridge.toml"
    config_file.write_text(textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        debounce_s = 0.05
        log_level = "debug"

        [devguild]
        center_port = 0
        guild_port = 0
        seed = "seed.toml"

        [fabric]
        center_url = "http://127.0.0.1:1/api"

        [agents.echo]
        kind = "echo"
        api_key = "env:BRIDGE_TEST_ECHO_KEY"

        [agents.helper]
        kind = "command"
        api_key = "file:helper.key"
        command = ["{sys.executable}", "{answer}"]

        [agents.coder]
        kind = "codex"
        api_key = "env:BRIDGE_TEST_ECHO_KEY"
        model_api_key = "env:BRIDGE_TEST_MODEL_KEY"
        env = {{ EXTRA_TOKEN = "env:BRIDGE_TEST_MODEL_KEY" }}

        [[bindings]]
        agent = "echo"
        guild = "dev"

        [[bindings]]
        agent = "helper"
        guild = "dev"
        channels = ["general"]
    """), encoding="utf-8")
    config = load_config(config_file)
    app = start_bridge(config)
    try:
        devguild = devguild_of(app)
        assert devguild is not None
        alice = Member(devguild, "alice")
        try:
            alice.post("general", "hello")
            alice.wait_reply("echo", "general", lambda c: c == "hello")
            alice.wait_reply("helper", "general", lambda c: c.startswith("done:"))
            for command in ("/status", "/ws", "/help"):
                alice.post("general", command)
            alice.wait_reply("echo", "general", lambda c: c.startswith("echo commands:"))
            alice.wait_reply("helper", "general", lambda c: c.startswith("helper commands:"))
            wait_until(lambda: (config.bridge.state_dir / "status.json").exists(),
                       what="status.json")
            history = json.dumps(devguild.state.messages(devguild.channel_id("general")))
            snapshot = json.dumps(app.board.snapshot().to_dict())
            status = (config.bridge.state_dir / "status.json").read_text(encoding="utf-8")
        finally:
            alice.close()
    finally:
        app.stop()
    logging.getLogger("test").info("configs: %r", config.agents)  # reprs of the settings
    outputs = {"log": captured.getvalue(), "history": history, "board": snapshot,
               "status.json": status}
    assert "hello" in outputs["history"] and "scope fabric:echo:dev:" in outputs["log"]
    for name, text in outputs.items():
        for secret in (echo_key, helper_key, model_key):
            assert secret not in text, f"a secret value appears in the {name}"


def seed_toml(seed: Seed) -> str:
    """``seed`` as a seed file."""
    lines = [f'[guild]\nnode_id = "{seed.node_id}"\nname = "{seed.name}"\n']
    for user in seed.users:
        lines.append(f'[[users]]\nname = "{user.name}"\nkind = "{user.kind}"\n'
                     f'api_key = "{user.api_key}"\n')
    for channel in seed.channels:
        members = ", ".join(f'"{m}"' for m in channel.members)
        lines.append(f'[[channels]]\nname = "{channel.name}"\nx_type = "{channel.x_type}"\n'
                     f"public = {str(channel.is_public).lower()}\nmembers = [{members}]\n")
    return "\n".join(lines)


def test_command_agent_child_gets_no_bridge_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bridge: Callable[..., BridgeApp],
        people: Callable[[str], Member]) -> None:
    secret = "fak_secret_other_agent_7c3d1b"
    monkeypatch.setenv("BRIDGE_TEST_OTHER_KEY", secret)
    script = tmp_path / "env.py"
    script.write_text("import os, sys; sys.stdin.read(); "
                      "print('leak' if any('fak_secret' in v for v in os.environ.values()) "
                      "else 'clean')", encoding="utf-8")
    bridge(agents=textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["{sys.executable}", "{script}"]

        [agents.other]
        kind = "echo"
        api_key = "env:BRIDGE_TEST_OTHER_KEY"
    """))
    alice = people("alice")
    alice.post("general", "env?")
    assert alice.wait_reply("echo", "general", lambda c: c in ("leak", "clean")) == "clean"
    assert os.environ["BRIDGE_TEST_OTHER_KEY"] == secret


def test_timeout_is_for_admins_and_applies_to_the_next_run(
        tmp_path: Path, bridge: Callable[..., BridgeApp], people: Callable[[str], Member]) -> None:
    script = tmp_path / "gated.py"
    script.write_text(GATED_AGENT, encoding="utf-8")
    bridge(agents=textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["{sys.executable}", "{script}"]
        workspace = "{tmp_path / 'ws'}"
        stop_grace_s = 0.2
        admins = ["alice"]
    """))
    alice, bob = people("alice"), people("bob")
    bob.post("general", "/timeout 5")
    bob.wait_reply("echo", "general", lambda c: c == "/timeout: admins only")
    alice.post("general", "/timeout soon")
    alice.wait_reply("echo", "general", lambda c: c.startswith("/timeout: usage"))
    alice.post("general", "/timeout 0.02")
    alice.wait_reply("echo", "general", lambda c: "now time out after 0.02 minutes" in c)
    alice.post("general", "a job that never ends")  # the gate file is never created
    failed = alice.wait_reply("echo", "general", lambda c: "run failed" in c)
    assert failed == "⚠ echo: run failed: timed out after 1 s"
