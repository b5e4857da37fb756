"""The state store: journal, runs, outbox, sessions, migrations, bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from bridge.model import Attachment, ConnectionKey, Inbound
from bridge.store import (
    INLINE_CHECKPOINT_PAGES,
    MAX_RUN_ATTEMPTS,
    MIGRATIONS,
    CursorWrite,
    PruneResult,
    SessionRecord,
    Store,
    StoreError,
)

KEY = "fabric:echo:dev:c1"
FABRIC_DEV = ConnectionKey("fabric", "echo", "dev")


def inbound(message_id: str, seq: int, *, channel: str = "c1", addressed: bool = True) -> Inbound:
    return Inbound(platform="fabric", agent="echo", space="dev", channel_id=channel,
                   channel_name="general", message_id=message_id, seq=seq,
                   author_id="u1", author_name="alice", content=f"text {seq}", addressed=addressed)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "bridge.db")


def test_checkpoint_copies_the_wal_beside_a_writer_that_holds_the_store(
        store: Store, tmp_path: Path) -> None:
    """The background checkpoint copies every committed page into the database file
    while the store's lock is held (it waits for no writer), and SQLite's inline
    checkpoint is left only as a backstop."""
    for seq in range(1, 201):
        store.record_inbound(inbound(f"m{seq}", seq))
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (INLINE_CHECKPOINT_PAGES,)
    with store._lock:  # a writer is in the middle of its work
        wal_pages, copied = store.checkpoint()
    assert wal_pages > 0 and copied == wal_pages
    # The database file alone (WAL set aside) now holds every row.
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "bridge.db").read_bytes())
    alone = sqlite3.connect(copy)
    try:
        assert alone.execute("SELECT count(*) FROM inbound").fetchone() == (200,)
    finally:
        alone.close()


def test_record_is_idempotent_and_tracks_last_seq(store: Store) -> None:
    assert store.record_inbound(inbound("m1", 1)) is True
    assert store.record_inbound(inbound("m1", 1)) is False
    assert store.record_inbound(inbound("m2", 2)) is True
    store.record_inbound_many([CursorWrite(FABRIC_DEV, "c1", "1", 1)])  # never moves back
    assert store.cursors(FABRIC_DEV) == {"c1": "2"}
    assert store.count_inbound() == {"received": 2}


def test_open_inbound_round_trips_messages_by_seq(store: Store) -> None:
    store.record_inbound(inbound("m2", 2))
    store.record_inbound(inbound("m1", 1, addressed=False))
    store.classify(KEY, "m1", engaged=False)
    assert store.open_inbound(KEY) == [inbound("m1", 1, addressed=False), inbound("m2", 2)]
    assert [m.message_id for m in store.open_scopes()] == ["m2"]
    assert store.count_inbound(KEY) == {"context": 1, "received": 1}


def test_open_inbound_round_trips_attachments(store: Store) -> None:
    shared = attrs.evolve(inbound("m1", 1), attachments=(
        Attachment("plan.md", 1234, "text/markdown", "F1"),
        Attachment("screen.png", 0, "", "https://files.example/F2")))
    store.record_inbound(shared)
    [back] = store.open_inbound(KEY)
    assert back == shared
    assert all(isinstance(item, Attachment) for item in back.attachments)


def test_run_lifecycle_moves_messages_and_fills_the_outbox(store: Store) -> None:
    store.record_inbound(inbound("m1", 1))
    store.start_run("r1", KEY, ["m1"])
    assert store.open_inbound(KEY) == []
    pieces = store.finish_run("r1", "done", ["part one", "part two"], {"input_tokens": 3})
    assert [p.key for p in pieces] == ["r1:0", "r1:1"]
    assert store.finish_run("r1", "done", ["again"]) == []  # finishing twice does nothing
    assert store.count_inbound(KEY) == {"done": 1}
    assert [p.content for p in store.pending_pieces(KEY)] == ["part one", "part two"]
    store.mark_posted("r1:0", "msg-1")
    store.count_attempt("r1:1")
    assert [(p.key, p.attempts) for p in store.pending_pieces(KEY)] == [("r1:1", 1)]
    assert store.pending_scopes() == [KEY]
    store.mark_failed("r1:1", "403 forbidden")
    assert store.pending_pieces(KEY) == [] and store.pending_scopes() == []
    assert store.outbox_counts() == {"posted": 1, "failed": 1}


def test_cut_off_run_reopens_its_messages_then_gives_up(store: Store) -> None:
    store.record_inbound(inbound("m1", 1))
    for attempt in range(1, MAX_RUN_ATTEMPTS + 1):
        store.start_run(f"r{attempt}", KEY, ["m1"])
        recovered = store.recover_runs()
        if attempt < MAX_RUN_ATTEMPTS:
            assert recovered == [(f"r{attempt}", KEY, [])]
            assert [m.message_id for m in store.open_inbound(KEY)] == ["m1"]
        else:
            assert recovered == [(f"r{attempt}", KEY, ["m1"])]
            assert store.open_inbound(KEY) == []
    assert store.recover_runs() == []


def test_notice_is_added_once(store: Store) -> None:
    store.add_notice(KEY, "interrupted:r1", "run interrupted")
    store.add_notice(KEY, "interrupted:r1", "run interrupted")
    assert [p.content for p in store.pending_pieces(KEY)] == ["run interrupted"]


def test_dropped_message_is_not_replayed(store: Store) -> None:
    store.record_inbound(inbound("m1", 1))
    store.drop_inbound(KEY, "m1")
    assert store.open_inbound(KEY) == []
    assert store.record_inbound(inbound("m1", 1)) is False


def test_sessions(store: Store) -> None:
    assert store.session(KEY) is None
    store.save_session(SessionRecord(KEY, "thread-1", "/ws", "fp1"))
    store.save_session(SessionRecord(KEY, "thread-2", "/ws", "fp1"))
    assert store.session(KEY) == SessionRecord(KEY, "thread-2", "/ws", "fp1")
    store.clear_session(KEY)
    record = store.session(KEY)
    assert record is not None and record.session_id is None


def test_survives_reopen(tmp_path: Path) -> None:
    first = Store(tmp_path / "bridge.db")
    first.record_inbound(inbound("m1", 1))
    first.close()
    second = Store(tmp_path / "bridge.db")
    assert second.schema_version == len(MIGRATIONS)
    assert [m.message_id for m in second.open_inbound(KEY)] == ["m1"]


def test_prune_keeps_open_work(store: Store) -> None:
    store.record_inbound(inbound("m1", 1))
    store.record_inbound(inbound("m2", 2))
    store.start_run("r1", KEY, ["m1"])
    store.finish_run("r1", "done", ["answer"])
    store.mark_posted("r1:0", "x")
    assert store.prune(older_than_s=-1) == PruneResult(inbound=1, outbox=1, runs=1, messages=1)
    assert [m.message_id for m in store.open_inbound(KEY)] == ["m2"]


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"unusable.*move it aside"):
        Store(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this bridge"):
        Store(path)


def test_locked_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            Store(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_pieces_remember_the_seq_they_answer(store: Store) -> None:
    store.record_inbound(inbound("m1", 7))
    store.start_run("r1", KEY, ["m1"])
    made = store.finish_run("r1", "done", ["ok"], after_seq=7)
    assert made[0].after_seq == 7
    store.add_notice(KEY, "reply:x", "done", after_seq=9)
    assert [(p.key, p.after_seq) for p in store.pending_pieces(KEY)] == [("r1:0", 7),
                                                                      ("reply:x", 9)]


def test_scope_timeout_is_remembered(tmp_path: Path) -> None:
    first = Store(tmp_path / "bridge.db")
    assert first.scope_timeout(KEY) is None
    first.set_scope_timeout(KEY, 900.0)
    first.close()
    second = Store(tmp_path / "bridge.db")
    assert second.scope_timeout(KEY) == 900.0
    second.set_scope_timeout(KEY, None)
    assert second.scope_timeout(KEY) is None


def test_schema_4_store_migrates_without_losing_open_work(tmp_path: Path) -> None:
    """A state dir written before the platform-neutral keys: its open message, its
    channel seq and its pending piece come through the migration."""
    from bridge.store import DB_FILE, MIGRATIONS
    db = sqlite3.connect(tmp_path / DB_FILE)
    for number, script in enumerate(MIGRATIONS[:4]):
        db.executescript(f"BEGIN;{script};PRAGMA user_version={number + 1};COMMIT;")
    old_payload = ('{"platform": "fabric", "agent": "echo", "guild": "dev", "channel_id": "c1", '
                   '"channel_name": "general", "x_type": "dm", "message_id": "m-7", "seq": 7, '
                   '"author_id": "u1", "author_name": "alice", "content": "hi", '
                   '"created_at": "", "wakeup": true, "mentioned": false, "catch_up": false, '
                   '"stale": false, "author_is_bot": false, "author_known": true}')
    db.execute("INSERT INTO inbound (scope_key, message_id, seq, state, payload, received_at) "
               "VALUES ('fabric:echo:dev:c1', 'm-7', 7, 'received', ?, 0)", (old_payload,))
    db.execute("INSERT INTO channel_seq (agent, guild, channel_id, last_seq) "
               "VALUES ('echo', 'dev', 'c1', 7)")
    db.execute("INSERT INTO outbox (key, scope_key, run_id, idx, content, state, created_at, "
               "updated_at, after_seq) VALUES ('r1:0', 'fabric:echo:dev:c1', 'r1', 0, 'answer', "
               "'pending', 0, 0, 7)")
    db.commit()
    db.close()
    store = Store(tmp_path / DB_FILE)
    try:
        assert store.schema_version == len(MIGRATIONS)
        [message] = store.open_inbound("fabric:echo:dev:c1")
        assert (message.space, message.addressed, message.is_direct, message.cursor) == (
            "dev", True, True, "7")
        assert message.scope_key == "fabric:echo:dev:c1"
        assert store.cursors(FABRIC_DEV) == {"c1": "7"}
        assert [p.key for p in store.pending_pieces("fabric:echo:dev:c1")] == ["r1:0"]
    finally:
        store.close()


def test_a_run_s_messages_are_found_by_index_not_by_scanning_the_journal(
        tmp_path: Path) -> None:
    Store(tmp_path / "bridge.db").close()
    db = sqlite3.connect(tmp_path / "bridge.db")
    for statement in ("UPDATE inbound SET state = 'done' WHERE run_id = ? AND state = 'running'",
                      "SELECT msg FROM inbound WHERE run_id = ? AND state = 'running'"):
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {statement}",
                                                           ("r1",)))
        assert "USING INDEX inbound_run" in plan, plan
    db.close()
