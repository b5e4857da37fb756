"""Tests for bridge.statefiles: status.json, the state lock and the writer thread."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.board import ActorRow, Board, BoardSnapshot, ConnectionRow, RunRow, ScopeRow
from bridge.statefiles import (
    LOCK_FILE,
    STATUS_FILE,
    AlreadyRunning,
    StateLock,
    StatusError,
    StatusWriter,
    read_status,
    running_pid,
    write_status,
)

ROOT = Path(__file__).resolve().parent.parent


def _snapshot() -> BoardSnapshot:
    return BoardSnapshot(
        taken_at=1000.5,
        started_at=900.0,
        pid=321,
        actors=(
            ActorRow("supervisor", "supervisor", None, "running"),
            ActorRow("gateway:echo:dev", "gateway", "supervisor", "failed", 3, "gave up"),
        ),
        connections=(
            ConnectionRow("echo", "dev", "connected", 1, 950.0, "", 4),
            ConnectionRow("codex", "dev", "failed", 0, None, "login refused", 0),
        ),
        scopes=(ScopeRow("fabric:echo:dev:c1", "echo", "general", "queued", 3, 999.0, 5, 4, 2, 1),),
        runs=(RunRow("run-1", "fabric:echo:dev:c1", "echo", 990.0, "thinking…"),),
        logs=("one", "two [x]"),
    )


def test_round_trip(tmp_path: Path) -> None:
    snap = _snapshot()
    write_status(tmp_path / "var", snap)
    assert read_status(tmp_path / "var") == snap
    assert [p.name for p in (tmp_path / "var").iterdir()] == [STATUS_FILE]  # no temp files left


def test_overwrite(tmp_path: Path) -> None:
    write_status(tmp_path, _snapshot())
    newer = BoardSnapshot(taken_at=2000.0, started_at=900.0, pid=321)
    write_status(tmp_path, newer)
    assert read_status(tmp_path) == newer


def test_missing_is_none(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    assert read_status(tmp_path / "nope") is None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        b'{"pid": 1}',
        b'{"taken_at": 1, "started_at": 1, "pid": 1, "actors": [{"bogus": 1}]}',
        b"\xff\xfe",
    ],
)
def test_corrupt_raises(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATUS_FILE).write_bytes(content)
    with pytest.raises(StatusError, match=STATUS_FILE):
        read_status(tmp_path)


def test_lock_contention_in_one_process(tmp_path: Path) -> None:
    state = tmp_path / "var"
    first = StateLock(state)
    first.acquire()
    try:
        assert (state / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning) as info:
            StateLock(state).acquire()
        assert info.value.pid == os.getpid()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message
        assert str(state) in message
        assert "stop it first or use another state_dir" in message
    finally:
        first.release()
    # released: another lock can take it, and as a context manager
    with StateLock(state) as again:
        assert again.held
    assert not again.held


def test_acquire_twice_on_one_object(tmp_path: Path) -> None:
    with StateLock(tmp_path) as lock, pytest.raises(RuntimeError):
        lock.acquire()


def _probe(state: Path) -> str:
    code = (
        "import sys; from pathlib import Path; from bridge.statefiles import running_pid;"
        "print(running_pid(Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_running_pid_from_another_process(tmp_path: Path) -> None:
    state = tmp_path / "var"
    assert _probe(state) == "None"  # no dir at all
    assert running_pid(state) is None
    lock = StateLock(state)
    lock.acquire()
    try:
        assert _probe(state) == str(os.getpid())
        assert running_pid(state) == os.getpid()
        # probing did not disturb the holder
        with pytest.raises(AlreadyRunning):
            StateLock(state).acquire()
    finally:
        lock.release()
    assert _probe(state) == "None"
    assert running_pid(state) is None


def test_running_pid_ignores_stale_pid_file(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("99999\n")
    assert running_pid(tmp_path) is None


def test_status_writer(tmp_path: Path) -> None:
    board = Board()
    board.put_connection(ConnectionRow("echo", "dev", "connected"))
    writer = StatusWriter(board.snapshot, tmp_path / "var", interval_s=0.05)
    writer.start()
    deadline = time.monotonic() + 5
    while read_status(tmp_path / "var") is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    board.put_scope(ScopeRow("fabric:echo:dev:c1", "echo", "general", "idle"))
    writer.stop()
    snap = read_status(tmp_path / "var")
    assert snap is not None
    assert snap.pid == os.getpid()
    assert snap.connections[0].agent == "echo"
    assert snap.scopes[0].channel == "general"  # the final write has the latest state


def test_status_writer_survives_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    calls = 0
    snapshot = Board().snapshot

    def counted() -> BoardSnapshot:
        nonlocal calls
        calls += 1
        return snapshot()

    writer = StatusWriter(counted, blocker / "var", interval_s=0.02)
    writer.start()
    deadline = time.monotonic() + 5
    while calls < 5:  # several failed writes, not a fixed time
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer.stop()
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not every tick
