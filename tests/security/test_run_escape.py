"""Attack: a run's child detaches (``setsid``, a double fork) and outlives the run.

An agent runs commands as the bridge's user. A command that leaves the run's
process group kept running after the run ended, after ``/stop``, after the
timeout and after a ``kill -9`` of the bridge, and one that kept stdout open
held the run itself until it ended. Every process a run starts must be found
(its cgroup where one can be made, else its marker in the environment, its
process group and the parent chain) and killed on stop, timeout, exit and at
the next start (``bridge/procs.py``).

Each test runs twice: with run cgroups (when this machine lets the bridge make
them) and without (the fallback every host has). The escaped process is a
``sleep`` with an argument unique to the test, found in ``/proc``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import bridge.procs as procs
from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board
from bridge.cli import compose
from bridge.config import Config
from bridge.model import ScopeKey
from bridge.store import DB_FILE, Store
from tests.support import Member, script_agent_table, wait_until, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")

#: Seconds the escaped sleeper would live if nothing killed it.
SLEEP_S = 300

#: The agent: starts the escape, waits until the sleeper shows in /proc, writes its
#: pid to ``sleeper.pid`` in the workspace; then answers, or (prompt "wait") waits.
AGENT = textwrap.dedent("""
    import os, subprocess, sys, time
    ARG = {arg!r}
    prompt = sys.stdin.read()
    {escape}
    def find():
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{{name}}/cmdline", "rb") as f:
                        argv = f.read().split(b"\\0")
                except OSError:
                    continue
                if os.path.basename(argv[0]) == b"sleep" and argv[1:2] == [ARG.encode()]:
                    return name
        return None
    deadline = time.monotonic() + 30
    while (pid := find()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with open("sleeper.pid.tmp", "w") as f:
        f.write(pid or "")
    os.rename("sleeper.pid.tmp", "sleeper.pid")
    if "wait" in prompt:
        time.sleep(600)
    print("answered")
""")

#: Ways out of the run's process group (each keeps the run's stdout open).
ESCAPES = {
    "setsid": "os.system(f\"setsid sh -c 'sleep {ARG}' &\")",
    "double-fork": textwrap.dedent("""
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", ARG])
            os._exit(0)
        os.wait()
    """),
    # Clears the marker too: only a cgroup holds it.
    "env-i": "os.system(f\"env -i /usr/bin/setsid /bin/sh -c 'exec sleep {ARG}' &\")",
}


def cgroups_usable() -> bool:
    """Whether this machine lets the bridge make run cgroups."""
    return procs.cgroup_base() is not None


@pytest.fixture(params=["cgroup", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``cgroup``: run cgroups (skipped where none can be made); ``fallback``: none."""
    if request.param == "cgroup" and not cgroups_usable():
        pytest.skip("no writable cgroup v2 here")
    if request.param == "fallback":
        monkeypatch.setattr(procs, "cgroup_base", lambda: None)
    return str(request.param)


def sleepers(arg: str) -> list[int]:
    """Live (not zombie) ``sleep`` processes with the argument ``arg``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        zombie = stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")
        if os.path.basename(argv[0]) == b"sleep" and argv[1:2] == [arg.encode()] and not zombie:
            found.append(int(name))
    return found


@pytest.fixture
def sleeper_arg() -> Iterator[str]:
    """A unique ``sleep`` argument; any sleeper left with it is killed after the test."""
    arg = f"{SLEEP_S}.{secrets.randbelow(10**6):06d}"
    yield arg
    for pid in sleepers(arg):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def escape_config(tmp_path: Path, devguild: DevGuild, arg: str, escape: str,
                  timeout_s: float = 600) -> tuple[Config, Path]:
    workspace = tmp_path / "ws"
    code = AGENT.format(arg=arg, escape=ESCAPES[escape])
    table = script_agent_table(tmp_path, "escape.py", code,
                               f'workspace = "{workspace}"\ntimeout_s = {timeout_s}\n'
                               "stop_grace_s = 1\n")
    return write_config(tmp_path, devguild.center_url, agents=table, debounce_s=0.05), workspace


def escaped_pid(workspace: Path) -> int:
    """The sleeper's pid, as the agent found it (fails if it never started)."""
    path = workspace / "sleeper.pid"
    text = wait_until(lambda: path.exists() and path.read_text(), 30, "the agent's sleeper")
    return int(text)


def gone(pid: int, arg: str) -> bool:
    return pid not in sleepers(arg)


def gone_all(arg: str) -> bool:
    return not sleepers(arg)


def running(arg: str, pid: int) -> bool:
    return sleepers(arg) == [pid]


@pytest.fixture
def bridge_app() -> Iterator[Callable[[Config], BridgeApp]]:
    made: list[BridgeApp] = []

    def start(config: Config) -> BridgeApp:
        app = compose.bridge_app(config, Board())
        made.append(app)
        app.start()
        return app

    yield start
    for app in made:
        app.stop()


@pytest.mark.parametrize("escape", ["setsid", "double-fork"])
def test_detached_child_is_killed_when_the_run_ends(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member], mode: str,
        escape: str, sleeper_arg: str, bridge_app: Callable[[Config], BridgeApp]) -> None:
    config, workspace = escape_config(tmp_path, devguild, sleeper_arg, escape)
    bridge_app(config)
    alice = members("alice")
    alice.post("general", "run it")
    # The sleeper holds the run's stdout: the answer comes only once it is killed.
    alice.wait_reply("echo", "general", lambda c: c.startswith("answered"), 30)
    pid = escaped_pid(workspace)
    wait_until(lambda: gone(pid, sleeper_arg), 15, f"the detached sleeper {pid} to be killed")


