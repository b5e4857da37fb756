"""The double's HTTP and websocket server, and :class:`SlackDouble`, its test-facing face.

One aiohttp app on an asyncio loop in a daemon thread serves, on one
OS-chosen loopback port:

- ``POST /api/{method}``: the Web API (form, JSON or query arguments; the
  token from ``Authorization: Bearer`` or a ``token`` argument);
- ``GET /link/?ticket=…``: Socket Mode websockets (from ``apps.connections.open``);
- ``POST /upload/v1/{key}``: the raw bytes of a ``files.getUploadURLExternal`` upload;
- ``GET /files-pri/{team}-{file}/{name}[/download]``: ``url_private`` downloads,
  needing ``Authorization: Bearer xoxb-…`` (else an HTML login page with
  HTTP 200, as Slack answers; docs messaging/working-with-files);
- ``POST /actions/{team}/{key}``: ``response_url`` answers.

The state lives in :class:`~adapters.chat.slack.double.state.Workspace`, the
sockets in :class:`~adapters.chat.slack.double.hub.Hub`; this module translates
and holds the fault switches.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from adapters.chat.slack.double.api import WebApi
from adapters.chat.slack.double.hub import ACK_TIMEOUT_S, AckObserver, Delivery, Hub
from adapters.chat.slack.double.model import DEFAULT_SCOPES, SlackApp, SlackError
from adapters.chat.slack.double.state import STREAM_EXPIRY_S, Observer, Workspace

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What ``url_private`` answers without a valid bot token (Slack's sign-in page, cut short).
LOGIN_PAGE = ("<!DOCTYPE html><html><head><title>Slack</title></head><body>"
              "<h1>Sign in to your workspace</h1></body></html>")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def _arguments(request: web.Request) -> dict[str, Any]:
    """The query arguments, overridden by the body's (JSON, form or multipart)."""
    data: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SlackError("invalid_json") from exc
        if not isinstance(body, dict):
            raise SlackError("invalid_json")
        data.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        data.update({key: value for key, value in form.items() if isinstance(value, str)})
    return data


