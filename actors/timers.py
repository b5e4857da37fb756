"""One timer thread for every actor: pykka has no timers of its own.

``Timers.schedule(delay_s, ref, message)`` tells ``message`` to ``ref`` after
the delay. Messages carry a generation number where staleness matters, so
the receiver ignores ticks that were overtaken; cancelling is rarely needed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

import pykka

log = logging.getLogger(__name__)


#: A cancelled timer's heap slot, once its ref and message are dropped.
_CANCELLED = None


class Timers:
    """A single daemon thread that delivers delayed ``tell``s, in due order.

    Scheduling and cancelling cost O(log n) for n pending timers: a cancelled
    timer gives up its ref and message at once and leaves an empty slot in the
    heap, skipped when due; the heap is rebuilt without those slots once they
    are the majority.
    """

    def __init__(self) -> None:
        # Heap entries are [due (monotonic s), handle, ref or None, message or None].
        self._heap: list[list[Any]] = []
        self._pending: dict[int, list[Any]] = {}
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="timers", daemon=True)

    def start(self) -> None:
        """Start the timer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; pending timers are dropped."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._pending.clear()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def schedule(self, delay_s: float, ref: pykka.ActorRef[Any], message: Any) -> int:
        """Tell ``message`` to ``ref`` after ``delay_s`` seconds (dead actors are skipped).

        Args:
            delay_s: Delay in seconds (0 or less: as soon as possible).
            ref: The receiving actor.
            message: Any message the actor understands.

        Returns:
            A handle for :meth:`cancel`.
        """
        handle = next(self._counter)
        with self._cond:
            if self._stopped:
                return handle
            entry = [time.monotonic() + max(0.0, delay_s), handle, ref, message]
            self._pending[handle] = entry
            heapq.heappush(self._heap, entry)
            # The thread waits until the earliest entry is due; only an entry that
            # comes before it changes that wait (a run's timeout and status timers,
            # set and cancelled at every run, mostly do not: no wake-up for them).
            if self._heap[0] is entry:
                self._cond.notify()
        return handle

    def cancel(self, handle: int) -> bool:
        """Drop a timer not yet delivered, with its ref and message (they are freed now,
        not at its due time).

        Args:
            handle: What :meth:`schedule` returned.

        Returns:
            True when the timer was still pending.
        """
        with self._cond:
            entry = self._pending.pop(handle, None)
            if entry is None:
                return False
            entry[2] = entry[3] = _CANCELLED
            if len(self._heap) > 64 and len(self._pending) < len(self._heap) // 2:
                self._heap = [e for e in self._heap if e[2] is not _CANCELLED]
                heapq.heapify(self._heap)
            return True

    def pending(self) -> int:
        """Number of timers not yet delivered."""
        with self._cond:
            return len(self._pending)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                    not self._drop_cancelled() or self._heap[0][0] > time.monotonic()
                ):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                # The top is live: _drop_cancelled took the cancelled slots off it.
                _, handle, ref, message = heapq.heappop(self._heap)
                del self._pending[handle]
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                log.debug("timer for a stopped actor dropped: %s", type(message).__name__)

    def _drop_cancelled(self) -> bool:
        """Take the cancelled slots off the top of the heap, so the thread waits for
        the earliest live timer, not for a cancelled one (the caller holds the lock).

        Returns:
            Whether a live timer is pending.
        """
        while self._heap and self._heap[0][2] is _CANCELLED:
            heapq.heappop(self._heap)
        return bool(self._heap)


class IdleTimer:
    """Tells an actor ``message`` once it has been idle for ``idle_s`` seconds.

    At most one timer is pending per actor, however many messages it handles:
    :meth:`touch` only records the time, and :meth:`expired` (called when the
    message arrives) re-arms for the rest of the window when there was activity.

    Args:
        timers: The timer thread.
        ref: The actor.
        idle_s: Idle seconds.
        message: What to tell the actor (e.g. ``IdleCheck()``).
    """

    def __init__(self, timers: Timers, ref: pykka.ActorRef[Any], idle_s: float,
                 message: Any) -> None:
        self._timers = timers
        self._ref = ref
        self._idle_s = idle_s
        self._message = message
        self._last = time.monotonic()
        self._armed = False

    def touch(self) -> None:
        """Record activity now; arm the timer if none is pending."""
        self._last = time.monotonic()
        if not self._armed:
            self._armed = True
            self._timers.schedule(self._idle_s, self._ref, self._message)

    def expired(self) -> bool:
        """On the timer's message: True when idle for the whole window, else re-arm."""
        self._armed = False
        remaining = self._last + self._idle_s - time.monotonic()
        if remaining > 0:
            self._armed = True
            self._timers.schedule(remaining, self._ref, self._message)
            return False
        return True
