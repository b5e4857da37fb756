"""The board: the one place where live actor state is published and read.

Actors publish small frozen rows when their state changes; the TUI, ``bridge
status`` and ``bridge top`` only read snapshots. The board is a plain
thread-safe store (a lock around dicts) rather than an actor: publishing is a
dict assignment, and reading never waits on an actor's inbox.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

import attrs

from bridge.model import ScopeKey
from bridge.store import TotalBytes

#: Connection states shown for each connection's gateway.
CONNECTION_STATES = ("connecting", "connected", "reconnecting", "failed", "stopped")
#: Scope states shown for each conversation.
SCOPE_STATES = ("idle", "debouncing", "running", "queued")


@attrs.frozen
class ActorRow:
    """One actor in the supervision tree.

    Attributes:
        id: Child id, e.g. ``"scope:<platform>:echo:<space>:<channelId>"``.
        kind: ``supervisor``, ``credentials``, ``gateway``, ``scope``, ``runner``, ``delivery``
            or ``upkeep``.
        parent: Id of the supervising actor, or None for the root.
        state: ``running``, ``restarting``, ``failed`` or ``stopped``.
        restarts: Restarts so far (seen by the supervisor).
        detail: One short line for the operator (never a secret).
    """

    id: str
    kind: str
    parent: str | None
    state: str
    restarts: int = 0
    detail: str = ""


@attrs.frozen
class ConnectionRow:
    """One connection (agent identity in one space of a platform).

    Attributes:
        agent: Agent name from the config.
        space: The platform's space id.
        state: One of :data:`CONNECTION_STATES`.
        reconnects: Successful reconnects after the first connect.
        token_at: Epoch seconds when the token in use was issued, or None.
        reason: Why the connection is not connected (empty when connected).
        channels: Number of channels joined.
        token_refreshes: Fresh tokens obtained after the first (expiry, 401, refusal).
        last_event_at: Epoch seconds of the last event the socket delivered, or None.
        silences: Times the socket was found silent (connected, but channels had
            newer messages than it delivered) and was caught up and reconnected.
    """

    agent: str
    space: str
    state: str
    reconnects: int = 0
    token_at: float | None = None
    reason: str = ""
    channels: int = 0
    token_refreshes: int = 0
    last_event_at: float | None = None
    silences: int = 0


@attrs.frozen
class ScopeRow:
    """One conversation scope.

    Attributes:
        key: Scope key, ``<platform>:<agent>:<space>:<channelId>[:<thread>]``.
        agent: Agent name.
        channel: Channel name for display (id when the name is unknown).
        state: One of :data:`SCOPE_STATES`.
        queued: Engaged messages waiting for the next run.
        last_activity: Epoch seconds of the last inbound message or run change.
        received: Messages accepted (after dedup).
        engaged: Messages that engaged the agent.
        runs: Runs started.
        failures: Runs that failed.
        delivered: Answer pieces posted (by this process).
        undelivered: Pieces waiting in the outbox.
        retries: Failed post attempts that were retried.
        last_delivered: Idempotency key of the last piece posted.
    """

    key: str
    agent: str
    channel: str
    state: str
    queued: int = 0
    last_activity: float = 0.0
    received: int = 0
    engaged: int = 0
    runs: int = 0
    failures: int = 0
    delivered: int = 0
    undelivered: int = 0
    retries: int = 0
    last_delivered: str = ""


@attrs.frozen
class RunRow:
    """One active run.

    Attributes:
        run_id: Unique run id.
        scope_key: The scope that started it.
        agent: Agent name.
        started_at: Epoch seconds.
        detail: Last progress line (never a secret).
    """

    run_id: str
    scope_key: str
    agent: str
    started_at: float
    detail: str = ""


@attrs.frozen
class StoreRow(TotalBytes):
    """The state store's size and rows, as last measured by the upkeep actor.

    Attributes:
        db_bytes: Database file size in bytes.
        wal_bytes: Write-ahead log size in bytes.
        rows: Row counts per table, then per state (see ``bridge.store.StoreStats``).
        measured_at: Epoch seconds of the measurement.
        retention_days: The configured retention (days).
        pruned_at: Epoch seconds of the last prune, or None before the first.
        pruned: Rows pruned since the bridge started.
    """

    db_bytes: int
    wal_bytes: int
    rows: dict[str, dict[str, int]] = attrs.field(factory=dict)
    measured_at: float = 0.0
    retention_days: float = 0.0
    pruned_at: float | None = None
    pruned: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreRow:
        """Build a row from its ``attrs.asdict`` form (``status.json``).

        Raises:
            KeyError, TypeError, ValueError: when ``data`` does not have the row's shape.
        """
        rows = {str(table): {str(k): int(v) for k, v in counts.items()}
                for table, counts in data.get("rows", {}).items()}
        pruned_at = data.get("pruned_at")
        return cls(int(data["db_bytes"]), int(data["wal_bytes"]), rows,
                   float(data.get("measured_at", 0.0)), float(data.get("retention_days", 0.0)),
                   float(pruned_at) if pruned_at is not None else None,
                   int(data.get("pruned", 0)))


@attrs.frozen
class BoardSnapshot:
    """A consistent copy of the board at one moment.

    Attributes:
        taken_at: Epoch seconds when the snapshot was taken.
        started_at: Epoch seconds when the bridge started.
        pid: Process id of the bridge.
        actors: Supervision tree rows, root first.
        connections: Gateway rows.
        scopes: Scope rows, most recently active first.
        runs: Active runs, oldest first.
        logs: The last log lines, oldest first.
        store: The state store's size and row counts, once measured.
    """

    taken_at: float
    started_at: float
    pid: int
    actors: tuple[ActorRow, ...] = ()
    connections: tuple[ConnectionRow, ...] = ()
    scopes: tuple[ScopeRow, ...] = ()
    runs: tuple[RunRow, ...] = ()
    logs: tuple[str, ...] = ()
    store: StoreRow | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the format of ``status.json``)."""
        return attrs.asdict(self, recurse=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoardSnapshot:
        """Build a snapshot from :meth:`to_dict` output.

        Raises:
            KeyError, TypeError: when ``data`` does not have the snapshot's shape.
        """
        return cls(
            taken_at=float(data["taken_at"]),
            started_at=float(data["started_at"]),
            pid=int(data["pid"]),
            actors=tuple(ActorRow(**row) for row in data.get("actors", ())),
            connections=tuple(ConnectionRow(**_renamed(row, guild="space"))
                              for row in data.get("connections", ())),
            scopes=tuple(ScopeRow(**row) for row in data.get("scopes", ())),
            runs=tuple(RunRow(**row) for row in data.get("runs", ())),
            logs=tuple(str(line) for line in data.get("logs", ())),
            store=StoreRow.from_dict(data["store"]) if data.get("store") else None,
        )


class Board:
    """Thread-safe store of the latest rows, published by actors.

    Args:
        log_lines: How many recent log lines to keep.
    """

    def __init__(self, log_lines: int = 200) -> None:
        self._lock = threading.Lock()
        self._started_at = time.time()
        self._actors: dict[str, ActorRow] = {}
        self._connections: dict[tuple[str, str], ConnectionRow] = {}
        self._scopes: dict[str, ScopeRow] = {}
        self._runs: dict[str, RunRow] = {}
        self._logs: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._store: StoreRow | None = None
        self._version = 0

    @property
    def version(self) -> int:
        """A counter that grows with every change (cheap change detection)."""
        return self._version

    def put_actor(self, row: ActorRow) -> None:
        """Insert or replace an actor row (keyed by ``row.id``)."""
        with self._lock:
            self._actors[row.id] = row
            self._version += 1

    def update_actor(self, actor_id: str, **changes: Any) -> None:
        """Change fields of an existing actor row (e.g. ``detail``); unknown ids are ignored."""
        with self._lock:
            row = self._actors.get(actor_id)
            if row is not None:
                self._actors[actor_id] = attrs.evolve(row, **changes)
                self._version += 1

    def remove_actor(self, actor_id: str) -> None:
        """Forget an actor row; unknown ids are ignored."""
        with self._lock:
            self._actors.pop(actor_id, None)
            self._version += 1

    def put_connection(self, row: ConnectionRow) -> None:
        """Insert or replace a connection row (keyed by agent and space)."""
        with self._lock:
            self._connections[(row.agent, row.space)] = row
            self._version += 1

    def put_scope(self, row: ScopeRow) -> None:
        """Insert or replace a scope row (keyed by ``row.key``)."""
        with self._lock:
            self._scopes[row.key] = row
            self._version += 1

    def update_scope(self, key: str, **changes: Any) -> None:
        """Change fields of a scope row, creating it (with defaults) when missing."""
        with self._lock:
            row = self._scopes.get(key)
            if row is None:
                try:
                    parsed = ScopeKey.parse(key)
                    agent, channel = parsed.agent, parsed.channel
                except ValueError:  # not a scope key: shown as it is
                    agent, channel = "", key
                row = ScopeRow(key=key, agent=agent, channel=channel, state="idle")
            self._scopes[key] = attrs.evolve(row, **changes)
            self._version += 1

    def remove_scope(self, key: str) -> None:
        """Forget a scope row; unknown keys are ignored."""
        with self._lock:
            self._scopes.pop(key, None)
            self._version += 1

    def put_run(self, row: RunRow) -> None:
        """Insert or replace an active run (keyed by ``row.run_id``)."""
        with self._lock:
            self._runs[row.run_id] = row
            self._version += 1

    def remove_run(self, run_id: str) -> None:
        """Forget a finished run; unknown ids are ignored."""
        with self._lock:
            self._runs.pop(run_id, None)
            self._version += 1

    def put_store(self, row: StoreRow) -> None:
        """Replace the state store's size and row counts (the upkeep actor's last measurement).

        Args:
            row: The new measurement; the previous one is dropped.
        """
        with self._lock:
            self._store = row
            self._version += 1

    def add_log(self, line: str) -> None:
        """Append one (already redacted) log line."""
        with self._lock:
            self._logs.append(line)
            self._version += 1

    def connection(self, agent: str, space: str) -> ConnectionRow | None:
        """Return the current row of one connection, or None."""
        with self._lock:
            return self._connections.get((agent, space))

    def scope(self, key: str) -> ScopeRow | None:
        """Return the current row of one scope, or None."""
        with self._lock:
            return self._scopes.get(key)

    def snapshot(self) -> BoardSnapshot:
        """Return a consistent copy of everything on the board."""
        with self._lock:
            actors = sorted(self._actors.values(), key=_actor_order)
            scopes = sorted(self._scopes.values(), key=lambda s: -s.last_activity)
            runs = sorted(self._runs.values(), key=lambda r: r.started_at)
            return BoardSnapshot(
                taken_at=time.time(),
                started_at=self._started_at,
                pid=os.getpid(),
                actors=tuple(actors),
                connections=tuple(self._connections[k] for k in sorted(self._connections)),
                scopes=tuple(scopes),
                runs=tuple(runs),
                logs=tuple(self._logs),
                store=self._store,
            )


_KIND_ORDER = {"supervisor": 0, "credentials": 1, "gateway": 2, "delivery": 3, "scope": 4,
               "runner": 5}


def _actor_order(row: ActorRow) -> tuple[int, str]:
    return (_KIND_ORDER.get(row.kind, 9), row.id)


def _renamed(row: dict[str, Any], **renames: str) -> dict[str, Any]:
    """``row`` with old keys renamed (a status file written by an older bridge)."""
    return {renames.get(key, key): value for key, value in row.items()}
