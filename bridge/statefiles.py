"""Files in the state dir that let ``bridge status`` and ``bridge top`` see a running bridge.

* ``status.json``: the latest :class:`~bridge.board.BoardSnapshot`, rewritten
  atomically (temp file in the same dir, then :func:`os.replace`) about twice a
  second by :class:`StatusWriter`, so a reader never sees half a file.
* ``bridge.lock``: held with an exclusive :func:`fcntl.flock` for the life of
  the bridge (:class:`StateLock`) and holding its pid. The kernel drops the
  lock when the process dies, so a stale file never blocks a new bridge;
  :func:`running_pid` probes the lock rather than trusting the pid in the file.

The state dir is private to the bridge's user: ``bridge start`` calls
:func:`secure_state_dir`, which sets the umask to :data:`STATE_UMASK` (new
files 0600, new folders 0700) and narrows what already exists (the dir to
0700, the bridge's own files in it to 0600). Agent children get the umask the
bridge was started with back (:func:`operator_umask`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from bridge.board import BoardSnapshot

__all__ = [
    "LOCK_FILE",
    "STATE_UMASK",
    "STATUS_FILE",
    "AlreadyRunning",
    "StateLock",
    "StatusError",
    "StatusWriter",
    "operator_umask",
    "read_status",
    "running_pid",
    "secure_state_dir",
    "write_status",
]

#: Name of the status file in the state dir.
STATUS_FILE = "status.json"
#: Name of the lock file in the state dir.
LOCK_FILE = "bridge.lock"

#: The bridge's umask once started: files 0600, folders 0700.
STATE_UMASK = 0o077
#: Files of the bridge itself in the state dir (besides :data:`LOCK_FILE` and
#: :data:`STATUS_FILE`): the state store and its journal files, temp status files, logs.
_OWN_FILE_PATTERNS = ("bridge.db", "bridge.db-*", ".status.*.tmp", "*.log")

_log = logging.getLogger(__name__)
#: The umask before :func:`secure_state_dir` changed it (None: not changed).
_operator_umask: int | None = None


class StatusError(Exception):
    """The status file (or lock file) exists but cannot be read or parsed.

    Attributes:
        path: The offending file.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class AlreadyRunning(Exception):
    """Another bridge holds the lock on this state dir.

    Attributes:
        state_dir: The contested state dir.
        pid: Pid of the holder, or None if it could not be read.
    """

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another bridge ({who}) is already running on state dir {state_dir}; "
            "stop it first or use another state_dir"
        )
        self.state_dir = state_dir
        self.pid = pid


# --------------------------------------------------------------------------- permissions


def secure_state_dir(state_dir: Path) -> list[Path]:
    """Make the state dir private to the bridge's user; call once at start.

    Sets the process umask to :data:`STATE_UMASK` (remembering the old one for
    :func:`operator_umask`), creates ``state_dir`` when missing, and narrows
    what exists: ``state_dir`` to 0700, and the bridge's own files directly in
    it (``bridge.db``, ``bridge.db-wal``, ``bridge.db-shm``, ``status.json``,
    ``bridge.lock``, temp status files, ``*.log``) to 0600. Sub-folders (agent
    workspaces, CLI homes) are left as they are; the folder's 0700 already
    closes them to other users. Symlinks are never followed.

    Args:
        state_dir: The bridge's state dir.

    Returns:
        The paths whose mode was changed.

    Raises:
        OSError: when the dir cannot be created or a mode cannot be changed.
    """
    global _operator_umask
    previous = os.umask(STATE_UMASK)
    if _operator_umask is None:
        _operator_umask = previous
    state_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    if stat.S_IMODE(state_dir.stat().st_mode) != 0o700:
        state_dir.chmod(0o700)
        changed.append(state_dir)
    own = {state_dir / LOCK_FILE, state_dir / STATUS_FILE}
    for pattern in _OWN_FILE_PATTERNS:
        own.update(state_dir.glob(pattern))
    for path in sorted(own):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            path.chmod(0o600)
            changed.append(path)
    return changed


def operator_umask() -> int:
    """The umask the bridge was started with, for agent children (-1: unchanged).

    Returns:
        The umask before :func:`secure_state_dir`, or -1 when it was never
        called (``subprocess.Popen(umask=-1)`` leaves the umask alone).
    """
    return -1 if _operator_umask is None else _operator_umask


# --------------------------------------------------------------------------- status.json


