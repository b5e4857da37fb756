"""lark-oapi's client as the bridge uses it, and Feishu/Lark's errors as the chat port's.

Every call goes through lark-oapi's :class:`lark_oapi.Client` (``domain`` is the
``[platforms.lark] domain``), which gets the app's tenant token from its own
process-wide cache (``TokenManager``, key ``self_tenant_token:{app_id}``, kept
until 10 minutes before the ``expire`` the token endpoint gave). lark-oapi
retries nothing (no 429 retry, no token refresh), so :class:`LarkApi` adds:

- **Evict and retry once** on ``99991663``/``99991661``/``99991664`` (the token
  expired or is unknown): the cached token is dropped and the call made again,
  so a token that expires early (two hours, or revoked) is never visible to
  members (open.feishu.cn docs "access token" FAQ; the reports this guards
  against: multica-ai/multica#7611, chenhg5/cc-connect#401).
- **Rate limits**: an HTTP 429 (or code ``99991400``) is
  :class:`~bridge.errors.RetryLater` with the delay from
  ``x-ogw-ratelimit-reset`` (seconds; docs "api-call-guide/frequency-control"),
  which pauses the app's outbound budget; ``230020`` (one chat's limit) is a
  :class:`~bridge.errors.RetryLater` without a delay: that conversation's
  backoff waits, the app's other chats go on.

What still fails is raised as a :mod:`bridge.errors` class by :func:`as_chat_error`
following the error table in the protocol note (docs "server error codes").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lark_oapi as lark
import requests
from lark_oapi.core.enum import AccessTokenType, HttpMethod
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.model import BaseRequest, RequestOption
from lark_oapi.core.token.manager import TokenManager

from bridge.errors import (
    BadRequest,
    ChatError,
    Forbidden,
    NotFound,
    RetryLater,
    TooLarge,
    Unauthorized,
)

log = logging.getLogger(__name__)

#: Seconds a call may take before it counts as failed.
TIMEOUT_S = 10.0
#: The token is expired, unknown or invalid: evict it and call again once.
TOKEN_ERRORS = frozenset({99991661, 99991663, 99991664, 99991668})
#: Rate limited (docs "frequency control": HTTP 429 with code 99991400).
RATE_ERRORS = frozenset({99991400})
#: One chat's send (or one message's edit) limit, about 5 a second shared by the
#: chat's bots (docs im-v1/message/create): a retry of that call only, without a
#: retry-after that would pause the app.
CHAT_RATE_ERRORS = frozenset({230020})
#: The app lacks a permission; the message carries the console URL that grants it.
SCOPE_ERRORS = frozenset({99991672, 99991679})
#: Characters of a missing permission's message kept (its grant URL comes last).
MAX_SCOPE_MSG_CHARS = 4000
#: The chat or message is gone, or the bot is not in the chat (docs im-v1 error codes).
GONE_ERRORS = frozenset({230002, 230011, 230003, 231003, 234003, 99992402})
#: The bot may not do this there (not its message, chat muted, no right to post).
FORBIDDEN_ERRORS = frozenset({230006, 230013, 230017, 230018, 230026, 230027, 230028,
                              230049, 232010})
#: The content or card is too long.
TOO_LONG_ERRORS = frozenset({230025, 230099, 234006, 234037})
#: Server-side failures worth another try.
SERVER_ERRORS = frozenset({1, 99991401, 230052})


class Refusal(BadRequest):
    """A refusal whose code the caller asked to handle itself (``expect`` of
    :meth:`LarkApi.call`), e.g. CardKit's ``300317`` (sequence out of order).

    Attributes:
        code: Feishu/Lark's error code.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def token_cache_key(app_id: str) -> str:
    """lark-oapi's cache key of an app's tenant token (lark_oapi/core/token/manager.py)."""
    return f"self_tenant_token:{app_id}"


def evict_token(app_id: str) -> None:
    """Drop the app's cached tenant token (the next call fetches a fresh one).

    ``LocalCache.set`` with an expiry in the past is its only way to forget a key;
    ``get`` then treats it as missing.
    """
    TokenManager.cache.set(token_cache_key(app_id), "", 0)


