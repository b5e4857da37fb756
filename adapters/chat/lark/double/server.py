"""The double's HTTP and websocket server, and :class:`LarkDouble`, its test-facing face.

One aiohttp app on an asyncio loop in a daemon thread serves, on one
OS-chosen loopback port:

- ``POST /open-apis/auth/v3/{tenant,app}_access_token/internal``: tokens;
- ``POST /callback/ws/endpoint``: the long connection's URL and ClientConfig;
- ``GET /ws?device_id=…&service_id=…``: the long connection (``hub.py``);
- everything else under ``/open-apis``: the open API (``api.py``), with
  ``Authorization: Bearer t-…``.

The state lives in :class:`~adapters.chat.lark.double.state.Tenant`, the
sockets in :class:`~adapters.chat.lark.double.hub.Hub`; this module translates
and holds the fault switches.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

from adapters.chat.lark.double.api import Call, WebApi
from adapters.chat.lark.double.hub import REDELIVERY_S, AckObserver, Delivery, Hub
from adapters.chat.lark.double.model import (
    BAD_PARAMS,
    DEFAULT_SCOPES,
    RATE_LIMITED,
    LarkApp,
    LarkError,
)
from adapters.chat.lark.double.state import TOKEN_TTL_S, Observer, Tenant

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TENANT_TOKEN = "POST /open-apis/auth/v3/tenant_access_token/internal"
APP_TOKEN = "POST /open-apis/auth/v3/app_access_token/internal"
WS_ENDPOINT = "POST /callback/ws/endpoint"
#: Multipart fields holding file bytes (``im/v1/files``, ``im/v1/images``).
UPLOAD_FIELDS = ("file", "image")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LarkError(BAD_PARAMS, "invalid request body: not JSON") from exc
    if not isinstance(body, dict):
        raise LarkError(BAD_PARAMS, "invalid request body: not a JSON object")
    return body


class _Faults:
    """The fault switches' counters (under one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.failures: dict[str, collections.deque[tuple[int, str, int]]] = \
            collections.defaultdict(collections.deque)
        self.after_store: dict[str, int] = collections.defaultdict(int)
        self.ratelimits: dict[str, list[int]] = {}

    def take(self, key: str) -> web.Response | None:
        """Count the call; the injected answer for it, if any."""
        with self.lock:
            self.calls[key] += 1
            limit = self.ratelimits.get(key)
            if limit is not None and limit[0] > 0:
                limit[0] -= 1
                return web.json_response(
                    {"code": RATE_LIMITED, "msg": "request trigger frequency limit"},
                    status=429, headers={"x-ogw-ratelimit-reset": str(limit[1])})
            if self.failures[key]:
                code, msg, status = self.failures[key].popleft()
                return web.json_response({"code": code, "msg": msg}, status=status)
            return None

    def take_after_store(self, key: str) -> bool:
        with self.lock:
            if self.after_store[key] > 0:
                self.after_store[key] -= 1
                return True
            return False


