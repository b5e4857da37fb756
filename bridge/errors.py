"""Typed errors that callers branch on (chat platforms and agents).

Modelled on python-telegram-bot's hierarchy: a caller decides between
"retry later", "log in again" and "give up" by the class, never by parsing text.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error a chat adapter raises."""


class Unauthorized(ChatError):
    """The token was refused (HTTP 401 or a refused socket connect): log in again."""


class LoginRefused(ChatError):
    """Center refused the API key itself (bad or disabled key): not retried quickly."""


class RetryLater(ChatError):
    """A transient failure (429, 5xx, network); try again after a delay.

    Args:
        message: What happened.
        retry_after_s: Delay the platform asked for, in seconds, if it gave one.
        ambiguous: True when the request may have taken effect (no answer was
            read), so a retry of a post must first check it did not land.
    """

    def __init__(
        self, message: str, retry_after_s: float | None = None, *, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.ambiguous = ambiguous


class Forbidden(ChatError):
    """The caller may not do this (HTTP 403, e.g. not a member of the channel)."""


class NotFound(ChatError):
    """The channel, message or user does not exist (HTTP 404)."""


class Conflict(ChatError):
    """The target refuses the change (HTTP 409, e.g. a closed channel)."""


class TooLarge(ChatError):
    """The content is over the platform's limit (HTTP 413)."""


class BadRequest(ChatError):
    """The platform rejected the request as malformed (HTTP 400 or another 4xx)."""


class BadEvent(ValueError):
    """An inbound event is malformed: missing or wrong-typed fields, oversized, unknown."""
