"""Test helpers: waiting on conditions, writing bridge configs, chat members."""

from __future__ import annotations

import queue
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.devguild.seed import Seed, SeedUser
from adapters.chat.fabric.realtime import FabricSocket
from adapters.chat.fabric.rest import FabricCenter, FabricGuild
from bridge.board import Board
from bridge.cli.compose import bridge_app, load_config
from bridge.config import Config
from bridge.errors import Unauthorized

#: Seconds a test waits for something that should happen quickly on loopback.
WAIT_S = 10.0

#: A command agent that waits for a file named ``gate`` in its workspace, removes
#: it, and answers "answer to: " + the texts of the messages it was asked (the
#: prompt's lines after "Messages to answer:", one JSON object each).
GATED_AGENT = textwrap.dedent("""
    import json, os, sys, time
    prompt = sys.stdin.read()
    gate = os.path.join(os.getcwd(), "gate")
    while not os.path.exists(gate):
        time.sleep(0.02)
    os.remove(gate)
    lines = prompt.split("Messages to answer:\\n", 1)[1]
    print("answer to: " + " + ".join(json.loads(l)["text"] for l in lines.split("\\n")))
""")


def wait_until(predicate: Callable[[], Any], timeout_s: float = WAIT_S,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def with_helper(seed: Seed, helper_key: str = "fak_dev_helper") -> Seed:
    """``seed`` plus the agent user ``helper``, a member of every channel."""
    helper = SeedUser(name="helper", kind="agent", api_key=helper_key)
    channels = tuple(attrs.evolve(c, members=(*c.members, "helper")) for c in seed.channels)
    return attrs.evolve(seed, users=(*seed.users, helper), channels=channels)


def start_bridge(config: Config, *, agents: Iterable[str] | None = None,
                 apps: list[BridgeApp] | None = None, **kwargs: Any) -> BridgeApp:
    """Start a bridge in this process and wait until its agents are connected.

    Args:
        config: The bridge's config.
        agents: The agents to wait for, on every guild they are bound in
            (default: every agent of a binding).
        apps: A list to append the app to before it starts, so that the caller
            (a fixture) stops it at the end; without one, a bridge whose agents
            do not connect is stopped here.
        **kwargs: Passed to :class:`BridgeApp` (e.g. ``scope_class``).

    Returns:
        The started bridge.

    Raises:
        pytest.fail.Exception: when an agent is not connected within
            :data:`WAIT_S` seconds.
    """
    wanted = set(agents) if agents is not None else {b.agent for b in config.bindings}
    pairs = sorted({(b.agent, b.space) for b in config.bindings if b.agent in wanted})
    app = bridge_app(config, Board(), **kwargs)
    if apps is not None:
        apps.append(app)
    app.start()

    def connected() -> bool:
        rows = [app.board.connection(agent, guild) for agent, guild in pairs]
        return all(row is not None and row.state == "connected" for row in rows)

    try:
        wait_until(connected, what=" and ".join(f"{a} connected to {g}" for a, g in pairs))
    except BaseException:
        if apps is None:
            app.stop()
        raise
    return app


def write_config(tmp_path: Path, center_url: str, *, agents: str | None = None,
                 bindings: str | None = None, debounce_s: float = 0.2,
                 extra: str = "", fabric_extra: str = "", bridge_extra: str = "") -> Config:
    """Write a bridge config into ``tmp_path`` and load it.

    ``bridge_extra`` and ``fabric_extra`` are lines added to those tables;
    ``extra`` is appended at the end.
    """
    agents = agents or textwrap.dedent("""
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
    """)
    bindings = bindings or textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["*"]
    """)
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        debounce_s = {debounce_s}
        log_level = "debug"
        {bridge_extra}

        [fabric]
        center_url = "{center_url}"
        {fabric_extra}
    """) + agents + bindings + extra
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


