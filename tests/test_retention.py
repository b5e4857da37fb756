"""Retention of the state store: prune, its schedule in the running bridge, and the size shown.

The property test builds random store states through the store's own API
(messages in every state, runs open and ended, pieces in every state,
sessions, scope settings, channel seqs), gives every row a random age, and
checks ``prune`` against an oracle computed from a dump of the database:
exactly the finished rows older than the cutoff go, nothing else.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge.store
from actors.upkeep import PRUNE_INTERVAL_S, prune_interval_s
from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board, BoardSnapshot, StoreRow
from bridge.cli import main
from bridge.cli.compose import bridge_app, load_config
from bridge.config import ConfigError
from bridge.model import ConnectionKey, Inbound
from bridge.ops.doctor import run_checks
from bridge.ops.tui import plain_status, render
from bridge.store import DB_FILE, CursorWrite, PruneResult, SessionRecord, Store
from tests.support import wait_until, write_config

FABRIC_DEV = ConnectionKey("fabric", "echo", "dev")

#: A fixed "now" for the property test (epoch seconds).
NOW = 1_700_000_000.0
#: The retention of the property test (seconds).
RETENTION_S = 1000.0
MESSAGE_STATES = ("received", "engaged", "context", "running", "done", "dropped")
PIECE_STATES = ("pending", "posted", "failed")


def inbound(message_id: str, channel: str, seq: int = 1, agent: str = "echo") -> Inbound:
    return Inbound(platform="fabric", agent=agent, space="dev", channel_id=channel,
                   channel_name=channel, message_id=message_id, seq=seq,
                   author_id="u1", author_name="alice", content=f"text {message_id}",
                   addressed=True)


def scope_of(channel: str, agent: str = "echo") -> str:
    return f"fabric:{agent}:dev:{channel}"


def dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as dicts, in a stable order."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        tables = [str(r[0]) for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted((dict(r) for r in db.execute(f"SELECT * FROM {t}")), key=repr)
                for t in tables}
    finally:
        db.close()


def kept_by_oracle(before: dict[str, list[dict[str, Any]]],
                   cutoff: float) -> dict[str, list[dict[str, Any]]]:
    """What prune must leave: everything but finished rows older than ``cutoff``."""
    def keep(table: str, row: dict[str, Any]) -> bool:
        if table == "inbound":
            return row["state"] not in ("done", "dropped") or float(row["received_at"]) >= cutoff
        if table == "outbox":
            return row["state"] == "pending" or float(row["updated_at"]) >= cutoff
        if table == "runs":
            return row["ended_at"] is None or float(row["ended_at"]) >= cutoff
        return True
    kept = {t: [r for r in rows if keep(t, r)] for t, rows in before.items()}
    # A shared message stays while a kept journal row references it.
    referenced = {r["msg"] for r in kept["inbound"]}
    kept["messages"] = [r for r in kept["messages"] if r["id"] in referenced]
    return kept


AGES = st.one_of(
    st.floats(min_value=0.0, max_value=3 * RETENTION_S, allow_nan=False),
    st.sampled_from([0.0, RETENTION_S - 0.001, RETENTION_S, RETENTION_S + 0.001, 1e8]),
)
#: A message's state and age for the echo agent, and for a second agent it reached (or None).
MESSAGES = st.lists(st.tuples(st.sampled_from(MESSAGE_STATES), AGES, st.one_of(
    st.none(), st.tuples(st.sampled_from(MESSAGE_STATES), AGES))), max_size=10)
PIECES = st.lists(st.tuples(st.sampled_from(PIECE_STATES), AGES), max_size=3)
RUNS = st.lists(st.tuples(st.booleans(), AGES, PIECES), max_size=5)


Reach = tuple[str, float]


def build(store: Store, path: Path, messages: list[tuple[str, float, Reach | None]],
          runs: list[tuple[bool, float, list[tuple[str, float]]]],
          notices: list[tuple[str, float]], sessions: list[float]) -> None:
    """Make the random state through the store's API, then age each row."""
    ages: list[tuple[str, tuple[Any, ...]]] = []
    for i, (state, age, other) in enumerate(messages):
        channel, message_id = f"m{i}", f"id{i}"
        reached = [("echo", state, age)] + ([("helper", *other)] if other else [])
        for agent, agent_state, agent_age in reached:
            key = scope_of(channel, agent)
            store.record_inbound(inbound(message_id, channel, i + 1, agent))
            if agent_state in ("engaged", "context"):
                store.classify(key, message_id, engaged=agent_state == "engaged")
            elif agent_state == "running":
                store.start_run(f"run-of-{i}-{agent}", key, [message_id])
            elif agent_state == "done":
                store.mark_done(key, message_id)
            elif agent_state == "dropped":
                store.drop_inbound(key, message_id)
            ages.append(("UPDATE inbound SET received_at = ? WHERE scope_key = ? AND "
                         "message_id = ?", (NOW - agent_age, key, message_id)))

    def set_piece(key: str, state: str, age: float) -> None:
        if state == "posted":
            store.mark_posted(key, "posted-id")
        elif state == "failed":
            store.mark_failed(key, "403")
        else:
            store.count_attempt(key)
        ages.append(("UPDATE outbox SET updated_at = ?, created_at = ? WHERE key = ?",
                     (NOW - age, NOW - age, key)))

    for i, (ended, age, pieces) in enumerate(runs):
        run_id, key = f"r{i}", scope_of(f"r{i}")
        store.start_run(run_id, key, [])
        ages.append(("UPDATE runs SET started_at = ? WHERE run_id = ?", (NOW - age - 5, run_id)))
        if ended:
            made = store.finish_run(run_id, "done", [f"part {n}" for n in range(len(pieces))])
            ages.append(("UPDATE runs SET ended_at = ? WHERE run_id = ?", (NOW - age, run_id)))
            for piece, (state, piece_age) in zip(made, pieces, strict=True):
                set_piece(piece.key, state, piece_age)
    for i, (state, age) in enumerate(notices):
        store.add_notice(scope_of("n"), f"notice:{i}", "a notice")
        set_piece(f"notice:{i}", state, age)
    for i, age in enumerate(sessions):
        key = scope_of(f"s{i}")
        store.save_session(SessionRecord(key, f"thread-{i}", "/ws", "fp"))
        store.set_scope_timeout(key, 60.0)
        store.record_inbound_many([CursorWrite(FABRIC_DEV, f"s{i}", "7", 7)])
        ages.append(("UPDATE sessions SET updated_at = ? WHERE scope_key = ?", (NOW - age, key)))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement, args in ages:
            db.execute(statement, args)
    finally:
        db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=MESSAGES, runs=RUNS, notices=PIECES, sessions=st.lists(AGES, max_size=3),
       batch=st.integers(min_value=1, max_value=4))
