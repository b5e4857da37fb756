"""The authors one Fabric connection has seen: a bounded cache, and lookups off the intake.

Fabric's messages carry the author's id only. Its name and kind (human or
bot) come from ``GET /users/:id`` (inferred; see ``docs/DESIGN.md``), run as
a coroutine on the process's chat loop
(:func:`adapters.chat.fabric.aiopost.fetch_user`), so a slow lookup never
holds up other members' messages and no lookup costs a thread; the answer is
told back to the intake as :class:`AuthorResolved`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

import cachetools

from adapters.chat.fabric.aiopost import fetch_user
from adapters.chat.fabric.events import AuthorResolved
from adapters.chat.fabric.rest import GuildAccess
from adapters.chat.ioloop import IoLoop
from bridge.errors import Unauthorized

log = logging.getLogger(__name__)

#: User kinds that are bots: they never engage an agent unless it allows bots.
BOT_KINDS = frozenset({"agent", "bot"})
#: Authors remembered per connection, and for how long (seconds): names and kinds
#: change rarely, and a bounded cache keeps a guild of any size in bounded memory.
AUTHOR_CACHE_SIZE = 10_000
AUTHOR_CACHE_TTL_S = 3600.0


class AuthorBook:
    """Names and kinds of the authors of one connection.

    Args:
        label: Names the connection in logs.
        tell: Hands a finished lookup back to the intake; called on the loop's
            thread (or the caller's, when the lookup ended before its callback was
            added); it must not block, and is never called after :meth:`close`
            returned.
        io: Runs the lookups; None: the process's chat loop (:meth:`IoLoop.shared`).
    """

    def __init__(self, label: str, tell: Callable[[object], None],
                 io: IoLoop | None = None) -> None:
        self.label = label
        self.tell = tell
        self.cache: cachetools.TTLCache[str, tuple[str, str]] = cachetools.TTLCache(
            AUTHOR_CACHE_SIZE, AUTHOR_CACHE_TTL_S)
        self.io = io
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
        """Start a lookup of ``user_id`` on the chat loop; the answer is told back.

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

        def done(future: Future[tuple[str, str] | None]) -> None:
            with self.lock:
                self.pending.discard(future)
                if self.closed or future.cancelled():
                    return
                self.tell(self._resolved(user_id, future))

        lookup = fetch_user(access, user_id)  # this connection's access (its token)
        try:
            future = (self.io or IoLoop.shared()).spawn(lookup)
        except RuntimeError:  # the loop is closed: the process is exiting
            lookup.close()
            log.debug("authors %s: lookup after the loop closed dropped", self.label)
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
        """Drop this book's lookups: they are cancelled, and the answer of one that
        finishes meanwhile is not told. The loop goes on for the other books."""
        with self.lock:
            self.closed = True
            pending, self.pending = self.pending, set()
        for future in pending:
            future.cancel()
