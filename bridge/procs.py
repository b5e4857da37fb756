"""Every process a run starts, found and killed: on stop, timeout, exit and after a crash.

A run's agent runs in its own process group, but a child can leave it
(``setsid``, a double fork) and outlive the run, ``/stop``, the timeout and
a ``kill -9`` of the bridge. So each run is tracked three ways:

- a **cgroup v2** of its own (:class:`RunCgroup`), where the bridge may create
  one under its own cgroup (delegated, or as root): the child is moved into
  it before it runs anything, and nothing it starts can leave it without
  write access to the cgroup tree; killing the cgroup kills them all;
- a **marker** in the environment (:data:`MARKER_VAR` ``=<run id>:<nonce>``,
  :func:`run_marker`), inherited by everything the child starts unless it
  clears its environment on purpose; ``/proc/<pid>/environ`` shows it for
  processes of the bridge's user;
- the **process group** and the **descendants** of the child (by parent pid).

:func:`kill_run` stops (SIGSTOP) every process found, searches again until
nothing new shows up (a stopped process cannot fork), then SIGKILLs them.
At start, :func:`kill_leftovers` kills what runs of an earlier process left:
the marked processes and run cgroups of runs the store knows, and the process
group of each open run whose leader is still the recorded process. The store
records each run's id before its child starts (so the marker is known) and
the child's pid and start time (``/proc/<pid>/stat`` field 22, in clock ticks
since boot) before it may run anything, so a reused pid is never hit.

Limits: a process that clears its environment *and* leaves the group and
the parent chain escapes where no cgroup can be used; so does a process of
another user (a setuid program), whose environment cannot be read.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

PROC = Path("/proc")
#: The environment variable that marks every process of a run: ``<run id>:<nonce>``.
MARKER_VAR = "BRIDGE_RUN_ID"
#: Name prefix of a run's cgroup (the marker follows).
CGROUP_PREFIX = "bridge-run-"
#: Search-and-stop rounds of :func:`kill_run` before it kills what it found.
KILL_ROUNDS = 50
#: Seconds :meth:`RunCgroup.remove` waits for the killed processes to leave the cgroup.
CGROUP_EMPTY_WAIT_S = 2.0


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


# -- the marker --------------------------------------------------------------


def run_marker(run_id: str) -> str:
    """A new marker for one run: ``<run id>:<nonce>`` (the nonce: 8 random hex digits).

    The nonce keeps two processes that happen to use the same run id (tests,
    two bridges) from ever killing each other's runs while they live.
    """
    return f"{run_id}:{secrets.token_hex(4)}"


def marker_run_id(marker: str) -> str:
    """The run id of a marker made by :func:`run_marker`."""
    return marker.rsplit(":", 1)[0]


# -- /proc ---------------------------------------------------------------------


@attrs.frozen
class ProcInfo:
    """One live process, from ``/proc/<pid>/stat``.

    Attributes:
        pid: Its pid.
        ppid: Its parent's pid.
        pgid: Its process group id.
    """

    pid: int
    ppid: int
    pgid: int


def _proc_info(pid: int) -> ProcInfo | None:
    """The process ``pid``, or None when it is gone or a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 3 or fields[0] in ("Z", "X", "x"):
        return None
    return ProcInfo(pid, int(fields[1]), int(fields[2]))


def processes() -> list[ProcInfo]:
    """Every live process (zombies left out), from ``/proc``."""
    found = []
    for name in os.listdir(PROC):
        if name.isdigit():
            info = _proc_info(int(name))
            if info is not None:
                found.append(info)
    return found


def environ_marker(pid: int) -> str | None:
    """The value of :data:`MARKER_VAR` in the environment of ``pid`` (None: absent or unreadable).

    The environment is the one the process started with (``/proc/<pid>/environ``);
    it is readable for processes of the same user.
    """
    try:
        data = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER_VAR.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None


