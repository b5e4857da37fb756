"""The process's one asyncio loop for chat-platform connections.

Every platform connection that has an asyncio client (the Fabric socket.io
client, the Feishu/Lark long connection) runs on this loop, on one daemon
thread: received events are handled by coroutines and tasks of that loop, not
by a thread per connection or per packet. Handlers that run on the loop must
return fast (they only ``tell`` an actor); blocking work stays on the callers'
threads, which wait for the loop's results with :meth:`IoLoop.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class IoLoop:
    """One asyncio loop running forever on its own daemon thread (see the module docstring).

    Use :meth:`shared` for the process's loop; a separate instance is for tests.
    """

    _shared: ClassVar[IoLoop | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "chat-io") -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._exception)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    @classmethod
    def shared(cls) -> IoLoop:
        """The process's loop, started on first use (and again if its thread died)."""
        with cls._lock:
            if cls._shared is None or not cls._shared.thread.is_alive():
                cls._shared = IoLoop()
            return cls._shared

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @staticmethod
    def _exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A task ended with an error nobody awaited (e.g. a dropped socket's read task).

        The connection's owner notices the drop on its own (a disconnect callback or
        a watchdog), so this is logged, not raised.
        """
        exc = context.get("exception")
        log.info("chat io loop: %s%s", context.get("message", "task ended"),
                 f" ({type(exc).__name__}: {exc})" if exc is not None else "")

    def on_loop(self) -> bool:
        """True when called from the loop's own thread (where :meth:`run` must not wait)."""
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, _T], timeout_s: float) -> _T:
        """Run ``coro`` on the loop and wait at most ``timeout_s`` seconds for its result.

        Must not be called from the loop's thread (it would wait on itself).

        Raises:
            TimeoutError: it took longer (it is cancelled).
            RuntimeError: called from the loop's own thread.
            Exception: what ``coro`` raised.
        """
        if self.on_loop():
            coro.close()
            raise RuntimeError("IoLoop.run called on the loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"took over {timeout_s:.0f}s") from None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start ``coro`` on the loop without waiting; safe from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` on the loop's thread soon; safe from any thread."""
        self.loop.call_soon_threadsafe(callback)
