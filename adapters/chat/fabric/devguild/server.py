"""The dev guild's servers: Center and Guild over HTTP, realtime over socket.io.

Two aiohttp apps (Center on ``center_port``, Guild plus socket.io on
``guild_port``) run on an asyncio loop in one daemon thread. REST handlers are
async and emit socket.io events on that same loop. The domain lives in
:class:`~adapters.chat.fabric.devguild.state.GuildState`; this module only translates.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import attrs
import socketio
from aiohttp import web
from socketio.exceptions import ConnectionRefusedError as SocketRefused

from adapters.chat.fabric import rules
from adapters.chat.fabric.devguild.seed import Seed
from adapters.chat.fabric.devguild.state import GuildError, GuildState, Posted, now_iso

log = logging.getLogger(__name__)

NS = rules.REALTIME_NAMESPACE
#: Server ping interval and timeout, in seconds (dead clients noticed within ~10 s).
PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 5.0
#: Most API calls :meth:`DevGuild.api_call_log` keeps (the oldest go first).
CALL_LOG_MAX = 200_000
_T = TypeVar("_T")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GuildError(400, "body must be JSON") from exc
    if not isinstance(data, dict):
        raise GuildError(400, "body must be a JSON object")
    return data


def _field(
    data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """Return ``data[key]`` checked against ``kind``; GuildError 400 otherwise."""
    if key not in data or data[key] is None:
        if default is ...:
            raise GuildError(400, f"missing field {key!r}")
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise GuildError(400, f"field {key!r} has the wrong type")
    return value


def _query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise GuildError(400, f"query parameter {key!r} must be an integer") from exc


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@attrs.frozen
class ApiCall:
    """One API call the guild counted (see :meth:`DevGuild.api_call_log`).

    Attributes:
        at: ``time.monotonic()`` when the guild received it, seconds.
        kind: ``post``, ``edit``, ``presence`` or ``channels``.
        user: The caller's seeded name (its id for users created later).
        channel_id: The channel a post or an edit addressed; empty for the others.
    """

    at: float
    kind: str
    user: str
    channel_id: str


class DevGuild:
    """A local Fabric (Center + one Guild) for development and tests.

    Attributes:
        state: The in-memory guild (tests may read messages from it).
        center_url: Center base URL with ``/api``, e.g. ``http://127.0.0.1:7001/api``
            (the actual port after :meth:`start`).
        guild_url: The guild's endpoint without ``/api``, e.g. ``http://127.0.0.1:7002``.
        host: The interface both servers listen on.
        sio: The python-socketio ``AsyncServer`` (namespace ``/realtime``).

    Tokens are opaque random strings (real Fabric issues JWTs; clients must not
    look inside either). The ``/api/_dev/*`` fault switches are unauthenticated
    and exist only here, never on a real guild. ``center_url`` and ``guild_url``
    are empty until :meth:`start`; a stopped guild cannot be started again.
    """

    def __init__(
        self,
        seed: Seed,
        host: str = "127.0.0.1",
        center_port: int = 0,
        guild_port: int = 0,
        token_ttl_s: float = rules.GUILD_TOKEN_TTL_S,
        content_limit: int = rules.CONTENT_LIMIT,
    ) -> None:
        """Prepare the guild; nothing listens until :meth:`start`.

        Args:
            seed: Users and channels to start with.
            host: Interface to listen on.
            center_port: Center port; 0 lets the OS choose.
            guild_port: Guild port; 0 lets the OS choose.
            token_ttl_s: Lifetime of access and guild tokens, in seconds.
            content_limit: Most characters a posted content may hold.

        Raises:
            ValueError: If the seed is inconsistent.
        """
        self.state = GuildState(seed, token_ttl_s=token_ttl_s, content_limit=content_limit)
        self.host = host
        self._ports = (center_port, guild_port)
        self.center_url = ""
        self.guild_url = ""
        self._faults = threading.Lock()
        self._call_log: collections.deque[ApiCall] = collections.deque(maxlen=CALL_LOG_MAX)
        self._delay_s = 0.0
        self._lookup_status: int | None = None
        self._lookup_held: set[str] = set()
        self._fail: tuple[int, int, float | None, str | None, bool] = (0, 500, None, None, False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._transports: set[asyncio.Transport] = set()
        self._sid_user: dict[str, str] = {}
        self._silenced: set[str] = set()
        self._user_names = {user.id: user.name for user in seed.users}
        self._api_calls: dict[tuple[str, str], int] = {}
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)
        self.sio.on("join_channel", self._on_join, namespace=NS)
        self.sio.on("leave_channel", self._on_leave, namespace=NS)

    # -- names ---------------------------------------------------------------

    def user_id(self, name: str) -> str:
        """Return a user's id by name; KeyError if unknown."""
        return self.state.user_id(name)

    def channel_id(self, name: str) -> str:
        """Return a channel's id by name; KeyError if unknown."""
        return self.state.channel_id(name)

    def api_key(self, name: str) -> str:
        """Return a user's API key by name; KeyError if unknown."""
        return self.state.api_key(name)

    def api_calls(self) -> dict[tuple[str, str], int]:
        """Return a copy of the API call counters (for benchmarks).

        Returns:
            ``{(kind, user name): count}`` where kind is ``"post"`` (``POST
            /channels/:id/messages``), ``"edit"`` (``PATCH .../messages/:id``),
            ``"presence"`` (``PUT /agents/:id/presence``) or ``"channels"``
            (``GET /channels``, the channel list); every authenticated
            call counts, failed ones included. The user is
            the caller's seeded name (its id for users created later).
        """
        with self._faults:
            return dict(self._api_calls)

    def api_call_log(self) -> list[ApiCall]:
        """The counted API calls one by one, oldest first (at most :data:`CALL_LOG_MAX`).

        Returns:
            One :class:`ApiCall` per call counted by :meth:`api_calls`, with the
            time the guild received it (``time.monotonic()``, the same clock as
            other processes' on this machine) and the channel it addressed.
        """
        with self._faults:
            return list(self._call_log)

    def _count_call(self, kind: str, caller: str, channel_id: str = "") -> None:
        key = (kind, self._user_names.get(caller, caller))
        with self._faults:
            self._api_calls[key] = self._api_calls.get(key, 0) + 1
            self._call_log.append(ApiCall(time.monotonic(), kind, key[1], channel_id))

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start both servers on a daemon thread; return once both ports listen.

        Raises:
            OSError: Naming ``host:port`` when a port cannot be bound.
            RuntimeError: If already started.
        """
        if self._thread is not None:
            raise RuntimeError("devguild already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="devguild", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close every socket and the loop, joining the thread (within ~2 s); idempotent."""
        with self._faults:
            self._lookup_held.clear()  # held lookups answer, so their handlers end
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._astop(), loop)
            try:
                future.result(timeout=1.5)
            except Exception:
                log.warning("devguild: unclean shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()
        self._loop = None

    def __enter__(self) -> DevGuild:
        """Start the guild and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the guild."""
        self.stop()

    async def _listen(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, self.host, port).start()
        except OSError as exc:
            raise OSError(
                exc.errno, f"devguild cannot listen on {self.host}:{port}: {exc.strerror}"
            ) from exc
        return int(runner.addresses[0][1])

    async def _astart(self) -> None:
        center = web.Application(middlewares=[self._api_errors])
        center.add_routes(self._center_routes())
        guild = web.Application(middlewares=[self._track_websockets, self._api_errors, self._delay])
        guild.add_routes(self._guild_routes())
        self.sio.attach(guild)
        center_port = await self._listen(center, self._ports[0])
        guild_port = await self._listen(guild, self._ports[1])
        self.center_url = f"http://{self.host}:{center_port}/api"
        self.guild_url = f"http://{self.host}:{guild_port}"
        self.state.endpoint = self.guild_url

    async def _astop(self) -> None:
        self._abort_websockets()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- fault switches ------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("devguild is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=5)

    def drop_sockets(self) -> int:
        """Abruptly close every socket.io connection, as a network drop would.

        The TCP transport under each websocket is aborted (no socket.io or
        Engine.IO close packet is sent). A python-socketio 5.18 client's read
        loop then fails, Engine.IO reports a transport error, and the client
        fires its ``disconnect`` handler with reason ``"transport error"``
        while it still counts as connected, so its built-in reconnection (if
        enabled) starts; ``connect_error`` does not fire. Non-websocket
        (polling) sessions, if any, are closed by Engine.IO instead.

        Returns:
            How many connections were closed.

        Raises:
            RuntimeError: If the guild is not running.
        """
        return self._call(self._drop_sockets())

    async def _drop_sockets(self) -> int:
        dropped = self._abort_websockets()
        for eio_sid in list(self.sio.eio.sockets):
            socket = self.sio.eio.sockets.get(eio_sid)
            if socket is not None and not socket.upgraded:
                await self.sio.eio.disconnect(eio_sid)
                dropped += 1
        return dropped

    def _abort_websockets(self) -> int:
        transports = list(self._transports)
        self._transports.clear()
        for transport in transports:
            transport.abort()
        return len(transports)

    def redeliver(self, channel_id: str, seq: int) -> int:
        """Send ``message.created`` for an old message again (at-least-once delivery).

        Each socket in the channel gets the payload it would have got at the
        time (wakeup computed for its user).

        Returns:
            How many sockets it was sent to.

        Raises:
            KeyError: when the channel has no message with that seq.
        """
        found = [m for m in self.state.messages(channel_id) if m["seq"] == seq]
        if not found:
            raise KeyError(f"no message with seq {seq} in channel {channel_id}")
        posted = Posted(found[0], self.state.x_type(channel_id), frozenset(), None)
        return self._call(self._emit_created(posted))

    def emit_raw(self, channel_id: str, event: str, payload: Any) -> int:
        """Emit any event with any payload to the sockets joined to a channel.

        For tests of hostile or malformed input; the payload is sent as given.

        Returns:
            How many sockets it was sent to.
        """
        return self._call(self._emit_raw(channel_id, event, payload))

    async def _emit_raw(self, channel_id: str, event: str, payload: Any) -> int:
        sids = self._sids_in(f"channel:{channel_id}")
        for sid in sids:
            await self.sio.emit(event, payload, to=sid, namespace=NS)
        return len(sids)

    def silence_sockets(self, user_id: str | None = None) -> int:
        """Stop emitting events to the connected sockets, keeping them open.

        The sockets stay connected and keep answering Engine.IO pings, so the
        clients believe all is well, but no event reaches them any more (a
        known failure of long-lived chat sockets). Sockets that connect later
        are not silenced, so a reconnect cures it.

        Args:
            user_id: Only this user's sockets (None: every socket).

        Returns:
            How many sockets were silenced.
        """
        with self._faults:
            chosen = {sid for sid, uid in self._sid_user.items()
                      if user_id is None or uid == user_id}
            self._silenced |= chosen
        return len(chosen)

    def _audible(self, sids: list[str]) -> list[str]:
        with self._faults:
            return [sid for sid in sids if sid not in self._silenced]

    def expire_tokens(self) -> None:
        """Invalidate every issued token (401s, socket connects refused).

        Sockets already connected stay connected.
        """
        self.state.expire_tokens()

    def set_token_ttl(self, seconds: float) -> None:
        """Set the lifetime of tokens issued from now on, in seconds.

        Raises:
            ValueError: If negative.
        """
        self.state.set_token_ttl(seconds)

    def fail_next_posts(
        self, count: int, status: int = 500, retry_after_s: float | None = None,
        *, user_id: str | None = None, landed: bool = False,
    ) -> None:
        """Make the next ``count`` message posts answer ``status``.

        When ``retry_after_s`` is given the answer carries ``Retry-After`` in
        whole seconds, rounded up (meant for 429 and 503).

        Args:
            count: How many posts fail.
            status: HTTP status to answer (400-599).
            retry_after_s: Retry-After to send, in seconds.
            user_id: Only posts by this user fail (None: any author).
            landed: When True the post is stored and announced but the answer
                is still the failure (an answer lost after the write), which a
                client must not answer with a duplicate post.

        Raises:
            ValueError: On a negative count or a status outside 400-599.
        """
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status 400-599")
        with self._faults:
            self._fail = (count, status, retry_after_s, user_id, landed)

    def fail_user_lookups(self, status: int | None) -> None:
        """Make every ``GET /users/:id`` answer ``status`` (None: answer normally).

        Args:
            status: The HTTP status every user lookup answers from now on
                (400-599), or None to answer lookups normally again.

        Raises:
            ValueError: On a status outside 400-599.
        """
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be 400-599")
        with self._faults:
            self._lookup_status = status

    def hold_user_lookups(self, user_id: str, held: bool = True) -> None:
        """Keep lookups of one user unanswered until released (``held=False``).

        A lookup already waiting answers as soon as it is released.

        Args:
            user_id: The user whose ``GET /users/:id`` lookups are held.
            held: True to hold them, False to release them.
        """
        with self._faults:
            if held:
                self._lookup_held.add(user_id)
            else:
                self._lookup_held.discard(user_id)

    def set_delay(self, seconds: float) -> None:
        """Delay every guild REST answer (not the ``_dev`` switches) by ``seconds``.

        Raises:
            ValueError: If negative.
        """
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._faults:
            self._delay_s = seconds

    def _take_failure(self, caller: str) -> tuple[web.Response, bool] | None:
        """The injected failure for this post, and whether the post still lands."""
        with self._faults:
            count, status, retry_after, user_id, landed = self._fail
            if count <= 0 or (user_id is not None and user_id != caller):
                return None
            self._fail = (count - 1, status, retry_after, user_id, landed)
        headers = None if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        return _error(status, "injected failure", headers), landed

    # -- middlewares ---------------------------------------------------------

    @web.middleware
    async def _api_errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            return await handler(request)
        except GuildError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except ConnectionResetError:
            log.debug("devguild: client went away during %s %s", request.method, request.path)
            return _error(400, "connection lost")
        except Exception:
            log.exception("devguild: error in %s %s", request.method, request.path)
            return _error(500, "internal error")

    @web.middleware
    async def _delay(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and not request.path.startswith("/api/_dev/"):
            with self._faults:
                delay = self._delay_s
            if delay:
                await asyncio.sleep(delay)
        return await handler(request)

    @web.middleware
    async def _track_websockets(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        transport = request.transport
        if request.headers.get("Upgrade", "").lower() != "websocket" or transport is None:
            return await handler(request)
        self._transports.add(transport)
        try:
            return await handler(request)
        finally:
            self._transports.discard(transport)

    # -- Center --------------------------------------------------------------

    def _center_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/auth/agent/login", self._login),
            web.get("/api/auth/me/guilds", self._my_guilds),
            web.post("/api/auth/refresh", self._refresh),
        ]

    async def _login(self, request: web.Request) -> web.Response:
        api_key = _field(await _body(request), "apiKey", str)
        return web.json_response(self.state.login(api_key))

    async def _my_guilds(self, request: web.Request) -> web.Response:
        user_id = self.state.authenticate(_bearer(request), "access")
        return web.json_response(self.state.my_guilds(user_id))

    async def _refresh(self, request: web.Request) -> web.Response:
        token = _field(await _body(request), "refreshToken", str)
        return web.json_response(self.state.refresh(token))

    # -- Guild ---------------------------------------------------------------

    def _guild_routes(self) -> list[web.RouteDef]:
        ch = "/api/channels/{cid}"
        return [
            web.get("/api/channels", self._list_channels),
            web.post("/api/channels", self._create_channel),
            web.get(ch + "/members", self._members),
            web.post(ch + "/members", self._add_member),
            web.delete(ch + "/members/{uid}", self._remove_member),
            web.get(ch + "/messages", self._history),
            web.post(ch + "/messages", self._post),
            web.patch(ch + "/messages/{mid}", self._edit),
            web.delete(ch + "/messages/{mid}", self._delete),
            web.post(ch + "/close", self._close),
            web.put("/api/agents/{uid}/presence", self._presence),
            web.get("/api/users", self._users),
            web.get("/api/users/{uid}", self._user),
            web.post("/api/_dev/drop-sockets", self._dev_drop),
            web.post("/api/_dev/expire-tokens", self._dev_expire),
            web.post("/api/_dev/token-ttl", self._dev_ttl),
            web.post("/api/_dev/fail-posts", self._dev_fail),
            web.post("/api/_dev/delay", self._dev_delay),
            web.post("/api/_dev/silence-sockets", self._dev_silence),
        ]

    def _caller(self, request: web.Request) -> str:
        return self.state.authenticate(_bearer(request), "guild")

    async def _list_channels(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        guild_id = request.query.get("guildId")
        if not guild_id:
            raise GuildError(400, "missing query parameter 'guildId'")
        self._count_call("channels", caller)
        return web.json_response(self.state.list_channels(caller, guild_id))

    async def _create_channel(self, request: web.Request) -> web.Response:
        """``POST /channels`` (path *inferred*); ``wakeUserIds`` is an *inferred* extra."""
        caller = self._caller(request)
        data = await _body(request)
        members = _field(data, "memberUserIds", list, [])
        wake = _field(data, "wakeUserIds", list, [])
        if not all(isinstance(m, str) for m in [*members, *wake]):
            raise GuildError(400, "user id lists must hold strings")
        channel, member_ids = self.state.create_channel(
            caller,
            guild_id=_field(data, "guildId", str),
            name=_field(data, "name", str),
            x_type=_field(data, "xType", str),
            is_public=_field(data, "isPublic", bool, False),
            member_ids=members,
            purpose=_field(data, "purpose", str, ""),
            wake_ids=wake,
        )
        for user_id in member_ids:
            await self._emit_membership("channel.joined", channel["id"], user_id)
        return web.json_response(channel, status=201)

    async def _members(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        return web.json_response(self.state.members(caller, request.match_info["cid"]))

    async def _add_member(self, request: web.Request) -> web.Response:
        """``POST /channels/:id/members {userId}`` (*inferred*); emits ``channel.joined``."""
        caller = self._caller(request)
        cid = request.match_info["cid"]
        user_id = _field(await _body(request), "userId", str)
        if self.state.add_member(caller, cid, user_id):
            await self._emit_membership("channel.joined", cid, user_id)
        return web.json_response({"userId": user_id, "bypass": False})

    async def _remove_member(self, request: web.Request) -> web.Response:
        """``DELETE /channels/:id/members/:userId`` (*inferred*); emits ``channel.left``."""
        caller = self._caller(request)
        cid, user_id = request.match_info["cid"], request.match_info["uid"]
        if self.state.remove_member(caller, cid, user_id):
            await self._emit_membership("channel.left", cid, user_id)
            for sid in self._sids_in(f"user:{user_id}"):
                await self.sio.leave_room(sid, f"channel:{cid}", namespace=NS)
        return web.Response(status=204)

    async def _history(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        page = self.state.history(
            caller,
            request.match_info["cid"],
            seq_from=_query_int(request, "seqFrom"),
            seq_to=_query_int(request, "seqTo"),
            limit=_query_int(request, "limit"),
        )
        return web.json_response(page)

    async def _post(self, request: web.Request) -> web.Response:
        """``POST /channels/:id/messages {content, wakeupUserId?, nonce?}``; the
        nonce (*inferred*, :data:`rules.MESSAGE_NONCE_FIELD`) is stored and returned."""
        caller = self._caller(request)
        self._count_call("post", caller, request.match_info["cid"])
        failure = self._take_failure(caller)
        if failure is not None and not failure[1]:
            return failure[0]
        data = await _body(request)
        posted = self.state.post(
            caller,
            request.match_info["cid"],
            _field(data, "content", str),
            _field(data, "wakeupUserId", str, None),
            _field(data, rules.MESSAGE_NONCE_FIELD, str, None),
        )
        await self._emit_created(posted)
        if failure is not None:
            return failure[0]
        return web.json_response(posted.message, status=201)

    async def _edit(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        self._count_call("edit", caller, request.match_info["cid"])
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        content = _field(await _body(request), "content", str)
        message = self.state.edit(caller, cid, mid, content)
        await self.sio.emit("message.updated", message, to=f"channel:{cid}", namespace=NS)
        return web.json_response(message)

    async def _delete(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        message = self.state.delete(caller, cid, mid)
        await self.sio.emit("message.deleted", message, to=f"channel:{cid}", namespace=NS)
        return web.Response(status=204)

    async def _close(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        return web.json_response(self.state.close(caller, request.match_info["cid"]))

    async def _presence(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        self._count_call("presence", caller)
        status = _field(await _body(request), "status", str)
        self.state.set_presence(caller, request.match_info["uid"], status)
        return web.Response(status=204)

    async def _users(self, request: web.Request) -> web.Response:
        """``GET /api/users`` (*inferred*): ``[{"id", "name", "kind"}]``."""
        self._caller(request)
        return web.json_response(self.state.users())

    async def _user(self, request: web.Request) -> web.Response:
        """``GET /api/users/:id`` (*inferred*): ``{"id", "name", "kind"}``."""
        self._caller(request)
        user_id = request.match_info["uid"]
        while True:
            with self._faults:
                status, held = self._lookup_status, user_id in self._lookup_held
            if not held:
                break
            await asyncio.sleep(0.02)
        if status is not None:
            return _error(status, "user lookup failed (dev guild fault)")
        return web.json_response(self.state.user(user_id))

    # -- dev switches (unauthenticated; the dev guild only) -------------------

    async def _dev_drop(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": await self._drop_sockets()})

    async def _dev_expire(self, request: web.Request) -> web.Response:
        self.expire_tokens()
        return web.json_response({})

    async def _dev_ttl(self, request: web.Request) -> web.Response:
        seconds = float(_field(await _body(request), "seconds", (int, float)))
        if seconds < 0:
            raise GuildError(400, "seconds must be >= 0")
        self.set_token_ttl(seconds)
        return web.json_response({})

    async def _dev_fail(self, request: web.Request) -> web.Response:
        data = await _body(request)
        retry_after = _field(data, "retryAfter", (int, float), None)
        try:
            self.fail_next_posts(
                _field(data, "count", int),
                _field(data, "status", int, 500),
                None if retry_after is None else float(retry_after),
            )
        except ValueError as exc:
            raise GuildError(400, str(exc)) from exc
        return web.json_response({})

    async def _dev_silence(self, request: web.Request) -> web.Response:
        user_id = _field(await _body(request), "userId", str, None)
        return web.json_response({"silenced": self.silence_sockets(user_id)})

    async def _dev_delay(self, request: web.Request) -> web.Response:
        seconds = float(_field(await _body(request), "seconds", (int, float)))
        if seconds < 0:
            raise GuildError(400, "seconds must be >= 0")
        self.set_delay(seconds)
        return web.json_response({})

    # -- realtime ------------------------------------------------------------

    def _sids_in(self, room: str) -> list[str]:
        """The sockets in a room that events reach (silenced ones left out)."""
        return self._audible([sid for sid, _ in self.sio.manager.get_participants(NS, room)])

    async def _emit_created(self, posted: Posted) -> int:
        sent = 0
        for sid in self._sids_in(f"channel:{posted.message['channelId']}"):
            user_id = self._sid_user.get(sid)
            if user_id is not None:
                payload = posted.event_for(user_id)
                await self.sio.emit("message.created", payload, to=sid, namespace=NS)
                sent += 1
        return sent

    async def _emit_membership(self, event: str, channel_id: str, user_id: str) -> None:
        payload = {
            "channelId": channel_id,
            "userId": user_id,
            "xType": self.state.x_type(channel_id),
            "occurredAt": now_iso(),
        }
        for sid in self._sids_in(f"user:{user_id}"):
            await self.sio.emit(event, payload, to=sid, namespace=NS)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            user_id = self.state.authenticate(token if isinstance(token, str) else None, "guild")
        except GuildError as exc:
            raise SocketRefused(exc.message) from None
        self._sid_user[sid] = user_id
        await self.sio.enter_room(sid, f"user:{user_id}", namespace=NS)

    async def _on_disconnect(self, sid: str, *_: Any) -> None:
        self._sid_user.pop(sid, None)
        with self._faults:
            self._silenced.discard(sid)

    @staticmethod
    def _channel_arg(data: Any) -> str | None:
        channel_id = data.get("channelId") if isinstance(data, dict) else None
        return channel_id if isinstance(channel_id, str) else None

    async def _on_join(self, sid: str, data: Any = None, *_: Any) -> dict[str, bool]:
        """``join_channel``: members and anyone for a public channel (which makes
        them a member, emitting ``channel.joined``); otherwise ignored."""
        channel_id = self._channel_arg(data)
        user_id = self._sid_user.get(sid)
        if channel_id is None or user_id is None:
            return {"ok": False}
        allowed, became_member = self.state.join(user_id, channel_id)
        if allowed:
            await self.sio.enter_room(sid, f"channel:{channel_id}", namespace=NS)
        if became_member:
            await self._emit_membership("channel.joined", channel_id, user_id)
        return {"ok": allowed}

    async def _on_leave(self, sid: str, data: Any = None, *_: Any) -> dict[str, bool]:
        """``leave_channel``: stop receiving a channel's events (membership stays)."""
        channel_id = self._channel_arg(data)
        if channel_id is None or sid not in self._sid_user:
            return {"ok": False}
        await self.sio.leave_room(sid, f"channel:{channel_id}", namespace=NS)
        return {"ok": True}
