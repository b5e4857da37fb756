"""The state store: one SQLite database (WAL) in the state dir.

It holds what must survive a crash, so that nothing accepted is lost and
nothing delivered is delivered twice:

- the inbound journal, in two tables. ``messages`` holds what a chat message
  is, once per platform message (platform, space, channel, message id): its
  seq, author, text, thread, attachments... A message in a space that reaches
  twenty agent identities is one row there. ``inbound`` holds a slim row per
  (scope, message id) only for the agents the message may engage (a mention,
  a command, a DM...: see :class:`JournalWrite`): the message's state for that
  agent, the agent's own fields (``addressed``, ``mentioned``, ``is_direct``,
  ``per_thread``, ``catch_up``, ``stale``, ``author_known``: see
  :data:`OWN_FIELDS`; only those that differ from their defaults, in the
  ``own`` column as JSON) and a reference to its ``messages`` row. Where one
  identity's adapter saw a shared field differently (a text cut at another
  content limit), that field is kept in the row's ``own`` too, so every agent
  reads back exactly what it was handed. The states: ``received`` (recorded
  by the gateway; it stays open until a run takes it: a replay classifies it
  again), ``context`` (an engaged message the run budget kept for later),
  ``running`` (in a run), ``done`` (its run ended and the answer is in the
  outbox), or ``dropped`` (it made its scope fail, so it is never replayed);
  the journal doubles as the persistent dedup set of what may engage (one
  row per (scope, message id)). For every other agent that saw it the
  message is context: the scope reads it back from ``messages`` by channel
  (and thread) and seq when it starts (:meth:`Store.context`). A
  ``messages`` row goes when the last ``inbound`` row that references it is
  deleted (a trigger, in the same transaction), or, when no row ever
  referenced it, once it is older than the retention;
- the intake cursor per (platform, agent, space, channel), for catch-up;
- the session catalog: scope key -> the agent's thread/session id,
  workspace and policy fingerprint;
- runs: start, end, outcome, usage;
- the outbox: answer pieces with their idempotency keys and delivery state.

Every write commits before the caller acknowledges the step it records.
WAL with ``synchronous=NORMAL`` survives a killed process (``kill -9``); it
may lose the last transactions on power loss, which is accepted here.
Schema migrations are numbered and run at open.

Journal writes that arrive together are committed together (group commit,
:meth:`Store.record_inbound_many`): while one gateway's transaction commits, the
messages other gateways hand in queue up, and the next of them to get the
store commits the whole queue in one transaction. Each caller still returns
only after its own message is committed; nobody waits on a timer, and a lone
message is committed at once. The same post reaching twenty agent identities
then costs a few transactions, not twenty.

Retention (:meth:`Store.prune`, scheduled by ``actors/upkeep.py``) deletes
finished rows older than ``retention_days``: journal rows ``done`` and
``dropped`` (and with the last of them, their shared ``messages`` row),
outbox pieces ``posted`` and ``failed``, ended runs. Open
messages, pending pieces, running runs, sessions, scope settings and the
channel seqs are never pruned. So that the file levels off, new databases are
created with ``auto_vacuum = INCREMENTAL`` and a prune that deleted rows ends
with :meth:`Store.compact`: ``PRAGMA incremental_vacuum`` in bounded steps
(free pages go back to the file system) and ``PRAGMA wal_checkpoint(TRUNCATE)``
without waiting for readers (the WAL file goes back to zero bytes when nobody
reads it; it otherwise keeps the size of its largest burst). A database created before
this keeps ``auto_vacuum = NONE``, which SQLite cannot change without a full
``VACUUM`` (an exclusive rewrite of the whole file, too long to run under a
live bridge): its freed pages are reused by new rows, so it levels off at its
largest size instead of shrinking. ``VACUUM`` with the bridge stopped (e.g.
``sqlite3 var/bridge.db 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM'``) converts it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from bridge.model import SEPARATOR, ConnectionKey, Inbound, ScopeKey

DB_FILE = "bridge.db"
#: Seconds to wait for a lock held by another connection before failing.
BUSY_TIMEOUT_S = 5.0
#: A message whose runs were cut off by crashes this many times is not run again.
MAX_RUN_ATTEMPTS = 2
#: Free pages one step of :meth:`Store.compact` returns to the file system
#: (``incremental_vacuum``); 1024 pages of SQLite's default 4096 bytes are 4 MiB.
VACUUM_STEP_PAGES = 1024

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE inbound (
        scope_key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        run_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (scope_key, message_id)
    );
    CREATE INDEX inbound_open ON inbound (scope_key, state);
    CREATE TABLE channel_seq (
        agent TEXT NOT NULL,
        guild TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (agent, guild, channel_id)
    );
    CREATE TABLE sessions (
        scope_key TEXT PRIMARY KEY,
        session_id TEXT,
        workspace TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        scope_key TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        outcome TEXT,
        usage TEXT
    );
    CREATE INDEX runs_open ON runs (scope_key, ended_at);
    CREATE TABLE outbox (
        key TEXT PRIMARY KEY,
        scope_key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        content TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox (scope_key, state);
    """,
    # 2: the agent process of each run, to kill orphans after a crash
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN pid_ticks TEXT;
    """,
    # 3: the channel seq a piece answers, so the "did it land?" check looks only after it
    """
    ALTER TABLE outbox ADD COLUMN after_seq INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: per-scope settings changed from the chat (/timeout)
    """
    CREATE TABLE scope_settings (
        scope_key TEXT PRIMARY KEY,
        timeout_s REAL
    );
    """,
    # 5: platform-neutral keys. The intake cursor per (platform, identity, space,
    # channel) is opaque text (its position orders it: it never moves back); the
    # journal's messages say ``space``, ``addressed``, ``is_direct`` and ``cursor``
    # instead of the first platform's ``guild``, ``wakeup`` and ``x_type``; a piece
    # names the thread it goes to.
    """
    CREATE TABLE cursors (
        platform TEXT NOT NULL,
        agent TEXT NOT NULL,
        space TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        cursor TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (platform, agent, space, channel_id)
    );
    INSERT INTO cursors (platform, agent, space, channel_id, cursor, position)
        SELECT 'fabric', agent, guild, channel_id, CAST(last_seq AS TEXT), last_seq
        FROM channel_seq;
    DROP TABLE channel_seq;
    UPDATE inbound SET payload = json_remove(json_set(payload,
        '$.space', json_extract(payload, '$.guild'),
        '$.addressed', json(CASE WHEN json_extract(payload, '$.wakeup') THEN 'true'
                                 ELSE 'false' END),
        '$.is_direct', json(CASE WHEN json_extract(payload, '$.x_type') = 'dm' THEN 'true'
                                 ELSE 'false' END),
        '$.cursor', CAST(json_extract(payload, '$.seq') AS TEXT)),
        '$.guild', '$.wakeup', '$.x_type')
    WHERE json_type(payload, '$.guild') IS NOT NULL;
    ALTER TABLE outbox ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    """,
    # 6: a piece is a text or a file to upload (its content is then the staged file's path)
    """
    ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
    """,
    # 7: a chat message is stored once: its shared content in ``messages``, one row per
    # platform message; the journal keeps per (scope, message id) its state, the agent's
    # own fields and a reference. A row whose shared fields differ from the first row's
    # keeps all of its own (nothing is lost). Row numbers are kept (recovery pages by them).
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        space TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (platform, space, channel_id, message_id)
    );
    INSERT INTO messages (platform, space, channel_id, message_id, body)
        SELECT coalesce(json_extract(payload, '$.platform'), ''),
               coalesce(json_extract(payload, '$.space'), ''),
               coalesce(json_extract(payload, '$.channel_id'), ''), message_id,
               json_remove(payload, '$.platform', '$.space', '$.channel_id', '$.message_id',
                   '$.agent', '$.per_thread', '$.addressed', '$.is_direct', '$.mentioned',
                   '$.catch_up', '$.stale', '$.author_known')
        FROM inbound WHERE rowid IN (SELECT min(rowid) FROM inbound GROUP BY
            coalesce(json_extract(payload, '$.platform'), ''),
            coalesce(json_extract(payload, '$.space'), ''),
            coalesce(json_extract(payload, '$.channel_id'), ''), message_id)
        ORDER BY rowid;
    CREATE TABLE inbound_slim (
        scope_key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        run_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        msg INTEGER NOT NULL REFERENCES messages (id),
        own TEXT NOT NULL DEFAULT '{}',
        received_at REAL NOT NULL,
        PRIMARY KEY (scope_key, message_id)
    );
    INSERT INTO inbound_slim (rowid, scope_key, message_id, seq, state, run_id, attempts, msg,
                              own, received_at)
        SELECT i.rowid, i.scope_key, i.message_id, i.seq, i.state, i.run_id, i.attempts, m.id,
               CASE WHEN json_remove(i.payload, '$.platform', '$.space', '$.channel_id',
                        '$.message_id', '$.agent', '$.per_thread', '$.addressed',
                        '$.is_direct', '$.mentioned', '$.catch_up', '$.stale',
                        '$.author_known') = m.body
                    THEN json_remove(i.payload, '$.platform', '$.space', '$.channel_id',
                        '$.message_id', '$.channel_name', '$.seq', '$.author_id',
                        '$.author_name', '$.content', '$.created_at', '$.cursor', '$.thread',
                        '$.author_is_bot', '$.attachments')
                    ELSE json_remove(i.payload, '$.platform', '$.space', '$.channel_id',
                        '$.message_id') END,
               i.received_at
        FROM inbound AS i JOIN messages AS m
            ON m.platform = coalesce(json_extract(i.payload, '$.platform'), '')
            AND m.space = coalesce(json_extract(i.payload, '$.space'), '')
            AND m.channel_id = coalesce(json_extract(i.payload, '$.channel_id'), '')
            AND m.message_id = i.message_id
        ORDER BY i.rowid;
    DROP TABLE inbound;
    ALTER TABLE inbound_slim RENAME TO inbound;
    CREATE INDEX inbound_open ON inbound (scope_key, state);
    CREATE INDEX inbound_msg ON inbound (msg);
    CREATE TRIGGER inbound_forget AFTER DELETE ON inbound BEGIN
        DELETE FROM messages WHERE id = old.msg
            AND NOT EXISTS (SELECT 1 FROM inbound WHERE msg = old.msg);
    END;
    """,
    # 8: a run's messages found by index (finish_run, interrupt_run ran a scan of the
    # whole journal, under the store's lock, at every run's end)
    """
    CREATE INDEX inbound_run ON inbound (run_id) WHERE run_id IS NOT NULL;
    """,
    # 9: journal rows only for the agents a message may engage; the others read it as
    # context from ``messages`` by channel (and thread) and seq, so a message keeps its
    # seq, author, thread and arrival time in columns, and one that no row references
    # is pruned by age.
    """
    ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN author_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN received_at REAL NOT NULL DEFAULT 0;
    UPDATE messages SET seq = coalesce(json_extract(body, '$.seq'), 0),
        author_id = coalesce(json_extract(body, '$.author_id'), ''),
        thread = coalesce(json_extract(body, '$.thread'), ''),
        received_at = coalesce((SELECT min(received_at) FROM inbound WHERE msg = messages.id),
                               0);
    CREATE INDEX messages_channel ON messages (platform, space, channel_id, seq);
    CREATE INDEX messages_received ON messages (received_at);
    """,
)

#: Fields of :class:`~bridge.model.Inbound` that name a platform message: the key
#: of its ``messages`` row.
IDENTITY_FIELDS = ("platform", "space", "channel_id", "message_id")
#: Fields that belong to one agent identity's view of a message (kept per journal
#: row, in ``own``, when they differ from their defaults); every other field is
#: the message's shared content (kept once, in ``messages.body``).
OWN_FIELDS = ("agent", "per_thread", "addressed", "is_direct", "mentioned", "catch_up",
              "stale", "author_known")
#: The defaults of :class:`~bridge.model.Inbound`'s fields (those that have one).
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in attrs.fields(Inbound)
                             if f.default is not attrs.NOTHING}
#: The fields of :class:`~bridge.model.Inbound`, in declaration order.
_FIELD_NAMES = tuple(f.name for f in attrs.fields(Inbound))
#: The columns that rebuild a journal row's message (see :func:`_rebuild`).
_ROW_COLUMNS = ("i.scope_key, m.platform, m.space, m.channel_id, m.message_id, m.body, i.own "
                "FROM inbound AS i JOIN messages AS m ON m.id = i.msg")

#: Inbound states that still need a run (or a place in the next prompt).
OPEN_STATES = ("received", "engaged", "context")
#: Inbound states that are finished: pruned once older than the retention.
FINISHED_STATES = ("done", "dropped")
#: Outbox states that are finished (in the channel, or given up): pruned likewise.
DELIVERED_STATES = ("posted", "failed")
#: Most context messages :meth:`Store.context` reads back for one scope (the
#: prompt keeps fewer: ``bridge.scope_logic.CONTEXT_MESSAGES``).
CONTEXT_ROWS = 200
#: WAL pages (4 KiB each) after which a commit checkpoints inline, on the
#: committing writer: only a backstop, for when :meth:`Store.checkpoint` is not
#: run often enough (SQLite's default is 1000 pages).
INLINE_CHECKPOINT_PAGES = 10_000
#: Seconds between two :meth:`Store.checkpoint` calls of a running bridge.
CHECKPOINT_INTERVAL_S = 1.0
#: Shared messages whose ``messages`` row id the store remembers, so that the
#: same post journaled for the next agent identities needs no lookup.
RECENT_MESSAGES = 4096
#: Rows deleted per transaction by :meth:`Store.prune`, so other writers wait
#: at most one batch for the store's lock.
PRUNE_BATCH_ROWS = 2000
#: Tables whose rows :meth:`Store.stats` counts, with the column grouped by.
_STATS_QUERIES: tuple[tuple[str, str], ...] = (
    ("inbound", "SELECT state, count(*) FROM inbound GROUP BY state"),
    ("messages", "SELECT 'rows', count(*) FROM messages"),
    ("outbox", "SELECT state, count(*) FROM outbox GROUP BY state"),
    ("runs", "SELECT CASE WHEN ended_at IS NULL THEN 'running' ELSE 'ended' END, count(*) "
             "FROM runs GROUP BY 1"),
    ("sessions", "SELECT 'rows', count(*) FROM sessions"),
    ("scope_settings", "SELECT 'rows', count(*) FROM scope_settings"),
    ("cursors", "SELECT 'rows', count(*) FROM cursors"),
)


def _dumps(value: Mapping[str, Any]) -> str:
    """Compact JSON (no spaces) of a journal row's fields."""
    return json.dumps(value, separators=(",", ":"))