def test_child_without_marker_is_killed_by_its_cgroup(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        sleeper_arg: str, bridge_app: Callable[[Config], BridgeApp]) -> None:
    if not cgroups_usable():
        pytest.skip("no writable cgroup v2 here")
    config, workspace = escape_config(tmp_path, devguild, sleeper_arg, "env-i")
    bridge_app(config)
    alice = members("alice")
    alice.post("general", "run it")
    alice.wait_reply("echo", "general", lambda c: c.startswith("answered"), 30)
    pid = escaped_pid(workspace)
    wait_until(lambda: gone(pid, sleeper_arg), 15, f"the unmarked sleeper {pid} to be killed")


@pytest.mark.parametrize("escape", ["setsid", "double-fork"])
def test_detached_child_is_killed_by_stop(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member], mode: str,
        escape: str, sleeper_arg: str, bridge_app: Callable[[Config], BridgeApp]) -> None:
    config, workspace = escape_config(tmp_path, devguild, sleeper_arg, escape)
    bridge_app(config)
    alice = members("alice")
    alice.post("general", "wait")
    pid = escaped_pid(workspace)
    alice.post("general", "/stop")
    alice.wait_reply("echo", "general", lambda c: "run failed: stopped by alice" in c, 30)
    wait_until(lambda: gone(pid, sleeper_arg), 15, f"the detached sleeper {pid} to be killed")


@pytest.mark.parametrize("escape", ["setsid", "double-fork"])
def test_detached_child_is_killed_by_the_timeout(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member], mode: str,
        escape: str, sleeper_arg: str, bridge_app: Callable[[Config], BridgeApp]) -> None:
    config, workspace = escape_config(tmp_path, devguild, sleeper_arg, escape, timeout_s=6)
    bridge_app(config)
    alice = members("alice")
    alice.post("general", "wait")
    pid = escaped_pid(workspace)
    alice.wait_reply("echo", "general", lambda c: "run failed: timed out" in c, 30)
    wait_until(lambda: gone(pid, sleeper_arg), 15, f"the detached sleeper {pid} to be killed")


def test_start_after_a_crash_kills_what_earlier_runs_left(
        tmp_path: Path, devguild: DevGuild, mode: str,
        bridge_app: Callable[[Config], BridgeApp]) -> None:
    config = write_config(tmp_path, devguild.center_url)
    key = str(ScopeKey("fabric", "echo", "dev", devguild.channel_id("general")))
    open_run, ended_run = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    store = Store(config.bridge.state_dir / DB_FILE)
    try:
        store.start_run(open_run, key, [])  # cut off by the crash: never ended
        store.start_run(ended_run, key, [])
        store.finish_run(ended_run, "done", [])  # ended, but a child outlived it
    finally:
        store.close()
    args = {name: f"{SLEEP_S}.{secrets.randbelow(10**6):06d}"
            for name in ("open", "ended", "stranger", "unmarked")}
    markers = {"open": f"{open_run}:0badc0de", "ended": f"{ended_run}:0badc0de",
               "stranger": f"{uuid.uuid4().hex[:12]}:0badc0de"}  # another bridge's run
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, marker in markers.items():
            env = {"PATH": os.environ.get("PATH", os.defpath), procs.MARKER_VAR: marker}
            children[name] = subprocess.Popen(["sleep", args[name]], env=env,
                                              start_new_session=True)
        if mode == "cgroup":  # no marker at all, but in the open run's cgroup
            base = procs.cgroup_base()
            assert base is not None
            group = base / f"{procs.CGROUP_PREFIX}{open_run}:feedbeef"
            group.mkdir()
            children["unmarked"] = subprocess.Popen(["sleep", args["unmarked"]], env={},
                                                    start_new_session=True)
            (group / "cgroup.procs").write_text(f"{children['unmarked'].pid}\n")
        for name, child in children.items():
            wait_until(functools.partial(running, args[name], child.pid),
                       what=f"the {name} sleeper")
        bridge_app(config)
        for name in children:
            if name != "stranger":
                wait_until(functools.partial(gone_all, args[name]), 15,
                           f"the {name} run's sleeper to be killed at start")
        assert sleepers(args["stranger"]) == [children["stranger"].pid]  # not this store's run
        if mode == "cgroup":
            wait_until(lambda: not group.exists(), 15, "the run cgroup to be removed")
    finally:
        for child in children.values():
            child.kill()
            child.wait()
