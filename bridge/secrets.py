"""Secret references (``env:NAME``, ``file:PATH``) and log redaction.

Every secret value the bridge resolves or receives (API keys, access tokens)
is registered here, and :class:`RedactingFilter` replaces registered values in
log records, so that no secret reaches a log file, the TUI or ``status``.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path

REDACTED = "***"
#: Values shorter than this are not redacted (too likely to hit ordinary text).
MIN_SECRET_CHARS = 6


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
    """Resolve a secret reference.

    Args:
        ref: ``env:NAME`` (environment variable), ``file:PATH`` (file content,
            stripped; relative paths resolve against ``base_dir``) or the
            literal value (meant for the dev guild's seeded keys).
        base_dir: Folder for relative ``file:`` paths (the config file's folder).

    Returns:
        The resolved :class:`Secret`.

    Raises:
        SecretError: when the variable is unset or empty, or the file is unreadable or empty.
    """
    if ref.startswith("env:"):
        name = ref[4:]
        value = os.environ.get(name, "")
        if not value:
            raise SecretError(f"environment variable {name} is not set or empty")
        return Secret(value, ref)
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
        return Secret(value, ref)
    return Secret(ref, "inline")


#: Short-lived secrets (access and guild tokens) remembered for redaction; older
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
    """Return ``text`` with every registered secret value replaced by ``***``."""
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
