"""Events handed from a library's thread to an intake in batches, one doorbell per batch.

A socket library calls back on its I/O thread for every event; telling the
intake's actor each one costs a pykka message (a queue put and a wake-up of
the actor's thread) per event, and makes the actor take them one at a time.
An :class:`Inflow` collects them instead: the first event put into an empty
inflow rings the doorbell (one message to the actor), and the actor takes
everything collected by then in one go, so a burst of events costs one
message and is journaled in one write (see :meth:`actors.gateway.Gateway.accept`).

Order is kept: events are taken in the order they were put, and a message
told to the actor after a put (a close, say) finds that event either taken
already or taken by the doorbell queued before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Inflow(Generic[Item]):
    """A thread-safe list of waiting events with a doorbell.

    Args:
        ring: Called (on the putting thread) when an event lands in an empty
            inflow; it must only queue a message for the consumer (not block).
    """

    def __init__(self, ring: Callable[[], None]) -> None:
        self._ring = ring
        self._lock = threading.Lock()
        self._items: list[Item] = []

    def put(self, item: Item) -> None:
        """Add ``item``; ring the doorbell when it is the first one waiting."""
        with self._lock:
            self._items.append(item)
            first = len(self._items) == 1
        if first:
            self._ring()

    def take(self) -> list[Item]:
        """Everything waiting, oldest first (empty when a doorbell found it taken)."""
        with self._lock:
            items, self._items = self._items, []
        return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
