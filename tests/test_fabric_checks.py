"""Fabric's checks for ``bridge doctor`` (``FabricPlatform.checks``) against the dev guild.

The lines are doctor's lines for Fabric, word for word: the same names, levels
and messages doctor printed before the checks moved into the Fabric adapter.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from adapters.chat.fabric.config import fabric_settings
from adapters.chat.fabric.devguild import DevGuild, load_seed
from adapters.chat.fabric.platform import FabricPlatform
from bridge.config import Config
from bridge.names import NOT_UNIQUE
from bridge.ops.doctor import run_checks
from bridge.platform import PlatformCheck
from tests.support import write_config

AGENTS = textwrap.dedent("""
    [agents.echo]
    kind = "echo"
    api_key = "fak_dev_echo"
    admins = ["alice", "ghost"]
    allowed_users = ["bob"]

    [agents.intruder]
    kind = "echo"
    api_key = "fak_not_a_real_key_4711"

    [agents.lost]
    kind = "echo"
    api_key = "fak_dev_alice"
""")
BINDINGS = textwrap.dedent("""
    [[bindings]]
    agent = "echo"
    guild = "dev"
    channels = ["general", "work"]

    [[bindings]]
    agent = "echo"
    guild = "dev"
    channels = ["report", "missing"]

    [[bindings]]
    agent = "intruder"
    guild = "dev"

    [[bindings]]
    agent = "lost"
    guild = "nope"

    [[bindings]]
    agent = "lost"
    guild = "dev"
    channels = ["*"]
""")


def platform_checks(config: Config, agent: str) -> list[PlatformCheck]:
    platform = FabricPlatform(fabric_settings(config), config.bridge.catch_up_window_s)
    bindings = [b for b in config.bindings if b.agent == agent]
    return platform.checks(config.agents[agent], bindings, timeout_s=3.0)


def test_lines_for_each_agent(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url, agents=AGENTS, bindings=BINDINGS)
    center, guild = devguild.center_url, devguild.guild_url

    def resolves(what: str, entry: str, id_: str) -> PlatformCheck:
        return PlatformCheck(f"{what} name {entry!r} (echo@dev)", "ok",
                             f"agent echo in guild dev: {what} name {entry!r} resolves to id "
                             f"{id_} ({NOT_UNIQUE})")

    assert platform_checks(config, "echo") == [
        PlatformCheck("center login (echo)", "ok",
                      f"Center at {center} accepted agent echo's API key (user echo, "
                      "guilds: dev)"),
        PlatformCheck("guild dev (echo)", "ok",
                      f"guild dev at {guild} reachable; bound channel(s) general, work found"),
        PlatformCheck("guild dev (echo)", "fail",
                      "guild dev: agent echo cannot see bound channel(s) missing (it sees: "
                      "dm-alice-echo, general, report, work); fix the binding's channels or "
                      "add the agent to them"),
        resolves("channel", "general", devguild.channel_id("general")),
        resolves("channel", "work", devguild.channel_id("work")),
        resolves("channel", "report", devguild.channel_id("report")),
        resolves("user", "alice", devguild.user_id("alice")),
        PlatformCheck("user name 'ghost' (echo@dev)", "warn",
                      "agent echo in guild dev: user entry 'ghost' matches no user id or name "
                      "seen, so it matches nothing; fix the entry or write the id"),
        resolves("user", "bob", devguild.user_id("bob")),
    ]
    assert platform_checks(config, "intruder") == [
        PlatformCheck("center login (intruder)", "fail",
                      f"Center at {center} refused agent intruder's API key (Center refused "
                      "the API key (login: HTTP 401 (invalid api key))); check api_key in "
                      "[agents.intruder] (from inline)"),
    ]
    assert platform_checks(config, "lost") == [
        PlatformCheck("center login (lost)", "ok",
                      f"Center at {center} accepted agent lost's API key (user alice, "
                      "guilds: dev)"),
        PlatformCheck("guild nope (lost)", "fail",
                      "agent lost has no access to guild nope (its guilds: dev); fix the "
                      "binding's guild or add the agent to the guild"),
        PlatformCheck("guild dev (lost)", "ok",
                      f"guild dev at {guild} reachable; agent lost sees 4 channel(s): "
                      "dm-alice-echo, general, report, work"),
    ]


def test_doctor_prints_the_platforms_lines(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url, agents=AGENTS, bindings=BINDINGS)
    expected = [(c.name, c.level, c.message)
                for agent in config.agents for c in platform_checks(config, agent)]
    shown: list[tuple[str, str, str]] = [(c.name, c.level, c.message) for c in run_checks(config)]
    first = shown.index(expected[0])
    assert shown[first:first + len(expected)] == expected


def test_a_down_center_is_reported_once(tmp_path: Path) -> None:
    stopped = DevGuild(load_seed(), center_port=0, guild_port=0)
    stopped.start()
    url = stopped.center_url
    stopped.stop()
    config = write_config(tmp_path, url, agents=AGENTS, bindings=BINDINGS)
    platform = FabricPlatform(fabric_settings(config), config.bridge.catch_up_window_s)
    lines = [platform.checks(agent, [b for b in config.bindings if b.agent == agent.name],
                             timeout_s=2.0) for agent in config.agents.values()]
    assert lines[0] == [PlatformCheck(
        "center login (echo)", "fail",
        f"Center at {url} unreachable (login: Center unreachable (ConnectionError)); check "
        "fabric.center_url and that Center is up")]
    assert lines[1:] == [[], []], "the other agents would only repeat it, each after a timeout"
