"""A chat message is stored once: shared content per platform message, a slim row per agent.

Store tests (several agents, distinct spaces, the migration of a schema-6 state
dir, retention, the group commit) and one end-to-end test on the dev guild.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild, load_seed
from bridge.model import Attachment, Inbound, ScopeKey
from bridge.store import (
    DB_FILE,
    MIGRATIONS,
    CursorWrite,
    JournalWrite,
    PruneResult,
    Store,
    StoreError,
)
from tests.support import (
    Member,
    member_factory,
    start_bridge,
    wait_until,
    with_helper,
    write_config,
)

AGENTS = ("ada", "bob", "cyd", "dee", "eve")


def post(message_id: str = "m1", *, agent: str = "ada", seq: int = 1, space: str = "dev",
         platform: str = "fabric", channel: str = "c1", **own: bool | str) -> Inbound:
    """One message as the adapter of ``agent``'s connection hands it over."""
    return Inbound(platform=platform, agent=agent, space=space, channel_id=channel,
                   channel_name="general", message_id=message_id, seq=seq, cursor=str(seq),
                   author_id="u1", author_name="alice", content=f"text of {message_id}",
                   created_at="2024-05-01T10:00:00Z", thread=message_id,
                   attachments=(Attachment("plan.md", 12, "text/markdown", "F1"),),
                   **own)  # type: ignore[arg-type]


def rows(path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of ``query`` on the database file, from a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return list(db.execute(query, args))
    finally:
        db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / DB_FILE


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    made = Store(path)
    yield made
    made.close()


def test_a_message_reaching_five_agents_is_stored_once(store: Store, path: Path) -> None:
    sent = [post(agent=agent, addressed=agent == "bob", mentioned=agent == "bob")
            for agent in AGENTS]
    assert [store.record_inbound(message) for message in sent] == [True] * 5
    assert [store.record_inbound(message) for message in sent] == [False] * 5
    assert rows(path, "SELECT count(*) FROM messages") == [(1,)]
    assert rows(path, "SELECT count(*) FROM inbound") == [(5,)]
    # The journal rows carry no copy of the text; each agent reads back what it got.
    owns = [json.loads(str(r[0])) for r in rows(path, "SELECT own FROM inbound")]
    assert sorted(owns, key=len) == [{}, {}, {}, {}, {"addressed": True, "mentioned": True}]
    for message in sent:
        assert store.open_inbound(message.scope_key) == [message]
    assert store.count_inbound() == {"received": 5}
    assert store.stats().rows["messages"] == {"rows": 1}


def test_distinct_spaces_platforms_and_channels_are_not_merged(store: Store, path: Path) -> None:
    variants = [post(), post(space="other"), post(platform="slack"), post(channel="c2"),
                post(agent="bob")]
    for message in variants:
        assert store.record_inbound(message) is True
    assert rows(path, "SELECT count(*) FROM messages") == [(4,)]  # bob's joins ada's
    for message in variants:
        assert store.open_inbound(message.scope_key) == [message]


def test_a_field_one_adapter_saw_otherwise_reads_back_as_it_was_seen(store: Store) -> None:
    """One identity's adapter cut the text at another limit: that row keeps its own text."""
    full = post(agent="ada", catch_up=True, stale=True, per_thread=True, is_direct=True,
                author_known=False)
    cut = attrs.evolve(post(agent="bob"), content="text of", attachments=())
    assert store.record_inbound(full) and store.record_inbound(cut)
    assert store.open_inbound(full.scope_key) == [full]
    assert store.open_inbound(cut.scope_key) == [cut]
    assert [m.message_id for m in store.open_scopes()] == ["m1", "m1"]
    assert [(n, state, m) for n, state, m in store.open_rows()] == [
        (1, "received", full), (2, "received", cut)]


def test_runs_and_recovery_read_the_shared_message(store: Store) -> None:
    ada, bob = post(agent="ada", addressed=True), post(agent="bob")
    store.record_inbound(ada)
    store.record_inbound(bob)
    store.start_run("r1", ada.scope_key, ["m1"])
    assert store.open_inbound(ada.scope_key) == []
    assert store.recover_runs() == [("r1", ada.scope_key, [])]
    assert store.open_inbound(ada.scope_key) == [ada]
    store.start_run("r2", ada.scope_key, ["m1"])
    assert store.interrupt_run("r2") == ([], ["m1"])  # second cut-off run: given up
    assert store.open_inbound(bob.scope_key) == [bob]


def test_prune_keeps_a_message_while_any_row_references_it(store: Store, path: Path) -> None:
    ada, bob = post(agent="ada"), post(agent="bob")
    store.record_inbound(ada)
    store.record_inbound(bob)
    store.mark_done(ada.scope_key, "m1")
    assert store.prune(older_than_s=-1) == PruneResult(inbound=1)
    assert store.open_inbound(bob.scope_key) == [bob]
    assert rows(path, "SELECT count(*) FROM messages") == [(1,)]
    store.drop_inbound(bob.scope_key, "m1")
    assert store.prune(older_than_s=-1) == PruneResult(inbound=1, messages=1)
    assert rows(path, "SELECT count(*) FROM messages") == [(0,)]
    # A pruned message is no longer a duplicate for either agent (as before).
    assert store.record_inbound(ada) is True
    assert store.open_inbound(ada.scope_key) == [ada]


def schema_6(path: Path) -> sqlite3.Connection:
    """A database at schema version 6 (before messages were stored once)."""
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:6]):
        db.executescript(f"BEGIN;{script};PRAGMA user_version={number + 1};COMMIT;")
    return db


