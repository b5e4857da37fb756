"""Fabric message posts, edits and author lookups on the process's chat loop, with aiohttp.

A delivery posts an answer from a pool worker. With a ``requests`` session
each post cost about a millisecond of the interpreter's time (building the
request, reading proxy variables and ``~/.netrc``, ``http.client``'s
parsing): at 250 answers a second a quarter of the bridge's samples
(``README.md``). Here the post runs as a coroutine on the chat
:class:`~adapters.chat.ioloop.IoLoop` that already carries the Fabric
sockets, through one ``aiohttp.ClientSession`` per loop (a C HTTP parser,
pooled connections); the worker waits for its result as it waited for the
``requests`` call, so delivery's order, retries and "did it land?" checks
are unchanged.

Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
``NO_PROXY``) as for ``requests``, through its own
``requests.utils.get_environ_proxies``, once per guild endpoint: aiohttp's
``trust_env=True`` reads them, and ``~/.netrc``, again on a worker thread for
every request (8 % of the samples at 260 posts a second). Netrc is not read:
every call carries its guild token.

Author lookups (``GET /users/:id``, :func:`fetch_user`) run the same way, as
coroutines the intake's :class:`~adapters.chat.fabric.authors.AuthorBook`
starts without waiting: no thread of their own.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from typing import TYPE_CHECKING, Any

import requests.utils

from adapters.chat.fabric.rest import (
    HTTP_TIMEOUT,
    GuildAccess,
    GuildRequest,
    auth_headers,
    read_answer,
    read_user,
    user_request,
)
from adapters.chat.ioloop import IoLoop
from bridge.errors import BadRequest, NotFound, RetryLater

if TYPE_CHECKING:
    import aiohttp

#: Seconds a call may take in all (connect + read + margin): what a calling thread waits
#: for a post at most, and what an author lookup may take.
WAIT_S = HTTP_TIMEOUT[0] + HTTP_TIMEOUT[1] + 5.0

#: One client session per event loop, made on that loop at its first post.
_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _session() -> aiohttp.ClientSession:
    """The running loop's client session (called on the loop, so no lock is needed).

    aiohttp is imported here, not with the module: the bridge and its config
    checks load this module where only the dev guild's need for aiohttp is
    reported (``bridge.cli.compose.DevGuildMissing``).
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        # Seconds to connect and to wait for the answer's bytes, as the requests calls.
        timeout = aiohttp.ClientTimeout(total=None, connect=HTTP_TIMEOUT[0],
                                        sock_read=HTTP_TIMEOUT[1])
        session = _sessions[loop] = aiohttp.ClientSession(timeout=timeout)
    return session


@functools.lru_cache(maxsize=256)
def proxy_for(endpoint: str) -> str | None:
    """The proxy URL the environment gives for a guild endpoint, or None (no proxy,
    or the host is in ``NO_PROXY``); read once per endpoint."""
    scheme = urllib.parse.urlsplit(endpoint).scheme
    return requests.utils.get_environ_proxies(endpoint).get(scheme)


async def _send(access: GuildAccess, request: GuildRequest) -> Any:
    """Send ``request`` as ``access``; the answer's JSON body (None when empty).

    Raises:
        RetryLater: the guild was unreachable or slow (``ambiguous`` unless a
            ``GET``: it may have landed), or answered 429 / 5xx.
        ChatError: another non-2xx answer (typed by status), or a body that is
            not JSON.
    """
    import aiohttp

    try:
        async with _session().request(request.method, request.url(access.endpoint),
                                      json=request.body, proxy=proxy_for(access.endpoint),
                                      headers=auth_headers(access.token)) as response:
            raw = await response.read()
            code, retry_after = response.status, response.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryLater(f"{request.what}: guild unreachable ({type(exc).__name__})",
                         ambiguous=request.method != "GET") from None
    return read_answer(code, raw, retry_after, request.what)


async def fetch_user(access: GuildAccess, user_id: str) -> tuple[str, str] | None:
    """``GET /users/:id`` as ``access``, on the running loop.

    Returns:
        ``(display name, kind)`` (see :func:`adapters.chat.fabric.rest.read_user`);
        None for an unknown user.

    Raises:
        RetryLater: unreachable, slow (no whole answer within :data:`WAIT_S`
            seconds), 429 or 5xx.
        ChatError: another non-2xx answer (401 as ``Unauthorized``), or a body
            that is not JSON.
    """
    try:
        # The whole lookup is bounded (the client's timeouts bound each read only): the
        # intake holds the author's messages until it is told the outcome.
        async with asyncio.timeout(WAIT_S):
            data = await _send(access, user_request(user_id))
    except (NotFound, BadRequest):
        return None
    except TimeoutError:
        raise RetryLater(f"user: no answer within {WAIT_S:.0f} s") from None
    return read_user(data)


def send_on_loop(access: GuildAccess, request: GuildRequest, io: IoLoop | None = None) -> Any:
    """Send ``request`` on the chat loop and wait for its answer (a blocking call for
    the caller's thread, like a ``requests`` call).

    Args:
        access: The identity's access to the guild (endpoint and token).
        request: The call (:func:`adapters.chat.fabric.rest.post_request`).
        io: The loop to use; None: :meth:`IoLoop.shared`.

    Returns:
        The answer's JSON body, or None when it had none.

    Raises:
        RetryLater: unreachable, slow (``ambiguous``), 429 or 5xx.
        ChatError: another non-2xx answer, or a body that is not JSON.
        RuntimeError: called on the loop's own thread.
    """
    try:
        return (io or IoLoop.shared()).run(_send(access, request), WAIT_S)
    except TimeoutError:
        raise RetryLater(f"{request.what}: no answer within {WAIT_S:.0f} s",
                         ambiguous=True) from None