def lark_client(domain: str, app_id: str, app_secret: str) -> lark.Client:
    """A lark-oapi REST client for one app.

    Args:
        domain: The open platform origin, no trailing ``/`` (``https://open.feishu.cn``).
        app_id: The app id (``cli_…``).
        app_secret: The app secret (never logged).
    """
    return (lark.Client.builder().app_id(app_id).app_secret(app_secret).domain(domain)
            .timeout(TIMEOUT_S).log_level(lark.LogLevel.WARNING).build())


def as_chat_error(what: str, status: int, code: int, msg: str, headers: Mapping[str, str],
                  *, ambiguous: bool = False) -> ChatError:
    """The :mod:`bridge.errors` class of a refused call.

    Args:
        what: The call, for the message (e.g. ``send to oc_1``); never a secret.
        status: The HTTP status.
        code: Feishu/Lark's ``code`` (0 when the body had none).
        msg: Its ``msg`` (for a missing permission it holds the grant URL).
        headers: The response headers (``x-ogw-ratelimit-reset``).
        ambiguous: The call may have taken effect when the failure is on the server's side.
    """
    # A missing permission's msg keeps its grant URL whole (it ends the msg, and with
    # two scopes or more it is past 300 characters): :func:`grant_url` reads it.
    shown = msg[:MAX_SCOPE_MSG_CHARS] if code in SCOPE_ERRORS else msg[:300]
    text = f"{what}: Feishu/Lark answered code {code} (HTTP {status}): {shown}"
    if code in CHAT_RATE_ERRORS:
        return RetryLater(text)
    if status == 429 or code in RATE_ERRORS:
        reset = {k.lower(): v for k, v in headers.items()}.get("x-ogw-ratelimit-reset", "")
        try:
            delay: float | None = max(0.0, float(reset))
        except ValueError:
            delay = None
        return RetryLater(text, delay if delay is not None else 1.0)
    if code in TOKEN_ERRORS:
        return Unauthorized(text)
    if code in SCOPE_ERRORS:
        return Forbidden(text)
    if code in GONE_ERRORS or status == 404:
        return NotFound(text)
    if code in FORBIDDEN_ERRORS or status == 403:
        return Forbidden(text)
    if code in TOO_LONG_ERRORS:
        return TooLarge(text)
    if status >= 500 or code in SERVER_ERRORS:
        return RetryLater(text, ambiguous=ambiguous)
    return BadRequest(text)


def grant_url(error: ChatError) -> str:
    """The console URL in a missing-permission error's message, or empty.

    Feishu/Lark names the permission to grant in the ``msg`` of ``99991672``:
    ``…https://open.feishu.cn/app/<app id>/auth?q=<scopes>&op_from=openapi&token_type=tenant``
    (reported: m1heng/clawdbot-feishu#149). ``<scopes>`` is a comma-separated list, so
    a comma ends the URL only where it ends the text.
    """
    text = str(error)
    start = text.find("http")
    if start < 0 or "/auth?" not in text[start:]:
        return ""
    end = start
    while end < len(text) and not text[end].isspace() and text[end].isascii() \
            and text[end] not in "\"'()[]<>":
        end += 1
    return text[start:end].rstrip(".,;")