def old_row(db: sqlite3.Connection, message: Inbound, state: str, run_id: str | None = None,
            attempts: int = 0) -> None:
    """A journal row as schema 6 wrote it: the whole message as JSON in ``payload``."""
    db.execute("INSERT INTO inbound (scope_key, message_id, seq, state, run_id, attempts, "
               "payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
               (message.scope_key, message.message_id, message.seq, state, run_id, attempts,
                json.dumps(attrs.asdict(message))))


def test_schema_6_journal_migrates_with_open_work_and_row_order(path: Path) -> None:
    db = schema_6(path)
    later = post("m2", agent="ada", seq=2, addressed=True)
    running = post("m1", agent="ada", addressed=True, mentioned=True)
    context = post("m1", agent="bob")
    cut = attrs.evolve(post("m1", agent="cyd"), content="text of")
    done = post("m0", agent="ada", seq=0)
    old_row(db, later, "received")
    old_row(db, running, "running", "r1", 1)
    old_row(db, context, "context")
    old_row(db, cut, "received")
    old_row(db, done, "done")
    db.execute("INSERT INTO runs (run_id, scope_key, started_at) VALUES ('r1', ?, 0)",
               (running.scope_key,))
    db.commit()
    db.close()

    store = Store(path)
    try:
        assert store.schema_version == len(MIGRATIONS) == 9
        columns = [str(r[1]) for r in rows(path, "PRAGMA table_info(inbound)")]
        assert "payload" not in columns and {"msg", "own"} <= set(columns)
        assert rows(path, "SELECT message_id FROM messages ORDER BY id") == [
            ("m2",), ("m1",), ("m0",)]
        assert store.count_inbound() == {"received": 2, "running": 1, "context": 1, "done": 1}
        # Recovery after the upgrade: the cut-off run's message comes back whole.
        assert store.recover_runs() == [("r1", running.scope_key, [])]
        assert store.open_inbound(running.scope_key) == [running, later]
        assert store.open_inbound(context.scope_key) == [context]
        assert store.open_inbound(cut.scope_key) == [cut]
        assert [m for _, _, m in store.open_rows()] == [later, running, cut]
        # The migrated rows behave like new ones: dedup, a new agent, pruning.
        assert store.record_inbound(later) is False
        assert store.record_inbound(post("m1", agent="dee")) is True
        assert rows(path, "SELECT count(*) FROM messages WHERE message_id = 'm1'") == [(1,)]
        assert store.prune(older_than_s=-1) == PruneResult(inbound=1, runs=1, messages=1)
    finally:
        store.close()


def test_writes_that_arrive_together_commit_together(store: Store) -> None:
    """While a transaction holds the store, the journal writes of other threads queue
    and go in one transaction; each caller returns its own answer after its commit."""
    sent = [post(agent=agent) for agent in AGENTS] + [post(agent="ada")]  # one duplicate
    results: dict[int, bool] = {}

    def record(index: int) -> None:
        results[index] = store.record_inbound(sent[index])

    with store._lock:  # a transaction under way
        threads = [threading.Thread(target=record, args=(i,)) for i in range(len(sent))]
        for thread in threads:
            thread.start()
        # One caller leads (it waits for the lock); the others queue behind it.
        wait_until(lambda: len(store._queued) == len(sent) - 1, what="the writes to queue")
    for thread in threads:
        thread.join(10)
    assert sorted(results.values()) == [False] + [True] * len(AGENTS)
    assert (store.group_commits, store.grouped_writes) == (2, len(sent))
    assert store.count_inbound() == {"received": len(AGENTS)}


