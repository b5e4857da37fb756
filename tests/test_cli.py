"""bin/bridge as a user runs it: real processes, real sockets on loopback."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.chat.fabric.rest import FabricCenter

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = [sys.executable, str(ROOT / "bin" / "bridge")]
DEADLINE_S = 20.0


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config like the embedded default, on free ports, with state in tmp_path."""
    center, guild = free_port(), free_port()
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        debounce_s = 0.1
        [devguild]
        host = "127.0.0.1"
        center_port = {center}
        guild_port = {guild}
        [fabric]
        center_url = "http://127.0.0.1:{center}/api"
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["*"]
    """)
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def wait_status(config: Path) -> dict[str, object]:
    """Wait until ``bridge status --json`` shows echo connected; return the snapshot."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = run("status", "--json", "-c", str(config))
        if result.returncode == 0:
            data: dict[str, object] = json.loads(result.stdout)
            connections = data["connections"]
            assert isinstance(connections, list)
            if connections and connections[0]["state"] == "connected":
                return data
        time.sleep(0.1)
    pytest.fail("the bridge did not report a connected gateway in time")


@pytest.fixture
def started(config_file: Path) -> Iterator[subprocess.Popen[str]]:
    """``bridge start --no-tui`` in a subprocess, stopped with SIGINT at the end."""
    process = subprocess.Popen([*BRIDGE, "start", "--no-tui", "-c", str(config_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_status(config_file)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("start", "top", "status", "devguild", "chat"):
        assert command in result.stdout
    start = run("start", "--help")
    assert start.returncode == 0 and "--no-tui" in start.stdout and "--config" in start.stdout


def test_bad_config_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[fabric]\ncenter_url = "http://x/api"\n[agents.echo]\nkind = "ech"\n'
                   'api_key = "k"\n[[bindings]]\nagent = "echo"\nguild = "dev"\n')
    result = run("status", "-c", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4: agents.echo.kind" in result.stderr


def test_status_without_a_bridge_says_so(config_file: Path) -> None:
    result = run("status", "-c", str(config_file))
    assert result.returncode == 1
    assert "no bridge is running" in result.stderr


def test_start_chat_status_and_clean_stop(started: subprocess.Popen[str],
                                          config_file: Path) -> None:
    second = run("start", "--no-tui", "-c", str(config_file))
    assert second.returncode == 1
    assert "already running" in second.stderr

    chat = subprocess.Popen([*BRIDGE, "chat", "--as", "alice", "general", "-c",
                             str(config_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write("hello\n")
    chat.stdin.flush()
    lines = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        line = chat.stdout.readline()
        lines.append(line)
        if "echo: hello" in line:
            break
    chat.stdin.close()
    assert chat.wait(timeout=10) == 0
    assert any("alice: hello" in line for line in lines), lines
    assert any("echo: hello" in line for line in lines), lines

    deadline = time.monotonic() + DEADLINE_S  # the status file is rewritten every 0.5 s
    status = run("status", "-c", str(config_file))
    while "runs=1" not in status.stdout and time.monotonic() < deadline:
        time.sleep(0.1)
        status = run("status", "-c", str(config_file))
    assert status.returncode == 0
    assert "echo@dev connected" in status.stdout
    assert "general echo idle" in status.stdout and "runs=1" in status.stdout

    started.send_signal(signal.SIGINT)
    assert started.wait(timeout=10) == 0
    assert started.stdout is not None
    output = started.stdout.read()
    assert "bridge stopped" in output
    assert "fak_dev_echo" not in output
    assert run("status", "-c", str(config_file)).returncode == 1


class Terminal:
    """A command on a pseudo-terminal, as an operator would run it."""

    def __init__(self, *args: str) -> None:
        self.main, child = pty.openpty()
        env = {**os.environ, "COLUMNS": "140", "LINES": "50", "TERM": "xterm-256color"}
        self.process = subprocess.Popen([*BRIDGE, *args], stdin=child, stdout=child,
                                        stderr=child, env=env, close_fds=True)
        os.close(child)
        self.screen = b""

    def _read(self) -> bool:
        ready, _, _ = select.select([self.main], [], [], 0.2)
        if ready:
            try:
                self.screen += os.read(self.main, 65536)
            except OSError:
                return False
        return True

    def wait_for(self, text: str) -> str:
        """Read the terminal until ``text`` shows; return everything shown."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and text.encode() not in self.screen:
            if not self._read():
                break
        return self.screen.decode("utf-8", "replace")

    def interrupt(self) -> int:
        """Ctrl-C (SIGINT); return the exit code."""
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + DEADLINE_S
        while self.process.poll() is None and time.monotonic() < deadline:
            if not self._read():
                break
        return self.process.wait(timeout=5)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.main)


def test_start_shows_live_tui_on_a_terminal(config_file: Path) -> None:
    terminal = Terminal("start", "-c", str(config_file))
    try:
        text = terminal.wait_for("connected")
        assert "connected" in text
        assert "gateway" in text
        assert "\x1b[2J" not in text  # never clears the whole screen
        assert terminal.interrupt() == 0
    finally:
        terminal.close()


def test_top_attaches_to_a_running_bridge(started: subprocess.Popen[str],
                                          config_file: Path) -> None:
    terminal = Terminal("top", "-c", str(config_file))
    try:
        text = terminal.wait_for("connected")
        assert "bridge top" in text and "echo" in text and "connected" in text
        assert f"pid {started.pid}" in text
        assert terminal.interrupt() == 0
    finally:
        terminal.close()


def test_devguild_runs_alone(config_file: Path) -> None:
    process = subprocess.Popen([*BRIDGE, "devguild", "-c", str(config_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "dev guild running" in banner
        center = banner.split("center ", 1)[1].split(",", 1)[0]
        session = FabricCenter(center).login("fak_dev_alice")
        assert session.user_name == "alice" and "dev" in session.guilds
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_login(process: subprocess.Popen[str], center_url: str) -> str:
    """Poll the dev guild's Center until alice can log in; return her user name."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"bridge devguild exited with {process.returncode}: {output}")
        try:
            session = FabricCenter(center_url).login("fak_dev_alice")
        except Exception:  # not listening yet
            time.sleep(0.1)
            continue
        assert "dev" in session.guilds
        return session.user_name
    pytest.fail("the dev guild did not serve in time")


@pytest.mark.parametrize("bridge_table", ["", '[bridge]\nstate_dir = "var"\n'],
                         ids=["devguild-only", "with-bridge"])
def test_devguild_runs_from_a_minimal_config_with_the_packaged_seed(
        tmp_path: Path, bridge_table: str) -> None:
    center, guild = free_port(), free_port()
    minimal = tmp_path / "minimal.toml"  # outside the repository, no seed next to it
    minimal.write_text(f"{bridge_table}[devguild]\ncenter_port = {center}\n"
                       f"guild_port = {guild}\n", encoding="utf-8")
    process = subprocess.Popen([*BRIDGE, "devguild", "-c", "minimal.toml"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_login(process, f"http://127.0.0.1:{center}/api") == "alice"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ('[devguild]\ncenter_port = "x"\n', 2, "devguild.center_port", "must be an integer"),
    ('[devguild]\nhots = "127.0.0.1"\n', 2, "devguild.hots", "unknown key"),
    ('[devguild]\nseed = "no-such-seed.toml"\n', 2, "devguild.seed", "cannot read seed file"),
    ('[devguild]\nseed = "bad-seed.toml"\n', 2, "devguild.seed", "users[0].kind"),
    ('[devguild]\n[fabric]\ncenter_url = "ftp://x"\n', 3, "fabric.center_url",
     "must start with http"),
    ('[devguild]\n[fabrik]\n', 2, "fabrik", "unknown table"),
], ids=["port", "unknown-key", "missing-seed", "bad-seed", "bad-fabric", "unknown-table"])
def test_devguild_bad_config_names_file_line_and_key(tmp_path: Path, text: str, line: int,
                                                      key: str, words: str) -> None:
    (tmp_path / "bad-seed.toml").write_text(
        '[[users]]\nname = "z"\nkind = "robot"\napi_key = "k"\n', encoding="utf-8")
    bad = tmp_path / "minimal.toml"
    bad.write_text(text, encoding="utf-8")
    result = run("devguild", "-c", str(bad))
    assert result.returncode == 2, result.stderr
    assert f"{bad}:{line}: {key}: " in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr


def test_devguild_without_its_extra_is_a_clear_error(tmp_path: Path) -> None:
    """Without aiohttp (the ``devguild`` extra), a config with ``[devguild]`` says what
    to install instead of failing with an import traceback."""
    script = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from bridge.cli.compose import DevGuildMissing, DevGuildService\n"
        "from bridge.cli.compose import load_config\n"
        "try:\n"
        "    DevGuildService().start(load_config())\n"
        "except DevGuildMissing as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "pip install -e '.[devguild]'" in result.stdout
    assert "aiohttp is not installed" in result.stdout