def test_prune_removes_exactly_the_finished_rows_older_than_the_cutoff(
        messages: list[tuple[str, float, Reach | None]],
        runs: list[tuple[bool, float, list[tuple[str, float]]]],
        notices: list[tuple[str, float]], sessions: list[float], batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="retention-") as tmp:
        path = Path(tmp) / DB_FILE
        store = Store(path)
        try:
            build(store, path, messages, runs, notices, sessions)
            before = dump(path)
            result = store.prune(RETENTION_S, now=NOW, batch_rows=batch)
            after = dump(path)
        finally:
            store.close()
    expected = kept_by_oracle(before, NOW - RETENTION_S)
    assert after == expected
    assert result == PruneResult(
        inbound=len(before["inbound"]) - len(after["inbound"]),
        outbox=len(before["outbox"]) - len(after["outbox"]),
        runs=len(before["runs"]) - len(after["runs"]),
        messages=len(before["messages"]) - len(after["messages"]))
    # Open work, in so many words (the oracle above already implies it).
    open_ids = {r["message_id"] for r in before["inbound"]
                if r["state"] in ("received", "engaged", "context", "running")}
    assert open_ids <= {r["message_id"] for r in after["inbound"]}
    assert {r["key"] for r in before["outbox"] if r["state"] == "pending"} <= {
        r["key"] for r in after["outbox"]}
    assert {r["run_id"] for r in before["runs"] if r["ended_at"] is None} <= {
        r["run_id"] for r in after["runs"]}
    for table in ("sessions", "scope_settings", "cursors"):
        assert after[table] == before[table]