def test_a_write_that_cannot_be_stored_fails_alone(store: Store) -> None:
    """A message that cannot be stored (here: a text that is not text) fails its own
    caller; the writes queued with it are committed one by one."""
    bad = attrs.evolve(post(agent="bob"), content=object())  # type: ignore[arg-type]
    sent = [post(agent="ada"), bad, post(agent="cyd")]
    results: dict[int, bool | str] = {}

    def record(index: int) -> None:
        try:
            results[index] = store.record_inbound(sent[index])
        except TypeError as exc:
            results[index] = type(exc).__name__

    threads = [threading.Thread(target=record, args=(i,)) for i in range(len(sent))]
    with store._lock:
        threads[0].start()  # ada's write leads alone; bob's and cyd's queue together
        wait_until(lambda: store._leading, what="the first write to lead")
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: len(store._queued) == 2, what="the writes to queue")
    for thread in threads:
        thread.join(10)
    assert results == {0: True, 1: "TypeError", 2: True}
    assert {m.agent for m in store.open_scopes()} == {"ada", "cyd"}
    assert (store.group_commits, store.grouped_writes) == (2, 2)


def test_a_batch_is_recorded_in_order_in_one_transaction(store: Store, path: Path) -> None:
    """One caller's batch (a gateway's burst of events): one commit, one outcome per
    message in order; a duplicate inside it and a message that cannot be stored
    fail alone, and the others are committed."""
    bad = attrs.evolve(post("m3", agent="ada", seq=3), content=object())  # type: ignore[arg-type]
    batch = [post("m1", seq=1), post("m2", seq=2), post("m1", seq=1), bad, post("m4", seq=4)]
    outcomes = store.record_inbound_many([JournalWrite(message) for message in batch])
    assert outcomes[:3] == [True, True, False]
    assert isinstance(outcomes[3], TypeError)
    assert outcomes[4] is True
    scope = batch[0].scope_key
    assert [m.message_id for m in store.open_inbound(scope)] == ["m1", "m2", "m4"]
    assert store.cursors(batch[0].connection) == {"c1": "4"}
    assert rows(path, "SELECT count(*) FROM messages") == [(3,)]


def test_the_next_agents_rows_reference_the_shared_message(store: Store, path: Path) -> None:
    """The second agent's row of a post takes the shared row journaled a moment
    before; a row rolled back with its transaction is never taken."""
    bad = attrs.evolve(post("m2", agent="ada"), content=object())  # type: ignore[arg-type]
    # m1 goes in with a message that cannot be stored: the group's transaction is
    # rolled back, then each is retried alone (m1 commits then).
    outcomes = store.record_inbound_many([JournalWrite(post("m1", agent="ada")),
                                          JournalWrite(bad)])
    assert outcomes[0] is True
    for agent in AGENTS[1:]:
        assert store.record_inbound(post("m1", agent=agent)) is True
    assert rows(path, "SELECT count(*) FROM messages") == [(1,)]
    assert rows(path, "SELECT count(DISTINCT msg) FROM inbound") == [(1,)]
    for agent in AGENTS:
        assert store.open_inbound(post("m1", agent=agent).scope_key) == [post("m1", agent=agent)]


def test_a_message_that_cannot_engage_is_stored_without_a_row(store: Store, path: Path) -> None:
    """Stored once as the space's message, with the agent's cursor; no journal row."""
    context = post("m1", agent="bob", seq=7)
    assert store.record_inbound_many([JournalWrite(context, row=False)]) == [True]
    assert store.count_inbound() == {}
    assert rows(path, "SELECT message_id, seq, author_id, thread FROM messages") == [
        ("m1", 7, "u1", "m1")]
    assert store.cursors(context.connection) == {"c1": "7"}
    # The agent it engages gets its row, on the same shared message.
    assert store.record_inbound(post("m1", agent="ada", seq=7)) is True
    assert rows(path, "SELECT count(*) FROM messages") == [(1,)]
    assert rows(path, "SELECT scope_key FROM inbound") == [(post(agent="ada").scope_key,)]


