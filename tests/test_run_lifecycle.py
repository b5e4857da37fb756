"""How a run ends and what it leaves: a failing store, a failed scope, memory, stale context.

Each test runs the whole actor tree against the dev guild on loopback.
"""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import pytest

import actors.app
import bridge.store
from actors.app import BridgeApp
from actors.runner import Runner
from actors.scope import Scope
from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board, BoardSnapshot, RunRow
from bridge.cli.compose import bridge_app
from bridge.config import Config
from bridge.model import Inbound, ScopeKey
from bridge.scope_logic import CONTEXT_MESSAGES
from bridge.statefiles import read_status, write_status
from bridge.store import DB_FILE, Store, StoreError
from tests.support import Member, gated_config, script_agent_table, wait_until, write_config

#: A command agent that keeps each prompt it gets (``prompt-<n>.txt`` in its
#: workspace) and answers "ok <n>".
PROMPT_KEEPER = textwrap.dedent("""
    import os, sys
    prompt = sys.stdin.read()
    n = len([f for f in os.listdir(".") if f.startswith("prompt-")]) + 1
    with open(f"prompt-{n}.txt", "w", encoding="utf-8") as f:
        f.write(prompt)
    print(f"ok {n}")
""")


def start(apps: list[BridgeApp], config: Config, **kwargs: Any) -> BridgeApp:
    app = bridge_app(config, Board(), **kwargs)
    apps.append(app)
    app.start()
    return app


def general_key(devguild: DevGuild) -> str:
    return str(ScopeKey("fabric", "echo", "dev", devguild.channel_id("general")))


# -- a store error while a run ends ----------------------------------------------


class FinishFailsOnce(Store):
    """A store whose first ``finish_run`` fails, as a full disk or a lock timeout would."""

    failures = 1

    def finish_run(self, *args: Any, **kwargs: Any) -> Any:
        if FinishFailsOnce.failures:
            FinishFailsOnce.failures -= 1
            raise StoreError("state store bridge.db is unusable (disk I/O error)")
        return super().finish_run(*args, **kwargs)


def test_store_error_while_a_run_ends_does_not_leave_the_scope_stuck(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(FinishFailsOnce, "failures", 1)
    monkeypatch.setattr(actors.app, "open_store",
                        lambda state_dir: FinishFailsOnce(state_dir / DB_FILE))
    app = start(apps, write_config(tmp_path, devguild.center_url, debounce_s=0.05))
    alice = members("alice")
    with caplog.at_level(logging.ERROR, logger="actors.runner"):
        alice.post("general", "first")
        notice = alice.wait_reply("echo", "general", lambda c: "could not be saved" in c)
    assert "please send your message again" in notice
    assert any("could not save its answer" in r.getMessage() for r in caplog.records)
    alice.post("general", "second")  # the scope is free again
    alice.wait_reply("echo", "general", lambda c: c == "second")
    assert app.store is not None
    assert app.store.count_inbound(general_key(devguild)) == {"done": 2}


# -- run state is freed when the run ends --------------------------------------------


def runner_leftovers() -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects()
            if isinstance(o, Runner) or (isinstance(o, pykka.ActorRef)
                                         and o.actor_class is Runner)]