class LarkApi:
    """The REST calls of one app (thread-safe: lark-oapi keeps no per-call state).

    Args:
        domain: The open platform origin (no trailing ``/``).
        app_id: The app id.
        app_secret: The app secret (never logged).
    """

    def __init__(self, domain: str, app_id: str, app_secret: str) -> None:
        self.domain = domain
        self.app_id = app_id
        self.client = lark_client(domain, app_id, app_secret)

    def call(self, method: str, uri: str, *, what: str, paths: Mapping[str, str] | None = None,
             query: Sequence[tuple[str, str]] = (), body: object = None,
             ambiguous: bool = False, token: bool = True,
             expect: frozenset[int] = frozenset()) -> dict[str, Any]:
        """One JSON call; return its ``data`` (or the whole body when it has none).

        Args:
            method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
            uri: The path, e.g. ``/open-apis/im/v1/messages/:message_id/reply``.
            what: The call for messages (never a secret).
            paths: Values of the path's ``:name`` parts.
            query: Query parameters.
            body: The JSON body.
            ambiguous: The call may take effect even when no answer comes (a send).
            token: Send the tenant token (every call but the token endpoint's).
            expect: Codes raised as :class:`Refusal` (the caller handles them).

        Raises:
            bridge.errors.ChatError: as :func:`as_chat_error` says; an unreachable
                platform is :class:`~bridge.errors.RetryLater` (``ambiguous`` as given);
                a token refused again after a fresh one is :class:`~bridge.errors.Unauthorized`.
        """
        for attempt in (1, 2):
            request = (BaseRequest.builder().http_method(HttpMethod[method]).uri(uri)
                       .paths(dict(paths or {})).queries(list(query))
                       .token_types({AccessTokenType.TENANT} if token else set())
                       .body(body).build())
            try:
                response = self.client.request(request, RequestOption())
            except ObtainAccessTokenException as exc:
                raise Unauthorized(f"{what}: the app's tenant token was refused "
                                   f"(code {exc.code}: {exc.msg})") from None
            except (requests.RequestException, OSError) as exc:
                raise RetryLater(f"{what}: Feishu/Lark unreachable ({type(exc).__name__})",
                                 ambiguous=ambiguous) from None
            except ValueError:  # the SDK parses a token reply that is not JSON (a 502 page)
                raise RetryLater(f"{what}: Feishu/Lark answered something that is not JSON",
                                 ambiguous=ambiguous) from None
            raw = response.raw
            status = int(raw.status_code or 0) if raw is not None else 0
            headers = dict(raw.headers or {}) if raw is not None else {}
            body_json = _json(raw.content if raw is not None else None)
            code = response.code if response.code is not None else int(
                body_json.get("code", 0) or 0)
            if status < 400 and code == 0:
                data = body_json.get("data")
                return data if isinstance(data, dict) else body_json
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("lark %s: %s: the tenant token was refused (code %d); fetching a "
                         "fresh one and calling again", self.app_id, what, code)
                evict_token(self.app_id)
                continue
            msg = str(response.msg or body_json.get("msg") or "")
            if code in expect:
                raise Refusal(f"{what}: Feishu/Lark answered code {code}: {msg[:300]}", code)
            raise as_chat_error(what, status, code, msg, headers, ambiguous=ambiguous)
        raise AssertionError("unreachable")  # pragma: no cover

    def typed(self, call: Any, request: Any, *, what: str, ambiguous: bool = False) -> Any:
        """A typed lark-oapi call (``client.im.v1.file.create``...), checked as :meth:`call` does.

        Args:
            call: The bound SDK method taking ``request``.
            request: Its request object (built fresh by the caller for each try).
            what: The call for messages.
            ambiguous: The call may take effect even when no answer comes.

        Returns:
            The SDK's response (``.data`` holds the result; a download's ``.file``).

        Raises:
            bridge.errors.ChatError: as :meth:`call`.
        """
        for attempt in (1, 2):
            try:
                response = call(request)
            except ObtainAccessTokenException as exc:
                raise Unauthorized(f"{what}: the app's tenant token was refused "
                                   f"(code {exc.code}: {exc.msg})") from None
            except (requests.RequestException, OSError) as exc:
                raise RetryLater(f"{what}: Feishu/Lark unreachable ({type(exc).__name__})",
                                 ambiguous=ambiguous) from None
            except json.JSONDecodeError:
                raise RetryLater(f"{what}: Feishu/Lark answered something that is not JSON",
                                 ambiguous=ambiguous) from None
            raw = response.raw
            status = int(raw.status_code or 0) if raw is not None else 0
            code = int(response.code or 0)
            if status < 400 and code == 0:
                return response
            if code in TOKEN_ERRORS and attempt == 1:
                evict_token(self.app_id)
                continue
            headers = dict(raw.headers or {}) if raw is not None else {}
            raise as_chat_error(what, status, code, str(response.msg or ""), headers,
                                ambiguous=ambiguous)
        raise AssertionError("unreachable")  # pragma: no cover


def _json(content: bytes | None) -> dict[str, Any]:
    """A response body as a dict ({} when it is not a JSON object)."""
    if not content:
        return {}
    try:
        found = json.loads(content)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
