"""``bin/bridge start`` as a real process against a dev guild, for the security tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from bridge.statefiles import StatusError, read_status, running_pid

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a bridge process gets to start, connect or stop.
DEADLINE_S = 30.0


def connected(state_dir: Path) -> bool:
    """Whether the bridge on ``state_dir`` reports every gateway connected."""
    try:
        if running_pid(state_dir) is None:
            return False
        snapshot = read_status(state_dir)
    except (OSError, StatusError):
        return False
    return snapshot is not None and bool(snapshot.connections) and all(
        row.state == "connected" for row in snapshot.connections)


@contextmanager
def bridge_process(config: Path, state_dir: Path, env: Mapping[str, str],
                   log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``bin/bridge start --no-tui -c config`` until its gateways are connected.

    Args:
        config: The config file.
        state_dir: Its state dir (to watch the lock and status file).
        env: Variables added to this process's environment for the bridge.
        log: File that receives the bridge's output (never shown: it may hold
            what a test looks for).

    Yields:
        The process; it is stopped with SIGINT (SIGKILL after the deadline) at the end.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "bridge"), "start", "--no-tui", "-c",
             str(config)], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not connected(state_dir):
                if process.poll() is not None:
                    pytest.fail(f"the bridge exited with code {process.returncode} "
                                f"(its output is in {log})")
                if time.monotonic() > deadline:
                    pytest.fail(f"the bridge did not connect within {DEADLINE_S:g} s")
                time.sleep(0.05)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=DEADLINE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
