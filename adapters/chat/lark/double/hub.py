"""The long connection: each app's websockets, event frames, acks and redelivery.

Wire format (lark-oapi 1.7.5 ``ws/client.py``, ``ws/pb/pbbp2_pb2.py``,
``ws/model.py``): binary protobuf ``Frame``\\ s. Events go out as data frames
(``method`` 1, ``service`` = the socket's ``service_id``, headers ``type``
``event``, ``message_id`` (a frame id), ``sum`` 1, ``seq`` 0, ``trace_id``;
payload = the event JSON). The client acks by sending the same frame back
with a ``biz_rt`` header and payload ``{"code": 200|500, "data":
base64(JSON result)}``. A client ping (``method`` 0, ``type`` ``ping``) is
answered by a ``pong`` whose payload is the ClientConfig JSON.

Rules kept here:

- An event goes to one live socket of its app, chosen at random (docs
  "使用长连接接收事件": each event reaches one of an app's clients). With no
  socket it waits for the next connection.
- An event not acked with code 200 within ``redelivery_s`` (default 15 s,
  reported re-push interval) is sent again with the same event id (a new
  frame id), up to 3 times. ``card.action.trigger`` callbacks are sent once
  (the platform shows the person an error instead).

Everything that touches a socket runs on the server's event loop; the lock
lets tests read and wait from their own thread.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
from aiohttp import web
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

log = logging.getLogger(__name__)

#: Default wait before an unacked event is sent again, in seconds.
REDELIVERY_S = 15.0
#: How many times an unacked event is sent again.
RETRIES = 3
#: Events not redelivered when unacked.
NO_RETRY = ("card.action.trigger",)
#: ``observer(app_id, delivery)``: called on each ack (see :meth:`Hub.observe_acks`).
AckObserver = Callable[[str, "Delivery"], None]


@attrs.frozen
class Delivery:
    """One event frame as delivered, and its ack.

    Attributes:
        event_id: The event's ``header.event_id`` (the same across redeliveries).
        event_type: ``header.event_type``.
        frame_id: The frame's ``message_id`` header (new per delivery).
        attempt: 0 for the first delivery, 1..3 for redeliveries.
        acked: Whether an ack with code 200 came back.
        code: The ack's ``code`` (200, 500; None: no ack yet).
        response: The ack's decoded ``data`` (the handler's result), if any.
        event: The envelope as sent.
    """

    event_id: str
    event_type: str
    frame_id: str
    attempt: int
    acked: bool
    code: int | None
    response: dict[str, Any] | None
    event: dict[str, Any]


@attrs.define(eq=False)
class _Link:
    id: int
    app_id: str
    service_id: int
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    outbox: asyncio.Queue[bytes] = attrs.Factory(asyncio.Queue)
    closed: bool = False


@attrs.define(eq=False)
class _Chain:
    app_id: str
    event: dict[str, Any]
    retry: bool
    attempt: int = 0
    done: bool = False
    timer: asyncio.TimerHandle | None = None


@attrs.define(eq=False)
class _Sent:
    chain: _Chain
    frame_id: str
    attempt: int
    code: int | None = None
    response: dict[str, Any] | None = None

    def frozen(self) -> Delivery:
        header = self.chain.event.get("header") or {}
        return Delivery(str(header.get("event_id", "")), str(header.get("event_type", "")),
                        self.frame_id, self.attempt, self.code == 200, self.code,
                        self.response, self.chain.event)


def _header(frame: Any, key: str) -> str | None:
    for header in frame.headers:
        if header.key == key:
            return str(header.value)
    return None


def _frame(method: int, service: int, headers: dict[str, str], payload: bytes) -> bytes:
    frame = Frame()
    frame.SeqID = 0
    frame.LogID = 0
    frame.service = service
    frame.method = method
    for key, value in headers.items():
        header = frame.headers.add()
        header.key = key
        header.value = value
    frame.payload = payload
    data: bytes = frame.SerializeToString()
    return data


class Hub:
    """The long-connection side of the double (see the module docstring)."""

    def __init__(self, *, redelivery_s: float = REDELIVERY_S, ping_interval_s: int = 2) -> None:
        """Create the hub.

        Args:
            redelivery_s: Wait before an unacked event is sent again, in seconds.
            ping_interval_s: ``PingInterval`` told to clients, in seconds.
        """
        self.redelivery_s = redelivery_s
        self.ping_interval_s = ping_interval_s
        self._lock = threading.RLock()
        self._acked = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[str, list[_Link]] = collections.defaultdict(list)
        self._queues: dict[str, collections.deque[_Chain]] = collections.defaultdict(
            collections.deque)
        self._sent: dict[str, list[_Sent]] = collections.defaultdict(list)
        self._by_frame: dict[str, _Sent] = {}
        self._devices: dict[str, str] = {}
        self._link_ids = itertools.count(1)
        self._ack_observers: list[AckObserver] = []
        #: Drop events for an app with no open socket instead of queueing them.
        self.drop_offline = False
        #: Events dropped so, per app.
        self.dropped: dict[str, int] = collections.defaultdict(int)

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Attach to the server's loop (None: detach, at stop)."""
        with self._lock:
            self._loop = loop

    def client_config(self) -> dict[str, int]:
        """The ClientConfig the endpoint and pongs carry (small values for tests)."""
        return {"ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0,
                "PingInterval": self.ping_interval_s}

    # -- any thread ------------------------------------------------------------

    def device(self, app_id: str) -> str:
        """A new device id for an app's websocket URL."""
        with self._lock:
            device = uuid.uuid4().hex
            self._devices[device] = app_id
            return device

    def app_of_device(self, device: str) -> str | None:
        """The app a device id was issued to (None: unknown)."""
        with self._lock:
            return self._devices.get(device)

    def submit(self, app_id: str, event: dict[str, Any], *, retry: bool = True) -> None:
        """Queue an event envelope for an app (sent when a socket is there; dropped
        instead while it has none when :attr:`drop_offline` is set)."""
        with self._lock:
            if self.drop_offline and not any(not link.closed for link in self._links[app_id]):
                self.dropped[app_id] += 1
                return
            self._queues[app_id].append(_Chain(app_id, event, retry))
        self._kick(app_id)

    def observe_acks(self, observer: AckObserver) -> None:
        """Call ``observer(app_id, delivery)`` on every ack from now on, whatever its
        code (``delivery.acked`` tells a 200; a repeated ack of one frame calls it again).

        It is called on the server's loop with the hub's lock held: it must be
        quick, must not block and must not call back into the hub. The delivery's
        ``event`` is the hub's own dict (acks are many under load), to read and
        never change.
        """
        with self._lock:
            self._ack_observers.append(observer)

    def resend(self, app_id: str, event_id: str) -> None:
        """Send an event delivered before again, with the same event id.

        Raises:
            KeyError: If no event with that id was delivered to the app.
        """
        with self._lock:
            for sent in reversed(self._sent[app_id]):
                if sent.chain.event.get("header", {}).get("event_id") == event_id:
                    self._queues[app_id].append(_Chain(app_id, sent.chain.event, False))
                    break
            else:
                raise KeyError(event_id)
        self._kick(app_id)

    def send_raw(self, app_id: str, data: bytes) -> int:
        """Send bytes as one binary message to each live socket of an app; return how many."""
        with self._lock:
            links = [link for link in self._links[app_id] if not link.closed]
            for link in links:
                link.outbox.put_nowait(data)
            return len(links)

    def deliveries(self, app_id: str) -> list[Delivery]:
        """Every frame delivered to an app, in order, with its ack state."""
        with self._lock:
            return [sent.frozen() for sent in self._sent[app_id]]

    def live(self, app_id: str) -> int:
        """How many websockets of the app are open."""
        with self._lock:
            return sum(1 for link in self._links[app_id] if not link.closed)

    def set_redelivery(self, seconds: float) -> None:
        """Set the redelivery wait for events sent from now on, in seconds.

        Raises:
            ValueError: If not positive.
        """
        if seconds <= 0:
            raise ValueError("redelivery wait must be > 0")
        with self._lock:
            self.redelivery_s = seconds

    def wait_ack(self, app_id: str, event_id: str, timeout_s: float) -> Delivery | None:
        """Wait up to ``timeout_s`` for any ack of an event; the acked (or last
        answered) delivery, or None when none was answered in time."""
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while True:
                answered = [s for s in self._sent[app_id] if s.code is not None
                            and s.chain.event.get("header", {}).get("event_id") == event_id]
                if answered:
                    return answered[-1].frozen()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._acked.wait(left)

    def _kick(self, app_id: str) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: no socket can take it
                loop.call_soon_threadsafe(self._pump_app, app_id)

    # -- the loop's thread -----------------------------------------------------

    def open_link(self, app_id: str, service_id: int, ws: web.WebSocketResponse,
                  transport: asyncio.BaseTransport | None) -> _Link:
        """Register a new socket and send it what waits for the app."""
        with self._lock:
            link = _Link(next(self._link_ids), app_id, service_id, ws, transport)
            self._links[app_id].append(link)
            self._pump(app_id)
            return link

    def close_link(self, link: _Link) -> None:
        """Forget a socket (idempotent)."""
        with self._lock:
            link.closed = True
            if link in self._links[link.app_id]:
                self._links[link.app_id].remove(link)

    async def write(self, link: _Link) -> None:
        """Send a socket's queued frames, one binary message each, until it closes."""
        while not link.closed:
            data = await link.outbox.get()
            try:
                await link.ws.send_bytes(data)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("lark double: socket %s closed while sending: %s", link.id, exc)
                return

    def on_binary(self, link: _Link, data: bytes) -> None:
        """Take a frame from a client: a ping (answered with a pong) or an ack."""
        frame = Frame()
        try:
            frame.ParseFromString(data)
        except Exception:  # a malformed frame is ignored, as the platform would
            log.debug("lark double: unparsable frame from socket %s", link.id)
            return
        kind = _header(frame, "type")
        if frame.method == 0:
            if kind == "ping":
                pong = _frame(0, link.service_id, {"type": "pong"},
                              json.dumps(self.client_config()).encode())
                link.outbox.put_nowait(pong)
            return
        frame_id = _header(frame, "message_id")
        with self._acked:
            sent = self._by_frame.get(frame_id or "")
            if sent is None or sent.chain.app_id != link.app_id:
                return
            try:
                answer = json.loads(frame.payload)
                code = int(answer.get("code"))
            except (ValueError, TypeError, AttributeError):
                return
            sent.code = code
            raw = answer.get("data")
            if isinstance(raw, str) and raw:
                with contextlib.suppress(ValueError):
                    decoded = json.loads(base64.b64decode(raw))
                    sent.response = decoded if isinstance(decoded, dict) else None
            if code == 200:
                sent.chain.done = True
                if sent.chain.timer is not None:
                    sent.chain.timer.cancel()
                    sent.chain.timer = None
            if self._ack_observers:
                seen = sent.frozen()
                for observer in self._ack_observers:
                    observer(link.app_id, seen)
            self._acked.notify_all()

    def drop(self, app_id: str | None) -> int:
        """Abort the TCP connections of an app's sockets (None: every app's)."""
        with self._lock:
            links = [link for app, group in self._links.items() if app_id in (None, app)
                     for link in group if not link.closed]
            for link in links:
                self.close_link(link)
                if link.transport is not None:
                    link.transport.abort()  # type: ignore[attr-defined]
            return len(links)

    def _pump_app(self, app_id: str) -> None:
        with self._lock:
            self._pump(app_id)

    def _pump(self, app_id: str) -> None:
        queue = self._queues[app_id]
        while queue:
            links = [link for link in self._links[app_id] if not link.closed]
            if not links:
                return
            self._send(queue.popleft(), random.choice(links))

    def _send(self, chain: _Chain, link: _Link) -> None:
        frame_id = uuid.uuid4().hex
        sent = _Sent(chain, frame_id, chain.attempt)
        self._sent[chain.app_id].append(sent)
        self._by_frame[frame_id] = sent
        headers = {"type": "event", "message_id": frame_id, "sum": "1", "seq": "0",
                   "trace_id": str(uuid.uuid4())}
        link.outbox.put_nowait(_frame(1, link.service_id, headers,
                                      json.dumps(chain.event).encode()))
        event_type = chain.event.get("header", {}).get("event_type")
        if chain.retry and event_type not in NO_RETRY and self._loop is not None:
            chain.timer = self._loop.call_later(self.redelivery_s, self._expire, sent)

    def _expire(self, sent: _Sent) -> None:
        with self._lock:
            chain = sent.chain
            chain.timer = None
            if chain.done or chain.attempt >= RETRIES:
                return
            chain.attempt += 1
            self._queues[chain.app_id].append(chain)
            self._pump(chain.app_id)