def find_run_processes(marker: str | None = None, *, run_id: str | None = None,
                       pgid: int | None = None, leader: int | None = None) -> set[int]:
    """Pids of the live processes of a run (never this process).

    Args:
        marker: Processes whose :data:`MARKER_VAR` is exactly this.
        run_id: Processes whose marker belongs to this run id, whatever its nonce
            (after a crash, when the nonce is not known).
        pgid: Processes of this process group.
        leader: This process and its descendants (by parent pid).

    Returns:
        The pids found (zombies left out).
    """
    table = processes()
    found: set[int] = set()
    for info in table:
        if pgid is not None and info.pgid == pgid:
            found.add(info.pid)
        elif marker is not None or run_id is not None:
            value = environ_marker(info.pid)
            if value is not None and (value == marker or (
                    run_id is not None and marker_run_id(value) == run_id)):
                found.add(info.pid)
    if leader is not None:
        children: dict[int, list[int]] = {}
        for info in table:
            children.setdefault(info.ppid, []).append(info.pid)
        alive = {info.pid for info in table}
        todo, seen = [leader], set()
        while todo:  # the leader may be a zombie whose children are still its own
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                if pid in alive:
                    found.add(pid)
                todo.extend(children.get(pid, []))
    found.discard(os.getpid())
    found.discard(1)
    return found


def marked_runs() -> dict[str, set[int]]:
    """Live processes that carry a run marker, by the run id in it."""
    runs: dict[str, set[int]] = {}
    me = os.getpid()
    for info in processes():
        value = environ_marker(info.pid)
        if value is not None and info.pid != me:
            runs.setdefault(marker_run_id(value), set()).add(info.pid)
    return runs


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_run(sig: signal.Signals, marker: str | None = None, *, pgid: int | None = None,
               leader: int | None = None, cgroup: RunCgroup | None = None) -> int:
    """Send ``sig`` once to every process of a run (e.g. SIGTERM before the grace period).

    Args: see :func:`find_run_processes`; ``cgroup``: its processes too.

    Returns:
        The number of processes signalled.
    """
    pids = find_run_processes(marker, pgid=pgid, leader=leader)
    if cgroup is not None:
        pids |= cgroup.pids()
    return sum(_signal(pid, sig) for pid in pids)


def kill_run(marker: str | None = None, *, run_id: str | None = None, pgid: int | None = None,
             leader: int | None = None, cgroup: RunCgroup | None = None) -> int:
    """SIGKILL every process of a run, including what it forks meanwhile.

    The run's cgroup, if any, is killed first (atomically, by the kernel).
    Then every process found by :func:`find_run_processes` is stopped
    (SIGSTOP), and the search repeats until it finds nothing new (at most
    :data:`KILL_ROUNDS` rounds): a stopped process cannot fork, and its
    children keep their parent while it is stopped. Then all are SIGKILLed.

    Args: see :func:`find_run_processes`; ``cgroup``: the run's cgroup.

    Returns:
        The number of processes killed outside the cgroup.
    """
    if cgroup is not None:
        cgroup.kill()
    held: set[int] = set()
    for _ in range(KILL_ROUNDS):
        found = find_run_processes(marker, run_id=run_id, pgid=pgid, leader=leader) - held
        if not found:
            break
        for pid in found:
            if _signal(pid, signal.SIGSTOP):
                held.add(pid)
        if not held & found:
            break  # nothing new we may signal
    return sum(_signal(pid, signal.SIGKILL) for pid in held)


# -- cgroup v2 -------------------------------------------------------------------


