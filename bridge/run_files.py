"""The files of a run: members' files fetched into its workspace, the agent's files sent back.

Where the platform takes files (:attr:`bridge.platform.PlatformLimits.files`),
a run uses two folders of the bridge in its workspace::

    .bridge/.gitignore              "*": keeps the bridge's folders out of a repository
    .bridge/inbox/<run id>/<name>   the files of the messages the run answers (kept)
    .bridge/outbox/<run id>/        made empty before the run; what the agent leaves
                                    there is uploaded after its answer, then removed

A folder per run, because an agent's workspace is shared by all its
conversations and their runs may overlap. The files to upload are copied out of
the workspace into the state dir (``<state_dir>/uploads/<run id>/``) when the
run ends, so nothing the agent does later changes what is sent; delivery
removes each copy once it is uploaded or given up.

Nothing here follows a symbolic link the agent may have planted: the folders
are opened one component at a time without following links, and only regular
files are copied (so a link to the state store or a key file is never sent).
Names come from members and agents: :func:`safe_file_name` makes them plain
file names first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path

import attrs

from bridge.sanitize import is_unsafe

__all__ = ["BRIDGE_DIR", "MAX_NAME_CHARS", "MAX_UPLOADS", "Collected", "collect_outbox",
           "ensure_dir", "inbox_dir", "outbox_dir", "prepare_inbox", "prepare_outbox",
           "safe_file_name",
           "staging_dir", "write_staged"]

#: The bridge's folder in a workspace.
BRIDGE_DIR = ".bridge"
#: Longest file name the bridge writes (characters; at most :data:`MAX_NAME_BYTES` in UTF-8).
MAX_NAME_CHARS = 100
#: Longest file name in UTF-8 bytes (file systems allow 255).
MAX_NAME_BYTES = 200
#: Longest extension kept when a long name is shortened (characters, the dot included).
_MAX_SUFFIX_CHARS = 16
#: Files uploaded from one run's outbox folder at most (by name order).
MAX_UPLOADS = 10
#: Characters kept in a file name besides letters and digits.
_KEPT = frozenset("._-+=@,")
_SEPARATORS = re.compile(r"[/\\]")


def safe_file_name(name: str, taken: Collection[str] = ()) -> str:
    """A plain file name for ``name`` (a member's or an agent's), distinct from ``taken``.

    Only the last path component is kept; control and format characters go;
    characters other than letters, digits and ``._-+=@,`` become ``_`` (nothing a
    shell or a chat's markup reads specially);
    leading dots and dashes go (no hidden file, nothing a command reads as an
    option); the name is cut to :data:`MAX_NAME_CHARS` characters and
    :data:`MAX_NAME_BYTES` UTF-8 bytes, keeping its extension. An empty result is
    ``file``. A name in ``taken`` gets ``-2``, ``-3``... before its extension.

    Args:
        name: The name as given (may hold path separators, ``..``, controls).
        taken: Names already used in the same folder.

    Returns:
        The name, at most :data:`MAX_NAME_CHARS` characters.
    """
    base = _SEPARATORS.split(unicodedata.normalize("NFC", name))[-1]
    chars = []
    for char in base:
        if is_unsafe(char):
            continue
        chars.append(char if char.isalnum() or char in _KEPT else "_")
    plain = "".join(chars).lstrip(".-") or "file"
    candidate = _bounded(plain)
    number = 1
    while candidate in taken:
        number += 1
        stem, suffix = _split(plain)
        candidate = _bounded(f"{stem}-{number}{suffix}")
    return candidate


def _split(name: str) -> tuple[str, str]:
    """(stem, extension) with an extension of at most :data:`_MAX_SUFFIX_CHARS` characters."""
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > _MAX_SUFFIX_CHARS:
        return name, ""
    return name[:dot], name[dot:]


def _bounded(name: str) -> str:
    """``name`` cut to the character and byte bounds, its extension kept."""
    stem, suffix = _split(name)
    stem = stem[:MAX_NAME_CHARS - len(suffix)]
    while stem and len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return (stem + suffix).lstrip(".-") or "file"


def ensure_dir(base: Path, *parts: str) -> Path:
    """Make ``base/parts...`` (each part a plain name), refusing links on the way.

    Args:
        base: An existing folder the bridge trusts (a workspace, the state dir).
        parts: Folder names below it, made when missing.

    Returns:
        The folder.

    Raises:
        OSError: a part is a symbolic link or not a folder, or cannot be made.
    """
    path = base
    for part in parts:
        path = path / part
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{path} is not a folder (a link?); not used")
    return path


def inbox_dir(workspace: Path, run_id: str) -> Path:
    """``<workspace>/.bridge/inbox/<run id>``: where a run's members' files are put."""
    return workspace / BRIDGE_DIR / "inbox" / run_id


def outbox_dir(workspace: Path, run_id: str) -> Path:
    """``<workspace>/.bridge/outbox/<run id>``: what the agent leaves there is uploaded."""
    return workspace / BRIDGE_DIR / "outbox" / run_id


def staging_dir(state_dir: Path, run_id: str) -> Path:
    """``<state_dir>/uploads/<run id>``: copies of a run's files waiting to be uploaded."""
    return state_dir / "uploads" / run_id


def _ignore_file(workspace: Path) -> None:
    """Write ``.bridge/.gitignore`` (``*``) once, without following a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(workspace / BRIDGE_DIR / ".gitignore", flags, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# the chat bridge's folders for files in and out of runs\n*\n")


def _bridge_dir(workspace: Path) -> None:
    """Make the workspace (as agents do when it is missing) and its ``.bridge`` folder."""
    workspace.mkdir(parents=True, exist_ok=True)
    ensure_dir(workspace, BRIDGE_DIR)
    _ignore_file(workspace)


def prepare_inbox(workspace: Path, run_id: str) -> Path:
    """Make the run's inbox folder (and the workspace when missing); return it.

    Raises:
        OSError: a folder on the way is a link, or cannot be made.
    """
    _bridge_dir(workspace)
    return ensure_dir(workspace, BRIDGE_DIR, "inbox", run_id)


def prepare_outbox(workspace: Path, run_id: str) -> Path:
    """Make the run's outbox folder, empty (and the workspace when missing); return it.

    Raises:
        OSError: a folder on the way is a link, or cannot be made or emptied.
    """
    _bridge_dir(workspace)
    folder = ensure_dir(workspace, BRIDGE_DIR, "outbox", run_id)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _empty(fd, os.listdir(fd))
    finally:
        os.close(fd)
    return folder


@attrs.frozen
class Collected:
    """What :func:`collect_outbox` found.

    Attributes:
        files: The staged copies to upload, in name order.
        refused: One line per file (or group of files) not sent, saying why
            (names quoted; sizes in bytes).
    """

    files: tuple[Path, ...] = ()
    refused: tuple[str, ...] = ()


def _open_dir(base: Path, parts: Iterable[str]) -> int:
    """A descriptor of ``base/parts...``, opened without following a link below ``base``."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def collect_outbox(workspace: Path, run_id: str, staging: Path, *, max_files: int = MAX_UPLOADS,
                   max_bytes: int, taken: Collection[str] = ()) -> Collected:
    """Copy the files the agent left in the run's outbox folder to ``staging``; remove the folder.

    Regular files only, in name order, at most ``max_files`` of them, each at most
    ``max_bytes``; links, folders and larger files are refused (and removed with
    the rest). A missing folder (the platform takes no files, or the agent removed
    it) gives nothing.

    Args:
        workspace: The run's workspace.
        run_id: The run.
        staging: Where the copies go (made when needed; see :func:`staging_dir`).
        max_files: Files uploaded at most.
        max_bytes: Largest file (bytes).
        taken: Names already staged for the run (e.g. ``answer.md``).

    Returns:
        The staged copies and the refusals.

    Raises:
        OSError: the staging folder cannot be written.
    """
    try:
        parent = _open_dir(workspace, (BRIDGE_DIR, "outbox"))
    except FileNotFoundError:
        return Collected()
    except OSError as exc:
        return Collected(refused=(f"the outbox folder cannot be read ({exc.strerror})",))
    try:
        try:
            fd = _open_dir_at(parent, run_id)
        except FileNotFoundError:
            return Collected()
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(run_id, dir_fd=parent)
            return Collected(refused=(f"{BRIDGE_DIR}/outbox/{run_id} is not a folder (a link?)",))
        try:
            names = sorted(os.listdir(fd))
            found = _stage(fd, names, staging, max_files, max_bytes, set(taken))
            _empty(fd, names)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(run_id, dir_fd=parent)
        return found
    finally:
        os.close(parent)