def age_all(path: Path, age_s: float) -> None:
    """Move every timestamp of finished rows ``age_s`` seconds into the past.

    One transaction, so a prune running meanwhile sees all rows aged or none.
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE inbound SET received_at = received_at - ? WHERE state IN "
                   "('done', 'dropped')", (age_s,))
        db.execute("UPDATE outbox SET updated_at = updated_at - ? WHERE state != 'pending'",
                   (age_s,))
        db.execute("UPDATE runs SET ended_at = ended_at - ? WHERE ended_at IS NOT NULL",
                   (age_s,))
        db.execute("UPDATE sessions SET updated_at = updated_at - ?", (age_s,))
        db.execute("COMMIT")
    finally:
        db.close()


def test_prune_gives_the_space_back(tmp_path: Path) -> None:
    store = Store(tmp_path / DB_FILE)
    try:
        for i in range(300):
            store.record_inbound(inbound(f"id{i}", "c1", i + 1))
            store.start_run(f"r{i}", scope_of("c1"), [f"id{i}"])
            for piece in store.finish_run(f"r{i}", "done", ["x" * 2000]):
                store.mark_posted(piece.key, f"p{i}")
        store.compact()
        full = store.stats()
        age_all(tmp_path / DB_FILE, 86_400)
        assert store.prune(3600) == PruneResult(inbound=300, outbox=300, runs=300, messages=300)
        empty = store.stats()
    finally:
        store.close()
    assert full.rows["inbound"] == {"done": 300} and full.rows["outbox"] == {"posted": 300}
    assert empty.rows["inbound"] == {} and empty.rows["outbox"] == {} and empty.rows["runs"] == {}
    assert (full.rows["messages"], empty.rows["messages"]) == ({"rows": 300}, {"rows": 0})
    assert empty.wal_bytes == 0
    assert empty.db_bytes < full.db_bytes / 4, (full, empty)


def test_compact_does_not_wait_for_an_outside_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader in another process (``doctor``, ``status``) holding a snapshot of
    the WAL made ``wal_checkpoint(TRUNCATE)`` wait up to the busy timeout with
    the store's lock held, so every actor's write waited too."""
    monkeypatch.setattr(bridge.store, "BUSY_TIMEOUT_S", 600.0)
    path = tmp_path / DB_FILE
    store = Store(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        for i in range(50):
            store.record_inbound(inbound(f"id{i}", "c1", i + 1))
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM inbound").fetchone()[0] == 50
        store.record_inbound(inbound("late", "c1", 51))  # the reader's snapshot is older
        done = threading.Event()

        def compact() -> None:
            store.compact()
            done.set()

        worker = threading.Thread(target=compact, daemon=True)
        worker.start()
        wait_until(done.is_set, what="compact to return while the reader holds its snapshot")
        store.record_inbound(inbound("after", "c1", 52))  # the lock is free again
        reader.execute("COMMIT")
        store.compact()  # nobody reads now: the WAL goes back to zero bytes
        assert store.stats().wal_bytes == 0
    finally:
        reader.close()
        store.close()


def test_compact_frees_pages_in_bounded_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.store, "VACUUM_STEP_PAGES", 7)
    store = Store(tmp_path / DB_FILE)
    try:
        for i in range(100):
            store.record_inbound(inbound(f"id{i}", "c1", i + 1))
            store.mark_done(scope_of("c1"), f"id{i}")
        store.compact()
        full = store.stats()
        age_all(tmp_path / DB_FILE, 86_400)
        assert store.prune(3600).inbound == 100
        empty = store.stats()
    finally:
        store.close()
    assert empty.wal_bytes == 0 and empty.db_bytes < full.db_bytes, (full, empty)
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        db.close()


def test_stats_counts_rows_per_table_and_state(tmp_path: Path) -> None:
    store = Store(tmp_path / DB_FILE)
    try:
        store.record_inbound(inbound("a", "c1", 1))
        store.record_inbound(inbound("b", "c1", 2))
        store.start_run("r1", scope_of("c1"), ["a"])
        store.save_session(SessionRecord(scope_of("c1"), "t", "/ws", "fp"))
        stats = store.stats()
    finally:
        store.close()
    assert stats.rows == {"inbound": {"running": 1, "received": 1}, "messages": {"rows": 2},
                          "outbox": {}, "runs": {"running": 1}, "sessions": {"rows": 1},
                          "scope_settings": {"rows": 0}, "cursors": {"rows": 1}}
    assert stats.db_bytes > 0 and stats.total_bytes == stats.db_bytes + stats.wal_bytes