def _fields(inbound: Inbound) -> dict[str, Any]:
    """``attrs.asdict(inbound)`` without its generic recursion: every field by name
    (in declaration order), the attachments as a list of dicts."""
    fields = {name: getattr(inbound, name) for name in _FIELD_NAMES}
    fields["attachments"] = [attrs.asdict(item) for item in inbound.attachments]
    return fields


def _split(fields: Mapping[str, Any], scope_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A message's fields (``attrs.asdict`` of an Inbound) as (shared body, own fields).

    The body is every field but the identity and :data:`OWN_FIELDS`; the own
    fields are those of :data:`OWN_FIELDS` that differ from their defaults
    (``agent`` only when the scope key does not already say it).
    """
    body = {k: v for k, v in fields.items() if k not in IDENTITY_FIELDS and k not in OWN_FIELDS}
    own = {k: fields[k] for k in OWN_FIELDS
           if k in fields and (k not in _DEFAULTS or fields[k] != _DEFAULTS[k])}
    if own.get("agent") == _agent_of(scope_key):
        del own["agent"]
    return body, own


def _differences(body: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``body`` that the stored body of the same message has otherwise.

    A field the stored body has and ``body`` lacks is given its default, so the
    row reads back as it was written.
    """
    changed = {k: v for k, v in body.items() if k not in stored or stored[k] != v}
    for name in stored.keys() - body.keys():
        if name in _DEFAULTS:
            default = _DEFAULTS[name]
            changed[name] = list(default) if isinstance(default, tuple) else default
    return changed


def _agent_of(scope_key: str) -> str:
    """The agent part of a printed scope key (empty when it is not one)."""
    parts = scope_key.split(SEPARATOR, 2)
    return parts[1] if len(parts) > 2 else ""


def _rebuild(row: Sequence[Any]) -> Inbound:
    """The message of one journal row: ``(scope key, platform, space, channel id,
    message id, shared body, own fields)`` as selected with :data:`_ROW_COLUMNS`."""
    scope_key, platform, space, channel_id, message_id, body, own = row
    fields: dict[str, Any] = {"platform": platform, "agent": _agent_of(str(scope_key)),
                              "space": space, "channel_id": channel_id,
                              "message_id": message_id}
    fields.update(json.loads(body))
    fields.update(json.loads(own))
    return Inbound(**fields)


@attrs.frozen
class JournalWrite:
    """One accepted message for :meth:`Store.record_inbound_many`.

    Attributes:
        inbound: The normalized message.
        advance_cursor: Also advance the channel's intake cursor to
            ``inbound.cursor`` (at position ``inbound.seq``).
        row: Keep a journal row for the message's scope. False for a message
            that cannot engage its agent: only its shared content (and the
            cursor) is stored, and the scope reads it back as context
            (:meth:`Store.context`).
    """

    inbound: Inbound
    advance_cursor: bool = True
    row: bool = True


@attrs.frozen
class CursorWrite:
    """A channel's intake cursor for :meth:`Store.record_inbound_many` (never moves back).

    Attributes:
        connection: The (platform, agent, space) whose intake read the channel.
        channel_id: The channel.
        cursor: The platform's opaque position of the last message taken.
        position: Its place in the channel (orders cursors: a lower one is ignored).
    """

    connection: ConnectionKey
    channel_id: str
    cursor: str
    position: int


class _Queued:
    """One caller's journal writes waiting for a group commit.

    See :meth:`Store.record_inbound_many`.
    """

    __slots__ = ("done", "items", "outcomes", "wake")

    def __init__(self, items: Sequence[JournalWrite | CursorWrite]) -> None:
        #: The writes, in the caller's order.
        self.items = items
        #: Set when the writes are done, or when the caller is to lead the next group.
        self.wake = threading.Event()
        self.done = False
        #: Per item: True (new), False (a duplicate) or the exception that kept it out.
        self.outcomes: list[bool | Exception] = []


class StoreError(RuntimeError):
    """The database cannot be used: corrupt, locked by another process, or too new.

    The message names the file and says what to do.
    """


@attrs.frozen
class Piece:
    """One answer piece in the outbox: a text to post, or a file to upload.

    Attributes:
        key: Idempotency key, ``<run_id>:<index>`` (a file: ``<run_id>:file:<name>``).
        scope_key: The scope whose channel it goes to.
        run_id: The run that produced it.
        index: Position within the run's answer.
        content: Text (under the content limit); for a file, the path of the copy
            to upload (see :mod:`bridge.run_files`).
        attempts: Failed delivery attempts so far (across restarts).
        after_seq: The channel seq of the message it answers: the piece can
            only have landed after it.
        created_at: Epoch seconds when it entered the outbox: it can only have
            landed after that.
        kind: ``text`` or ``file``.
    """

    key: str
    scope_key: str
    run_id: str
    index: int
    content: str
    attempts: int = 0
    after_seq: int = 0
    created_at: float = 0.0
    kind: str = "text"


@attrs.frozen
class SessionRecord:
    """The session catalog entry of one scope."""

    scope_key: str
    session_id: str | None
    workspace: str
    fingerprint: str


@attrs.frozen
class PruneResult:
    """Rows deleted by one :meth:`Store.prune`.

    Attributes:
        inbound: Journal rows (``done``, ``dropped``).
        outbox: Outbox pieces (``posted``, ``failed``).
        runs: Ended runs.
        messages: Shared messages whose last journal row went, and old ones that never
            had a row (context).
    """

    inbound: int = 0
    outbox: int = 0
    runs: int = 0
    messages: int = 0

    @property
    def total(self) -> int:
        """All rows deleted."""
        return self.inbound + self.outbox + self.runs + self.messages


class TotalBytes:
    """Mixin: :attr:`total_bytes` of a class with ``db_bytes`` and ``wal_bytes`` (bytes)."""

    __slots__ = ()
    db_bytes: int
    wal_bytes: int

    @property
    def total_bytes(self) -> int:
        """Database plus WAL, in bytes."""
        return self.db_bytes + self.wal_bytes


@attrs.frozen
class StoreStats(TotalBytes):
    """Size and row counts of the store (:meth:`Store.stats`).

    Attributes:
        db_bytes: Size of the database file in bytes.
        wal_bytes: Size of its write-ahead log (``bridge.db-wal``) in bytes (0 when absent).
        rows: Row counts per table, then per state: ``inbound`` and ``outbox`` by
            their ``state`` column, ``runs`` as ``running`` / ``ended``, and
            ``messages`` (the shared content of journaled messages), ``sessions``,
            ``scope_settings`` and ``cursors`` as ``rows``.
            A state with no rows is left out.
    """

    db_bytes: int
    wal_bytes: int
    rows: Mapping[str, Mapping[str, int]]


class Store:
    """The bridge's SQLite state store; safe to share between threads.

    Args:
        path: The database file (created with its folder when missing).

    Attributes:
        group_commits: Transactions that committed journal writes (see
            :meth:`record_inbound_many`), since the store was opened.
        grouped_writes: Journal writes committed in them (a write per call).

    Raises:
        StoreError: when the file is not a database, fails its integrity check,
            is locked by another process, or has a newer schema than this code.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        #: Group commit of journal writes (see :meth:`record_inbound_many`): the queue,
        #: whether a caller is committing it, and the condition they wait on.
        self._queued: list[_Queued] = []
        self._leading = False
        self._group = threading.Lock()
        self.group_commits = 0
        self.grouped_writes = 0
        #: The connection :meth:`checkpoint` uses (opened on first use), and its lock.
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        #: The ``messages`` rows of the last :data:`RECENT_MESSAGES` messages
        #: journaled: (platform, space, channel id, message id) -> (row id,
        #: shared body). Emptied by :meth:`prune`, the only deleter of such rows.
        self._recent: dict[tuple[str, ...], tuple[int, dict[str, Any]]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                       isolation_level=None)
            # Takes effect only on a new, empty file (before WAL writes its header).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}")
            self._check()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return (f"state store {self.path} is locked by another process ({text}); stop "
                    "the other bridge or tool that holds it")
        return (f"state store {self.path} is unusable ({text}); move it aside to inspect it "
                "(starting fresh would answer old messages again)")

    def _check(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else '?'}")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(f"state store {self.path} has schema version {version}, newer "
                             f"than this bridge knows ({len(MIGRATIONS)}); upgrade the bridge")
        for number in range(version, len(MIGRATIONS)):
            with self._tx():
                self._db.executescript(f"BEGIN IMMEDIATE;{MIGRATIONS[number]}"
                                       f";PRAGMA user_version={number + 1};COMMIT;")

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(self._explain(exc)) from None

    def _write_one(self, sql: str, params: Sequence[Any]) -> int:
        """Run one writing statement as its own transaction (SQLite's autocommit: the
        connection has ``isolation_level=None``), atomic as any statement is.

        One call into SQLite instead of three (``BEGIN IMMEDIATE``, the statement,
        ``COMMIT``), each of which lets go of the GIL and waits to get it back while
        the store's lock is held.

        Returns:
            The rows it changed.

        Raises:
            StoreError: the database refused it.
        """
        with self._tx() as db:
            return int(db.execute(sql, params).rowcount)

    @contextmanager
    def _write(self, on_commit: Callable[[], object] | None = None
               ) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) under the store's lock.

        Args:
            on_commit: Called after the commit, the lock still held (state kept
                beside the database changes with it, in the same hold). It must
                not raise: the changes are committed, and the caller would take
                the error for a failed write.
        """
        with self._tx() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if on_commit is not None:
                on_commit()

    def close(self) -> None:
        """Close the database (and the checkpoint connection, when open)."""
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        with self._lock:
            self._db.close()

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL's committed pages into the database file, beside the writers.

        ``PRAGMA wal_checkpoint(PASSIVE)`` on a second connection of its own:
        it takes neither the store's lock nor a writer's place, so the journal
        writes go on while it copies and syncs the file (the checkpoint's
        ``fsync`` is what made a commit slow when SQLite ran it inline, on the
        committing writer, with every other writer waiting on the store's
        lock). Run it often (``actors/upkeep.py``: every
        :data:`CHECKPOINT_INTERVAL_S`); SQLite's own inline checkpoint stays as
        a backstop at :data:`INLINE_CHECKPOINT_PAGES` WAL pages.

        Returns:
            (pages in the WAL, pages copied into the database so far), as
            SQLite reports them.

        Raises:
            StoreError: when the database fails.
        """
        with self._checkpoint_lock:
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                        isolation_level=None)
                row = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.DatabaseError as exc:
                raise StoreError(self._explain(exc)) from None
        return int(row[1]), int(row[2])

    # -- inbound journal --------------------------------------------------

    def record_inbound(self, inbound: Inbound, advance_cursor: bool = True) -> bool:
        """Record one accepted message: :meth:`record_inbound_many` of one item.

        Returns:
            True when it is new; False for a message id already recorded for
            its scope (a duplicate: the caller drops it).

        Raises:
            StoreError: when the database fails (nothing is recorded).
        """
        outcome = self.record_inbound_many((JournalWrite(inbound, advance_cursor),))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def record_inbound_many(self, items: Sequence[JournalWrite | CursorWrite]
                            ) -> list[bool | Exception]:
        """Record accepted messages (state ``received``), and their channels' cursors.

        Each message's shared content goes to ``messages`` once per platform
        message; the journal row for its scope keeps the state and this agent
        identity's own fields (see the module docstring). The writes are
        committed when this returns, in the order given. Calls from several
        threads at once are committed together (group commit): a caller that
        finds another's transaction under way queues its messages, and the next
        caller to get the store commits everything queued in one transaction.

        Args:
            items: The messages (and whether each gets a journal row), and
                cursors to store with them (a cursor after the messages it
                passes commits with them, never before).

        Returns:
            One outcome per item, in order: True when it is new (a cursor, and a write
            without a row is always taken as new: its scope drops a message it
            already has); False for a message id already recorded for its
            scope (a duplicate: the caller drops it); or the exception that
            kept it out of the journal (a :class:`StoreError` for every item
            when the database fails; a message that cannot be stored fails
            alone).
        """
        if not items:
            return []
        item = _Queued(items)
        with self._group:
            self._queued.append(item)
            leading = not self._leading
            self._leading = True
        if not leading:
            # Woken once: when a leader committed it, or when handed the lead (only
            # the waiters that have something to do wake, not every queued caller).
            item.wake.wait()
            if item.done:
                return item.outcomes
        with self._group:  # this caller commits the queue (its own writes in it)
            batch, self._queued = self._queued, []
        successor: _Queued | None = None
        try:
            self._commit_group(batch)
        finally:
            with self._group:
                for queued in batch:
                    if not queued.done:  # the commit itself raised: no outcome was set
                        queued.done = True
                        queued.outcomes = [StoreError("the journal write was interrupted")
                                           for _ in queued.items]
                if self._queued:
                    successor = self._queued[0]  # it leads next; _leading stays set
                else:
                    self._leading = False
            for queued in batch:
                queued.wake.set()
            if successor is not None:
                successor.wake.set()
        return item.outcomes

    def _commit_group(self, batch: Sequence[_Queued]) -> None:
        """Commit queued journal writes in one transaction, and set each one's outcome.

        When the database fails, every write of the group fails with it. When
        one write fails otherwise (a message that cannot be stored), the
        others are committed one by one, so only that one fails.
        """
        writes = sum(len(queued.items) for queued in batch)
        fresh: dict[tuple[str, ...], tuple[int, dict[str, Any]]] = {}
        try:
            with self._write(on_commit=lambda: self._remember(fresh)) as db:
                for queued in batch:
                    queued.outcomes = [self._journal(db, write, fresh)
                                       for write in queued.items]
        except StoreError as exc:
            for queued in batch:
                queued.outcomes = [StoreError(str(exc)) for _ in queued.items]
        except Exception:
            if writes == 1:
                raise
            for queued in batch:
                queued.outcomes = [self._journal_alone(write) for write in queued.items]
        else:
            self._count_group(writes)
        for queued in batch:
            queued.done = True

    def _journal_alone(self, write: JournalWrite | CursorWrite) -> bool | Exception:
        """One journal write in its own transaction; the exception when it fails."""
        fresh: dict[tuple[str, ...], tuple[int, dict[str, Any]]] = {}
        try:
            with self._write(on_commit=lambda: self._remember(fresh)) as db:
                new = self._journal(db, write, fresh)
        except Exception as exc:
            return exc
        self._count_group(1)
        return new

    def _count_group(self, writes: int) -> None:
        with self._group:
            self.group_commits += 1
            self.grouped_writes += writes

    def _journal(self, db: sqlite3.Connection, write: JournalWrite | CursorWrite,
                 fresh: dict[tuple[str, ...], tuple[int, dict[str, Any]]]) -> bool:
        """One message into the journal, in the caller's transaction; False: a duplicate.

        A :class:`CursorWrite` stores its cursor only (always True).

        The shared ``messages`` row of a message journaled moments ago for
        another agent identity is taken from :attr:`_recent` (no lookup, no
        JSON) when its content is the same; a row this call inserts goes into
        ``fresh``, which the caller adds to :attr:`_recent` once committed.
        """
        if isinstance(write, CursorWrite):
            self._set_cursor(db, write.connection, write.channel_id, write.cursor,
                             write.position)
            return True
        inbound = write.inbound
        identity = (inbound.platform, inbound.space, inbound.channel_id, inbound.message_id)
        known = self._recent.get(identity) or fresh.get(identity)
        new = True
        # A message stored already needs nothing more for an agent without a row.
        if known is None or write.row:
            new = self._store_message(db, write, identity, known, fresh)
        if write.advance_cursor:
            self._set_cursor(db, inbound.connection, inbound.channel_id,
                             inbound.cursor or str(inbound.seq), inbound.seq)
        return new

    def _store_message(self, db: sqlite3.Connection, write: JournalWrite,
                       identity: tuple[str, ...], known: tuple[int, dict[str, Any]] | None,
                       fresh: dict[tuple[str, ...], tuple[int, dict[str, Any]]]) -> bool:
        """The shared ``messages`` row of ``write`` (found or inserted) and, when it
        asks for one, its journal row; False when that row was there already."""
        inbound = write.inbound
        scope_key = inbound.scope_key
        body, own = _split(_fields(inbound), scope_key)
        if known is not None and known[1] == body:
            msg = known[0]
        else:
            text = _dumps(body)
            inserted = db.execute(
                "INSERT OR IGNORE INTO messages (platform, space, channel_id, message_id, body, "
                "seq, author_id, thread, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*identity, text, inbound.seq, inbound.author_id, inbound.thread, time.time()))
            if inserted.rowcount == 1:
                msg = int(inserted.lastrowid or 0)
                fresh[identity] = (msg, body)
            elif not write.row:
                return True  # stored already; no journal row needs its id or differences
            else:
                row = db.execute("SELECT id, body FROM messages WHERE platform = ? AND "
                                 "space = ? AND channel_id = ? AND message_id = ?",
                                 identity).fetchone()
                msg = int(row[0])
                if str(row[1]) != text:
                    own.update(_differences(body, json.loads(row[1])))
        if not write.row:
            return True
        return bool(db.execute(
            "INSERT OR IGNORE INTO inbound (scope_key, message_id, seq, state, msg, own, "
            "received_at) VALUES (?, ?, ?, 'received', ?, ?, ?)",
            (scope_key, inbound.message_id, inbound.seq, msg, _dumps(own) if own else "{}",
             time.time())).rowcount == 1)

    def _remember(self, fresh: Mapping[tuple[str, ...], tuple[int, dict[str, Any]]]) -> None:
        """Keep the ``messages`` rows just committed in :attr:`_recent` (bounded, oldest
        out); the caller holds the store's lock (``_write``'s ``on_commit``)."""
        self._recent.update(fresh)
        while len(self._recent) > RECENT_MESSAGES:
            del self._recent[next(iter(self._recent))]

    @staticmethod
    def _set_cursor(db: sqlite3.Connection, connection: ConnectionKey, channel_id: str,
                    cursor: str, position: int) -> None:
        db.execute(
            "INSERT INTO cursors (platform, agent, space, channel_id, cursor, position) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, agent, space, channel_id) DO "
            "UPDATE SET cursor = excluded.cursor, position = excluded.position "
            "WHERE excluded.position > cursors.position",
            (connection.platform, connection.agent, connection.space, channel_id, cursor,
             position))

    def cursors(self, connection: ConnectionKey) -> dict[str, str]:
        """The intake cursor per channel id of one connection.

        Args:
            connection: The (platform, agent, space).

        Returns:
            Channel id to the platform's opaque cursor text.
        """
        with self._tx() as db:
            rows = db.execute("SELECT channel_id, cursor FROM cursors WHERE platform = ? AND "
                              "agent = ? AND space = ?", (connection.platform, connection.agent,
                                                          connection.space)).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def classify(self, scope_key: str, message_id: str, engaged: bool) -> None:
        """Mark a received message ``engaged`` or ``context`` (open states only)."""
        self._write_one("UPDATE inbound SET state = ? WHERE scope_key = ? AND message_id = ? "
                        "AND state IN ('received', 'engaged', 'context')",
                        ("engaged" if engaged else "context", scope_key, message_id))

    def mark_done(self, scope_key: str, message_id: str) -> None:
        """Mark a message ``done`` without a run (e.g. a chat command, answered directly)."""
        self._write_one("UPDATE inbound SET state = 'done' WHERE scope_key = ? AND "
                        "message_id = ?", (scope_key, message_id))

    def drop_inbound(self, scope_key: str, message_id: str) -> None:
        """Mark a message ``dropped``: it made its scope fail and is never replayed."""
        self._write_one("UPDATE inbound SET state = 'dropped' WHERE scope_key = ? AND "
                        "message_id = ?", (scope_key, message_id))

    def open_inbound(self, scope_key: str, stale_before: float | None = None) -> list[Inbound]:
        """Messages of a scope that still wait for a run, by seq.

        Args:
            scope_key: The scope.
            stale_before: When given (epoch seconds), messages not taken by a run
                (``received``, ``context``) that were received before it are
                closed first (see :meth:`close_stale`) and not returned.
        """
        if stale_before is not None:
            self.close_stale(stale_before, scope_key)
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_ROW_COLUMNS} WHERE i.scope_key = ? AND i.state IN "
                "('received', 'engaged', 'context') ORDER BY i.seq", (scope_key,)).fetchall()
        return [_rebuild(r) for r in rows]

    def context(self, scope: ScopeKey, *, since: float, exclude_author: str,
                per_thread: bool = False, limit: int = CONTEXT_ROWS) -> list[Inbound]:
        """The messages of a scope's channel (or thread) stored without a row for it.

        Those are the messages that could not engage its agent (see
        :class:`JournalWrite`): its context. Only those after the last message
        a run of the scope took (the highest seq of its rows that are
        ``running``, ``done`` or ``dropped``), received since ``since``, not
        written by ``exclude_author`` (the agent's own), and without a row of
        this scope; the last ``limit`` of them, by seq. Each reads back as the
        scope's agent would have been handed it, with its own fields at their
        defaults (nothing engaged it).

        Args:
            scope: The conversation.
            since: Epoch seconds; older messages are too old to be context.
            exclude_author: The agent's own user id on the platform.
            per_thread: The scope is one of a binding with a conversation per
                thread: it reads its thread only (its first message and the
                replies; for the channel's own conversation, the messages in
                no thread and those that start one). Otherwise the whole channel.
            limit: Most messages returned.
        """
        key = str(scope)
        thread_args: tuple[str, ...] = ()
        if not per_thread:
            threads = ""
        elif scope.thread:
            threads, thread_args = "AND (m.thread = ? OR m.message_id = ?) ", (scope.thread,) * 2
        else:
            threads = "AND (m.thread = '' OR m.thread = m.message_id) "
        with self._tx() as db:
            taken = db.execute(
                "SELECT coalesce(max(seq), 0) FROM inbound WHERE scope_key = ? AND state IN "
                "('running', 'done', 'dropped')", (key,)).fetchone()[0]
            rows = db.execute(
                "SELECT m.message_id, m.body FROM messages AS m WHERE m.platform = ? AND "
                "m.space = ? AND m.channel_id = ? AND m.seq > ? AND m.received_at >= ? AND "
                f"m.author_id != ? {threads}AND NOT EXISTS (SELECT 1 FROM inbound WHERE "
                "scope_key = ? AND message_id = m.message_id) ORDER BY m.seq DESC LIMIT ?",
                (scope.platform, scope.space, scope.channel, int(taken), since, exclude_author,
                 *thread_args, key, limit)).fetchall()
        own = _dumps({"per_thread": per_thread})
        return [_rebuild((key, scope.platform, scope.space, scope.channel, message_id, body, own))
                for message_id, body in reversed(rows)]

    def open_scopes(self) -> list[Inbound]:
        """One open message per scope that has work waiting (to respawn the scope)."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_ROW_COLUMNS} WHERE i.rowid IN (SELECT min(rowid) FROM inbound "
                "WHERE state IN ('received', 'engaged', 'context') GROUP BY scope_key) "
                "ORDER BY i.rowid").fetchall()
        return [_rebuild(r) for r in rows]

    def open_rows(self, after: int = 0, limit: int = 500) -> list[tuple[int, str, Inbound]]:
        """One page of the open messages that may start a run (``received``, ``engaged``).

        For the recovery at start, which reads them page by page instead of
        loading every scope's rows.

        Args:
            after: Only rows after this row number (the last one of the previous page).
            limit: Rows per page.

        Returns:
            ``(row number, state, message)`` by row number.
        """
        with self._tx() as db:
            rows = db.execute(
                f"SELECT i.rowid, i.state, {_ROW_COLUMNS} WHERE i.rowid > ? AND i.state IN "
                "('received', 'engaged') ORDER BY i.rowid LIMIT ?", (after, limit)).fetchall()
        return [(int(r[0]), str(r[1]), _rebuild(r[2:])) for r in rows]

    def close_stale(self, before: float, scope_key: str | None = None) -> int:
        """Close (``done``) the messages no run took that were received before ``before``.

        Such messages (``received`` or ``context``) are older than the catch-up
        window: context only, and too old to be context for a later prompt.
        Messages of cut-off runs (``engaged``) stay open.

        Args:
            before: Epoch seconds.
            scope_key: Only this scope's messages (default: every scope's).

        Returns:
            Messages closed.
        """
        query = ("UPDATE inbound SET state = 'done' WHERE state IN ('received', 'context') "
                 "AND received_at < ?")
        args: tuple[float | str, ...] = (before,)
        if scope_key is not None:
            query += " AND scope_key = ?"
            args = (before, scope_key)
        return self._write_one(query, args)

    def close_context(self, scope_key: str, message_ids: Sequence[str]) -> None:
        """Close (``done``) context messages that no prompt will take (beyond its bounds).

        Only messages still open as context (``received`` or ``context``) change;
        others (already running or done) are left as they are.

        Args:
            scope_key: The scope the messages belong to.
            message_ids: Their ids (empty: nothing to do).

        Raises:
            StoreError: when the database fails.
        """
        if not message_ids:
            return
        with self._write() as db:
            db.executemany("UPDATE inbound SET state = 'done' WHERE scope_key = ? AND "
                           "message_id = ? AND state IN ('received', 'context')",
                           [(scope_key, m) for m in message_ids])

    def count_inbound(self, scope_key: str | None = None) -> dict[str, int]:
        """Journal rows per state (of one scope, or of all)."""
        return self._count_states("inbound", scope_key)

    def _count_states(self, table: str, scope_key: str | None) -> dict[str, int]:
        query = f"SELECT state, count(*) FROM {table}"  # table: a fixed name, never input
        args: tuple[str, ...] = ()
        if scope_key is not None:
            query += " WHERE scope_key = ?"
            args = (scope_key,)
        with self._tx() as db:
            rows = db.execute(query + " GROUP BY state", args).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- runs --------------------------------------------------------------

    def start_run(self, run_id: str, scope_key: str,
                  message_ids: Sequence[str]) -> SessionRecord | None:
        """Record a run and move its messages (engaged and context) to ``running``.

        Other context messages of the scope (the ones the prompt's bounds left
        out) become ``done``, so they are not replayed.

        Returns:
            The scope's session entry (as :meth:`session`), read in the same
            transaction: the run needs it next, and one hold of the store's lock
            is cheaper than two.
        """
        with self._write() as db:
            db.execute("INSERT INTO runs (run_id, scope_key, started_at) VALUES (?, ?, ?)",
                       (run_id, scope_key, time.time()))
            db.executemany(
                "UPDATE inbound SET state = 'running', run_id = ?, attempts = attempts + 1 "
                "WHERE scope_key = ? AND message_id = ?",
                [(run_id, scope_key, m) for m in message_ids])
            # Context the prompt did not take (trimmed by the bounds) is done too.
            db.execute("UPDATE inbound SET state = 'done' WHERE scope_key = ? AND "
                       "state = 'context'", (scope_key,))
            return self._session_row(db, scope_key)

    def finish_run(self, run_id: str, outcome: str, pieces: Sequence[str],
                   usage: dict[str, Any] | None = None, after_seq: int = 0,
                   files: Sequence[Path] = ()) -> list[Piece]:
        """End a run: its answer pieces (and files) go to the outbox, its messages are ``done``.

        One transaction, so a crash leaves either the run open (it is recovered)
        or the answer safely in the outbox (it is delivered).

        Args:
            run_id: The run.
            outcome: ``done``, ``failed``, ``stopped``, ``interrupted``...
            pieces: The answer split under the content limit, in order.
            usage: What the agent reported (tokens, cost), if anything.
            after_seq: The highest channel seq among the messages it answers.
            files: Files to upload after the pieces, in order (staged copies; each
                key ``<run_id>:file:<file name>``, so names must differ).

        Returns:
            The outbox pieces created (empty when the run was already finished).
        """
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT scope_key, ended_at FROM runs WHERE run_id = ?",
                             (run_id,)).fetchone()
            if row is None or row[1] is not None:
                return []
            scope_key = str(row[0])
            db.execute("UPDATE runs SET ended_at = ?, outcome = ?, usage = ? WHERE run_id = ?",
                       (now, outcome, json.dumps(usage) if usage else None, run_id))
            db.execute("UPDATE inbound SET state = 'done' WHERE run_id = ? AND state = "
                       "'running'", (run_id,))
            made = [Piece(f"{run_id}:{i}", scope_key, run_id, i, text, 0, after_seq, now)
                    for i, text in enumerate(pieces)]
            made += [Piece(f"{run_id}:file:{path.name}", scope_key, run_id, len(pieces) + i,
                           str(path), 0, after_seq, now, "file")
                     for i, path in enumerate(files)]
            db.executemany(
                "INSERT OR IGNORE INTO outbox (key, scope_key, run_id, idx, content, state, "
                "created_at, updated_at, after_seq, kind) VALUES (?, ?, ?, ?, ?, 'pending', ?, "
                "?, ?, ?)",
                [(p.key, p.scope_key, p.run_id, p.index, p.content, now, now, after_seq, p.kind)
                 for p in made])
        return made

    def set_run_process(self, run_id: str, pid: int, ticks: str | None) -> None:
        """Record the agent process group of a run (see :mod:`bridge.procs`)."""
        self._write_one("UPDATE runs SET pid = ?, pid_ticks = ? WHERE run_id = ?",
                        (pid, ticks, run_id))

    def open_run_processes(self) -> list[tuple[int, str | None]]:
        """``(pid, start ticks)`` of the agent processes of runs that never ended."""
        with self._tx() as db:
            rows = db.execute("SELECT pid, pid_ticks FROM runs WHERE ended_at IS NULL AND "
                              "pid IS NOT NULL").fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    def open_runs(self) -> list[tuple[str, int | None, str | None]]:
        """``(run id, pid, start ticks)`` of the runs that never ended (pid None: not recorded)."""
        with self._tx() as db:
            rows = db.execute("SELECT run_id, pid, pid_ticks FROM runs WHERE ended_at IS NULL"
                              ).fetchall()
        return [(str(r[0]), None if r[1] is None else int(r[1]), r[2]) for r in rows]

    def known_runs(self, run_ids: Iterable[str]) -> set[str]:
        """Those of ``run_ids`` that are runs of this store (ended or not).

        Args:
            run_ids: Run ids to look up (any number; duplicates are fine).

        Returns:
            The ids that have a row in ``runs``.

        Raises:
            StoreError: when the database fails.
        """
        wanted = list(dict.fromkeys(run_ids))
        known: set[str] = set()
        with self._tx() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                known.update(str(r[0]) for r in db.execute(
                    f"SELECT run_id FROM runs WHERE run_id IN ({marks})", chunk))
        return known

    def recover_runs(self) -> list[tuple[str, str, list[str]]]:
        """Close runs that a crash cut off; reopen their messages for another run.

        Messages that already had :data:`MAX_RUN_ATTEMPTS` runs are not run
        again; their run is reported as interrupted.

        Returns:
            ``(run_id, scope_key, message_ids given up)`` for each cut-off run;
            the caller posts one "interrupted" notice for those with given-up messages.
        """
        result = []
        with self._write() as db:
            runs = db.execute("SELECT run_id, scope_key FROM runs WHERE ended_at IS NULL"
                              ).fetchall()
            for run_id, scope_key in runs:
                _, given_up = self._interrupt(db, str(run_id))
                result.append((str(run_id), str(scope_key), given_up))
        return result

    def interrupt_run(self, run_id: str) -> tuple[list[Inbound], list[str]]:
        """End a run that was cut off while the bridge runs (its scope failed, it stopped).

        Like :meth:`recover_runs` for one run: its messages are reopened for
        another run, except those that already had :data:`MAX_RUN_ATTEMPTS` runs
        (those are closed as ``done``). The run ends with outcome ``interrupted``.

        Args:
            run_id: The run's id.

        Returns:
            (the reopened messages, the ids of the messages given up); both
            empty when the run had already ended or is unknown.

        Raises:
            StoreError: when the database fails.
        """
        with self._write() as db:
            row = db.execute("SELECT ended_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row[0] is not None:
                return [], []
            return self._interrupt(db, run_id)

    @staticmethod
    def _interrupt(db: sqlite3.Connection, run_id: str) -> tuple[list[Inbound], list[str]]:
        given_up = [str(r[0]) for r in db.execute(
            "SELECT message_id FROM inbound WHERE run_id = ? AND state = 'running' AND "
            "attempts >= ?", (run_id, MAX_RUN_ATTEMPTS)).fetchall()]
        reopened = [_rebuild(r) for r in db.execute(
            f"SELECT {_ROW_COLUMNS} WHERE i.run_id = ? AND i.state = 'running' AND "
            "i.attempts < ? ORDER BY i.seq", (run_id, MAX_RUN_ATTEMPTS)).fetchall()]
        db.execute("UPDATE inbound SET state = 'engaged', run_id = NULL WHERE run_id = ? "
                   "AND state = 'running' AND attempts < ?", (run_id, MAX_RUN_ATTEMPTS))
        db.execute("UPDATE inbound SET state = 'done' WHERE run_id = ? AND state = "
                   "'running'", (run_id,))
        db.execute("UPDATE runs SET ended_at = ?, outcome = 'interrupted' WHERE "
                   "run_id = ?", (time.time(), run_id))
        return reopened, given_up

    def add_notice(self, scope_key: str, key: str, content: str, after_seq: int = 0) -> Piece:
        """Put a one-piece notice (not from a run) in the outbox, once per ``key``.

        Args:
            scope_key: The scope whose channel it goes to.
            key: Idempotency key.
            content: Text (under the content limit).
            after_seq: The channel seq of the message it answers, if any.
        """
        now = time.time()
        piece = Piece(key, scope_key, key, 0, content, 0, after_seq, now)
        self._write_one(
            "INSERT OR IGNORE INTO outbox (key, scope_key, run_id, idx, content, state, "
            "created_at, updated_at, after_seq) VALUES (?, ?, ?, 0, ?, 'pending', ?, ?, ?)",
            (key, scope_key, key, content, now, now, after_seq))
        return piece

    def answer_command(self, scope_key: str, message_id: str, key: str, content: str,
                       after_seq: int = 0) -> Piece:
        """Mark a chat command ``done`` and queue its answer, in one transaction.

        A crash leaves either both (the answer is delivered) or neither (the
        command stays open and is answered when the journal is replayed), never
        a command marked done whose answer was lost.

        Args:
            scope_key: The scope of the command (and of the answer).
            message_id: The command's message.
            key: The answer's idempotency key (a replay queues it once).
            content: The answer (under the content limit).
            after_seq: The channel seq of the command.

        Returns:
            The answer's outbox piece.
        """
        now = time.time()
        piece = Piece(key, scope_key, key, 0, content, 0, after_seq, now)
        with self._write() as db:
            db.execute("UPDATE inbound SET state = 'done' WHERE scope_key = ? AND "
                       "message_id = ?", (scope_key, message_id))
            db.execute(
                "INSERT OR IGNORE INTO outbox (key, scope_key, run_id, idx, content, state, "
                "created_at, updated_at, after_seq) VALUES (?, ?, ?, 0, ?, 'pending', ?, ?, ?)",
                (key, scope_key, key, content, now, now, after_seq))
        return piece

    # -- outbox ------------------------------------------------------------

    def pending_pieces(self, scope_key: str) -> list[Piece]:
        """Pieces of a scope not yet delivered, oldest run first, by index."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT key, scope_key, run_id, idx, content, attempts, after_seq, created_at, "
                "kind FROM outbox WHERE scope_key = ? AND state = 'pending' "
                "ORDER BY created_at, run_id, idx", (scope_key,)).fetchall()
        return [Piece(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]),
                      int(r[6]), float(r[7]), str(r[8])) for r in rows]

    def pending_scopes(self) -> list[str]:
        """Scope keys with undelivered pieces."""
        with self._tx() as db:
            rows = db.execute("SELECT DISTINCT scope_key FROM outbox WHERE state = 'pending'"
                              ).fetchall()
        return [str(r[0]) for r in rows]

    def mark_posted(self, key: str, message_id: str | None) -> None:
        """Record that a piece is in the channel (it is never posted again)."""
        self._write_one("UPDATE outbox SET state = 'posted', message_id = ?, updated_at = ? "
                        "WHERE key = ?", (message_id, time.time(), key))

    def mark_failed(self, key: str, reason: str) -> None:
        """Record that a piece was given up (a permanent error); it is not retried."""
        self._write_one("UPDATE outbox SET state = 'failed', message_id = ?, updated_at = ? "
                        "WHERE key = ?", (reason[:200], time.time(), key))

    def count_attempt(self, key: str) -> None:
        """Count one failed delivery attempt of a piece."""
        self._write_one("UPDATE outbox SET attempts = attempts + 1, updated_at = ? WHERE key = ?",
                        (time.time(), key))

    def outbox_counts(self, scope_key: str | None = None) -> dict[str, int]:
        """Outbox rows per state (of one scope, or of all)."""
        return self._count_states("outbox", scope_key)

    # -- sessions ----------------------------------------------------------

    def session(self, scope_key: str) -> SessionRecord | None:
        """The session catalog entry of a scope, if any."""
        with self._tx() as db:
            return self._session_row(db, scope_key)

    @staticmethod
    def _session_row(db: sqlite3.Connection, scope_key: str) -> SessionRecord | None:
        row = db.execute("SELECT scope_key, session_id, workspace, fingerprint FROM "
                         "sessions WHERE scope_key = ?", (scope_key,)).fetchone()
        if row is None:
            return None
        return SessionRecord(str(row[0]), row[1], str(row[2]), str(row[3]))

    def save_session(self, record: SessionRecord) -> None:
        """Insert or replace a scope's session entry."""
        self._write_one(
            "INSERT INTO sessions (scope_key, session_id, workspace, fingerprint, "
            "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope_key) DO UPDATE SET "
            "session_id = excluded.session_id, workspace = excluded.workspace, "
            "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
            (record.scope_key, record.session_id, record.workspace, record.fingerprint,
             time.time()))

    def clear_session(self, scope_key: str) -> None:
        """Forget a scope's agent session (``/new``)."""
        self._write_one("UPDATE sessions SET session_id = NULL, updated_at = ? WHERE "
                        "scope_key = ?", (time.time(), scope_key))

    def scope_timeout(self, scope_key: str) -> float | None:
        """The run timeout set with ``/timeout`` for a scope (seconds), or None."""
        with self._tx() as db:
            row = db.execute("SELECT timeout_s FROM scope_settings WHERE scope_key = ?",
                             (scope_key,)).fetchone()
        return float(row[0]) if row is not None and row[0] is not None else None

    def set_scope_timeout(self, scope_key: str, timeout_s: float | None) -> None:
        """Remember a scope's ``/timeout`` (None: back to the agent's default)."""
        self._write_one("INSERT INTO scope_settings (scope_key, timeout_s) VALUES (?, ?) "
                        "ON CONFLICT (scope_key) DO UPDATE SET timeout_s = excluded.timeout_s",
                        (scope_key, timeout_s))

    # -- upkeep --------------------------------------------------------------

    def prune(self, older_than_s: float, now: float | None = None,
              batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
        """Delete finished rows older than ``older_than_s`` seconds; never open work.

        Deleted: journal rows ``done`` or ``dropped`` received before the
        cutoff (a shared message goes with the last journal row that
        references it, never before), shared messages stored without a row
        (context, see :class:`JournalWrite`) received before it, outbox pieces
        ``posted`` or ``failed`` last updated before it, runs that ended
        before it. Kept whatever their age: open messages
        (``received``, ``engaged``, ``context``, ``running``), ``pending``
        pieces, runs that have not ended, sessions, scope settings and channel
        seqs (the catch-up position). Rows go in batches of ``batch_rows``, one
        transaction each, so the actors' writes wait at most one batch. When
        anything was deleted, :meth:`compact` returns free pages to the file
        system (``incremental_vacuum``, for databases created with it) and
        truncates the WAL (``wal_checkpoint(TRUNCATE)``; without waiting, so
        skipped while an outside reader holds it, and done by the next prune).

        Args:
            older_than_s: Retention in seconds.
            now: The current epoch time (default: the clock).
            batch_rows: Rows deleted per transaction (at least 1).

        Returns:
            What was deleted, per table.

        Raises:
            StoreError: when the database fails or stays locked.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        limit = max(1, batch_rows)
        inbound, messages = self._delete_batches(
            "DELETE FROM inbound WHERE rowid IN (SELECT rowid FROM inbound WHERE state IN "
            "('done', 'dropped') AND received_at < ? LIMIT ?)", cutoff, limit)
        outbox, _ = self._delete_batches(
            "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox WHERE state IN "
            "('posted', 'failed') AND updated_at < ? LIMIT ?)", cutoff, limit)
        runs, _ = self._delete_batches(
            "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs WHERE ended_at IS NOT "
            "NULL AND ended_at < ? LIMIT ?)", cutoff, limit)
        context, _ = self._delete_batches(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages AS m WHERE "
            "received_at < ? AND NOT EXISTS (SELECT 1 FROM inbound WHERE msg = m.id) LIMIT ?)",
            cutoff, limit, deletes_messages=True)
        result = PruneResult(inbound, outbox, runs, messages + context)
        if result.total:
            self.compact()
        return result

    def _delete_batches(self, statement: str, cutoff: float, limit: int, *,
                        deletes_messages: bool = False) -> tuple[int, int]:
        """Run a ``DELETE ... LIMIT ?`` until it deletes fewer than ``limit`` rows.

        A batch that deletes ``messages`` rows (``deletes_messages``, or through the
        triggers) empties :attr:`_recent` in its own transaction, so no later write
        takes the id of a deleted row from it.

        Returns:
            (rows the statement deleted, rows its triggers deleted: the shared
            messages whose last journal row went).
        """
        deleted = by_triggers = 0
        while True:
            with self._write() as db:
                before = db.total_changes
                count = int(db.execute(statement, (cutoff, limit)).rowcount)
                forgotten = db.total_changes - before - count
                if forgotten or (deletes_messages and count):
                    self._recent.clear()  # a remembered messages row may be gone
                by_triggers += forgotten
            deleted += count
            if count < limit:
                return deleted, by_triggers

    def compact(self) -> None:
        """Return free pages to the file system and empty the WAL, never waiting on a reader.

        Free pages go back in steps of at most :data:`VACUUM_STEP_PAGES`
        (``PRAGMA incremental_vacuum(N)``), each step one hold of the store's
        lock, so the actors' writes wait for one step at most. It stops when no
        free page is left or a step frees none (a database created without
        ``auto_vacuum = INCREMENTAL`` keeps its free pages for new rows).

        The WAL is then checkpointed with ``wal_checkpoint(TRUNCATE)`` under a
        busy timeout of 0 seconds. With the usual busy timeout
        (:data:`BUSY_TIMEOUT_S`), TRUNCATE waits for every outside reader
        (``bin/bridge doctor``, ``status``, a ``sqlite3`` shell) to leave the
        WAL, with the store's lock held, so every actor would wait as long.
        Without a wait, SQLite checkpoints as much as a ``PASSIVE`` checkpoint
        would and truncates the file only when nobody reads it; otherwise the
        file stays as it is until the next compact. ``PASSIVE`` alone never
        waits either, but never truncates: the WAL would keep the size of its
        largest burst.

        Raises:
            StoreError: when the database fails.
        """
        with self._tx() as db:
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        while free > 0:
            with self._tx() as db:
                # executescript steps the pragma to the end; execute() frees one page only.
                db.executescript(f"PRAGMA incremental_vacuum({max(1, VACUUM_STEP_PAGES)});")
                left = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            if left >= free:
                break
            free = left
        with self._tx() as db:
            db.execute("PRAGMA busy_timeout = 0")
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                db.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_S * 1000)}")

    def stats(self) -> StoreStats:
        """Size in bytes (database and WAL) and row counts per table and state.

        Counted on a read-only connection of its own, so the actors' writes do
        not wait for the counts (WAL lets readers and a writer run together).

        Raises:
            StoreError: when the database cannot be read.
        """
        rows: dict[str, dict[str, int]] = {}
        try:
            reader = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                reader.execute("BEGIN")  # one snapshot for every count
                for table, query in _STATS_QUERIES:
                    rows[table] = {str(r[0]): int(r[1]) for r in reader.execute(query)}
                reader.execute("COMMIT")
            finally:
                reader.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None
        return StoreStats(*file_bytes(self.path), rows)


def file_bytes(path: Path) -> tuple[int, int]:
    """Sizes of a store's files, read from the file system (no connection needed).

    Args:
        path: The database file (its WAL is ``<path>-wal``).

    Returns:
        (database bytes, WAL bytes); 0 for a file that does not exist.
    """
    sizes = []
    for name in (path, Path(f"{path}-wal")):
        try:
            sizes.append(os.stat(name).st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes[0], sizes[1]


def open_store(state_dir: Path) -> Store:
    """Open (creating if needed) the store in ``state_dir``.

    Raises:
        StoreError: see :class:`Store`.
    """
    return Store(state_dir / DB_FILE)
