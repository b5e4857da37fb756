"""Profiles of a running process: py-spy attached by pid, and the summary of its raw stacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.ops.profile import (
    NO_FRAMES,
    FrameShare,
    ProfileError,
    Profiler,
    summarize,
    summarize_file,
)

SPINNER = """
import sys
def spin_in_a_named_function():
    while True:
        for _ in range(2000):
            sum(range(1000))
        print("tick", flush=True)
print("ready", flush=True)
spin_in_a_named_function()
"""


def test_summary_counts_own_and_total_samples_per_function() -> None:
    lines = [
        "<module> (/x/bin/app.py:1);run (/x/lib/python3.11/site-packages/pkg/loop.py:10);"
        "work (/x/lib/python3.11/site-packages/pkg/work.py:5) 6\n",
        "<module> (/x/bin/app.py:1);run (/x/lib/python3.11/site-packages/pkg/loop.py:10) 3\n",
        "_bootstrap (/usr/lib/python3.11/threading.py:995);idle (/srv/repo/bridge/x.py:2) 1\n",
        "\n",
    ]
    assert summarize([" 4"]).by_self == (FrameShare(NO_FRAMES, 100.0, 100.0),)
    summary = summarize(lines, top=2, rate_hz=100)
    assert summary.samples == 10
    assert summary.seconds == 0.1
    assert [(s.frame, s.self_pct, s.total_pct) for s in summary.by_self] == [
        ("work (pkg/work.py:5)", 60.0, 60.0), ("run (pkg/loop.py:10)", 30.0, 90.0)]
    assert "idle (bridge/x.py:2)" not in {s.frame for s in summary.by_self}
    every = summarize(lines, top=5)
    assert {s.frame: s.total_pct for s in every.by_total} == {
        "<module> (/x/bin/app.py:1)": 90.0, "run (pkg/loop.py:10)": 90.0,
        "work (pkg/work.py:5)": 60.0, "_bootstrap (threading.py:995)": 10.0,
        "idle (bridge/x.py:2)": 10.0}
    assert every.by_self[2] == FrameShare("idle (bridge/x.py:2)", 10.0, 10.0)


def test_summary_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        summarize(["a (f.py:1) 3", "not a stack line"])


def test_profiler_samples_a_running_process_by_pid(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        out = tmp_path / "stacks.txt"
        summary = None
        for _ in range(10):  # sample until py-spy has caught the spinning thread
            profiler = Profiler(child.pid, out)
            profiler.start()
            for _tick in range(5):  # the child's progress while py-spy samples it
                assert child.stdout.readline().strip() == b"tick"
            profiler.stop()
            summary = summarize_file(out)
            if summary.samples:
                break
        assert summary is not None and summary.samples > 0
        assert any("spin_in_a_named_function" in s.frame for s in summary.by_total)
    finally:
        child.kill()
        child.wait()


def test_profiler_names_a_process_it_cannot_attach_to(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(ProfileError, match=str(gone.pid)):
        Profiler(gone.pid, tmp_path / "none.txt").start()


def test_the_summary_command_prints_the_top_functions_or_names_a_bad_file(
        tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("main (/x/app.py:1);hot_function (/x/app.py:9) 7\n", encoding="utf-8")
    shown = subprocess.run([sys.executable, "-m", "bridge.ops.profile", str(stacks)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert shown.returncode == 0 and "hot_function" in shown.stdout and "7 samples" in shown.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("no count here\n", encoding="utf-8")
    refused = subprocess.run([sys.executable, "-m", "bridge.ops.profile", str(bad)],
                             capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 1 and "line 1" in refused.stderr
