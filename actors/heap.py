"""Free heap memory goes back to the operating system.

Memory a process frees stays in its C library's heap: glibc's ``malloc``
gives it back only from the top of a heap, so after many conversations ran
and stopped, the bridge's RSS stays near its peak though little of it is in
use. ``malloc_trim(0)`` returns every whole free page of every heap
(``man 3 malloc_trim``: since glibc 2.8 it also releases free pages inside a
heap, not only at its top). Upkeep calls :func:`release_free_heap` once per
idle spell (:mod:`actors.upkeep`).

Measured with the bench's idle-conversations run (``README.md``, "Idle
conversations"): ``malloc_trim(0)`` took the bridge's RSS from 143.6 to
125.1 MB after 10,000 conversations had stopped. What it cannot return is
memory of CPython's own small-object allocator, whose 1 MiB arenas go back
only when every object in them is freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the operating system (``malloc_trim(0)``).

    Returns:
        True when memory was released; False when there was none to release or
        the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    released = bool(trim(0))
    log.debug("heap: free pages %s", "released" if released else "none to release")
    return released


def can_release_free_heap() -> bool:
    """Whether this process's C library has ``malloc_trim`` (glibc)."""
    return _malloc_trim() is not None