def _own_cgroup() -> Path | None:
    """This process's cgroup v2 folder, or None without a cgroup v2 hierarchy."""
    try:
        lines = (PROC / "self" / "cgroup").read_text().splitlines()
        mounts = (PROC / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return None
    for mount in mounts:
        left, _, right = mount.partition(" - ")
        fields = left.split()
        if not right.startswith("cgroup2 ") or len(fields) < 5:
            continue
        root, point = fields[3], fields[4]
        if own == root or own.startswith(root.rstrip("/") + "/"):
            relative = own[len(root.rstrip("/")):].lstrip("/")
            return Path(point) / relative
    return None


def cgroup_base() -> Path | None:
    """Where run cgroups go: this process's own cgroup v2, when the bridge may write it.

    The bridge must be able to create a folder there and to move its child into
    it (write access to ``cgroup.procs``): the case for a delegated cgroup
    (systemd ``Delegate=yes``) or for root. None otherwise: runs then rely on
    the marker, the process group and the parent chain.
    """
    base = _own_cgroup()
    if base is None or not (base / "cgroup.procs").is_file():
        return None
    if not (os.access(base, os.W_OK) and os.access(base / "cgroup.procs", os.W_OK)):
        return None
    return base


class RunCgroup:
    """The cgroup v2 of one run (see :func:`cgroup_base`).

    Args:
        path: Its folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, marker: str) -> RunCgroup | None:
        """Create the cgroup of the run ``marker``; None where cgroups cannot be used."""
        base = cgroup_base()
        if base is None:
            return None
        path = base / f"{CGROUP_PREFIX}{marker}"
        try:
            path.mkdir()
        except OSError as exc:
            log.debug("no cgroup for run %s (%s): tracking by marker and group", marker, exc)
            return None
        return cls(path)

    def add(self, pid: int) -> bool:
        """Move process ``pid`` into the cgroup; False when the kernel refuses."""
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            log.debug("could not move %d into %s: %s", pid, self.path, exc)
            return False
        return True

    def pids(self) -> set[int]:
        """Pids in the cgroup now."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return set()
        return {int(line) for line in text.split() if line.isdigit()}

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (``cgroup.kill``; else freeze, then each pid)."""
        try:
            (self.path / "cgroup.kill").write_text("1\n")
            return
        except OSError:
            pass  # kernels before 5.14 have no cgroup.kill
        with contextlib.suppress(OSError):
            (self.path / "cgroup.freeze").write_text("1\n")
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids or not any([_signal(pid, signal.SIGKILL) for pid in pids]):
                break

    def empty(self) -> bool:
        """True when no process is left in the cgroup (or it is gone)."""
        try:
            events = (self.path / "cgroup.events").read_text()
        except OSError:
            return not self.pids()
        return "populated 0" in events

    def remove(self, wait_s: float = CGROUP_EMPTY_WAIT_S) -> bool:
        """Remove the (killed) cgroup, waiting up to ``wait_s`` seconds for it to empty.

        Returns:
            True when it is gone; False when processes are still in it (it is
            removed at the next start).
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            time.sleep(0.01)


def run_cgroups() -> dict[str, list[RunCgroup]]:
    """Run cgroups left under this process's cgroup (by an earlier process), by run id."""
    base = cgroup_base()
    found: dict[str, list[RunCgroup]] = {}
    if base is None:
        return found
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(CGROUP_PREFIX) and entry.is_dir(follow_symlinks=False):
            marker = entry.name[len(CGROUP_PREFIX):]
            found.setdefault(marker_run_id(marker), []).append(RunCgroup(Path(entry.path)))
    return found


# -- after a crash ------------------------------------------------------------------


@attrs.frozen
class OpenRun:
    """A run the store shows as not ended, with its child if recorded.

    Attributes:
        run_id: The run.
        pid: Its child's pid (its process group id), or None when not recorded.
        ticks: The child's start time (:func:`start_ticks`), or None.
    """

    run_id: str
    pid: int | None = None
    ticks: str | None = None


def kill_leftovers(open_runs: Sequence[OpenRun],
                   known_runs: Callable[[Collection[str]], Iterable[str]]) -> dict[str, int]:
    """At start: kill every process that runs of an earlier bridge left running.

    Killed: the marked processes and the cgroups of runs that ``known_runs``
    says are this store's (open or ended: an ended run has nothing left to run
    either), and for each open run, its process group and descendants when its
    recorded child still leads them (same start time, so never a reused pid).

    Args:
        open_runs: The runs the store shows as not ended.
        known_runs: Given run ids, returns those that are runs of this store.

    Returns:
        Processes killed per run id (runs with nothing left are left out).
    """
    marked = marked_runs()
    cgroups = run_cgroups()
    candidates = set(marked) | set(cgroups) | {run.run_id for run in open_runs}
    ours = set(known_runs(candidates)) if candidates else set()
    leaders = {run.run_id: run for run in open_runs}
    killed: dict[str, int] = {}
    for run_id in sorted(ours):
        run = leaders.get(run_id)
        leader = None
        if run is not None and run.pid is not None and run.ticks is not None and (
                start_ticks(run.pid) == run.ticks):
            leader = run.pid
        groups = cgroups.get(run_id, [])
        count = sum(len(group.pids()) for group in groups)
        for group in groups:
            group.kill()
        count += kill_run(run_id=run_id, pgid=leader, leader=leader)
        for group in groups:
            group.remove()
        if count:
            killed[run_id] = count
    return killed
