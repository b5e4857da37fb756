"""Agent process groups that outlive a crashed bridge.

A run's agent runs in its own process group. When the bridge is killed
(``kill -9``), the group keeps running, orphaned. The store records each run's
process group id and the leader's start time (``/proc/<pid>/stat`` field 22,
in clock ticks since boot), so that at the next start the bridge kills the
group only if that exact process still leads it, never a reused pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if unknown."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def kill_orphan_group(pid: int, ticks: str | None) -> bool:
    """SIGKILL the process group led by ``pid`` if it is still the recorded process.

    Args:
        pid: The group leader's pid (= the process group id).
        ticks: Its start time as recorded by :func:`start_ticks` when the run began.

    Returns:
        True when a group was killed.
    """
    if ticks is None or start_ticks(pid) != ticks:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return True
    return False