class LarkDouble:
    """A local Feishu/Lark open platform that lark-oapi runs against unmodified.

    Use ``lark.Client.builder().app_id(a.app_id).app_secret(a.app_secret)
    .domain(double.domain).build()`` and ``lark.ws.Client(a.app_id,
    a.app_secret, event_handler=h, domain=double.domain)``. Every method is
    thread-safe and synchronous; an ``app`` argument is a :class:`LarkApp`,
    its app id or its bot's open id; people are open ids (``ou_…``). Actions
    the platform would refuse raise :class:`LarkError`.

    A ``path_template`` names a route as lark-oapi writes it, with the method:
    ``"POST /open-apis/im/v1/messages"``,
    ``"PUT /open-apis/cardkit/v1/cards/:card_id/elements/:element_id/content"``.

    Attributes:
        tenant: The state (tests may read it).
        hub: The long-connection side.
        host: The interface it listens on.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 token_ttl_s: int = TOKEN_TTL_S, redelivery_s: float = REDELIVERY_S,
                 ping_interval_s: int = 2) -> None:
        """Prepare the double; nothing listens until :meth:`start`.

        Args:
            host: Interface to listen on (loopback).
            port: Port; 0 lets the OS choose.
            token_ttl_s: Tenant token lifetime, in seconds (the token answer's ``expire``).
            redelivery_s: Wait before an unacked event is sent again, in seconds.
            ping_interval_s: ``PingInterval`` told to long-connection clients, in seconds.
        """
        self.hub = Hub(redelivery_s=redelivery_s, ping_interval_s=ping_interval_s)
        self.tenant = Tenant(
            lambda app_id, event, retry: self.hub.submit(app_id, event, retry=retry),
            token_ttl_s=token_ttl_s)
        self.api = WebApi(self.tenant)
        self.host = host
        self._port = port
        self._domain = ""
        self._faults = _Faults()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def domain(self) -> str:
        """``http://127.0.0.1:P`` (no trailing ``/``; empty until :meth:`start`)."""
        return self._domain

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Listen on a daemon thread; return once the port is bound.

        Raises:
            OSError: Naming ``host:port`` when the port cannot be bound.
            RuntimeError: If already started.
        """
        if self._thread is not None:
            raise RuntimeError("the Lark double was already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="lark-double", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        self.hub.bind(loop)

    def stop(self) -> None:
        """Close every socket and the loop, joining the thread (within ~2 s); idempotent."""
        loop, thread = self._loop, self._thread
        self.hub.bind(None)
        if loop is None or thread is None:
            return
        self._loop = None
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=1.5)
            except Exception:
                log.warning("lark double: unclean shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> LarkDouble:
        """Start the double and return it."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the double."""
        self.stop()

    async def _astart(self) -> None:
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/open-apis/auth/v3/tenant_access_token/internal", self._token)
        app.router.add_post("/open-apis/auth/v3/app_access_token/internal", self._token)
        app.router.add_post("/callback/ws/endpoint", self._endpoint)
        app.router.add_get("/ws", self._ws)
        for method, template, _, _ in WebApi.ROUTES:
            path = "/".join("{" + part[1:] + "}" if part.startswith(":") else part
                            for part in template.split("/"))
            app.router.add_route(method, path, self._api_handler(f"{method} {template}"))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError as exc:
            raise OSError(exc.errno, f"the Lark double cannot listen on "
                                     f"{self.host}:{self._port}: {exc.strerror}") from exc
        self._domain = f"http://{self.host}:{int(runner.addresses[0][1])}"

    async def _astop(self) -> None:
        self.hub.drop(None)
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_loop(self, function: Callable[[], int]) -> int:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the Lark double is not running")

        async def run() -> int:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)

    # -- setup -----------------------------------------------------------------

    def add_app(self, name: str, *, scopes: Iterable[str] | None = None,
                group_messages: bool = False) -> LarkApp:
        """Install a custom app with a bot; return its ids and secret.

        Args:
            name: The app's (and bot's) name.
            scopes: Its granted scopes (default :data:`DEFAULT_SCOPES`).
            group_messages: Get every group message (scope ``im:message.group_msg``),
                not only those that @-mention the bot.
        """
        return self.tenant.add_app(name, DEFAULT_SCOPES if scopes is None else scopes,
                                   group_messages)

    def add_user(self, name: str) -> str:
        """Add a person; return the open id (``ou_…``)."""
        return self.tenant.add_user(name)

    def add_p2p(self, user: str, app: LarkApp | str) -> str:
        """The p2p chat of a person and an app's bot (made once); return ``oc_…``."""
        return self.tenant.add_p2p(user, app)

    def add_group(self, name: str, members: Iterable[str | LarkApp], *,
                  topic: bool = False) -> str:
        """A group of people (open ids) and apps; ``topic``: a topic group, where each
        top-level message opens a thread. Return ``oc_…``. KeyError on an unknown member."""
        return self.tenant.add_group(name, members, topic)

    def remove(self, chat_id: str, member: str | LarkApp) -> None:
        """Take a person or a bot out of a chat; the bot's later sends there get
        230002 and its app gets ``im.chat.member.bot.deleted_v1``. KeyError if absent."""
        self.tenant.remove(chat_id, member)

    # -- acting as people ------------------------------------------------------

    def post(self, user: str, chat_id: str, text: str, *,
             mentions: Iterable[LarkApp | str] = (), reply_to: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        """A person posts; the chat's apps that should get it get ``im.message.receive_v1``.

        Text only: ``msg_type`` ``text``, ``{"text": "@_user_1 … text"}`` (the
        mention keys first). With files: ``post``, ``{"title": "", "content":
        [[text line], [{"tag": "img", "image_key"}] | [{"tag": "media",
        "file_key", "file_name"}], …]}``: png/jpg/jpeg/gif/webp files as
        images, others as media (one line each; the double's choice).

        Args:
            user: The author's open id.
            chat_id: Where.
            text: The text.
            mentions: Apps (their bots) or people to @-mention, in key order.
            reply_to: A message id to reply to (see the thread rules in ``state.py``).
            files: ``{file name: bytes}``.

        Returns:
            The message id ``om_…``.

        Raises:
            LarkError: 230002 (not a member / unknown chat), 230001/230011 (bad reply_to).
        """
        return self.tenant.post(user, chat_id, text, mentions, reply_to, files)

    def recall(self, user: str, message_id: str) -> None:
        """A person recalls their message (apps get ``im.message.recalled_v1``)."""
        self.tenant.recall(user, message_id)

    def react(self, user: str, message_id: str, emoji_type: str) -> str:
        """A person adds a reaction (no event); return the reaction id."""
        return self.tenant.react(user, message_id, emoji_type)

    def click(self, user: str, message_id: str, *, value: Mapping[str, Any] | None = None,
              name: str = "", timeout_s: float = 5.0) -> dict[str, Any]:
        """A member clicks a button of an app's card message: ``card.action.trigger``
        goes to the app; return the decoded ack data (the handler's result, e.g.
        ``{"toast": {...}}``; ``{}`` when it returned nothing).

        Args:
            user: Who clicks.
            message_id: The card message (inline card or CardKit reference).
            value: Send this as ``action.value`` instead of the button's (a forged value).
            name: The button's ``name`` (empty: the first with a callback).
            timeout_s: How long to wait for the ack, in seconds.

        Raises:
            LookupError: No app card, or no such button.
            TimeoutError: No ack in time.
            RuntimeError: The ack's code was not 200 (the handler failed).
        """
        app_id, envelope = self.tenant.click_event(user, message_id, value, name)
        self.hub.submit(app_id, envelope, retry=False)
        event_id = envelope["header"]["event_id"]
        delivery = self.hub.wait_ack(app_id, event_id, timeout_s)
        if delivery is None:
            raise TimeoutError(f"no ack of card.action.trigger {event_id} in {timeout_s} s")
        if delivery.code != 200:
            raise RuntimeError(f"card.action.trigger {event_id} acked with {delivery.code}")
        return dict(delivery.response or {})

    # -- reading ---------------------------------------------------------------

    def history(self, chat_id: str) -> list[dict[str, Any]]:
        """Every message of a chat (thread replies too), oldest first, recalled ones
        left out. Each: ``message_id, chat_id, sender_id`` (open id; a bot's open
        id for apps), ``sender_type`` (``user``/``app``), ``app_id``, ``msg_type``,
        ``content`` (parsed), ``root_id, parent_id, thread_id``, ``create_time``,
        ``update_time`` (ms), ``uuid``, ``mentions``, ``updated``, ``deleted``,
        ``card`` (a card's current JSON, for CardKit cards with element
        contents applied and a ``streaming`` key; None for non-cards),
        ``streaming`` and ``text`` (see :func:`text_of`)."""
        return self.tenant.history(chat_id)

    def message(self, message_id: str) -> dict[str, Any]:
        """One message as :meth:`history` shows it (recalled too); KeyError if unknown."""
        return self.tenant.message(message_id)

    def reactions(self, message_id: str) -> dict[str, set[str]]:
        """``{emoji_type: {operator open ids}}`` (bots by their bot open id)."""
        return self.tenant.reaction_sets(message_id)

    def file_content(self, key: str) -> bytes:
        """The bytes behind a file or image key; KeyError if unknown."""
        return self.tenant.file_content(key)

    def file_name(self, key: str) -> str:
        """The name behind a file or image key (as uploaded); KeyError if unknown."""
        return self.tenant.file_name(key)

    def card(self, card_id: str) -> dict[str, Any]:
        """A CardKit card's current JSON plus ``streaming``; LarkError 300301 if unknown."""
        with self.tenant.lock:
            return self.tenant.cards.view(card_id)

    def events(self, app: LarkApp | str) -> list[Delivery]:
        """Every event frame delivered to an app, in order, with its ack."""
        return self.hub.deliveries(self._app_id(app))

    def sockets(self, app: LarkApp | str) -> int:
        """How many long connections of the app are open."""
        return self.hub.live(self._app_id(app))

    def calls(self, path_template: str) -> int:
        """How many times a route was called (refused and faulted calls too)."""
        with self._faults.lock:
            return self._faults.calls[path_template]

    def call_counts(self) -> dict[str, int]:
        """``{path_template: calls}`` for every route called."""
        with self._faults.lock:
            return {key: n for key, n in self._faults.calls.items() if n}

    def observe(self, observer: Observer) -> None:
        """Call ``observer(kind, message)`` on every message an app sends
        (``"posted"``), changes (``"changed"``, card updates too) or recalls
        (``"deleted"``); ``message`` as :meth:`history` shows it. It runs with
        the tenant locked: quick, no blocking, no calls into the double."""
        self.tenant.observe(observer)

    def observe_acks(self, observer: AckObserver) -> None:
        """Call ``observer(app_id, delivery)`` on every event ack from now on
        (:class:`Delivery`, ``acked`` True for code 200).

        It runs on the server's loop while the hub is locked: it must be quick,
        must not block and must not call the double; the delivery's ``event`` is
        the hub's own, to read and never change. See :meth:`Hub.observe_acks`.
        """
        self.hub.observe_acks(observer)

    def _app_id(self, app: LarkApp | str) -> str:
        return self.tenant.record(app).app.app_id

    # -- fault switches --------------------------------------------------------

    def _known(self, path_template: str) -> str:
        keys = {f"{m} {t}" for m, t, _, _ in WebApi.ROUTES} | {TENANT_TOKEN, APP_TOKEN,
                                                                WS_ENDPOINT}
        if path_template not in keys:
            raise ValueError(f"unknown route {path_template!r}; one of {sorted(keys)}")
        return path_template

    def expire_tokens(self, app: LarkApp | str) -> int:
        """Invalidate every tenant token issued to an app so far (calls with one
        get HTTP 400 ``99991663``); return how many."""
        return self.tenant.expire_tokens(app)

    def rotate_secret(self, app: LarkApp | str) -> str:
        """Give an app a new secret; the old one gets 10014 at the token endpoint
        (and a fatal code at the long-connection endpoint). Return the new one."""
        return self.tenant.rotate_secret(app)

    def deny_scope(self, app: LarkApp | str, scope: str) -> None:
        """Take a scope from an app: routes needing it answer 99991672 with the
        grant URL (``https://open.feishu.cn/app/<app_id>/auth?q=<scopes>&…``)."""
        with self.tenant.lock:
            self.tenant.record(app).scopes.discard(scope)

    def grant_scope(self, app: LarkApp | str, scope: str) -> None:
        """Give an app a scope (undoes :meth:`deny_scope`)."""
        with self.tenant.lock:
            self.tenant.record(app).scopes.add(scope)

    def fail(self, path_template: str, *, code: int, msg: str = "", status: int = 200,
             count: int = 1) -> None:
        """Answer the next ``count`` calls of a route with ``{"code", "msg"}`` and
        HTTP ``status`` (nothing is done). ValueError on an unknown route."""
        key = self._known(path_template)
        with self._faults.lock:
            self._faults.failures[key].extend([(code, msg or f"injected {code}", status)]
                                              * count)

    def fail_after_store(self, path_template: str, count: int = 1) -> None:
        """Let the next ``count`` successful calls of a route take effect, then
        answer HTTP 500 ``{"code": 1, …}`` (the caller cannot tell it worked)."""
        key = self._known(path_template)
        with self._faults.lock:
            self._faults.after_store[key] += count

    def ratelimit(self, path_template: str, count: int = 1, reset_s: int = 1) -> None:
        """Answer the next ``count`` calls of a route with HTTP 429,
        ``x-ogw-ratelimit-reset: reset_s`` and code 99991400 (nothing is done)."""
        key = self._known(path_template)
        if count < 0 or reset_s < 0:
            raise ValueError("count and reset_s must be >= 0")
        with self._faults.lock:
            self._faults.ratelimits[key] = [count, int(reset_s)]

    def drop_sockets(self, app: LarkApp | str) -> int:
        """Abort the app's long connections (no close frame); return how many."""
        app_id = self._app_id(app)
        return self._on_loop(lambda: self.hub.drop(app_id))

    def redeliver(self, app: LarkApp | str, event_id: str) -> None:
        """Send an event delivered before again, same event id. KeyError if unknown."""
        self.hub.resend(self._app_id(app), event_id)

    def send_event(self, app: LarkApp | str, event_type: str, event: dict[str, Any]) -> str:
        """Send any event (schema 2.0 envelope around ``event``); return its event id."""
        app_id = self._app_id(app)
        with self.tenant.lock:
            envelope = self.tenant.envelope(app_id, event_type, event)
        self.hub.submit(app_id, envelope)
        return str(envelope["header"]["event_id"])

    def send_raw(self, app: LarkApp | str, frame: bytes) -> int:
        """Send bytes as one binary websocket message to each of the app's
        connections (malformed frames); return how many."""
        return self.hub.send_raw(self._app_id(app), frame)

    def set_redelivery(self, after_s: float) -> None:
        """Events not acked within ``after_s`` are sent again (same event id, up to 3 times)."""
        self.hub.set_redelivery(after_s)

    def drop_offline_events(self, drop: bool = True) -> None:
        """Events for an app with no open long connection are dropped, not queued for
        its next one (a push that gave up): only a catch-up finds those messages."""
        self.hub.drop_offline = drop

    def set_stream_timeout(self, seconds: float) -> None:
        """CardKit streaming closes this long after it was opened (default 600 s)."""
        with self.tenant.lock:
            self.tenant.cards.stream_timeout_s = seconds

    # -- handlers --------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except LarkError as exc:
            return web.json_response(exc.to_json(), status=exc.status)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("lark double: error in %s %s", request.method, request.path)
            return web.json_response({"code": 1, "msg": "internal error"}, status=500)

    async def _token(self, request: web.Request) -> web.Response:
        key = f"POST {request.path}"
        injected = self._faults.take(key)
        if injected is not None:
            return injected
        body = await _json_body(request)
        token, expire = self.tenant.issue_token(str(body.get("app_id", "")),
                                                str(body.get("app_secret", "")))
        answer: dict[str, Any] = {"code": 0, "msg": "ok", "tenant_access_token": token,
                                  "expire": expire}
        if key == APP_TOKEN:
            answer["app_access_token"] = token
        return web.json_response(answer)

    async def _endpoint(self, request: web.Request) -> web.Response:
        injected = self._faults.take(WS_ENDPOINT)
        if injected is not None:
            return injected
        body = await _json_body(request)
        app_id = str(body.get("AppID", ""))
        self.tenant.issue_token(app_id, str(body.get("AppSecret", "")))  # checks the secret
        host = self._domain.removeprefix("http://")
        url = f"ws://{host}/ws?device_id={self.hub.device(app_id)}&service_id=1"
        return web.json_response({"code": 0, "msg": "ok", "data": {
            "URL": url, "ClientConfig": self.hub.client_config()}})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        app_id = self.hub.app_of_device(request.query.get("device_id", ""))
        try:
            service_id = int(request.query.get("service_id", ""))
        except ValueError:
            service_id = -1
        if app_id is None or service_id < 0:
            return web.Response(status=403, text="forbidden")
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        link = self.hub.open_link(app_id, service_id, ws, request.transport)
        writer = asyncio.create_task(self.hub.write(link))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self.hub.on_binary(link, msg.data)
        finally:
            self.hub.close_link(link)
            writer.cancel()
        return ws

    def _api_handler(self, key: str) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            injected = self._faults.take(key)
            if injected is not None:
                return injected
            app = self.tenant.authenticate(_bearer(request))
            files: dict[str, tuple[str, bytes]] = {}
            if request.content_type == "multipart/form-data":
                body: dict[str, Any] = {}
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader) or not part.name:
                        continue
                    data = bytes(await part.read())
                    if part.name in UPLOAD_FIELDS:  # lark-oapi sends them without a file name
                        files[part.name] = (part.filename or "", data)
                    else:
                        body[part.name] = data.decode("utf-8", "replace")
            else:
                body = await _json_body(request)
            call = Call(app, dict(request.match_info), dict(request.query), body, files)
            result = self.api.call(key, call)
            if self._faults.take_after_store(key):
                return web.json_response({"code": 1, "msg": "internal error"}, status=500)
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response({"code": 0, "msg": "success", "data": result})
        return handle

