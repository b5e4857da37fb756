"""Upkeep: keeps the state store bounded and shows its size.

One supervised actor, ``upkeep``. It prunes the store (:meth:`bridge.store.Store.prune`)
once at start and then every :func:`prune_interval_s`, removing finished
journal rows (with the shared messages no journal row references any more),
delivered answer pieces and ended runs older than the configured
``retention_days``; and it publishes the store's size and row
counts on the board (so the TUI, ``status`` and ``status.json`` show them)
at start, after each prune, and every :data:`MEASURE_INTERVAL_S`. Every
:data:`~bridge.store.CHECKPOINT_INTERVAL_S` it checkpoints the store's WAL
(:meth:`bridge.store.Store.checkpoint`) on a connection of its own, so the
file sync of a checkpoint never runs on a writer that holds the store's lock.
Once the actor pools' workers have all retired (no scope, delivery or run
worked for their retirement time) after work, the next measurement also returns the C
heap's free pages to the operating system
(:func:`actors.heap.release_free_heap`), so the RSS of a bridge whose
conversations went idle falls back from its peak. It is not done under load,
where the pages would soon be taken again (``README.md``, "Idle conversations
give back their threads and memory").

The work runs on this actor's own thread, not the supervisor's, so routing
never waits for a prune; each prune batch holds the store's lock briefly.
A store error is logged and the schedule goes on (the next tick tries again):
failing the actor would escalate after a few retries and end retention for
the life of the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from actors.heap import release_free_heap
from actors.messages import CheckpointTick, Init, MeasureTick, PruneTick
from actors.pool import ActorPool, shared_pool
from actors.runner import RUNNER_POOL
from actors.runtime import Runtime, SupervisedActor
from bridge.board import StoreRow
from bridge.store import CHECKPOINT_INTERVAL_S, PruneResult, StoreError

log = logging.getLogger(__name__)

#: Seconds between prunes with a long retention (hourly).
PRUNE_INTERVAL_S = 3600.0
#: Seconds between two publications of the store's size and row counts.
MEASURE_INTERVAL_S = 15.0


def prune_interval_s(retention_s: float) -> float:
    """Seconds between prunes: hourly, or a tenth of a shorter retention (at least 1 s).

    Args:
        retention_s: The retention in seconds.
    """
    return max(1.0, min(PRUNE_INTERVAL_S, retention_s / 10.0))


class Upkeep(SupervisedActor):
    """Prunes the state store on a schedule and publishes its size and row counts.

    Args:
        runtime: Shared services (config, board, timers, store).
        child_id: ``upkeep``.
    """

    def __init__(self, runtime: Runtime, child_id: str) -> None:
        super().__init__(runtime, child_id)
        self.retention_days = runtime.config.bridge.retention_days
        self.retention_s = runtime.config.bridge.retention_s
        self.interval_s = prune_interval_s(self.retention_s)
        self.pruned = 0
        self.pruned_at: float | None = None
        #: The pools whose workers do the work (scopes and deliveries; runs).
        self.pools = (shared_pool(), RUNNER_POOL)
        #: Their worker starts at the last heap trim (none yet): no trim before work.
        self.trimmed_at_spawns: tuple[int, ...] = (0,) * len(self.pools)

    def on_receive(self, message: Any) -> Any:
        """Handle ``Init`` (prune and measure now), ``PruneTick``, ``MeasureTick`` and
        ``CheckpointTick``."""
        if isinstance(message, Init):
            self._prune()
            self._measure()
            self.runtime.timers.schedule(self.interval_s, self.actor_ref, PruneTick())
            self.runtime.timers.schedule(MEASURE_INTERVAL_S, self.actor_ref, MeasureTick())
            self.runtime.timers.schedule(CHECKPOINT_INTERVAL_S, self.actor_ref,
                                         CheckpointTick())
        elif isinstance(message, CheckpointTick):
            if not self.runtime.stopping.is_set():
                self._checkpoint()
            self.runtime.timers.schedule(CHECKPOINT_INTERVAL_S, self.actor_ref,
                                         CheckpointTick())
        elif isinstance(message, PruneTick):
            if not self.runtime.stopping.is_set():
                self._prune()
                self._measure()
            self.runtime.timers.schedule(self.interval_s, self.actor_ref, PruneTick())
        elif isinstance(message, MeasureTick):
            if not self.runtime.stopping.is_set():
                self._measure()
                self._trim_when_idle()
            self.runtime.timers.schedule(MEASURE_INTERVAL_S, self.actor_ref, MeasureTick())
        return None

    def _prune(self) -> None:
        window_s = self.runtime.config.bridge.catch_up_window_s
        try:
            # Open messages no run took (context in channels that never engage, or
            # of conversations that ended) older than the catch-up window are closed:
            # too old for a later prompt, and then pruned like any finished row.
            closed = self.runtime.store.close_stale(time.time() - window_s)
            result = self.runtime.store.prune(self.retention_s)
        except StoreError as exc:
            log.warning("store prune failed (tried again in %.0f s): %s", self.interval_s, exc)
            return
        if closed:
            log.info("store: %d open message(s) older than the catch-up window (%.0f s) "
                     "closed as context", closed, window_s)
        self.pruned_at = time.time()
        self.pruned += result.total
        if result.total:
            log.info("store: pruned %s older than %g days", _describe(result),
                     self.retention_days)
        else:
            log.debug("store: nothing to prune (retention %g days)", self.retention_days)

    def _trim_when_idle(self) -> None:
        """Return free heap pages once per idle spell: neither the shared pool (scopes,
        deliveries) nor the runners' pool (runs, their agents' output) has a worker
        left, and workers started since the last trim (there was work)."""
        spawns = trim_due(self.pools, self.trimmed_at_spawns)
        if spawns is not None:
            self.trimmed_at_spawns = spawns
            release_free_heap()

    def _checkpoint(self) -> None:
        try:
            self.runtime.store.checkpoint()
        except StoreError as exc:
            log.warning("store checkpoint failed (tried again in %.0f s): %s",
                        CHECKPOINT_INTERVAL_S, exc)

    def _measure(self) -> None:
        try:
            stats = self.runtime.store.stats()
        except StoreError as exc:
            log.warning("store size and row counts unavailable: %s", exc)
            return
        self.runtime.board.put_store(StoreRow(
            stats.db_bytes, stats.wal_bytes, {t: dict(c) for t, c in stats.rows.items()},
            time.time(), self.retention_days, self.pruned_at, self.pruned))


def trim_due(pools: Sequence[ActorPool], trimmed_at: tuple[int, ...]
             ) -> tuple[int, ...] | None:
    """Whether an idle spell began that no heap trim has followed yet.

    Args:
        pools: The pools whose workers do the bridge's work.
        trimmed_at: Their worker starts (:meth:`ActorPool.spawns`) at the last trim.

    Returns:
        Their worker starts now when a trim is due (none of them has a worker left,
        and some started a worker since ``trimmed_at``: there was work), else None.
    """
    spawns = tuple(pool.spawns() for pool in pools)
    if spawns == trimmed_at or any(pool.workers() for pool in pools):
        return None
    return spawns


def _describe(result: PruneResult) -> str:
    return (f"{result.inbound} journal row(s) (and {result.messages} shared message(s)), "
            f"{result.outbox} outbox piece(s), {result.runs} run(s)")
