"""What an intake shows and does after a failed connect (shared by the chat adapters)."""

from __future__ import annotations

from bridge.errors import ChatError, LoginRefused, NotFound, Unauthorized
from bridge.platform import Access, IntakeHost


def connect_failure(exc: ChatError, host: IntakeHost, access: Access | None, *,
                    connected_once: bool) -> tuple[str, str]:
    """The intake's ``(state, reason)`` after a failed connect; a refused token is reported.

    Args:
        exc: Why the connect failed.
        host: The intake's host (told of a refused token, so the next access logs in).
        access: The access the connect used, if it got one.
        connected_once: Whether the intake was ever connected.

    Returns:
        ``failed`` for refused credentials or a space the identity may not use (only
        a config change helps; it is still retried), else ``reconnecting`` (or
        ``connecting`` before the first connect), with ``exc`` as the reason.
    """
    if isinstance(exc, LoginRefused | NotFound):
        return "failed", str(exc)
    if isinstance(exc, Unauthorized) and access is not None:
        host.invalidate(access.token)
    return ("reconnecting" if connected_once else "connecting"), str(exc)
