"""Retry delays with jitter (reconnects of a platform's intake)."""

from __future__ import annotations

import random

#: Backoff: first delay, cap, and jitter fraction (+/-).
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_JITTER = 0.2

#: The module's own random source (the global one is left to the application).
_JITTER = random.Random()


def backoff_delay(attempt: int, rng: random.Random | None = None, *,
                  first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Delay before reconnect attempt ``attempt`` (1-based): ``first_s`` doubling to
    ``max_s`` (by default 1 s to 60 s), +/-20 %.

    Args:
        attempt: How many attempts failed in a row (1 for the first retry).
        rng: Random source for the jitter.
        first_s: The first delay, seconds.
        max_s: The longest delay, seconds (before the jitter).

    Returns:
        Seconds to wait.
    """
    base = min(max_s, first_s * 2 ** max(0, attempt - 1))
    jitter = (rng or _JITTER).uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
    return float(base * (1 + jitter))
