"""Crash recovery: kill -9 of a real bridge process, restarts, the catch-up window."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board
from bridge.cli.compose import bridge_app, load_config
from bridge.config import Config
from bridge.ops.loadkit import BridgeProcess
from bridge.statefiles import read_status
from bridge.store import Store
from tests.support import Member, gated_config, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent


def bridge_process(config: Config) -> BridgeProcess:
    """``bin/bridge start --no-tui`` on ``config`` as a child process."""
    return BridgeProcess(config.path, config.bridge.state_dir,
                         config.path.parent / "bridge.log")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


@pytest.fixture
def processes() -> Iterator[list[BridgeProcess]]:
    made: list[BridgeProcess] = []
    yield made
    for process in made:
        process.stop()


def test_kill9_mid_run_then_restart_answers_everything_once(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        processes: list[BridgeProcess]) -> None:
    config, workspace = gated_config(tmp_path, devguild.center_url)
    first = bridge_process(config)
    processes.append(first)
    first.start()
    alice = members("alice")
    alice.post("general", "first")
    wait_until(lambda: (s := read_status(config.bridge.state_dir)) and s.runs,
               what="a run in progress")
    first.kill9()
    db = Store(config.bridge.state_dir / "bridge.db")
    try:
        orphans = [pid for pid, _ in db.open_run_processes()]
    finally:
        db.close()
    assert len(orphans) == 1 and alive(orphans[0])  # the agent outlived the bridge
    alice.post("general", "second")  # written while the bridge is down
    second = bridge_process(config)
    processes.append(second)
    second.start()
    wait_until(lambda: not alive(orphans[0]), what="the orphaned agent to be killed")

    def answered() -> bool:
        if not (workspace / "gate").exists():
            (workspace / "gate").touch()
        text = " ".join(alice.messages_from("echo", "general"))
        return "first" in text and "second" in text

    wait_until(answered, 30, "answers to both messages")
    replies = alice.messages_from("echo", "general")
    text = " ".join(replies)
    assert text.count("first") == 1 and text.count("second") == 1, replies
    assert all(r.startswith("answer to: ") for r in replies), replies


def test_kill9_with_undelivered_answer_posts_it_once_after_restart(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        processes: list[BridgeProcess]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    first = bridge_process(config)
    processes.append(first)
    first.start()
    echo_id = devguild.user_id("echo")
    alice = members("alice")
    devguild.fail_next_posts(1000, 503, user_id=echo_id)
    alice.post("general", "kept in the outbox")
    db = Store(config.bridge.state_dir / "bridge.db")
    try:
        wait_until(lambda: any(p.attempts >= 1 for key in db.pending_scopes()
                               for p in db.pending_pieces(key)), what="a failed attempt")
    finally:
        db.close()
    first.kill9()
    devguild.fail_next_posts(0)
    second = bridge_process(config)
    processes.append(second)
    second.start()
    alice.wait_reply("echo", "general", lambda c: c == "kept in the outbox")
    alice.post("general", "and the next one")
    alice.wait_reply("echo", "general", lambda c: c == "and the next one")
    assert alice.messages_from("echo", "general") == ["kept in the outbox", "and the next one"]


def test_kill9_after_a_post_landed_does_not_post_it_again(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        processes: list[BridgeProcess]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    first = bridge_process(config)
    processes.append(first)
    first.start()
    alice = members("alice")
    # Every post by echo lands in the channel but answers 500: the bridge cannot
    # know it landed, and it is killed before it finds out.
    devguild.fail_next_posts(1000, 500, user_id=devguild.user_id("echo"), landed=True)
    alice.post("general", "landed once")
    alice.wait_reply("echo", "general", lambda c: c == "landed once")
    first.kill9()
    second = bridge_process(config)
    processes.append(second)
    second.start()
    devguild.fail_next_posts(0)
    alice.post("general", "after restart")
    alice.wait_reply("echo", "general", lambda c: c == "after restart")
    assert alice.messages_from("echo", "general") == ["landed once", "after restart"]


def test_old_messages_after_an_outage_are_context_only(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    app = bridge_app(config, Board())
    app.start()
    wait_until(lambda: (r := app.board.connection("echo", "dev")) and r.state == "connected")
    app.stop()
    alice = members("alice")
    alice.post("general", "said while the bridge was away")
    text = config.path.read_text().replace("[bridge]", "[bridge]\ncatch_up_window_s = 0")
    config.path.write_text(text)
    app = bridge_app(load_config(config.path), Board())
    app.start()
    try:
        key = f"fabric:echo:dev:{devguild.channel_id('general')}"
        assert app.store is not None
        store = app.store
        # Caught up: stale, it cannot engage, so it is stored without a journal row.
        wait_until(lambda: store.stats().rows.get("messages", {}).get("rows") == 1,
                   what="catch-up")
        assert store.count_inbound(key) == {}
        alice.post("general", "fresh message")
        alice.wait_reply("echo", "general", lambda c: c == "fresh message")
        assert alice.messages_from("echo", "general") == ["fresh message"]
        row = wait_until(lambda: next((s for s in app.board.snapshot().scopes
                                       if s.channel == "general" and s.runs == 1), None))
        assert row.engaged == 1  # the stale one was context only ...
        # ... and, older than the catch-up window (0 s here), too old to be context.
        assert row.received == 1  # not read back
        assert "received" not in store.count_inbound(key)
    finally:
        app.stop()


def test_corrupt_store_refuses_to_start(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url)
    state = config.bridge.state_dir
    state.mkdir(parents=True)
    (state / "bridge.db").write_bytes(b"garbage" * 1000)
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "start", "--no-tui",
                             "-c", str(config.path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 3
    assert "bridge.db is unusable" in result.stderr