# --------------------------------------------------------------------------- config


def config_text(bridge_lines: str) -> str:
    return textwrap.dedent("""
        [bridge]
        state_dir = "var"
        {lines}

        [fabric]
        center_url = "http://127.0.0.1:7001/api"

        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"

        [[bindings]]
        agent = "echo"
        guild = "dev"
    """).format(lines=bridge_lines)


def test_retention_days_default_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(config_text(""), encoding="utf-8")
    assert load_config(path).bridge.retention_days == 14.0
    assert load_config(path).bridge.retention_s == 14 * 86_400
    path.write_text(config_text("retention_days = 0.5"), encoding="utf-8")
    assert load_config(path).bridge.retention_s == 43_200
    path.write_text(config_text("catch_up_window_s = 60\nretention_days = 0.001"),
                    encoding="utf-8")
    assert load_config(path).bridge.retention_days == 0.001


@pytest.mark.parametrize(("lines", "words"), [
    ("retention_days = 0", ["above 0", "got 0"]),
    ("retention_days = -3", ["above 0"]),
    ("retention_days = nan", ["above 0"]),
    ('retention_days = "14"', ["must be", "got str"]),
    ("retention_days = 0.001", ["catch_up_window_s", "600"]),
    ("catch_up_window_s = 7200\nretention_days = 0.05", ["catch_up_window_s", "7200"]),
])
def test_bad_retention_days_names_file_line_and_key(tmp_path: Path, lines: str,
                                                    words: list[str]) -> None:
    path = tmp_path / "bridge.toml"
    text = config_text(lines)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("retention_days"))
    assert str(info.value).startswith(f"{path}:{line}: bridge.retention_days: ")
    for word in words:
        assert word in str(info.value)


def test_prune_interval_is_hourly_or_a_tenth_of_a_short_retention() -> None:
    assert prune_interval_s(14 * 86_400) == PRUNE_INTERVAL_S == 3600
    assert prune_interval_s(600) == 60
    assert prune_interval_s(2) == 1


# --------------------------------------------------------------------------- shown


def store_row() -> StoreRow:
    return StoreRow(2_097_152, 45_056, {"inbound": {"done": 812, "received": 1},
                                        "outbox": {"posted": 790}, "runs": {"ended": 790},
                                        "sessions": {"rows": 3}},
                    measured_at=NOW, retention_days=14, pruned_at=NOW - 60, pruned=120)


def test_status_and_tui_show_store_size_and_counts() -> None:
    snapshot = BoardSnapshot(NOW, NOW - 100, 42, store=store_row())
    text = plain_status(snapshot, NOW)
    assert "store:\n  size=2142208 bytes db=2097152 wal=45056 retention=14d pruned=120" in text
    assert "  inbound done=812 received=1\n  outbox posted=790\n  runs ended=790" in text
    again = BoardSnapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    assert again == snapshot
    assert "store:\n  not measured yet" in plain_status(BoardSnapshot(NOW, NOW, 1), NOW)
    from rich.console import Console
    console = Console(record=True, width=160)
    console.print(render(snapshot, NOW))
    assert "store 2.1 MB (journal 813, outbox 790, runs 790)" in console.export_text()


def test_doctor_shows_store_size_and_counts(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url)
    store = Store(config.bridge.state_dir / DB_FILE)
    store.record_inbound(inbound("a", "c1", 1))
    store.mark_done(scope_of("c1"), "a")
    store.close()
    check = next(c for c in run_checks(config) if c.name == "store size")
    assert check.level == "ok"
    assert "bytes (db " in check.message and "retention 14 days" in check.message
    assert "inbound done 1" in check.message and "outbox empty" in check.message


# --------------------------------------------------------------------------- running bridge


def short_retention_config(tmp_path: Path, center_url: str, retention_s: float) -> Path:
    config = write_config(tmp_path, center_url)
    text = config.path.read_text().replace(
        "[bridge]", f"[bridge]\ncatch_up_window_s = 1\nretention_days = {retention_s / 86_400!r}")
    config.path.write_text(text)
    return config.path