def write_status(state_dir: Path, snapshot: BoardSnapshot) -> None:
    """Atomically replace ``state_dir/status.json`` with ``snapshot``.

    The JSON is written to a temp file in ``state_dir`` and renamed over the
    old file, so readers see either the old or the new snapshot, never a mix.
    No fsync: the file is a live view, not a record.

    Args:
        state_dir: The bridge's state dir (created if missing).
        snapshot: What to publish; serialized with :meth:`BoardSnapshot.to_dict`.

    Raises:
        OSError: If the dir or file cannot be written (the temp file is removed).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps(snapshot.to_dict(), separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(prefix=".status.", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, state_dir / STATUS_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(state_dir: Path) -> BoardSnapshot | None:
    """Read the snapshot a bridge last wrote to ``state_dir/status.json``.

    Args:
        state_dir: The bridge's state dir.

    Returns:
        The snapshot, or None when the file (or the dir) does not exist. The
        snapshot may be old if the bridge has stopped: compare its
        ``taken_at`` with the clock, or ask :func:`running_pid`.

    Raises:
        StatusError: If the file exists but cannot be read or is not a valid
            snapshot; the message names the file.
    """
    path = state_dir / STATUS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return BoardSnapshot.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise StatusError(path, f"corrupt status file ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------- bridge.lock


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    text = raw.decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


class StateLock:
    """Exclusive, process-wide claim on a state dir (one bridge per state dir).

    The lock is an :func:`fcntl.flock` on ``state_dir/bridge.lock``, so it is
    released by the kernel when the process exits, however it exits. The file
    descriptor is not inherited by child processes (agents), so they never keep
    a dead bridge's lock. Two :class:`StateLock` objects in one process contend
    like two processes do. The lock file is never deleted (deleting a lock file
    lets two processes each lock a different inode).

    Usable as a context manager: ``with StateLock(path): ...``.

    Args:
        state_dir: The bridge's state dir (created on :meth:`acquire`).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write our pid into the lock file.

        Raises:
            AlreadyRunning: If another bridge (or another :class:`StateLock`)
                holds it; the message names the holder's pid and the dir.
            RuntimeError: If this object already holds the lock.
            OSError: If the dir or lock file cannot be created or opened.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this StateLock")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self.state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock; a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        """Acquire the lock (see :meth:`acquire`) and return self."""
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the lock."""
        self.release()


def running_pid(state_dir: Path, *, pid_wait_s: float = 0.5) -> int | None:
    """Return the pid of the bridge that holds the lock on ``state_dir``.

    Probes with a non-blocking shared :func:`fcntl.flock` on a separate,
    read-only descriptor and drops it at once, so the holder is not disturbed
    and the answer is right from any process. (A bridge starting in the same
    microseconds as the probe could see it as contention; that race is harmless
    in practice and only affects start-up.)

    Args:
        state_dir: The bridge's state dir.
        pid_wait_s: How long to wait for the pid when the lock is held but the
            holder has not written its pid yet (it is just starting).

    Returns:
        The holder's pid, or None when no process holds the lock (including
        when the state dir or lock file does not exist).

    Raises:
        StatusError: If the lock is held but no pid appears in the file within
            ``pid_wait_s`` (never returns a made-up pid such as 0 or -1,
            which :func:`os.kill` would treat as a process group).
        OSError: If the lock file exists but cannot be opened.
    """
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        deadline = time.monotonic() + pid_wait_s
        while True:
            pid = _read_pid(fd)
            if pid is not None:
                return pid
            if time.monotonic() >= deadline:
                raise StatusError(path, "locked by a process that wrote no pid")
            time.sleep(0.02)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writer thread


#: The status writer waits at least this many times as long as its last write took,
#: so a large board (thousands of conversations) costs at most a few percent of a core.
WRITE_COST_FACTOR = 50.0


class StatusWriter:
    """Daemon thread that writes the board to ``status.json`` every ``interval_s``.

    A write that took ``t`` seconds is followed by a pause of at least
    ``WRITE_COST_FACTOR * t``: a snapshot of a board with thousands of actors
    takes tens of milliseconds to build and encode, so the interval stretches
    with the board instead of taking a core.

    Errors never leave the thread: an OSError is logged as a warning (once per
    distinct message, until a write succeeds again), anything else from
    ``board_snapshot`` is logged with its traceback, and the loop carries on.

    Args:
        board_snapshot: Returns the snapshot to write, e.g. ``board.snapshot``.
        state_dir: The bridge's state dir.
        interval_s: Seconds between writes (> 0).

    Raises:
        ValueError: If ``interval_s`` is not positive.
    """

    def __init__(
        self,
        board_snapshot: Callable[[], BoardSnapshot],
        state_dir: Path,
        interval_s: float = 0.5,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._snapshot = board_snapshot
        self._state_dir = state_dir
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._last_error: str | None = None
        self._write_lock = threading.Lock()

    def start(self) -> None:
        """Write a first snapshot right away, then every ``interval_s``, on the thread.

        Raises:
            RuntimeError: If called twice.
        """
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread, write a final snapshot, then return.

        Args:
            timeout_s: How long to wait for an in-flight write to finish.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.write_once()

    def write_once(self) -> bool:
        """Write one snapshot now (also used by the thread).

        Returns:
            True if the file was written, False if it failed (and was logged).
        """
        with self._write_lock:
            try:
                write_status(self._state_dir, self._snapshot())
            except OSError as exc:
                message = f"cannot write {self._state_dir / STATUS_FILE}: {exc}"
                if message != self._last_error:
                    _log.warning("%s", message)
                    self._last_error = message
                return False
            except Exception:
                message = "status snapshot failed"
                if message != self._last_error:
                    _log.exception("%s", message)
                    self._last_error = message
                return False
            self._last_error = None
            return True

    def _run(self) -> None:
        while True:
            began = time.monotonic()
            self.write_once()
            took = time.monotonic() - began
            if self._stop.wait(max(self._interval_s, WRITE_COST_FACTOR * took)):
                return
