"""Pieces shared by the load tools (``bridge soak``, ``bridge bench``).

A member who posts over the guild's REST API, the bridge as a child process
(``bin/bridge start --no-tui -c CONFIG``), and a nearest-rank percentile.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.rest import FabricCenter, FabricGuild
from bridge.board import BoardSnapshot
from bridge.errors import Unauthorized
from bridge.statefiles import read_status

ROOT = Path(__file__).resolve().parents[2]
#: Seconds allowed for the bridge to start and connect.
START_TIMEOUT_S = 30.0


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) of ``values`` by nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class RestMember:
    """A member who posts over REST and logs in again when the token is refused.

    Args:
        guild: The dev guild.
        name: Seeded user name.

    Not thread-safe (one requests session): give each posting thread its own.
    """

    def __init__(self, guild: DevGuild, name: str) -> None:
        self.guild = guild
        self.name = name
        self.rest = FabricGuild(self._login())

    def _login(self) -> Any:
        return FabricCenter(self.guild.center_url).login(self.guild.api_key(self.name)).guilds[
            "dev"]

    def post(self, channel_id: str, content: str,
             wakeup_user_id: str | None = None) -> dict[str, Any]:
        """Post in a channel; returns the created Message.

        Raises:
            ChatError: typed by status, when the post fails (after one re-login on 401).
        """
        try:
            return self.rest.post(channel_id, content, wakeup_user_id)
        except Unauthorized:
            self.rest.access = self._login()
            return self.rest.post(channel_id, content, wakeup_user_id)


def _any_connected(snapshot: BoardSnapshot) -> bool:
    return any(c.state == "connected" for c in snapshot.connections)


class BridgeProcess:
    """The bridge as a child process (``bin/bridge start --no-tui -c CONFIG``).

    Args:
        config_path: The bridge config file.
        state_dir: Its state dir (where ``status.json`` is read from).
        log_path: File that receives the child's stdout and stderr (appended).
        env: The child's environment (None: this process's).
    """

    def __init__(self, config_path: Path, state_dir: Path, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, or None before :meth:`start`."""
        return self.process.pid if self.process is not None else None

    def start(self, ready: Callable[[BoardSnapshot], bool] = _any_connected,
              timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child and wait until its status file satisfies ``ready``.

        Args:
            ready: Predicate on the child's board snapshot (default: one
                connection is connected).
            timeout_s: Seconds to wait.

        Raises:
            RuntimeError: when the child exits or is not ready in time.
        """
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "bin" / "bridge"), "start", "--no-tui", "-c",
                 str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snapshot = read_status(self.state_dir)
            if snapshot and snapshot.pid == self.process.pid and ready(snapshot):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the bridge exited with {self.process.returncode}; see "
                                   f"{self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"the bridge was not ready within {timeout_s:.0f}s; see "
                           f"{self.log_path}")

    def kill9(self) -> None:
        """``kill -9`` the child and reap it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGINT the child and wait up to 10 s (then SIGKILL); idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
