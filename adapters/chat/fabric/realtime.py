"""The Fabric realtime connection: a python-socketio asyncio client on ``/realtime``.

The library does the Engine.IO/socket.io framing and the pings; this wrapper
hands every event to plain callbacks (which, in the bridge, only ``tell`` an
actor) and reports the end of the connection once. It does not reconnect: the
library's own reconnection does not run after a server-side disconnect, so the
gateway runs one reconnect loop for every kind of drop.

Every socket of the process runs on the one chat I/O loop
(:class:`adapters.chat.ioloop.IoLoop`): python-socketio's ``AsyncClient``
handles a received packet in a task of that loop, where the threaded
``Client`` starts a thread per packet (python-engineio's client triggers its
``message`` handler with ``run_async=True``), which in a guild with many agents
was thousands of thread starts per second. The methods below are blocking
calls for the callers' threads; the callbacks run on the loop's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import socketio

from adapters.chat.ioloop import IoLoop
from bridge.errors import RetryLater, Unauthorized

NAMESPACE = "/realtime"
#: Events the bridge listens to (Fabric server-to-client events).
EVENTS = ("message.created", "message.updated", "message.deleted", "channel.joined",
          "channel.left")
#: The transports to connect with (no long-polling).
TRANSPORTS = ("websocket",)
#: The call that joins a channel's room (answered ``{"ok": bool}``).
JOIN_EVENT = "join_channel"

#: Seconds a blocking call waits beyond the library's own timeout for the loop's answer.
WAIT_MARGIN_S = 5.0
#: Seconds :meth:`FabricSocket.close` waits for the disconnect.
CLOSE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class FabricSocket:
    """One socket.io connection to a guild.

    Args:
        endpoint: Guild base URL (``http://host:port``).
        token: Returns the guild token to send; called on every connect attempt.
        on_event: Called as ``on_event(name, payload)`` on the I/O loop's thread;
            must return fast (not block).
        on_closed: Called once as ``on_closed(reason)`` on the I/O loop's thread
            when an established connection ends (not after :meth:`close`).
        io: The loop to run on (default: the process's shared one).
    """

    def __init__(self, endpoint: str, token: Callable[[], str],
                 on_event: Callable[[str, Any], None],
                 on_closed: Callable[[str], None], io: IoLoop | None = None) -> None:
        self.endpoint = endpoint
        self.io = io or IoLoop.shared()
        self._token = token
        self._on_event = on_event
        self._on_closed = on_closed
        self._closing = threading.Event()
        self._refusal: Any = None
        self._client = socketio.AsyncClient(reconnection=False, logger=False,
                                            engineio_logger=False)
        for name in EVENTS:
            self._client.on(name, self._handler(name), namespace=NAMESPACE)
        self._client.on("disconnect", self._disconnected, namespace=NAMESPACE)
        self._client.on("connect_error", self._refused, namespace=NAMESPACE)

    def _handler(self, name: str) -> Callable[..., None]:
        def handle(*args: Any) -> None:
            self._on_event(name, args[0] if args else None)
        return handle

    def _refused(self, data: Any = None) -> None:
        self._refusal = data

    def _disconnected(self, reason: Any = None) -> None:
        if not self._closing.is_set():
            self._closing.set()
            self._on_closed(str(reason or "disconnected"))

    def connect(self, timeout_s: float = 5.0) -> None:
        """Connect and wait for the namespace to be accepted.

        Raises:
            Unauthorized: when the server refused the token.
            RetryLater: when the guild is unreachable or did not answer in time.
        """
        connect = self._client.connect(
            self.endpoint, auth=lambda: socket_auth(self._token()), transports=list(TRANSPORTS),
            namespaces=[NAMESPACE], wait_timeout=timeout_s)
        try:
            self.io.run(connect, timeout_s + WAIT_MARGIN_S)
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise Unauthorized(f"guild refused the socket connect ({_why(self._refusal)})"
                                   ) from None
            raise RetryLater(f"socket connect failed ({exc})") from None
        except TimeoutError as exc:
            self.close()
            raise RetryLater(f"socket connect failed ({exc})") from None

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Send one event on ``/realtime``; silently dropped when not connected."""
        try:
            self.io.run(self._client.emit(event, payload, namespace=NAMESPACE), WAIT_MARGIN_S)
        except (socketio.exceptions.BadNamespaceError, TimeoutError):
            log.debug("emit %s while not connected", event)

    def join(self, channel_id: str, timeout_s: float = 5.0) -> bool:
        """Join a channel's room and wait for the server's acknowledgement.

        Returns:
            True when the server accepted the join; False when it refused,
            did not answer within ``timeout_s`` seconds, or the socket is down.
        """
        call = self._client.call(JOIN_EVENT, join_payload(channel_id), namespace=NAMESPACE,
                                 timeout=timeout_s)
        try:
            answer = self.io.run(call, timeout_s + WAIT_MARGIN_S)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError,
                TimeoutError):
            return False
        return join_accepted(answer)

    def close(self) -> None:
        """Disconnect without calling ``on_closed``; idempotent, safe from any thread.

        From the loop's own thread the disconnect is started, not waited for.
        """
        self._closing.set()
        if self.io.on_loop():
            self.io.spawn(self._disconnect())
            return
        try:
            self.io.run(self._disconnect(), CLOSE_TIMEOUT_S)
        except TimeoutError as exc:
            log.debug("socket close: %s", exc)

    async def _disconnect(self) -> None:
        try:
            await self._client.disconnect()
        except Exception as exc:  # the library may raise on a half-closed transport
            log.debug("socket close: %r", exc)


def socket_auth(token: str) -> dict[str, str]:
    """The socket.io connect ``auth`` of a guild token."""
    return {"token": token}


def join_payload(channel_id: str) -> dict[str, str]:
    """The payload of :data:`JOIN_EVENT` for a channel."""
    return {"channelId": channel_id}


def join_accepted(answer: Any) -> bool:
    """Whether the guild's answer to :data:`JOIN_EVENT` accepted the join."""
    return isinstance(answer, dict) and answer.get("ok") is True


def _why(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:120]
    return str(data)[:120]
