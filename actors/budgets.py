"""The outbound budget of each identity, shared by all its conversations' deliveries.

One :class:`bridge.outbound.OutboundBudget` per connection (platform, agent,
space), made on first use from the platform's declared limits
(:attr:`bridge.platform.PlatformLimits.send_per_s` and ``send_burst``). Deliveries
run on the actor pool's threads, so the budgets sit behind one lock; each call
is a few arithmetic steps.
"""

from __future__ import annotations

import threading
import time

from bridge.model import ConnectionKey
from bridge.outbound import OutboundBudget, Priority
from bridge.platform import PlatformLimits


class Budgets:
    """The identities' outbound budgets (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[ConnectionKey, OutboundBudget] = {}

    def grant(self, connection: ConnectionKey, limits: PlatformLimits, priority: Priority,
              claimant: str) -> float:
        """Ask to send once now for ``claimant`` (a conversation's id).

        Returns:
            0.0 when granted; else the seconds to wait before asking again. Always
            0.0 on a platform that declares no send rate (``send_per_s`` 0).
        """
        budget = self._budget(connection, limits)
        if budget is None:
            return 0.0
        with self._lock:
            return budget.grant(priority, claimant, time.monotonic())

    def slow_down(self, connection: ConnectionKey, limits: PlatformLimits,
                  retry_after_s: float) -> None:
        """The platform refused a call of this identity for sending too much: pause it."""
        budget = self._budget(connection, limits)
        if budget is not None:
            with self._lock:
                budget.slow_down(retry_after_s, time.monotonic())

    def withdraw(self, connection: ConnectionKey, claimant: str) -> None:
        """``claimant`` has no answer waiting any more."""
        with self._lock:
            budget = self._budgets.get(connection)
            if budget is not None:
                budget.withdraw(claimant)

    def counts(self, connection: ConnectionKey) -> tuple[int, int]:
        """``(granted, deferred)`` asks of an identity so far; (0, 0) without a budget."""
        with self._lock:
            budget = self._budgets.get(connection)
            return (budget.granted, budget.deferred) if budget is not None else (0, 0)

    def _budget(self, connection: ConnectionKey, limits: PlatformLimits) -> OutboundBudget | None:
        if limits.send_per_s <= 0:
            return None
        with self._lock:
            budget = self._budgets.get(connection)
            if budget is None:
                budget = OutboundBudget(limits.send_per_s, max(1.0, float(limits.send_burst)))
                self._budgets[connection] = budget
            return budget