def test_a_finished_run_leaves_no_state_behind(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    app = start(apps, write_config(tmp_path, devguild.center_url, debounce_s=0.05))
    alice = members("alice")
    for text in ("one", "two", "three"):
        alice.post("general", text)
        alice.wait_reply("echo", "general", text.__eq__)
    # Nothing of the three runs stays, though their timeout (30 min) is far off.
    wait_until(lambda: not runner_leftovers(), what="the finished runs' state to be freed")
    assert not app.board.snapshot().runs


# -- context rows: closed, loaded lazily --------------------------------------------------


def seed_context(state_dir: Path, devguild: DevGuild, count: int, age_s: float) -> list[str]:
    """``count`` open journal rows in ``general`` that do not engage, received ``age_s`` ago."""
    channel_id = devguild.channel_id("general")
    texts = [f"stale-{i:05d}" for i in range(count)]
    store = Store(state_dir / DB_FILE)
    try:
        for i, text in enumerate(texts):
            store.record_inbound(Inbound("fabric", "echo", "dev", channel_id, "general",
                                         f"seeded-{i}", i + 1, devguild.user_id("bob"), "bob",
                                         text), advance_cursor=False)
    finally:
        store.close()
    db = sqlite3.connect(state_dir / DB_FILE)
    with db:
        db.execute("UPDATE inbound SET received_at = ?", (time.time() - age_s,))
    db.close()
    return texts


def keeper_config(tmp_path: Path, devguild: DevGuild) -> tuple[Config, Path]:
    workspace = tmp_path / "ws"
    table = script_agent_table(tmp_path, "keeper.py", PROMPT_KEEPER,
                               f'workspace = "{workspace}"\n')
    return write_config(tmp_path, devguild.center_url, agents=table, debounce_s=0.05), workspace


def test_stale_context_is_not_loaded_at_start_nor_prompted_later(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    config, workspace = keeper_config(tmp_path, devguild)
    config.bridge.state_dir.mkdir(parents=True)
    window_s = config.bridge.catch_up_window_s
    texts = seed_context(config.bridge.state_dir, devguild, 10_000, 2 * window_s)
    app = start(apps, config)
    assert app.store is not None
    key = general_key(devguild)
    store = app.store
    # Closed at start, without a scope (or a load of its rows) for them.
    wait_until(lambda: store.count_inbound(key) == {"done": 10_000}, what="the rows closed")
    wait_until(lambda: app.board.connection("echo", "dev"), what="the gateway")
    assert not [a for a in app.board.snapshot().actors if a.id == f"scope:{key}"]
    alice = members("alice")
    alice.post("general", "a new question")
    alice.wait_reply("echo", "general", lambda c: c == "ok 1")
    prompt = (workspace / "prompt-1.txt").read_text(encoding="utf-8")
    assert "a new question" in prompt
    assert not [t for t in texts if t in prompt]


def test_context_beyond_the_prompt_bound_is_closed(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    config, workspace = keeper_config(tmp_path, devguild)
    config.bridge.state_dir.mkdir(parents=True)
    texts = seed_context(config.bridge.state_dir, devguild, CONTEXT_MESSAGES + 10, 1.0)
    app = start(apps, config)
    assert app.store is not None
    alice = members("alice")
    alice.post("general", "a new question")
    alice.wait_reply("echo", "general", lambda c: c == "ok 1")
    prompt = (workspace / "prompt-1.txt").read_text(encoding="utf-8")
    assert len([t for t in texts if t in prompt]) == CONTEXT_MESSAGES
    # The ten the bound left out are closed, not left open for every later load.
    wait_until(lambda: app.store is not None and app.store.count_inbound(
        general_key(devguild)) == {"done": CONTEXT_MESSAGES + 11}, what="every row closed")


# -- a failed scope does not leave its run's messages running -------------------------------


class BoomScope(Scope):
    """A scope that raises on the message ``boom``."""

    def handle(self, message: Inbound) -> None:
        if message.content == "boom":
            raise RuntimeError("boom in scope")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def test_a_failed_scope_runs_the_messages_of_its_cut_off_run_again(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    config, workspace = gated_config(tmp_path, devguild.center_url)
    app = start(apps, config, scope_class=BoomScope)
    store = app.store
    assert store is not None
    alice = members("alice")
    alice.post("general", "first")
    run_id, pid, _ = wait_until(lambda: next((r for r in store.open_runs() if r[1]), None),
                                what="the first run's agent")
    assert pid is not None
    alice.post("general", "boom")  # the scope fails mid-run; its runner is stopped
    wait_until(lambda: not alive(pid), what="the cut-off run's agent to be killed")
    # The runner kills the agent first, then closes the run in the store.
    wait_until(lambda: run_id not in [r[0] for r in store.open_runs()],
               what="the cut-off run closed in the store")

    def answered() -> bool:
        if not (workspace / "gate").exists():
            (workspace / "gate").touch()
        return bool(alice.messages_from("echo", "general"))

    wait_until(answered, what="the message of the cut-off run to run again")
    assert alice.messages_from("echo", "general") == ["answer to: first"]


# -- status after a crash --------------------------------------------------------------------


def test_status_never_shows_the_runs_of_a_crashed_bridge(
        tmp_path: Path, devguild: DevGuild, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, devguild.center_url)
    state_dir = config.bridge.state_dir
    crashed = BoardSnapshot(time.time() - 5, time.time() - 600, os.getpid() + 1, runs=(
        RunRow("r-crashed", general_key(devguild), "echo", time.time() - 60, "pytest"),))
    write_status(state_dir, crashed)
    seen: list[BoardSnapshot | None] = []
    real_open_store = bridge.store.open_store

    def open_store(path: Path) -> Store:  # what `bridge status` shows while the bridge starts
        seen.append(read_status(state_dir))
        return real_open_store(path)

    monkeypatch.setattr(actors.app, "open_store", open_store)
    start(apps, config)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].runs == ()


def test_an_engaged_message_waiting_behind_a_long_run_is_never_closed_as_stale(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    config, workspace = gated_config(tmp_path, devguild.center_url)
    app = bridge_app(config, Board())
    app.start()
    try:
        wait_until(lambda: (row := app.board.connection("echo", "dev")) and
                   row.state == "connected", what="echo connected")
        alice = members("alice")
        alice.post("general", "first")
        wait_until(lambda: app.board.snapshot().runs, what="the first run")
        alice.post("general", "second, queued")
        store = app.store
        assert store is not None
        key = str(ScopeKey("fabric", "echo", "dev", devguild.channel_id("general")))
        wait_until(lambda: store.count_inbound(key) == {"running": 1, "engaged": 1},
                   what="the queued message marked engaged")
        # After a crash, open messages older than the catch-up window are closed as
        # stale context; a run can outlast the window, so a queued one must stay open.
        assert store.close_stale(time.time() + 3600) == 0
        assert store.count_inbound(key) == {"running": 1, "engaged": 1}
        (workspace / "gate").touch()
        wait_until(lambda: not (workspace / "gate").exists() and app.board.snapshot().runs,
                   what="the second run")
        (workspace / "gate").touch()
        alice.wait_reply("echo", "general", lambda c: "second, queued" in c)
    finally:
        app.stop()
