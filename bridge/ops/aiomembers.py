"""The bench's members on asyncio: posting with aiohttp, listening with socket.io.

``bridge bench`` (Fabric) posts and listens on one asyncio loop of its own
(:class:`BenchLoop`, a thread of this process), not the dev guild's: every
member posts over one shared aiohttp connection pool (:class:`Crowd`) and
listens on a ``socketio.AsyncClient`` joined to every bench channel.
:func:`pace` starts the posts at the offered rate, many in flight at once.

The requests' shape is the REST client's (:func:`adapters.chat.fabric.rest.post_request`,
:func:`~adapters.chat.fabric.rest.auth_headers`) and the socket's is the
realtime client's (:mod:`adapters.chat.fabric.realtime`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import socketio

from adapters.chat.fabric.realtime import (
    JOIN_EVENT,
    NAMESPACE,
    TRANSPORTS,
    join_accepted,
    join_payload,
    socket_auth,
)
from adapters.chat.fabric.rest import (
    HTTP_TIMEOUT,
    FabricCenter,
    GuildAccess,
    GuildRequest,
    auth_headers,
    post_request,
)
from bridge.errors import ChatError

_T = TypeVar("_T")

#: Seconds allowed for a socket to connect, and for each channel's join.
SOCKET_TIMEOUT_S = 5.0
#: Channel joins a member has in flight at once (each waits at most SOCKET_TIMEOUT_S:
#: ten thousand at once could not all be answered in time).
JOINS_IN_FLIGHT = 100
#: HTTP status of a refused token (the member logs in again once).
UNAUTHORIZED = 401


async def pace(count: int, rate: float, post: Callable[[int], Awaitable[None]], limit: int, *,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Start ``post(i)`` for i in 0..count-1, the i-th ``i / rate`` seconds after the call.

    Posts run as tasks, at most ``limit`` at once: when none is free the next
    post waits for one and starts late, and those due meanwhile follow it at
    once (the schedule is not shifted). Returns when every post returned.

    Args:
        count: Posts to make.
        rate: Offered rate, posts per second (> 0).
        post: Makes post ``i``; it must handle its own errors (an exception
            is raised here only after every post ended).
        limit: Most posts in flight (>= 1).
        clock: Monotonic seconds.
        sleep: Waits the seconds given.
    """
    gate = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()
    start = clock()

    async def one(i: int) -> None:
        try:
            await post(i)
        finally:
            gate.release()

    for i in range(count):
        delay = start + i / rate - clock()
        if delay > 0:
            await sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(one(i))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)