def test_context_is_read_back_after_the_last_run_without_the_agents_own(store: Store) -> None:
    """A scope reads back, as context, its channel's messages stored without its row:
    only those after the last message a run took, not its own, not those it has a
    row for, not older than ``since``, and only its thread's for a thread scope."""
    def bob(message_id: str, seq: int, author_id: str = "u1", thread: str = "") -> Inbound:
        return attrs.evolve(post(message_id, agent="bob", seq=seq), author_id=author_id,
                            thread=thread or message_id)

    scope = ScopeKey("fabric", "bob", "dev", "c1")
    store.record_inbound(bob("m1", 1))  # a row: engaged, then taken by a run
    store.start_run("r1", str(scope), ["m1"])
    store.finish_run("r1", "ok", [])
    writes = [bob("m0", 0), bob("m2", 2), bob("m3", 3, author_id="bob-user"),
              bob("m4", 4, thread="t9"), bob("m5", 5)]
    store.record_inbound_many([JournalWrite(w, row=False) for w in writes])
    store.record_inbound(bob("m6", 6))  # engaged, open: read by open_inbound, not here
    found = store.context(scope, since=0.0, exclude_author="bob-user")
    assert [m.message_id for m in found] == ["m2", "m4", "m5"]
    assert found[0] == bob("m2", 2)  # as bob's adapter handed it over
    thread = store.context(ScopeKey("fabric", "bob", "dev", "c1", "t9"), since=0.0,
                           exclude_author="bob-user", per_thread=True)
    assert [(m.message_id, m.per_thread) for m in thread] == [("m4", True)]
    # The channel's own conversation of a binding per thread: messages in no thread
    # or starting one (their thread is their own id), not the replies in t9.
    top = store.context(scope, since=0.0, exclude_author="bob-user", per_thread=True)
    assert [m.message_id for m in top] == ["m2", "m5"]
    assert store.context(scope, since=time.time() + 1, exclude_author="bob-user") == []
    assert [m.message_id for m in store.context(scope, since=0.0, exclude_author="",
                                                limit=2)] == ["m4", "m5"]


def test_prune_deletes_old_messages_no_row_references(store: Store, path: Path) -> None:
    store.record_inbound_many([JournalWrite(post("m1", agent="bob"), row=False)])
    assert store.prune(older_than_s=3600) == PruneResult()
    assert store.prune(older_than_s=-1) == PruneResult(messages=1)
    assert rows(path, "SELECT count(*) FROM messages") == [(0,)]
    # Not remembered any more: the next write stores it again.
    store.record_inbound(post("m1", agent="ada"))
    assert store.open_inbound(post(agent="ada").scope_key) == [post("m1", agent="ada")]


