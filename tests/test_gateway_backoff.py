"""The reconnect backoff: 1 s doubling to 60 s, with +/-20 % jitter."""

from __future__ import annotations

import random

import pytest

from bridge.backoff import BACKOFF_JITTER, backoff_delay


@pytest.mark.parametrize(("attempt", "base"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0),
                                               (7, 60.0), (50, 60.0)])
def test_backoff_doubles_to_a_cap_with_jitter(attempt: int, base: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, rng) for _ in range(200)]
    assert min(delays) >= base * (1 - BACKOFF_JITTER)
    assert max(delays) <= base * (1 + BACKOFF_JITTER)
    assert len({round(d, 6) for d in delays}) > 1  # jitter spreads reconnecting clients