class Member:
    """A chat member on real sockets: collects what the channel shows, posts lines.

    Args:
        guild: The dev guild.
        name: Seeded user name.
    """

    def __init__(self, guild: DevGuild, name: str) -> None:
        self.guild = guild
        self.name = name
        session = FabricCenter(guild.center_url).login(guild.api_key(name))
        self.access = session.guilds["dev"]
        self.rest = FabricGuild(self.access)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.socket = FabricSocket(self.access.endpoint, lambda: self.access.token,
                                   self._on_event, lambda reason: None)
        self.socket.connect()
        for channel in self.rest.channels():
            assert self.socket.join(channel["id"]), f"{name} could not join {channel['name']}"

    def _on_event(self, name: str, payload: Any) -> None:
        if name == "message.created" and isinstance(payload, dict):
            with self.lock:
                self.seen.append(payload)

    def _login(self) -> None:
        session = FabricCenter(self.guild.center_url).login(self.guild.api_key(self.name))
        self.access = session.guilds["dev"]
        self.rest.access = self.access

    def post(self, channel: str, content: str) -> dict[str, Any]:
        """Post ``content`` in the channel named ``channel`` (logging in again on a 401)."""
        try:
            return self.rest.post(self.guild.channel_id(channel), content)
        except Unauthorized:
            self._login()
            return self.rest.post(self.guild.channel_id(channel), content)

    def messages_from(self, author: str, channel: str) -> list[str]:
        """Contents of messages by ``author`` in ``channel``, in the channel's history."""
        author_id = self.guild.user_id(author)
        items = self.guild.state.messages(self.guild.channel_id(channel))
        return [m["content"] for m in items if m["authorUserId"] == author_id]

    def wait_reply(self, author: str, channel: str, predicate: Callable[[str], bool],
                   timeout_s: float = WAIT_S) -> str:
        """Wait until ``author`` posted a message in ``channel`` matching ``predicate``."""
        found: list[str] = wait_until(
            lambda: [c for c in self.messages_from(author, channel) if predicate(c)],
            timeout_s, f"a reply by {author} in {channel}")
        return found[0]

    def close(self) -> None:
        """Disconnect."""
        self.socket.close()


def script_agent_table(tmp_path: Path, name: str, code: str, extra: str = "") -> str:
    """An ``[agents.echo]`` command agent running the Python ``code`` (written to ``name``)."""
    script = tmp_path / name
    script.write_text(code, encoding="utf-8")
    return textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        api_key = "fak_dev_echo"
        command = ["{sys.executable}", "{script}"]
    """) + textwrap.dedent(extra)


def gated_agent_table(tmp_path: Path, extra: str = "") -> tuple[str, Path]:
    """An ``[agents.echo]`` table running :data:`GATED_AGENT`, and its workspace."""
    workspace = tmp_path / "ws"
    table = script_agent_table(tmp_path, "gated.py", GATED_AGENT,
                               f'workspace = "{workspace}"\n' + textwrap.dedent(extra))
    return table, workspace


def gated_agent(tmp_path: Path, code: str = GATED_AGENT) -> str:
    """An ``[agents.echo]`` command agent running ``code`` (by default :data:`GATED_AGENT`)
    in the workspace ``tmp_path/ws``, with no identity of its own (a platform's table adds it)."""
    script = tmp_path / "agent.py"
    script.write_text(code, encoding="utf-8")
    return textwrap.dedent(f"""
        [agents.echo]
        kind = "command"
        command = ["{sys.executable}", "{script}"]
        workspace = "{tmp_path / 'ws'}"
    """)


def gated_config(tmp_path: Path, center_url: str, extra: str = "",
                 debounce_s: float = 0.1) -> tuple[Config, Path]:
    """A bridge config whose echo agent is :data:`GATED_AGENT`, and its workspace."""
    table, workspace = gated_agent_table(tmp_path, extra)
    return write_config(tmp_path, center_url, agents=table, debounce_s=debounce_s), workspace


def member_factory(guild: DevGuild) -> Iterator[Callable[[str], Member]]:
    """For a fixture: yields a factory of connected members of ``guild``, closes them after."""
    made: list[Member] = []

    def make(name: str) -> Member:
        member = Member(guild, name)
        made.append(member)
        return member

    yield make
    for member in made:
        member.close()