class BenchLoop:
    """An asyncio loop running on a daemon thread of its own (``bench-loop``).

    Use it as a context manager; :meth:`run` runs a coroutine on it from any
    other thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-loop",
                                        daemon=True)

    @property
    def native_id(self) -> int | None:
        """The loop thread's id in the kernel (``/proc/self/task/<id>``), once started."""
        return self._thread.native_id

    def run(self, coro: Coroutine[Any, Any, _T], timeout_s: float | None = None) -> _T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        Raises:
            TimeoutError: when it takes longer than ``timeout_s`` seconds (it is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def __enter__(self) -> BenchLoop:
        """Start the loop's thread."""
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Cancel what still runs on the loop, stop it and join its thread (within ~2 s)."""
        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(TimeoutError):
                self.run(cancel_all(), timeout_s=1.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self.loop.close()


class AsyncMember:
    """A member who posts over the guild's REST API and listens on its socket.

    Every method runs on the loop the member was made on.

    Args:
        name: Seeded user name.
        center_url: Center base URL with ``/api``.
        api_key: The member's API key.
        http: The shared HTTP connection pool.
        space: The guild's node id.

    Attributes:
        events: ``(monotonic seconds, payload)`` of every ``message.created``
            the socket received, oldest first (the bench takes them from the left).
    """

    def __init__(self, name: str, center_url: str, api_key: str,
                 http: aiohttp.ClientSession, space: str = "dev") -> None:
        self.name = name
        self.center_url = center_url
        self.api_key = api_key
        self.http = http
        self.space = space
        self.events: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self.access: GuildAccess | None = None
        self._relogin = asyncio.Lock()
        self.socket = socketio.AsyncClient(reconnection=False, logger=False,
                                           engineio_logger=False)
        self.socket.on("message.created", self._created, namespace=NAMESPACE)

    def _created(self, payload: Any = None) -> None:
        if isinstance(payload, dict):
            self.events.append((time.monotonic(), payload))

    def _login(self) -> GuildAccess:
        """Log in (blocking: run it off the loop)."""
        access = FabricCenter(self.center_url).login(self.api_key).access(self.space)
        if access is None:
            raise ChatError(f"{self.name} is not in guild {self.space}")
        return access

    async def join(self, channel_ids: Iterable[str]) -> None:
        """Log in, connect the socket and join every channel's room.

        Raises:
            RuntimeError: when the login, the connect or a join fails.
        """
        try:
            self.access = await asyncio.to_thread(self._login)
        except ChatError as exc:
            raise RuntimeError(f"{self.name} could not log in ({exc})") from None
        try:
            await self.socket.connect(self.access.endpoint, auth=socket_auth(self.access.token),
                                      transports=list(TRANSPORTS), namespaces=[NAMESPACE],
                                      wait_timeout=SOCKET_TIMEOUT_S)
        except socketio.exceptions.ConnectionError as exc:
            raise RuntimeError(f"{self.name} could not connect its socket ({exc})") from None
        channels = list(channel_ids)
        room = asyncio.Semaphore(JOINS_IN_FLIGHT)

        async def join_one(channel_id: str) -> Any:
            async with room:
                return await self.socket.call(JOIN_EVENT, join_payload(channel_id),
                                              namespace=NAMESPACE, timeout=SOCKET_TIMEOUT_S)

        try:
            answers = await asyncio.gather(*(join_one(channel_id) for channel_id in channels))
        except socketio.exceptions.SocketIOError as exc:
            raise RuntimeError(f"{self.name} could not join the channels ({exc!r})") from None
        refused = [c for c, answer in zip(channels, answers, strict=True)
                   if not join_accepted(answer)]
        if refused:
            raise RuntimeError(f"{self.name} could not join channel {refused[0]}")

    async def post(self, channel_id: str, content: str,
                   wakeup_user_id: str | None = None) -> bool:
        """Post in a channel (after one new login when the token is refused).

        Returns:
            True when the guild created the message; False when it answered an
            error or could not be reached.
        """
        request = post_request(channel_id, content, wakeup_user_id)
        access = self.access
        if access is None:
            return False
        status = await self._send(request, access)
        if status == UNAUTHORIZED:
            fresh = await self._login_again(access)
            status = await self._send(request, fresh) if fresh is not None else 0
        return 200 <= status < 300

    async def _send(self, request: GuildRequest, access: GuildAccess) -> int:
        """Send ``request``; its HTTP status, 0 when no answer came."""
        try:
            async with self.http.request(request.method, request.url(access.endpoint),
                                         json=request.body,
                                         headers=auth_headers(access.token)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def _login_again(self, refused: GuildAccess) -> GuildAccess | None:
        """A new access after ``refused`` was refused (one login for all the posts that
        saw it refused); None when the login failed."""
        async with self._relogin:
            if self.access is refused:
                try:
                    self.access = await asyncio.to_thread(self._login)
                except ChatError:
                    return None
            return self.access

    async def close(self) -> None:
        """Disconnect the socket."""
        await self.socket.disconnect()


class Crowd:
    """The bench's members: one HTTP connection pool, one socket per member.

    Make it with :meth:`open` on the loop it will run on.

    Attributes:
        members: The members, in the order of the names given.
    """

    def __init__(self, http: aiohttp.ClientSession, members: list[AsyncMember]) -> None:
        self.http = http
        self.members = members

    @classmethod
    async def open(cls, center_url: str, keys: Mapping[str, str], channel_ids: list[str],
                   pool: int) -> Crowd:
        """Log the members in and join each to every channel.

        Args:
            center_url: Center base URL with ``/api``.
            keys: ``{member name: API key}``.
            channel_ids: Channels every member's socket joins.
            pool: Most HTTP connections open at once (all members together).

        Raises:
            RuntimeError: when a member cannot log in, connect or join.
        """
        timeout = aiohttp.ClientTimeout(sock_connect=HTTP_TIMEOUT[0], sock_read=HTTP_TIMEOUT[1])
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool),
                                     timeout=timeout)
        crowd = cls(http, [AsyncMember(name, center_url, key, http)
                           for name, key in keys.items()])
        try:
            await asyncio.gather(*(member.join(channel_ids) for member in crowd.members))
        except BaseException:
            await crowd.close()
            raise
        return crowd

    async def close(self) -> None:
        """Disconnect every socket and close the pool."""
        await asyncio.gather(*(member.close() for member in self.members),
                             return_exceptions=True)
        await self.http.close()