class SlackDouble:
    """A local Slack (Web API + Socket Mode) that slack-sdk runs against unmodified.

    Use ``WebClient(token=app.bot_token, base_url=double.api_url)`` and
    ``SocketModeClient(app_token=app.app_token, web_client=WebClient(base_url=double.api_url))``.
    Every method is thread-safe and synchronous; ids are strings (``U…``,
    ``C…``/``G…``/``D…``, ``A…``); an ``app`` argument is a :class:`SlackApp`
    or its ``app_id``. Test-side actions that Slack would refuse raise
    :class:`SlackError` with Slack's error code.

    Attributes:
        workspace: The state (tests may read it).
        hub: The Socket Mode side.
        host: The interface it listens on.
        url: Root URL, ``http://127.0.0.1:P/`` (empty until :meth:`start`).
        api_url: Web API base URL, ``http://127.0.0.1:P/api/`` (empty until :meth:`start`).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 team_id: str = "T0D0UBLE01", team_name: str = "double",
                 ack_timeout_s: float = ACK_TIMEOUT_S,
                 stream_expiry_s: float = STREAM_EXPIRY_S) -> None:
        """Prepare the double; nothing listens until :meth:`start`.

        Args:
            host: Interface to listen on (loopback).
            port: Port; 0 lets the OS choose.
            team_id: The workspace's id.
            team_name: The workspace's name and domain.
            ack_timeout_s: Time to wait for a Socket Mode ack, in seconds.
            stream_expiry_s: Lifetime of a stream after ``chat.startStream``, in seconds.
        """
        self.hub = Hub(ack_timeout_s=ack_timeout_s)
        self.workspace = Workspace(team_id=team_id, team_name=team_name, sink=self.hub.submit)
        self.workspace.set_stream_expiry(stream_expiry_s)
        self.api = WebApi(self.workspace, self._open_link)
        self.host = host
        self._port = port
        self.url = ""
        self.api_url = ""
        self._faults = threading.Lock()
        self._ratelimits: dict[str, list[int]] = {}
        self._failures: dict[str, collections.deque[str]] = collections.defaultdict(
            collections.deque)
        self._after_store: dict[str, int] = collections.defaultdict(int)
        self._calls: dict[str, int] = collections.defaultdict(int)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def team_id(self) -> str:
        """The workspace's id, ``T…``."""
        return self.workspace.team_id

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Listen on a daemon thread; return once the port is bound.

        Raises:
            OSError: Naming ``host:port`` when the port cannot be bound.
            RuntimeError: If already started.
        """
        if self._thread is not None:
            raise RuntimeError("the Slack double was already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="slack-double", daemon=True)
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
            future = asyncio.run_coroutine_threadsafe(self._astop(), loop)
            try:
                future.result(timeout=1.5)
            except Exception:
                log.warning("slack double: unclean shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> SlackDouble:
        """Start the double and return it."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the double."""
        self.stop()

    async def _astart(self) -> None:
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.route("*", "/api/{method}", self._api),
            web.get("/link", self._link),
            web.get("/link/", self._link),
            web.post("/upload/v1/{key}", self._upload),
            web.get("/files-pri/{pid}/{name}", self._download),
            web.get("/files-pri/{pid}/{name}/download", self._download),
            web.post("/actions/{team}/{key}", self._respond),
        ])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError as exc:
            raise OSError(exc.errno, f"the Slack double cannot listen on "
                                     f"{self.host}:{self._port}: {exc.strerror}") from exc
        port = int(runner.addresses[0][1])
        self.url = f"http://{self.host}:{port}/"
        self.api_url = self.url + "api/"
        self.workspace.base_url = self.url

    async def _astop(self) -> None:
        self.hub.drop(None)
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_loop(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the server's loop and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the Slack double is not running")

        async def run() -> _T:
            return function()

        coro: Coroutine[Any, Any, _T] = run()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=5)

    # -- setup -----------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> str:
        """Add a member; return its id (``U…``). See :meth:`Workspace.add_user`."""
        return self.workspace.add_user(name, bot=bot)

    def add_app(self, name: str, *, scopes: Iterable[str] = DEFAULT_SCOPES,
                commands: Iterable[str] = ()) -> SlackApp:
        """Install an app with a bot user; return its ids and tokens.

        Args:
            name: The app's name.
            scopes: The bot's scopes (default: every scope the double knows).
            commands: Slash commands it owns.
        """
        return self.workspace.add_app(name, scopes=scopes, commands=commands)

    def add_channel(self, name: str, members: Iterable[str | SlackApp], *,
                    private: bool = False) -> str:
        """Create a channel with members (user ids or apps); return ``C…``/``G…``.

        Raises:
            ValueError: On a taken name.
            KeyError: On an unknown member.
        """
        return self.workspace.add_channel(name, members, private=private)

    def join(self, channel: str, member: str | SlackApp) -> None:
        """Add a member to a channel (no event)."""
        self.workspace.join(channel, member)

    def open_dm(self, user_a: str | SlackApp, user_b: str | SlackApp) -> str:
        """The DM of two users (``D…``), made once."""
        return self.workspace.open_dm(user_a, user_b)

    # -- acting as users -------------------------------------------------------

    def post(self, user: str, channel: str, text: str, *, thread_ts: str = "",
             files: Mapping[str, bytes] | None = None, broadcast: bool = False) -> str:
        """Post as a user (apps in the channel get ``message``, mentioned ones
        ``app_mention`` too); return the ts.

        Args:
            user: The author's id.
            channel: Where.
            text: The text (mrkdwn; ``<@U…>`` mentions).
            thread_ts: The parent's ts, for a thread reply.
            files: ``{file name: bytes}`` to upload and share with the post.
            broadcast: A thread reply also shown in the channel.

        Raises:
            SlackError: ``channel_not_found``, ``not_in_channel``, ``invalid_thread_ts``.
        """
        if files:
            message = self.workspace.post_files(user, channel, text, files,
                                                thread_ts=thread_ts or None, broadcast=broadcast)
        else:
            message = self.workspace.post(user, channel, text=text,
                                          thread_ts=thread_ts or None, broadcast=broadcast)
        return str(message["ts"])

    def edit(self, user: str, channel: str, ts: str, text: str) -> None:
        """Edit a user's message (apps get ``message_changed``).

        Raises:
            SlackError: ``message_not_found``, ``cant_update_message``.
        """
        self.workspace.update(user, channel, ts, text=text)

    def delete(self, user: str, channel: str, ts: str) -> None:
        """Delete a user's message (apps get ``message_deleted``).

        Raises:
            SlackError: ``message_not_found``, ``cant_delete_message``.
        """
        self.workspace.delete(user, channel, ts)

    def react(self, user: str, channel: str, ts: str, name: str) -> None:
        """Add a user's reaction (no event).

        Raises:
            SlackError: ``message_not_found``, ``already_reacted``.
        """
        self.workspace.react(user, channel, ts, name)

    def click(self, user: str, channel: str, ts: str, action_id: str,
              value: str | None = None) -> dict[str, Any]:
        """A user clicks a button of an app's message: the app gets an
        ``interactive`` envelope (``block_actions``); return its payload.

        Raises:
            SlackError: ``message_not_found``, ``not_an_app_message``,
                ``no_such_button``.
        """
        return self.workspace.click(user, channel, ts, action_id, value)

    def slash(self, user: str, channel: str, command: str, text: str = "", *,
              app: SlackApp | str | None = None) -> dict[str, Any]:
        """A user runs a slash command: a ``slash_commands`` envelope; return its payload.

        Args:
            user: Who.
            channel: Where.
            command: E.g. ``"/bridge"``.
            text: Its arguments.
            app: The app to tell (None: the one owning the command, or the only one).

        Raises:
            KeyError: When no app can be chosen.
        """
        target = self._app(app) if app is not None else None
        return self.workspace.slash(user, channel, command, text, target)

    # -- reading ---------------------------------------------------------------

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Every message of a conversation (thread replies too), oldest first, as
        Slack message dicts with metadata, blocks, files, reactions, and for
        streamed messages ``chunks`` (in order) and ``streaming``."""
        return self.workspace.all_messages(channel)

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """One message as :meth:`history` shows it; KeyError if unknown."""
        return self.workspace.one_message(channel, ts)

    def reactions(self, channel: str, ts: str) -> dict[str, set[str]]:
        """``{reaction name: {user ids}}`` of a message."""
        return self.workspace.reaction_sets(channel, ts)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded file; KeyError if unknown."""
        return self.workspace.file_content(file_id)

    def ephemerals(self, user: str) -> list[dict[str, Any]]:
        """Ephemeral messages shown to a user (``chat.postEphemeral``, response URLs)."""
        return self.workspace.ephemerals(user)

    def envelopes(self, app: SlackApp | str) -> list[Delivery]:
        """Every envelope delivered to an app, in order, with its ack state."""
        return self.hub.deliveries(self._app(app).app_id)

    def unacked(self, app: SlackApp | str) -> list[Delivery]:
        """The latest delivery of each envelope payload the app never acked."""
        return self.hub.unacked(self._app(app).app_id)

    def waiting(self, app: SlackApp | str) -> int:
        """How many envelopes wait for a socket of the app."""
        return self.hub.waiting(self._app(app).app_id)

    def sockets(self, app: SlackApp | str) -> int:
        """How many Socket Mode sockets of the app are open."""
        return self.hub.live(self._app(app).app_id)

    def calls(self, method: str) -> int:
        """How many times a Web API method was called (refused and faulted calls too)."""
        with self._faults:
            return self._calls[method]

    def call_counts(self) -> dict[str, int]:
        """``{Web API method: calls so far}`` for every method called (as :meth:`calls`)."""
        with self._faults:
            return dict(self._calls)

    # -- observers -------------------------------------------------------------

    def observe(self, observer: Observer) -> None:
        """Call ``observer(change, message)`` on every message posted (``"posted"``) or
        changed (``"changed"``) from now on, by people or apps; ``message`` is as
        :meth:`history` shows it, plus ``channel``. For load tools that must not
        read whole histories.

        It runs on the thread that made the change (the server's loop for Web
        API calls) while the workspace is locked: it must be quick, must not
        block and must not call the double. See :meth:`Workspace.observe`.
        """
        self.workspace.observe(observer)

    def observe_acks(self, observer: AckObserver) -> None:
        """Call ``observer(app_id, delivery)`` on every Socket Mode ack from now on.

        It runs on the server's loop while the hub is locked: it must be quick,
        must not block and must not call the double; the delivery's envelope is
        the hub's own, to read and never change. See :meth:`Hub.observe_acks`.
        """
        self.hub.observe_acks(observer)

    def _app(self, app: SlackApp | str) -> SlackApp:
        return app if isinstance(app, SlackApp) else self.workspace.app(app)

    # -- fault switches --------------------------------------------------------

    def send_envelope(self, app: SlackApp | str, kind: str, payload: dict[str, Any]) -> None:
        """Send the app an envelope of type ``kind`` carrying ``payload`` as given: for
        tests of what a client does with unexpected or malformed envelopes."""
        self.hub.submit(self._app(app).app_id, kind, payload)

    def ratelimit(self, method: str, count: int = 1, retry_after_s: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with HTTP 429, ``Retry-After:
        retry_after_s`` and ``{"ok": false, "error": "ratelimited"}`` (nothing is done).

        Raises:
            ValueError: On a negative count or Retry-After.
        """
        if count < 0 or retry_after_s < 0:
            raise ValueError("count and retry_after_s must be >= 0")
        with self._faults:
            self._ratelimits[method] = [count, int(retry_after_s)]

    def fail(self, method: str, error: str, count: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with ``{"ok": false, "error": error}``
        (HTTP 200; nothing is done). Queued after failures already set."""
        with self._faults:
            self._failures[method].extend([error] * count)

    def fail_after_store(self, method: str = "chat.postMessage", count: int = 1) -> None:
        """Let the next ``count`` successful calls of ``method`` take effect, then
        answer HTTP 500 (the client cannot tell whether it worked)."""
        with self._faults:
            self._after_store[method] += count

    def revoke(self, token: str) -> None:
        """Revoke a token: its calls answer ``token_revoked``; ``url_private`` refuses it."""
        self.workspace.revoke(token)

    def set_stream_expiry(self, seconds: float) -> None:
        """Set a stream's lifetime after ``chat.startStream``, in seconds (running ones too)."""
        self.workspace.set_stream_expiry(seconds)

    def set_ack_timeout(self, seconds: float) -> None:
        """Set the Socket Mode ack wait, in seconds (for envelopes sent from now on)."""
        self.hub.set_ack_timeout(seconds)

    def disconnect(self, app: SlackApp | str, reason: str = "refresh_requested") -> int:
        """Send a ``disconnect`` envelope to each open socket of the app; return how many.

        The sockets stay open (the client closes them after reconnecting) and
        get new envelopes only while the app has no other socket.

        Raises:
            RuntimeError: If the double is not running.
        """
        app_id = self._app(app).app_id
        return self._on_loop(lambda: self.hub.disconnect(app_id, reason))

    def drop_sockets(self, app: SlackApp | str) -> int:
        """Abort the app's sockets' TCP connections (no close frame); return how many.

        Raises:
            RuntimeError: If the double is not running.
        """
        app_id = self._app(app).app_id
        return self._on_loop(lambda: self.hub.drop(app_id))

    def silence(self, app: SlackApp | str, on: bool = True) -> int:
        """Keep the app's open sockets open but send them nothing (``on=False``:
        undo); sockets opened later are heard. Envelopes meant for a silenced
        socket are swallowed (and retried as unacked). Return how many sockets.

        Raises:
            RuntimeError: If the double is not running.
        """
        app_id = self._app(app).app_id
        return self._on_loop(lambda: self.hub.silence(app_id, on))

    def _fault(self, method: str) -> web.Response | None:
        """The injected answer for this call, if any (taking one from its count)."""
        with self._faults:
            self._calls[method] += 1
            limit = self._ratelimits.get(method)
            if limit is not None and limit[0] > 0:
                limit[0] -= 1
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(limit[1])})
            if self._failures[method]:
                error = self._failures[method].popleft()
                return web.json_response({"ok": False, "error": error})
        return None

    def _take_after_store(self, method: str) -> bool:
        with self._faults:
            if self._after_store[method] > 0:
                self._after_store[method] -= 1
                return True
            return False

    # -- handlers --------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except SlackError as exc:
            return web.json_response(exc.to_json())
        except ConnectionResetError:
            log.debug("slack double: client went away during %s", request.path)
            return web.Response(status=400)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("slack double: error in %s %s", request.method, request.path)
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)

    def _open_link(self, app: SlackApp) -> str:
        host = self.url.removeprefix("http://").rstrip("/")
        return f"ws://{host}/link/?ticket={self.hub.ticket(app.app_id)}&app_id={app.app_id}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        injected = self._fault(method)
        if injected is not None:
            return injected
        data = await _arguments(request)
        token = _bearer(request) or data.pop("token", None)
        body, headers = self.api.call(method, token if isinstance(token, str) else None, data)
        if body.get("ok") and self._take_after_store(method):
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        return web.json_response(body, headers=headers)

    async def _link(self, request: web.Request) -> web.StreamResponse:
        app_id = self.hub.app_of_ticket(request.query.get("ticket", ""))
        if app_id is None:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        link = self.hub.open_link(app_id, ws, request.transport)
        writer = asyncio.create_task(self.hub.write(link))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.hub.on_text(link, msg.data)
        finally:
            self.hub.close_link(link)
            writer.cancel()
        return ws

    async def _upload(self, request: web.Request) -> web.Response:
        content = await request.read()  # raw bytes whatever the Content-Type says
        if not self.workspace.put_upload(request.match_info["key"], content):
            return web.Response(status=404, text="not found")
        return web.Response(text=f"OK - {len(content)}")

    async def _download(self, request: web.Request) -> web.Response:
        try:
            kind, app = self.workspace.authenticate(_bearer(request))
            allowed = kind == "bot" and "files:read" in app.scopes
        except SlackError:
            allowed = False
        if not allowed:
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        found = self.workspace.file_download(request.match_info["pid"])
        if found is None:
            return web.Response(status=404, text="file not found")
        content, mimetype = found
        return web.Response(body=content, content_type=mimetype)

    async def _respond(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await request.json()
        else:
            form = await request.post()
            raw = form.get("payload")
            body = json.loads(raw) if isinstance(raw, str) else dict(form)
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        if not self.workspace.respond(request.match_info["key"], body):
            return web.Response(status=404, text="no_such_url")
        return web.json_response({"ok": True})
