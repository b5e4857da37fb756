"""Free heap memory goes back to the operating system (actors.heap), once per idle
spell of the actor pools (actors.upkeep.trim_due).

The test frees tens of MB of C-heap memory while a later allocation pins the
heap's top (so glibc cannot give it back on its own), and checks the
process's RSS drops once :func:`release_free_heap` ran. It needs glibc.
"""

from __future__ import annotations

import threading

import pytest

from actors.heap import can_release_free_heap, release_free_heap
from actors.pool import ActorPool
from actors.upkeep import trim_due
from tests.support import WAIT_S, wait_until

#: Bytes of each block: above CPython's small-object limit (512), below glibc's
#: mmap threshold (128 KiB), so the blocks live in glibc's heap.
BLOCK = 4096
BLOCKS = 10_000  # about 40 MB


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not can_release_free_heap(), reason="the C library has no malloc_trim")
def test_freed_heap_memory_goes_back_once_released() -> None:
    blocks = [bytearray(BLOCK) for _ in range(BLOCKS)]
    pin = bytearray(BLOCK)  # allocated last: the heap's top stays in use
    before_free = rss_kb()
    del blocks
    freed = rss_kb()
    assert freed > before_free - 20_000, "glibc gave the memory back on its own"
    assert release_free_heap()
    assert rss_kb() < freed - 20_000
    assert len(pin) == BLOCK


def test_a_trim_is_due_once_per_idle_spell_of_every_pool() -> None:
    scopes = ActorPool(1, name="test-trim-scopes", retire_s=0.05)
    runs = ActorPool(1, name="test-trim-runs", retire_s=0.05)
    pools = (scopes, runs)
    try:
        assert trim_due(pools, (0, 0)) is None  # no work yet
        release = threading.Event()
        runs.run_blocking(lambda: release.wait(WAIT_S))
        wait_until(lambda: runs.workers() == 1, WAIT_S, "the run's worker")
        # The scopes' pool is idle, but a run still works: not yet.
        assert trim_due(pools, (0, 0)) is None
        release.set()
        wait_until(lambda: runs.workers() == 0, WAIT_S, "the run's worker retired")
        trimmed = trim_due(pools, (0, 0))
        assert trimmed == (0, 1)
        assert trim_due(pools, trimmed) is None  # once per idle spell
        scopes.run_blocking(lambda: None)
        wait_until(lambda: scopes.workers() == 0 and scopes.spawns() == 1, WAIT_S,
                   "the scopes' worker came and retired")
        assert trim_due(pools, trimmed) == (1, 1)
    finally:
        for pool in pools:
            pool.shutdown()