def finished_message(store: Store, message_id: str) -> None:
    store.record_inbound(inbound(message_id, "c-old", 1), advance_cursor=False)
    store.start_run(f"run-{message_id}", scope_of("c-old"), [message_id])
    for piece in store.finish_run(f"run-{message_id}", "done", ["answer"]):
        store.mark_posted(piece.key, "posted")


def counts(path: Path) -> Callable[[], dict[str, int]]:
    def read() -> dict[str, int]:
        db = sqlite3.connect(path, timeout=10)
        try:
            return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                    for t in ("inbound", "messages", "outbox", "runs", "sessions")}
        finally:
            db.close()
    return read


def test_the_running_bridge_prunes_at_start_and_then_on_schedule(
        tmp_path: Path, devguild: DevGuild, capsys: pytest.CaptureFixture[str]) -> None:
    path = short_retention_config(tmp_path, devguild.center_url, retention_s=10)
    config = load_config(path)
    db = config.bridge.state_dir / DB_FILE
    store = Store(db)
    finished_message(store, "before-start")
    store.save_session(SessionRecord(scope_of("c-old"), "thread", "/ws", "fp"))
    store.close()
    age_all(db, 86_400)
    rows = counts(db)
    assert rows() == {"inbound": 1, "messages": 1, "outbox": 1, "runs": 1, "sessions": 1}
    app = bridge_app(config, Board())
    app.start()
    try:
        # Prune deletes each table in transactions of its own: wait for all of them.
        pruned = {"inbound": 0, "messages": 0, "outbox": 0, "runs": 0, "sessions": 1}
        wait_until(lambda: rows() == pruned, what="the prune at start")
        assert app.store is not None
        finished_message(app.store, "while-running")
        # Not aged yet, so no prune can take it (retention 10 s).
        assert rows() == {"inbound": 1, "messages": 1, "outbox": 1, "runs": 1, "sessions": 1}
        age_all(db, 86_400)
        wait_until(lambda: rows() == pruned, what="a scheduled prune")
        row = wait_until(lambda: (s := app.board.snapshot().store) and s.pruned == 8 and s,
                         what="the board to show the store")
        assert row.db_bytes > 0 and row.rows["sessions"] == {"rows": 1}
        assert any("store: pruned 1 journal row(s) (and 1 shared message(s)), 1 outbox "
                   "piece(s), 1 run(s)" in line
                   for line in app.board.snapshot().logs)
        # `status` reads status.json, rewritten twice a second.
        wait_until(lambda: (main(["status", "--json", "-c", str(path)]) == 0 and
                            json.loads(capsys.readouterr().out).get("store", {})
                            .get("pruned") == 8), what="status --json to show the store")
        assert main(["status", "-c", str(path)]) == 0
        out = capsys.readouterr().out
        assert "store:\n  size=" in out and "sessions rows=1" in out
    finally:
        app.stop()


def test_the_running_bridge_closes_open_context_older_than_the_catch_up_window(
        tmp_path: Path, devguild: DevGuild) -> None:
    path = short_retention_config(tmp_path, devguild.center_url, retention_s=10)
    config = load_config(path)
    db = config.bridge.state_dir / DB_FILE
    rows = counts(db)
    app = bridge_app(config, Board())
    app.start()
    try:
        assert app.store is not None
        # Start-up recovery closes stale rows too: add the row once it has run (the
        # connection comes up after it) and the first prune is done (the board shows it).
        wait_until(lambda: (row := app.board.connection("echo", "dev")) and
                   row.state == "connected" and app.board.snapshot().store,
                   what="recovery and the first prune")
        # Context in a channel that never engages: no run will ever take it.
        app.store.record_inbound(inbound("never-engaged", "c-quiet", 1), advance_cursor=False)
        assert app.store.count_inbound(scope_of("c-quiet")) == {"received": 1}
        aged = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            aged.execute("UPDATE inbound SET received_at = received_at - 86400")
        finally:
            aged.close()
        # A scheduled upkeep closes it (older than the window), then prunes it.
        wait_until(lambda: rows()["inbound"] == 0, what="the old open row closed and pruned")
        wait_until(lambda: any("closed as context" in line
                               for line in app.board.snapshot().logs), what="the log line")
    finally:
        app.stop()
