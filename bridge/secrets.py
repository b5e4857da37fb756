"""Secret references (``env:NAME``, ``file:PATH``), redaction, and the secret hand-over.

Every secret value the bridge resolves or receives (API keys, access tokens)
is registered here, and :class:`RedactingFilter` replaces registered values in
log records, so that no secret reaches a log file, the TUI or ``status``;
:func:`redact` does the same for text posted in the chat.

Secrets given as ``env:NAME`` must not stay in the bridge's environment: an
agent run executes commands as the same user and could read them from
``/proc/<bridge pid>/environ``. Removing them from :data:`os.environ` is not
enough, since on Linux that file shows the environment block the process was
*started* with, which ``unsetenv`` does not rewrite. So ``bridge start``
calls :func:`exec_without_env_secrets` once, right after loading the config:
when a referenced variable is set, the values go into a pipe, and the process
re-executes itself (same pid, same arguments) with those variables removed
and :data:`HANDOFF_VAR` naming the pipe's read end. The new image calls
:func:`receive_handed_secrets` before loading the config, which reads the pipe
once, closes it, and answers ``env:`` references from memory. Only the
names' absence is visible afterwards, never the values.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

REDACTED = "***"
#: Values shorter than this are not redacted (too likely to hit ordinary text).
MIN_SECRET_CHARS = 6


#: Environment variable that tells a re-executed bridge which descriptor holds its secrets.
HANDOFF_VAR = "BRIDGE_SECRETS_FD"
#: Most bytes handed over through the pipe (a pipe holds at least this much on Linux
#: and macOS without a reader, so the write never blocks).
HANDOFF_MAX_BYTES = 16 * 1024

#: ``env:`` values handed over by the process before the re-exec (name -> value).
_handed: dict[str, str] = {}
#: Names of every variable resolved through an ``env:`` reference in this process.
_env_names: set[str] = set()


class SecretError(ValueError):
    """A secret reference cannot be resolved (unset variable, unreadable file)."""


class Secret:
    """A secret value that never shows itself in ``repr`` or ``str``.

    Args:
        value: The secret text.
        source: Where it came from, for messages (``env:NAME``, ``file:PATH`` or ``inline``).
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self.source = source
        register_secret(value)

    def reveal(self) -> str:
        """Return the secret text; pass it only to the place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(ref: str, base_dir: Path | None = None) -> Secret:
    """Resolve a secret reference (its value is redacted from then on).

    Args:
        ref: ``env:NAME`` (environment variable), ``file:PATH`` (file content,
            stripped; relative paths resolve against ``base_dir``) or the
            literal value (meant for a dev server's seeded keys).
        base_dir: Folder for relative ``file:`` paths (the config file's folder).

    Returns:
        The resolved :class:`Secret`.

    Raises:
        SecretError: when the variable is unset or empty, or the file is unreadable or empty.

    ``env:NAME`` is answered from the values handed over at the re-exec (see
    :func:`receive_handed_secrets`) first, then from :data:`os.environ`.
    """
    value, source = resolve_reference(ref, base_dir)
    return Secret(value, source)


def resolve_reference(ref: str, base_dir: Path | None = None) -> tuple[str, str]:
    """Resolve ``env:NAME``, ``file:PATH`` or a literal to its value, without taking
    the value for a secret (an identifier such as an app id, which members may see).

    Args:
        ref: As for :func:`resolve_secret`.
        base_dir: Folder for relative ``file:`` paths.

    Returns:
        ``(value, source)``; ``source`` is ``ref`` for a reference, ``inline`` else.

    Raises:
        SecretError: when the variable is unset or empty, or the file is unreadable or empty.
    """
    if ref.startswith("env:"):
        name = ref[4:]
        _env_names.add(name)
        value = _handed.get(name) or os.environ.get(name, "")
        if not value:
            raise SecretError(f"environment variable {name} is not set or empty")
        return value, ref
    if ref.startswith("file:"):
        path = Path(ref[5:]).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"secret file {path} is empty")
        return value, ref
    return ref, "inline"


#: Short-lived secrets (access tokens) remembered for redaction; older
#: ones have long expired (tokens live at most 15 minutes; logins happen every 8).
MAX_TOKENS = 512

_lock = threading.Lock()
_lasting: set[str] = set()
_tokens: collections.OrderedDict[str, None] = collections.OrderedDict()
_ordered: list[str] = []


def register_secret(value: str, *, token: bool = False) -> None:
    """Remember a value so that :func:`redact` hides it from now on.

    Args:
        value: The secret text (shorter than :data:`MIN_SECRET_CHARS`: ignored).
        token: True for a short-lived token: only the last :data:`MAX_TOKENS`
            are kept, so a bridge that runs for months does not slow down.
    """
    global _ordered
    if len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        if token:
            if value in _tokens:
                return
            _tokens[value] = None
            while len(_tokens) > MAX_TOKENS:
                _tokens.popitem(last=False)
        elif value in _lasting:
            return
        else:
            _lasting.add(value)
        _ordered = sorted(_lasting | _tokens.keys(), key=len, reverse=True)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret value replaced by ``***``.

    Used for log records and for every text the bridge posts in the chat
    (answers before they are split, status messages, notices). Only verbatim
    copies are found: an agent that encodes a secret (base64, reversed) is
    not caught.
    """
    for value in _ordered:  # a list swapped whole under the lock: safe to read
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that renders the message and redacts secrets from it.

    Attach it to handlers (not loggers) so it also covers records from
    libraries. Exception text is redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keeps the record."""
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# --------------------------------------------------------------------------- hand-over


def env_secret_names() -> frozenset[str]:
    """Names of the variables resolved through ``env:`` references so far in this process."""
    return frozenset(_env_names)


def exec_without_env_secrets(names: Iterable[str] | None = None,
                             argv: Sequence[str] | None = None) -> None:
    """Re-execute this process without the secret variables in its environment.

    Does nothing when none of ``names`` is set (in particular in the
    re-executed process, which never has them). Otherwise writes the values to
    a pipe, flushes stdout and stderr, and replaces the process image with
    ``sys.executable`` and the same arguments (same pid, same working
    directory, same open terminal); :func:`receive_handed_secrets` in the new
    image reads them back. Call it before any thread starts.

    Args:
        names: Variable names to remove (default: :func:`env_secret_names`).
        argv: The interpreter's arguments without the program (default:
            ``sys.orig_argv[1:]``, e.g. ``["bin/bridge", "start", "-c", "FILE"]``).

    Raises:
        SecretError: when the values exceed :data:`HANDOFF_MAX_BYTES`.
        OSError: when the pipe cannot be made or the exec fails (the process
            then keeps running, with the variables still set).
    """
    wanted = sorted(env_secret_names() if names is None else set(names))
    values = {name: os.environ[name] for name in wanted if name in os.environ}
    if not values:
        return
    data = json.dumps(values).encode("utf-8")
    if len(data) > HANDOFF_MAX_BYTES:
        raise SecretError(f"the secret environment variables hold more than "
                          f"{HANDOFF_MAX_BYTES} bytes; use file: references instead")
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    env = {key: value for key, value in os.environ.items() if key not in values}
    env[HANDOFF_VAR] = str(read_fd)
    os.set_inheritable(read_fd, True)
    args = list(sys.orig_argv[1:] if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *args], env)
    except OSError:
        os.close(read_fd)
        raise


def receive_handed_secrets() -> None:
    """Take the secrets handed over by :func:`exec_without_env_secrets`, once.

    A no-op when :data:`HANDOFF_VAR` is not set. Otherwise reads the pipe it
    names to its end, closes it, removes the variable from :data:`os.environ`,
    and keeps the values for ``env:`` references (registered for redaction).

    Raises:
        SecretError: when the variable does not name a readable descriptor or
            its content is not a hand-over.
    """
    raw = os.environ.pop(HANDOFF_VAR, None)
    if raw is None:
        return
    if not raw.isdigit():
        raise SecretError(f"{HANDOFF_VAR} must name a file descriptor, got {raw[:20]!r}")
    fd = int(raw)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > HANDOFF_MAX_BYTES:
                raise SecretError(f"{HANDOFF_VAR}: more than {HANDOFF_MAX_BYTES} bytes")
    except OSError as exc:
        raise SecretError(f"{HANDOFF_VAR}: cannot read descriptor {fd}: {exc.strerror}"
                          ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        values = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise SecretError(f"{HANDOFF_VAR}: descriptor {fd} does not hold a secret hand-over")
    for name, value in values.items():
        register_secret(value)
        _handed[name] = value
