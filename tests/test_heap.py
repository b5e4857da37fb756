"""Free heap memory goes back to the operating system (actors.heap).

The test frees tens of MB of C-heap memory while a later allocation pins the
heap's top (so glibc cannot give it back on its own), and checks the
process's RSS drops once :func:`release_free_heap` ran. It needs glibc.
"""

from __future__ import annotations

import pytest

from actors.heap import can_release_free_heap, release_free_heap

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
