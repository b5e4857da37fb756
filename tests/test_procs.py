"""Killing orphaned agent process groups, only when the recorded process leads them."""

from __future__ import annotations

import subprocess
import sys

from bridge.procs import kill_orphan_group, start_ticks


def test_kills_only_the_recorded_group() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        ticks = start_ticks(child.pid)
        assert ticks is not None and ticks.isdigit()
        assert kill_orphan_group(child.pid, str(int(ticks) + 1)) is False  # a reused pid
        assert kill_orphan_group(child.pid, None) is False
        assert child.poll() is None
        assert kill_orphan_group(child.pid, ticks) is True
        assert child.wait(timeout=10) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_unknown_pid_is_left_alone() -> None:
    assert start_ticks(2**22 + 12345) is None
    assert kill_orphan_group(2**22 + 12345, "1") is False
