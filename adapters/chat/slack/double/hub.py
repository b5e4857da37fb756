"""Socket Mode delivery: each app's live sockets, envelopes, acks and retries.

Wire format (docs apis/events-api/using-socket-mode; slack_sdk 3.48
socket_mode/request.py): on connect ``{"type": "hello", "num_connections",
"debug_info", "connection_info": {"app_id"}}``; then envelopes ``{"envelope_id",
"type", "payload", "accepts_response_payload"}``, ``events_api`` ones also with
``retry_attempt``/``retry_reason``; the client acks with ``{"envelope_id"[,
"payload"]}``.

Rules kept here:

- An envelope goes to one live socket of its app: round robin over those not
  silenced and not told to disconnect, else over those only told to
  disconnect, else to a silenced one, where it is swallowed (counted as
  delivered, never sent). With no socket it waits for the next connection.
- An ``events_api`` envelope not acked within ``ack_timeout_s`` is sent again
  (a new envelope id, the same payload and event_id) with ``retry_attempt``
  1..3 and ``retry_reason`` ``"timeout"``, then dropped (docs apis/events-api,
  "retries"; Slack backs off between retries, the double waits
  ``ack_timeout_s`` each time). An ack of any attempt ends the retries.
  Interactive and slash envelopes are not retried (Slack shows the user an
  error instead).

Everything that touches a socket runs on the server's event loop; the lock
lets tests read the records from their own thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

import attrs
from aiohttp import web

log = logging.getLogger(__name__)

#: Default time to wait for an ack before sending again, in seconds (docs: 3 s).
ACK_TIMEOUT_S = 3.0
#: How many times an unacked ``events_api`` envelope is sent again.
RETRIES = 3
#: ``observer(app_id, delivery)``: called on each ack (see :meth:`Hub.observe_acks`).
AckObserver = Callable[[str, "Delivery"], None]


@attrs.frozen
class Delivery:
    """One envelope as delivered, and whether the client acked it.

    Attributes:
        envelope: The envelope as sent.
        acked: Whether the client acked this envelope id.
        ack_payload: The ``payload`` sent with the ack, if any.
        swallowed: True when it went to a silenced socket (never sent).
    """

    envelope: dict[str, Any]
    acked: bool
    ack_payload: dict[str, Any] | None
    swallowed: bool

    @property
    def envelope_id(self) -> str:
        """The envelope's id."""
        return str(self.envelope["envelope_id"])

    @property
    def type(self) -> str:
        """``events_api``, ``interactive`` or ``slash_commands``."""
        return str(self.envelope["type"])

    @property
    def retry_attempt(self) -> int:
        """0 for a first delivery, 1..3 for retries (0 for non-event envelopes)."""
        return int(self.envelope.get("retry_attempt") or 0)

    @property
    def payload(self) -> dict[str, Any]:
        """The envelope's payload."""
        payload: dict[str, Any] = self.envelope["payload"]
        return payload


@attrs.define(eq=False)
class _Link:
    """One live socket."""

    id: int
    app_id: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    outbox: asyncio.Queue[str] = attrs.Factory(asyncio.Queue)
    silenced: bool = False
    retiring: bool = False
    closed: bool = False


@attrs.define(eq=False)
class _Chain:
    """One payload and its delivery attempts."""

    app_id: str
    type: str
    payload: dict[str, Any]
    attempt: int = 0
    acked: bool = False
    dropped: bool = False
    last: _Sent | None = None
    timer: asyncio.TimerHandle | None = None


@attrs.define(eq=False)
class _Sent:
    envelope: dict[str, Any]
    chain: _Chain
    swallowed: bool
    acked: bool = False
    ack_payload: dict[str, Any] | None = None

    def frozen(self) -> Delivery:
        return Delivery(json.loads(json.dumps(self.envelope)), self.acked,
                        self.ack_payload, self.swallowed)