def test_a_cursor_in_a_batch_commits_with_the_messages_before_it(
        store: Store, path: Path) -> None:
    """A cursor the intake stored after accepting messages goes in their write: when
    the write fails, neither the messages nor the cursor are stored."""
    first = post("m1", seq=1)
    cursor = CursorWrite(first.connection, "c1", "2", 2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    store._db.execute("PRAGMA busy_timeout = 50")
    try:
        outcomes = store.record_inbound_many([JournalWrite(first, advance_cursor=False), cursor])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert store.cursors(first.connection) == {}
    assert store.count_inbound() == {}
    assert store.record_inbound_many([JournalWrite(first, advance_cursor=False), cursor]) == [
        True, True]
    assert store.cursors(first.connection) == {"c1": "2"}
    assert [m.message_id for m in store.open_inbound(first.scope_key)] == ["m1"]


def test_a_failed_group_records_nothing_and_raises(store: Store, path: Path) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    store._db.execute("PRAGMA busy_timeout = 50")
    try:
        with pytest.raises(StoreError, match="locked"):
            store.record_inbound(post())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.count_inbound() == {}
    assert store.record_inbound(post()) is True


# -- end to end ---------------------------------------------------------------------


def test_a_state_dir_from_before_answers_its_open_message_once_after_the_upgrade(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    config.bridge.state_dir.mkdir(parents=True)
    db = schema_6(config.bridge.state_dir / DB_FILE)
    waiting = Inbound("fabric", "echo", "dev", devguild.channel_id("general"), "general",
                      "before-upgrade", 1, devguild.user_id("alice"), "alice",
                      "asked before the upgrade", addressed=True)
    old_row(db, waiting, "received")
    db.execute("UPDATE inbound SET received_at = strftime('%s', 'now')")
    db.commit()
    db.close()
    app = start_bridge(config, apps=apps)
    alice = members("alice")
    alice.wait_reply("echo", "general", lambda c: c == "asked before the upgrade")
    store = app.store
    assert store is not None
    wait_until(lambda: store.count_inbound(waiting.scope_key) == {"done": 1},
               what="the migrated message done")
    alice.post("general", "after the upgrade")
    alice.wait_reply("echo", "general", lambda c: c == "after the upgrade")
    assert alice.messages_from("echo", "general") == ["asked before the upgrade",
                                                      "after the upgrade"]


CAT = "import sys; print(sys.stdin.read())"


@pytest.fixture
def guild() -> Iterator[DevGuild]:
    """The dev guild with the extra agent ``helper`` in every channel."""
    with DevGuild(with_helper(load_seed()), center_port=0, guild_port=0) as running:
        yield running


@pytest.fixture
def people(guild: DevGuild) -> Iterator[Callable[[str], Member]]:
    """Factory of connected members of ``guild``."""
    yield from member_factory(guild)


def test_a_post_reaching_two_agents_is_stored_once_with_a_row_for_the_mentioned_one(
        tmp_path: Path, guild: DevGuild, people: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    cat = tmp_path / "cat.py"
    cat.write_text(CAT, encoding="utf-8")
    agents = textwrap.dedent(f"""
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"

        [agents.helper]
        kind = "command"
        api_key = "fak_dev_helper"
        command = ["{sys.executable}", "{cat}"]
    """)
    bindings = textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["work"]

        [[bindings]]
        agent = "helper"
        guild = "dev"
        channels = ["work"]
    """)
    config = write_config(tmp_path, guild.center_url, agents=agents, bindings=bindings,
                          debounce_s=0.05)
    app = start_bridge(config, apps=apps)
    db = config.bridge.state_dir / DB_FILE
    alice = people("alice")
    echo, helper = f"<@{guild.user_id('echo')}>", f"<@{guild.user_id('helper')}>"
    first = alice.post("work", f"{echo} the build is red")
    alice.wait_reply("echo", "work", lambda c: c.endswith("the build is red"))

    def journaled(message_id: str) -> list[tuple[object, ...]]:
        return rows(db, "SELECT i.scope_key FROM inbound AS i JOIN messages AS m ON "
                        "m.id = i.msg WHERE m.message_id = ? ORDER BY i.scope_key", message_id)

    keys = [(str(ScopeKey("fabric", a, "dev", guild.channel_id("work"))),)
            for a in ("echo", "helper")]
    # A journal row for echo, the agent it engages; none for helper, which it cannot.
    wait_until(lambda: journaled(first["messageId"]) == keys[:1], what="echo's row")
    assert rows(db, "SELECT count(*) FROM messages WHERE message_id = ?",
                first["messageId"]) == [(1,)]
    # helper, not mentioned, reads it back as context when a mention of helper runs
    # (its conversation was not running: the context comes from the stored message).
    second = alice.post("work", f"{helper} what about you?")
    prompt = alice.wait_reply("helper", "work", lambda c: "Messages to answer:" in c)
    context, asked = prompt.split("</bridge-context>\n", 1)[1].split("Messages to answer:")
    assert "the build is red" in context and "what about you?" in asked
    wait_until(lambda: journaled(second["messageId"]) == keys[1:],
               what="the second post journaled for helper alone")
    assert rows(db, "SELECT count(*) FROM messages WHERE message_id = ?",
                second["messageId"]) == [(1,)]
    # Each post answered once, by the agent it was for.
    store = app.store
    assert store is not None
    echo_key, helper_key = (str(k[0]) for k in keys)
    wait_until(lambda: not store.outbox_counts(helper_key).get("pending"),
               what="helper's answer delivered")
    assert alice.messages_from("echo", "work") == [f"{echo} the build is red"]
    assert len(alice.messages_from("helper", "work")) == 1
    assert store.outbox_counts(echo_key) == {"posted": 1}
    assert store.outbox_counts(helper_key) == {"posted": 1}
