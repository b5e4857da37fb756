"""Feishu/Lark long connections: every app's lark-oapi client on one asyncio loop.

lark-oapi's :class:`lark_oapi.ws.Client` takes its event loop from a module
global (``lark_oapi.ws.client.loop``, grabbed at import), runs it forever in
``start()``, has no ``stop()``, and with ``auto_reconnect`` it can end up dead
while ``start()`` sleeps on (lark_oapi/ws/client.py; oapi-sdk-python #119, #133,
PR #144). So the bridge does not call ``start()``:

- the process's one chat I/O loop (:class:`adapters.chat.ioloop.IoLoop`, shared
  by every app and by the other platforms' asyncio clients) runs them, and the
  module global points at it;
- each app's :class:`LongConnection` makes a client with ``auto_reconnect=False``,
  discovers the endpoint off the loop (the SDK's discovery blocks), and runs its
  coroutines on that loop: ``_connect`` (the websocket), ``_ping_loop``, and
  ``_disconnect`` to close. These are the SDK's own
  steps of ``start()`` (ws/client.py:184-199) without its forever-sleep;
- a dropped socket leaves the client's connection empty: the intake's watchdog
  sees :meth:`LongConnection.alive` go False and connects a fresh client, with
  its own backoff and a catch-up.

The event handler runs on that loop and must return fast (the platform wants
the ack within 3 s): the intake's handler only tells its host.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import lark_oapi as lark
import lark_oapi.ws.client as ws_client
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
from lark_oapi.ws.exception import ClientException, ServerException

from adapters.chat.ioloop import IoLoop
from bridge.errors import LoginRefused, RetryLater

log = logging.getLogger(__name__)

#: Seconds a connect (endpoint discovery and the websocket handshake) may take.
CONNECT_TIMEOUT_S = 30.0
#: Threads for the endpoint discoveries (a hung one is abandoned after the timeout).
_ENDPOINTS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="lark-endpoint")
#: Seconds a close may take.
CLOSE_TIMEOUT_S = 5.0


def shared_loop() -> IoLoop:
    """The process's chat I/O loop, with lark-oapi's module global pointing at it.

    lark-oapi's client takes its loop from ``lark_oapi.ws.client.loop``; the
    global is set on every call because the shared loop is started again if its
    thread ever died.
    """
    io = IoLoop.shared()
    ws_client.loop = io.loop
    return io


class LongConnection:
    """One app's long connection (see the module docstring).

    Args:
        app_id: The app id.
        app_secret: The app secret (never logged).
        domain: The open platform origin.
        handler: lark-oapi's dispatcher with the app's event handlers.
    """

    def __init__(self, app_id: str, app_secret: str, domain: str,
                 handler: EventDispatcherHandler) -> None:
        self.loop = shared_loop()
        self.client = lark.ws.Client(app_id, app_secret, event_handler=handler, domain=domain,
                                     auto_reconnect=False, log_level=lark.LogLevel.WARNING)
        self.app_id = app_id
        self.ping: concurrent.futures.Future[Any] | None = None

    def open(self) -> None:
        """Discover the endpoint and open the websocket.

        Raises:
            bridge.errors.LoginRefused: the platform refused the app (a wrong or rotated
                secret, or too many connections: lark-oapi's ``ClientException``).
            bridge.errors.RetryLater: the platform could not be reached or is busy.
        """
        try:
            # The SDK's endpoint discovery is a blocking requests.post without a timeout
            # inside its coroutine: done here, off the shared loop, bounded, so one app's
            # slow discovery never stalls the other apps' acks; the loop only opens the
            # websocket.
            url = _ENDPOINTS.submit(self.client._get_conn_url).result(CONNECT_TIMEOUT_S)
            self.client._get_conn_url = lambda: url
            self.loop.run(self.client._connect(), CONNECT_TIMEOUT_S)
        except ClientException as exc:
            raise LoginRefused(f"Feishu/Lark refused the long connection of app "
                               f"{self.app_id}: {exc}") from None
        except (ServerException, OSError, TimeoutError, Exception) as exc:
            raise RetryLater(f"long connection of app {self.app_id} not opened: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if not self.alive():
            raise RetryLater(f"long connection of app {self.app_id} not opened")
        self.ping = self.loop.spawn(self.client._ping_loop())

    def alive(self) -> bool:
        """Whether the websocket is up (the SDK empties its connection when it drops)."""
        return self.client._conn is not None

    def close(self) -> None:
        """Stop pinging and close the websocket; never raises."""
        if self.ping is not None:
            self.loop.call_soon(self.ping.cancel)
            self.ping = None
        try:
            self.loop.run(self.client._disconnect(), CLOSE_TIMEOUT_S)
        except Exception as exc:  # closing must not stop the intake
            log.info("lark %s: closing the long connection: %s", self.app_id, exc)