def _open_dir_at(parent: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)


def _stage(fd: int, names: list[str], staging: Path, max_files: int, max_bytes: int,
           taken: set[str]) -> Collected:
    files: list[Path] = []
    refused: list[str] = []
    regular = []
    for name in names:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            regular.append(name)
        else:
            kind = "a link" if stat.S_ISLNK(info.st_mode) else (
                "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file")
            refused.append(f"{safe_file_name(name)!r}: {kind}")
    if len(regular) > max_files:
        extra = regular[max_files:]
        shown = ", ".join(repr(safe_file_name(name)) for name in extra[:5])
        refused.append(f"{len(extra)} more file(s) ({shown}"
                       f"{', ...' if len(extra) > 5 else ''}): at most {max_files} per run")
        regular = regular[:max_files]
    for name in regular:
        shown = safe_file_name(name)
        try:
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            refused.append(f"{shown!r}: cannot be read ({exc.strerror})")
            continue
        with os.fdopen(src, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                refused.append(f"{shown!r}: not a regular file")
                continue
            if info.st_size > max_bytes:
                refused.append(f"{shown!r}: {info.st_size:,} bytes, over the limit of "
                               f"{max_bytes:,} bytes")
                continue
            content = source.read(max_bytes + 1)
        if len(content) > max_bytes:
            refused.append(f"{shown!r}: over the limit of {max_bytes:,} bytes")
            continue
        staged = write_staged(staging, safe_file_name(name, taken), content)
        taken.add(staged.name)
        files.append(staged)
    return Collected(tuple(files), tuple(refused))


def write_staged(staging: Path, name: str, content: bytes) -> Path:
    """Write ``content`` to ``staging/name`` (a name from :func:`safe_file_name`); return it.

    Raises:
        OSError: it cannot be written.
    """
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / name
    path.write_bytes(content)
    return path


def _empty(fd: int, names: Iterable[str]) -> None:
    """Remove ``names`` from the folder ``fd`` (links removed, never followed)."""
    for name in names:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
