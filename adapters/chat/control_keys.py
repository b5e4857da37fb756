"""The keys that sign the bridge's buttons, kept in ``control-keys.json`` in the state dir.

The file (mode 0600, JSON) holds every version still honoured and the one new
buttons are signed with::

    {"current": 2, "keys": {"1": "<URL-safe base64>", "2": "<URL-safe base64>"}}

Each key is :data:`KEY_BYTES` random bytes. :func:`load_key_ring` creates the
file with version 1 when it is missing and refuses one that other users could
read (anyone who reads it can forge a button). :func:`rotate` adds a new
current version and keeps the few before it, so buttons already posted keep
working until they expire (see :mod:`bridge.signed_controls`). Writes are
atomic (a temp file in the state dir, fsynced, then renamed), and key bytes
never appear in a message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from bridge.signed_controls import KeyRing

__all__ = ["KEY_BYTES", "KEY_FILE", "KeyFileError", "load_key_ring", "rotate"]

#: Name of the key file in the state dir.
KEY_FILE = "control-keys.json"
#: Length of a new key, in bytes (256 bits).
KEY_BYTES = 32


class KeyFileError(Exception):
    """The key file cannot be used (unreadable, corrupt, or readable by other users).

    The message names the file and the problem, never a key.

    Attributes:
        path: The key file.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state dir (serializes creating and rotating)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(path: Path) -> KeyRing | None:
    """The ring in ``path``, or None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(path, f"cannot open: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(path, "not a regular file")
        if stat.S_IMODE(mode) & 0o077:
            raise KeyFileError(
                path, f"readable or writable by other users (mode {stat.S_IMODE(mode):04o}); "
                      "anyone who read it can forge buttons: 'chmod 600' it, then run "
                      "'bridge keys rotate --keep 1'")
        raw = fh.read()
    try:
        data = json.loads(raw.decode("utf-8"))
        current = data["current"]
        keys = {int(version): base64.urlsafe_b64decode(text.encode("ascii"))
                for version, text in data["keys"].items()}
        if not isinstance(current, int):
            raise TypeError("current is not a whole number")
        return KeyRing(keys, current)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        # Only the kind of error: its text could quote part of a key.
        raise KeyFileError(path, f"corrupt key file ({type(exc).__name__})") from None


def _write(path: Path, ring: KeyRing, *, replace: bool) -> bool:
    """Write ``ring`` to ``path`` atomically (mode 0600).

    Args:
        path: The key file.
        ring: What to write.
        replace: Replace an existing file; when False, leave one that exists.

    Returns:
        False when ``replace`` is False and the file already exists, else True.
    """
    data = {"current": ring.current,
            "keys": {str(version): base64.urlsafe_b64encode(key).decode("ascii")
                     for version, key in sorted(ring.keys.items())}}
    fd, tmp = tempfile.mkstemp(prefix=".control-keys.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _new_ring(keys: Mapping[int, bytes], version: int) -> KeyRing:
    return KeyRing({**keys, version: secrets.token_bytes(KEY_BYTES)}, version)


def load_key_ring(state_dir: Path) -> KeyRing:
    """The keys in ``state_dir/control-keys.json``; the file is created when missing.

    A new file holds version 1: :data:`KEY_BYTES` random bytes, mode 0600.

    Args:
        state_dir: The bridge's state dir (created, mode 0700, when missing).

    Returns:
        Every version in the file; new buttons are signed with its current one.

    Raises:
        KeyFileError: when the file cannot be read, is corrupt, is not a
            regular file, or other users may read or write it.
        OSError: when the dir or a new file cannot be written.
    """
    path = state_dir / KEY_FILE
    ring = _read(path)
    if ring is not None:
        return ring
    with _locked(state_dir):
        ring = _read(path)
        if ring is None:
            ring = _new_ring({}, 1)
            _write(path, ring, replace=False)
    return ring


def rotate(state_dir: Path, *, keep: int = 2) -> int:
    """Add a new current key version and drop all but the newest ``keep`` versions.

    Buttons signed with a kept version stay valid until they expire; those
    signed with a dropped one are refused (``unknown key``). A running bridge
    signs with the new version once it reads the file again.

    Args:
        state_dir: The bridge's state dir.
        keep: How many versions to keep, the new one included (>= 1; 1 drops
            every older key at once, e.g. after the file was exposed).

    Returns:
        The new current version (1 when there was no file).

    Raises:
        ValueError: when ``keep`` is below 1.
        KeyFileError: when the existing file cannot be used (see :func:`load_key_ring`).
        OSError: when the file cannot be written.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = state_dir / KEY_FILE
    with _locked(state_dir):
        old = _read(path)
        if old is None:
            ring = _new_ring({}, 1)
        else:
            version = max(old.keys) + 1
            kept = {v: old.keys[v] for v in sorted(old.keys)[-(keep - 1):]} if keep > 1 else {}
            ring = _new_ring(kept, version)
        _write(path, ring, replace=True)
    return ring.current
