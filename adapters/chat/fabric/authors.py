"""The authors one Fabric connection has seen: a bounded cache, and lookups off the intake.

Fabric's messages carry the author's id only. Its name and kind (human or
bot) come from ``GET /users/:id`` (inferred; see ``docs/DESIGN.md``), run on a
small thread pool so a slow lookup never holds up other members' messages;
the answer is told back to the intake as :class:`AuthorResolved`. The pool is
the process's (:func:`lookup_pool`, :data:`AUTHOR_LOOKUP_THREADS` threads
shared by every connection), so the lookup threads do not grow with the
number of agents, and its threads end after :data:`AUTHOR_LOOKUP_IDLE_S`
without a lookup, so an idle bridge holds none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import cachetools
import requests

from adapters.chat.fabric.events import AuthorResolved
from adapters.chat.fabric.rest import FabricGuild, GuildAccess, http_session
from adapters.chat.ioloop import IoLoop
from bridge.errors import Unauthorized

log = logging.getLogger(__name__)

#: User kinds that are bots: they never engage an agent unless it allows bots.
BOT_KINDS = frozenset({"agent", "bot"})
#: Authors remembered per connection, and for how long (seconds): names and kinds
#: change rarely, and a bounded cache keeps a guild of any size in bounded memory.
AUTHOR_CACHE_SIZE = 10_000
AUTHOR_CACHE_TTL_S = 3600.0
#: Threads that run author lookups, for the whole process (every connection's).
AUTHOR_LOOKUP_THREADS = 4
#: Name prefix of the lookup threads.
AUTHOR_LOOKUP_THREAD_PREFIX = "authors"
#: Seconds without a lookup after which the lookup threads end (started again on demand).
AUTHOR_LOOKUP_IDLE_S = 10.0

_T = TypeVar("_T")


class LookupPool:
    """Runs blocking lookups on up to ``threads`` threads that end when idle.

    A :class:`concurrent.futures.ThreadPoolExecutor` keeps its threads for the
    life of the process. This pool runs each lookup on one, and shuts that
    executor down (its threads end) once no lookup has run for ``idle_s``
    seconds; the next lookup makes a new one. The idle time is kept on the
    process's chat :class:`IoLoop` (``call_later``), so it costs no thread.

    Args:
        threads: Lookups that run at once (at least 1).
        prefix: Name prefix of the threads.
        idle_s: Seconds without a lookup before the threads end.
        loop: Keeps the idle time; None: :meth:`IoLoop.shared`.
    """

    def __init__(self, threads: int, prefix: str, idle_s: float = AUTHOR_LOOKUP_IDLE_S,
                 loop: IoLoop | None = None) -> None:
        self.threads = threads
        self.prefix = prefix
        self.idle_s = idle_s
        self._loop = loop
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0  # lookups submitted and not finished
        self._submitted = 0  # lookups ever submitted: a retirement checks none came since

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        """Run ``fn`` on a lookup thread.

        Raises:
            RuntimeError: the executor refused it (the interpreter is exiting).
        """
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads,
                                                    thread_name_prefix=self.prefix)
            future = self._executor.submit(fn)
            self._running += 1
            self._submitted += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future[Any]) -> None:
        """A lookup ended (or was cancelled): the last one starts the idle time."""
        with self._lock:
            self._running -= 1
            if self._running:
                return
            submitted = self._submitted
        loop = (self._loop or IoLoop.shared()).loop
        try:
            loop.call_soon_threadsafe(loop.call_later, self.idle_s, self._retire, submitted)
        except RuntimeError:  # the loop is closed: the process is exiting
            return

    def _retire(self, submitted: int) -> None:
        """End the threads if no lookup was submitted since the idle time began."""
        with self._lock:
            if self._running or submitted != self._submitted or self._executor is None:
                return
            executor, self._executor = self._executor, None
        executor.shutdown(wait=False)

    def alive(self) -> bool:
        """Whether the pool holds an executor (threads may be running) now."""
        with self._lock:
            return self._executor is not None


_pool_lock = threading.Lock()
_pool: LookupPool | None = None
#: One HTTP session per lookup thread (a requests.Session is not shared between threads).
_sessions = threading.local()


def lookup_pool() -> LookupPool:
    """The process's author-lookup pool, made on first use.

    Its :data:`AUTHOR_LOOKUP_THREADS` threads start on demand, end after
    :data:`AUTHOR_LOOKUP_IDLE_S` without a lookup, and are shared by every
    :class:`AuthorBook`; no book shuts it down (closing a book drops that
    book's lookups only).
    """
    global _pool  # one pool per process
    with _pool_lock:
        if _pool is None:
            _pool = LookupPool(AUTHOR_LOOKUP_THREADS, AUTHOR_LOOKUP_THREAD_PREFIX)
        return _pool


def _thread_session() -> requests.Session:
    """This lookup thread's HTTP session (made on its first lookup)."""
    session: requests.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = http_session()
    return session


class AuthorBook:
    """Names and kinds of the authors of one connection.

    Args:
        label: Names the connection in logs.
        tell: Hands a finished lookup back to the intake; called on a pool thread,
            never after :meth:`close` returned.
        pool: Runs the lookups; None: the process's :func:`lookup_pool`.
    """

    def __init__(self, label: str, tell: Callable[[object], None],
                 pool: LookupPool | ThreadPoolExecutor | None = None) -> None:
        self.label = label
        self.tell = tell
        self.cache: cachetools.TTLCache[str, tuple[str, str]] = cachetools.TTLCache(
            AUTHOR_CACHE_SIZE, AUTHOR_CACHE_TTL_S)
        self.pool = pool
        #: Guards ``pending`` and ``closed``; held while a finished lookup is told.
        self.lock = threading.Lock()
        self.pending: set[Future[tuple[str, str] | None]] = set()
        self.closed = False

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.cache

    def remember(self, user_id: str, found: tuple[str, str]) -> None:
        """Keep an author's ``(display name, kind)``."""
        self.cache[user_id] = found

    def name(self, user_id: str) -> str:
        """The author's display name from the cache; the id's start when not cached."""
        found = self.cache.get(user_id)
        return found[0] if found is not None else user_id[:8]

    def is_bot(self, user_id: str) -> bool:
        """Whether the cached author is a bot or an agent (False when not cached)."""
        found = self.cache.get(user_id)
        return found is not None and found[1] in BOT_KINDS

    def look_up(self, user_id: str, access: GuildAccess | None) -> None:
        """Start a lookup of ``user_id`` on the pool; the answer is told back.

        A lookup of a closed book is dropped (not started, or its answer not told).

        Args:
            user_id: The author.
            access: The guild access to ask with; None (not connected) fails at once.
        """
        if access is None:
            self.tell(AuthorResolved(user_id, None, failed=True, error="not connected"))
            return
        if self.closed:
            log.debug("authors %s: lookup after close dropped", self.label)
            return
        if self.pool is None:
            self.pool = lookup_pool()

        def look_up() -> tuple[str, str] | None:
            # The thread's session, this connection's access (its token).
            return FabricGuild(access, _thread_session()).user(user_id)

        def done(future: Future[tuple[str, str] | None]) -> None:
            with self.lock:
                self.pending.discard(future)
                if self.closed or future.cancelled():
                    return
                self.tell(self._resolved(user_id, future))

        try:
            future = self.pool.submit(look_up)
        except RuntimeError:  # the pool is shut down: the process is exiting
            log.debug("authors %s: lookup after the pool's shutdown dropped", self.label)
            return
        with self.lock:
            if self.closed:
                future.cancel()
                return
            self.pending.add(future)
        future.add_done_callback(done)

    @staticmethod
    def _resolved(user_id: str, future: Future[tuple[str, str] | None]) -> AuthorResolved:
        """What a finished lookup tells the intake."""
        try:
            found = future.result()
        except Unauthorized as exc:
            return AuthorResolved(user_id, None, failed=True, error=str(exc)[:200],
                                  unauthorized=True)
        except Exception as exc:  # any failure is retried, then fails closed
            return AuthorResolved(user_id, None, failed=True, error=str(exc)[:200])
        return AuthorResolved(user_id, found)

    def close(self) -> None:
        """Drop this book's lookups: those not started are cancelled, the answers of
        those running are not told. The shared pool goes on for the other books."""
        with self.lock:
            self.closed = True
            pending, self.pending = self.pending, set()
        for future in pending:
            future.cancel()
