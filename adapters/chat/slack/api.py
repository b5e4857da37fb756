"""slack-sdk's Web API client as the bridge uses it, and Slack's errors as the chat port's.

Every call goes through slack-sdk's :class:`~slack_sdk.WebClient` (``base_url`` is the
``[platforms.slack] api_url``). It retries a ``ratelimited`` answer itself
(:class:`~slack_sdk.http_retry.builtin_handlers.RateLimitErrorRetryHandler`, which
sleeps ``Retry-After`` seconds in the calling thread; slack-sdk's defaults hold only
the connection-error handler: ``http_retry/__init__.py``) and a dropped connection
once. What still fails is raised as a :mod:`bridge.errors` class by
:func:`translated`, following Slack's error table (docs.slack.dev, each method's
"Errors"): a refused token is :class:`~bridge.errors.Unauthorized`, a rate limit or
server error :class:`~bridge.errors.RetryLater`, a missing channel or message
:class:`~bridge.errors.NotFound`, not being in a channel
:class:`~bridge.errors.Forbidden`.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bridge.errors import (
    BadRequest,
    ChatError,
    Forbidden,
    NotFound,
    RetryLater,
    TooLarge,
    Unauthorized,
)

#: Seconds a Web API call may take before it counts as failed.
TIMEOUT_S = 10
#: Times a ``ratelimited`` answer is retried (after its Retry-After) before it is raised.
RATE_LIMIT_RETRIES = 3

#: Slack errors meaning the token is no good (docs: auth.test "Errors").
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired",
                         "account_inactive"})
#: Slack errors meaning the thing is not there (or no longer).
GONE_ERRORS = frozenset({"channel_not_found", "message_not_found", "thread_not_found",
                         "file_not_found", "user_not_found", "invalid_thread_ts"})
#: Slack errors meaning the bot may not act there.
FORBIDDEN_ERRORS = frozenset({"not_in_channel", "is_archived", "restricted_action",
                              "missing_scope", "not_allowed", "no_permission", "cannot_dm_bot",
                              "ekm_access_denied", "channel_is_archived",
                              "cant_update_message", "cant_delete_message"})
#: Slack errors meaning the text is too long.
TOO_LONG_ERRORS = frozenset({"msg_too_long", "msg_blocks_too_long", "too_many_attachments",
                             "file_too_large"})

# slack-sdk logs request headers (the bearer token) at DEBUG; the bridge never wants that.
logging.getLogger("slack_sdk").setLevel(logging.INFO)


def web_client(api_url: str, token: str | None = None) -> WebClient:
    """A Web API client for ``api_url`` (ending in ``/``), with the retries described above.

    Args:
        api_url: The Web API base URL, e.g. ``https://slack.com/api/``.
        token: A bot (``xoxb-``) or app-level (``xapp-``) token; None for none.
    """
    return WebClient(token=token, base_url=api_url, timeout=TIMEOUT_S,
                     retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1),
                                     RateLimitErrorRetryHandler(
                                         max_retry_count=RATE_LIMIT_RETRIES)])


def error_code(exc: SlackApiError) -> str:
    """The ``error`` of a refused call (e.g. ``not_in_channel``); empty when none."""
    data = exc.response.data if exc.response is not None else None
    found = data.get("error") if isinstance(data, dict) else None
    return found if isinstance(found, str) else ""


def as_chat_error(what: str, exc: SlackApiError, *, ambiguous: bool = False) -> ChatError:
    """The :mod:`bridge.errors` class for a call Slack refused.

    Args:
        what: The call, for the message (e.g. ``chat.postMessage to C123``).
        exc: slack-sdk's error (its response holds Slack's ``error`` code).
        ambiguous: The call may have taken effect when Slack's answer is a
            server error (a post: "did it land?" is asked before posting again).
    """
    code = error_code(exc)
    status = exc.response.status_code if exc.response is not None else 0
    text = f"{what}: Slack answered {code or f'HTTP {status}'}"
    if code == "ratelimited" or status == 429:
        retry_after = exc.response.headers.get("Retry-After") if exc.response else None
        delay = float(retry_after) if retry_after and str(retry_after).isdigit() else None
        return RetryLater(text, delay)
    if code in AUTH_ERRORS:
        return Unauthorized(text)
    if code in GONE_ERRORS:
        return NotFound(text)
    if code in FORBIDDEN_ERRORS:
        needed = exc.response.data.get("needed") if exc.response is not None and isinstance(
            exc.response.data, dict) else None
        if code == "missing_scope" and isinstance(needed, str) and needed:
            # Slack names the scope the call needs (docs: "missing_scope" errors).
            text += f" (the app needs the {needed} scope: add it and reinstall the app)"
        return Forbidden(text)
    if code in TOO_LONG_ERRORS:
        return TooLarge(text)
    if status >= 500 or code in {"internal_error", "fatal_error", "service_unavailable",
                                 "request_timeout"}:
        return RetryLater(text, ambiguous=ambiguous)
    return BadRequest(text)


@contextmanager
def translated(what: str, *, ambiguous: bool = False) -> Iterator[None]:
    """Raise what a Web API call inside the block fails with as a :mod:`bridge.errors` class.

    Args:
        what: The call, for messages (never a token).
        ambiguous: The call may have taken effect when no answer came (a post).

    Raises:
        bridge.errors.ChatError: see :func:`as_chat_error`; an unreachable Slack or a
            timeout is :class:`~bridge.errors.RetryLater` (``ambiguous`` as given).
    """
    try:
        yield
    except SlackApiError as exc:
        raise as_chat_error(what, exc, ambiguous=ambiguous) from None
    except (urllib.error.URLError, OSError, SlackClientError) as exc:
        raise RetryLater(f"{what}: Slack unreachable ({type(exc).__name__})",
                         ambiguous=ambiguous) from None