class Hub:
    """The Socket Mode side of the double (see the module docstring)."""

    def __init__(self, *, ack_timeout_s: float = ACK_TIMEOUT_S, retries: int = RETRIES,
                 host: str = "applink-double") -> None:
        """Create the hub.

        Args:
            ack_timeout_s: Time to wait for an ack, in seconds.
            retries: How many times an unacked event is sent again.
            host: The name in ``debug_info.host``.
        """
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.host = host
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[str, list[_Link]] = collections.defaultdict(list)
        self._queues: dict[str, collections.deque[_Chain]] = collections.defaultdict(
            collections.deque)
        self._sent: dict[str, list[_Sent]] = collections.defaultdict(list)
        self._by_id: dict[str, _Sent] = {}
        self._tickets: dict[str, str] = {}
        self._turns: dict[str, int] = collections.defaultdict(int)
        self._link_ids = itertools.count(1)
        self._ack_observers: list[AckObserver] = []

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Attach to the server's loop (None: detach, at stop)."""
        with self._lock:
            self._loop = loop

    # -- any thread ------------------------------------------------------------

    def submit(self, app_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Queue a payload for an app (a :data:`~adapters.chat.slack.double.state.Sink`)."""
        with self._lock:
            self._queues[app_id].append(_Chain(app_id, kind, payload))
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: no socket can take it
                loop.call_soon_threadsafe(self._pump_app, app_id)

    def observe_acks(self, observer: AckObserver) -> None:
        """Call ``observer(app_id, delivery)`` on every ack from now on (``delivery.acked``
        is True; a repeated ack of one envelope calls it again).

        It is called on the server's loop with the hub's lock held: it must be
        quick, must not block and must not call back into the hub. The delivery
        is not copied (acks are many under load): its envelope is the hub's own
        dict, to read and never change.
        """
        with self._lock:
            self._ack_observers.append(observer)

    def ticket(self, app_id: str) -> str:
        """A new Socket Mode ticket for an app (accepted any number of times)."""
        with self._lock:
            ticket = secrets.token_urlsafe(24)
            self._tickets[ticket] = app_id
            return ticket

    def app_of_ticket(self, ticket: str) -> str | None:
        """The app a ticket was issued for (None: unknown)."""
        with self._lock:
            return self._tickets.get(ticket)

    def deliveries(self, app_id: str) -> list[Delivery]:
        """Every envelope delivered to an app, in order, with its ack state."""
        with self._lock:
            return [sent.frozen() for sent in self._sent[app_id]]

    def unacked(self, app_id: str) -> list[Delivery]:
        """The latest delivery of each payload never acked (waiting for a retry,
        or dropped after the last one), in order."""
        with self._lock:
            return [sent.frozen() for sent in self._sent[app_id]
                    if not sent.chain.acked and sent.chain.last is sent]

    def waiting(self, app_id: str) -> int:
        """How many payloads wait for a socket of the app."""
        with self._lock:
            return len(self._queues[app_id])

    def live(self, app_id: str) -> int:
        """How many sockets of the app are open."""
        with self._lock:
            return sum(1 for link in self._links[app_id] if not link.closed)

    def set_ack_timeout(self, seconds: float) -> None:
        """Set the ack wait for envelopes sent from now on, in seconds.

        Raises:
            ValueError: If not positive.
        """
        if seconds <= 0:
            raise ValueError("ack timeout must be > 0")
        with self._lock:
            self.ack_timeout_s = seconds

    # -- the loop's thread -----------------------------------------------------

    def open_link(self, app_id: str, ws: web.WebSocketResponse,
                  transport: asyncio.Transport | None) -> _Link:
        """Register a new socket: queue ``hello``, then what waits for the app."""
        with self._lock:
            link = _Link(next(self._link_ids), app_id, ws, transport)
            self._links[app_id].append(link)
            hello = {"type": "hello", "num_connections": self.live(app_id),
                     "debug_info": {"host": f"{self.host}-{link.id}", "build_number": 1,
                                    "approximate_connection_time": 18060},
                     "connection_info": {"app_id": app_id}}
            link.outbox.put_nowait(json.dumps(hello))
            log.debug("slack double: socket %s of %s opened", link.id, app_id)
            self._pump(app_id)
            return link

    def close_link(self, link: _Link) -> None:
        """Forget a socket (idempotent)."""
        with self._lock:
            if not link.closed:
                log.debug("slack double: socket %s of %s closed", link.id, link.app_id)
            link.closed = True
            if link in self._links[link.app_id]:
                self._links[link.app_id].remove(link)

    async def write(self, link: _Link) -> None:
        """Send a socket's queued texts, one unfragmented text frame each, until it closes."""
        while not link.closed:
            text = await link.outbox.get()
            try:
                await link.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("slack double: socket %s closed while sending: %s", link.id, exc)
                return

    def on_text(self, link: _Link, text: str) -> None:
        """Take a text from a client: an ack ``{"envelope_id"[, "payload"]}``; others ignored."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return
        envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
        if not isinstance(envelope_id, str):
            return
        with self._lock:
            sent = self._by_id.get(envelope_id)
            if sent is None or sent.chain.app_id != link.app_id:
                return
            sent.acked = True
            payload = data.get("payload")
            sent.ack_payload = payload if isinstance(payload, dict) else None
            sent.chain.acked = True
            if sent.chain.timer is not None:
                sent.chain.timer.cancel()
                sent.chain.timer = None
            if self._ack_observers:
                seen = Delivery(sent.envelope, True, sent.ack_payload, sent.swallowed)
                for observer in self._ack_observers:
                    observer(link.app_id, seen)

    def disconnect(self, app_id: str, reason: str) -> int:
        """Send ``{"type": "disconnect", "reason", "debug_info"}`` to each live socket
        of an app; they get new envelopes only when no other socket is there."""
        with self._lock:
            links = [link for link in self._links[app_id] if not link.closed]
            for link in links:
                link.retiring = True
                link.outbox.put_nowait(json.dumps({
                    "type": "disconnect", "reason": reason,
                    "debug_info": {"host": f"{self.host}-{link.id}"}}))
            return len(links)

    def drop(self, app_id: str | None) -> int:
        """Abort the TCP connections of an app's sockets (None: every app's)."""
        with self._lock:
            links = [link for app, group in self._links.items() if app_id in (None, app)
                     for link in group if not link.closed]
            for link in links:
                self.close_link(link)
                if link.transport is not None:
                    link.transport.abort()
            return len(links)

    def silence(self, app_id: str, on: bool) -> int:
        """Silence (or make heard again) an app's open sockets; return how many."""
        with self._lock:
            links = [link for link in self._links[app_id] if not link.closed]
            for link in links:
                link.silenced = on
            if not on:
                self._pump(app_id)
            return len(links)

    def _pump_app(self, app_id: str) -> None:
        with self._lock:
            self._pump(app_id)

    def _target(self, app_id: str) -> _Link | None:
        links = [link for link in self._links[app_id] if not link.closed]
        for tier in ([lk for lk in links if not lk.silenced and not lk.retiring],
                     [lk for lk in links if not lk.silenced], links):
            if tier:
                self._turns[app_id] += 1
                return tier[self._turns[app_id] % len(tier)]
        return None

    def _pump(self, app_id: str) -> None:
        queue = self._queues[app_id]
        while queue:
            link = self._target(app_id)
            if link is None:
                return
            self._send(queue.popleft(), link)

    def _send(self, chain: _Chain, link: _Link) -> None:
        envelope: dict[str, Any] = {"envelope_id": str(uuid.uuid4()), "type": chain.type,
                                    "payload": chain.payload,
                                    "accepts_response_payload": chain.type == "slash_commands"}
        if chain.type == "events_api":
            envelope["retry_attempt"] = chain.attempt
            envelope["retry_reason"] = "timeout" if chain.attempt else ""
        sent = _Sent(envelope, chain, swallowed=link.silenced)
        chain.last = sent
        self._sent[chain.app_id].append(sent)
        self._by_id[envelope["envelope_id"]] = sent
        if not link.silenced:
            link.outbox.put_nowait(json.dumps(envelope))
        if chain.type == "events_api" and self._loop is not None:
            chain.timer = self._loop.call_later(self.ack_timeout_s, self._expire, sent)

    def _expire(self, sent: _Sent) -> None:
        with self._lock:
            chain = sent.chain
            if chain.acked or chain.last is not sent:
                return
            chain.timer = None
            if chain.attempt >= self.retries:
                chain.dropped = True
                return
            chain.attempt += 1
            self._queues[chain.app_id].append(chain)
            self._pump(chain.app_id)
