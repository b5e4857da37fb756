"""One outbound budget per identity: a token bucket that sends answers first.

Every conversation of one identity (an agent's login in one space) sends
through the same platform limits, so its deliveries share one budget. A
delivery asks for a grant before each call that sends (:meth:`OutboundBudget.grant`):

- **Answers first.** Answer pieces, notices and approvals ask with
  :attr:`Priority.ANSWER`; they take a token whenever one is there. Status
  edits ask with :attr:`Priority.EDIT` and get one only while no answer is
  waiting and a token is left over for the next answer (``reserve``), so an
  answer is never queued behind edits.
- **Coalesced edits.** The budget says *when* to ask again, not what to send:
  a delivery that is told to wait keeps only the newest status of a run and
  sends that one, so an edit overtaken by a newer one is never sent.
- **Back-pressure.** A platform's "slow down" (HTTP 429 and its retry-after)
  empties the bucket and pauses every grant until then (:meth:`OutboundBudget.slow_down`).

Pure logic: the caller passes the time (monotonic seconds) and keeps the lock.
"""

from __future__ import annotations

import enum

import attrs

#: Seconds an answer counts as waiting after its last ask: a delivery that
#: stopped asking (its actor went idle or died) does not hold edits back forever.
WAITING_S = 30.0


class Priority(enum.IntEnum):
    """What a call sends, in the order the budget serves them."""

    ANSWER = 0
    EDIT = 1


@attrs.define
class OutboundBudget:
    """A token bucket of ``rate_per_s`` sends a second, holding at most ``burst``.

    Args:
        rate_per_s: Sends a second, sustained (> 0).
        burst: Most sends at once after a quiet spell (>= 1).
        reserve: Tokens an edit must leave for answers (0 when ``burst`` is 1).

    Raises:
        ValueError: a rate that is not positive or a burst under 1.
    """

    rate_per_s: float
    burst: float
    reserve: float = attrs.field(default=-1.0)
    tokens: float = attrs.field(default=-1.0)
    updated: float | None = None
    paused_until: float = 0.0
    #: Claimants (e.g. a conversation's id) whose answer waits: when they last asked.
    waiting: dict[str, float] = attrs.field(factory=dict)
    granted: int = 0
    deferred: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {self.rate_per_s!r}")
        if not self.burst >= 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")
        if self.reserve < 0:
            self.reserve = 1.0 if self.burst >= 2 else 0.0
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def grant(self, priority: Priority, claimant: str, now: float) -> float:
        """Ask to send once now.

        Args:
            priority: What the call sends.
            claimant: Who asks (a conversation's id); an answer that must wait is
                remembered under it until it is granted.
            now: Monotonic seconds.

        Returns:
            0.0 when granted (a token is taken); else the seconds to wait before
            asking again (> 0).
        """
        self._refill(now)
        self._forget_stale(now)
        if now < self.paused_until:
            if priority is Priority.ANSWER:
                self.waiting[claimant] = now
            self.deferred += 1
            return self.paused_until - now
        if priority is Priority.ANSWER:
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                self.waiting.pop(claimant, None)
                self.granted += 1
                return 0.0
            self.waiting[claimant] = now
            self.deferred += 1
            return (1.0 - self.tokens) / self.rate_per_s
        need = 1.0 + self.reserve
        if not self.waiting and self.tokens >= need:
            self.tokens -= 1.0
            self.granted += 1
            return 0.0
        self.deferred += 1
        # After the waiting answers have had their turn, or once the reserve refilled.
        short = max(need - self.tokens, 1.0 + len(self.waiting) - self.tokens, 0.0)
        return max(short / self.rate_per_s, 1.0 / self.rate_per_s)

    def slow_down(self, retry_after_s: float, now: float) -> None:
        """The platform said "too many" (HTTP 429): no grants for ``retry_after_s`` seconds.

        Args:
            retry_after_s: The platform's retry-after, seconds (>= 0).
            now: Monotonic seconds.
        """
        self._refill(now)
        self.tokens = 0.0
        self.paused_until = max(self.paused_until, now + max(0.0, retry_after_s))

    def withdraw(self, claimant: str) -> None:
        """``claimant`` no longer waits to send an answer (it gave up or has none)."""
        self.waiting.pop(claimant, None)

    def _refill(self, now: float) -> None:
        """Add the tokens earned since the last look; none while paused."""
        if self.updated is not None:
            start = max(self.updated, self.paused_until)
            if now > start:
                self.tokens = min(float(self.burst),
                                  self.tokens + (now - start) * self.rate_per_s)
        if self.updated is None or now > self.updated:
            self.updated = now

    def _forget_stale(self, now: float) -> None:
        for claimant, since in list(self.waiting.items()):
            if now - since > WAITING_S:
                del self.waiting[claimant]
