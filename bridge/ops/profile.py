"""Profiles of a running bridge: py-spy attached to its process, and a summary.

py-spy (https://github.com/benfred/py-spy) samples every Python thread of a
process from outside, without changing it; ``record --format raw`` writes one
line per distinct stack, ``frame;frame;...;frame COUNT`` (outermost first), and
with ``--function`` a frame is ``function (file:first line)``. With ``--gil``
only the thread holding the interpreter lock is sampled: threads waiting on a
lock, a socket or a queue are left out, so the samples are where the Python CPU
time went (``--nonblocking`` alone counted waiting threads as busy).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import attrs

#: Samples per second (py-spy's default).
RATE_HZ = 100
#: Seconds to wait for py-spy to write its file after it is told to stop.
STOP_TIMEOUT_S = 30.0


#: The frame a sample without Python frames is counted under (a thread in native code).
NO_FRAMES = "(no Python frames)"


class ProfileError(RuntimeError):
    """py-spy is missing, could not attach, or wrote no profile."""


def py_spy() -> str:
    """The py-spy executable: next to this Python's, else on ``PATH``.

    Raises:
        ProfileError: when it is not installed.
    """
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfileError("py-spy is not installed (pip install py-spy; it is in the "
                           "'dev' extra)")
    return found


class Profiler:
    """``py-spy record`` attached to one process until :meth:`stop`.

    Args:
        pid: The process to sample.
        out: Where py-spy writes the raw stacks.
        rate_hz: Samples per second.
    """

    def __init__(self, pid: int, out: Path, rate_hz: int = RATE_HZ) -> None:
        self.pid = pid
        self.out = out
        self.rate_hz = rate_hz
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Attach py-spy (``--nonblocking``: the process is not paused to sample it;
        ``--gil``: only the thread holding the interpreter lock is sampled).

        Raises:
            ProfileError: when py-spy is missing or exits at once (no permission to
                attach, or the process is gone).
        """
        command = [py_spy(), "record", "--pid", str(self.pid), "--format", "raw",
                   "--output", str(self.out), "--rate", str(self.rate_hz), "--function",
                   "--nonblocking", "--gil"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        try:
            self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return  # sampling
        raise ProfileError(f"py-spy could not attach to pid {self.pid}: "
                           f"{self._stderr()}")

    def stop(self) -> None:
        """Stop sampling; py-spy writes :attr:`out`.

        Raises:
            ProfileError: when py-spy did not write the file.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not self.out.exists():
            raise ProfileError(f"py-spy wrote no profile of pid {self.pid}: "
                               f"{_text(process)}")

    def _stderr(self) -> str:
        return _text(self._process) if self._process is not None else ""


def _text(process: subprocess.Popen[bytes]) -> str:
    data = process.stderr.read() if process.stderr is not None else b""
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else f"exit status {process.returncode}"


@attrs.frozen
class FrameShare:
    """One function's share of a profile's samples.

    Attributes:
        frame: ``function (file:first line)`` as py-spy names it, the file
            shortened to its path from the last ``site-packages`` or ``lib``
            folder.
        self_pct: Percent of all samples where it was running (the innermost frame).
        total_pct: Percent of all samples where it was on the stack.
    """

    frame: str
    self_pct: float
    total_pct: float


@attrs.frozen
class ProfileSummary:
    """What a raw profile says.

    Attributes:
        samples: Samples in the file (all threads; idle ones are not sampled).
        seconds: ``samples / rate_hz``: seconds of one core busy in Python code.
        by_self: The functions that ran most, most first.
        by_total: The functions on the stack most, most first.
    """

    samples: int
    seconds: float
    by_self: tuple[FrameShare, ...]
    by_total: tuple[FrameShare, ...]


def summarize(lines: Iterable[str], top: int = 15, rate_hz: int = RATE_HZ) -> ProfileSummary:
    """Summarize py-spy's raw output.

    Args:
        lines: The file's lines, ``frame;frame;... COUNT``.
        top: Functions to keep in each list.
        rate_hz: The sampling rate the file was recorded at, samples per second.

    Raises:
        ValueError: on a line that is not ``stack COUNT``.
    """
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    samples = 0
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, space, count_text = line.rpartition(" ")
        if not space or not count_text.isdigit():
            raise ValueError(f"line {number} is not 'stack COUNT': {line[:80]!r}")
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")] if stack else [NO_FRAMES]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count

    def shares(counter: collections.Counter[str]) -> tuple[FrameShare, ...]:
        return tuple(FrameShare(frame, _pct(own[frame], samples), _pct(anywhere[frame], samples))
                     for frame, _ in counter.most_common(top))

    return ProfileSummary(samples, round(samples / rate_hz, 2), shares(own), shares(anywhere))


def summarize_file(path: Path, top: int = 15) -> ProfileSummary:
    """:func:`summarize` of a file written by :class:`Profiler`.

    Raises:
        OSError: when it cannot be read.
        ValueError: when it is not py-spy's raw format.
    """
    with path.open(encoding="utf-8", errors="replace") as lines:
        return summarize(lines, top)


def _short(frame: str) -> str:
    """``fn (/long/path/lib/python3.11/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py:12)``."""
    name, paren, where = frame.partition(" (")
    if not paren:
        return frame
    for marker in ("/site-packages/", "/lib/python3"):
        cut = where.rfind(marker)
        if cut >= 0:
            where = where[cut + len(marker):]
            if marker == "/lib/python3":
                where = where.partition("/")[2]
            break
    else:
        for root in ("/bridge/", "/actors/", "/adapters/"):
            cut = where.rfind(root)
            if cut >= 0:
                where = where[cut + 1:]
                break
    return f"{name} ({where}"


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def render_summary(summary: ProfileSummary, title: str) -> object:
    """The summary as a rich table: the top functions by own samples, with their totals."""
    from rich.table import Table

    table = Table(title=f"{title}: {summary.samples} samples ({summary.seconds:g} s of one "
                        f"core in Python code)")
    table.add_column("function (file:line)")
    table.add_column("self %", justify="right")
    table.add_column("total %", justify="right")
    for share in summary.by_self:
        table.add_row(share.frame, f"{share.self_pct:.1f}", f"{share.total_pct:.1f}")
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge.ops.profile FILE [--top N]``: print the summary of a raw profile.

    Returns:
        0, or 1 when the file cannot be read or is not py-spy's raw format.
    """
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="python -m bridge.ops.profile",
        description="Summarize py-spy's raw output (record --format raw --function): the "
                    "functions with the most samples, as written by bridge bench --profile.")
    parser.add_argument("file", type=Path, help="the raw stacks file")
    parser.add_argument("--top", type=int, default=15, metavar="N",
                        help="functions to show (default 15)")
    args = parser.parse_args(argv)
    try:
        summary = summarize_file(args.file, args.top)
    except (OSError, ValueError) as exc:
        print(f"profile: {args.file}: {exc}", file=sys.stderr)
        return 1
    Console().print(render_summary(summary, str(args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
