"""The authors one Fabric connection has seen: a bounded cache, and lookups off the intake.

Fabric's messages carry the author's id only. Its name and kind (human or
bot) come from ``GET /users/:id`` (inferred; see ``docs/DESIGN.md``), run on a
small thread pool so a slow lookup never holds up other members' messages;
the answer is told back to the intake as :class:`AuthorResolved`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import cachetools

from adapters.chat.fabric.events import AuthorResolved
from adapters.chat.fabric.rest import FabricGuild, GuildAccess, http_session
from bridge.errors import Unauthorized

log = logging.getLogger(__name__)

#: User kinds that are bots: they never engage an agent unless it allows bots.
BOT_KINDS = frozenset({"agent", "bot"})
#: Authors remembered per connection, and for how long (seconds): names and kinds
#: change rarely, and a bounded cache keeps a guild of any size in bounded memory.
AUTHOR_CACHE_SIZE = 10_000
AUTHOR_CACHE_TTL_S = 3600.0
#: Threads that run author lookups, per connection.
AUTHOR_LOOKUP_THREADS = 4


class AuthorBook:
    """Names and kinds of the authors of one connection.

    Args:
        label: Names the connection in thread names and logs.
        tell: Hands a finished lookup back to the intake; called on a pool thread.
    """

    def __init__(self, label: str, tell: Callable[[object], None]) -> None:
        self.label = label
        self.tell = tell
        self.cache: cachetools.TTLCache[str, tuple[str, str]] = cachetools.TTLCache(
            AUTHOR_CACHE_SIZE, AUTHOR_CACHE_TTL_S)
        self.pool: ThreadPoolExecutor | None = None
        self.local = threading.local()

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

        Args:
            user_id: The author.
            access: The guild access to ask with; None (not connected) fails at once.
        """
        if access is None:
            self.tell(AuthorResolved(user_id, None, failed=True, error="not connected"))
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(AUTHOR_LOOKUP_THREADS,
                                           thread_name_prefix=f"authors-{self.label}")
        local = self.local

        def look_up() -> tuple[str, str] | None:
            # One HTTP session per lookup thread (a requests.Session is not shared).
            guild: FabricGuild | None = getattr(local, "guild", None)
            if guild is None:
                guild = local.guild = FabricGuild(access, http_session())
            guild.access = access
            return guild.user(user_id)

        def done(future: Future[tuple[str, str] | None]) -> None:
            try:
                found = future.result()
            except Unauthorized as exc:
                self.tell(AuthorResolved(user_id, None, failed=True, error=str(exc)[:200],
                                         unauthorized=True))
                return
            except Exception as exc:  # any failure is retried, then fails closed
                self.tell(AuthorResolved(user_id, None, failed=True, error=str(exc)[:200]))
                return
            self.tell(AuthorResolved(user_id, found))

        try:
            self.pool.submit(look_up).add_done_callback(done)
        except RuntimeError:  # the pool is shut down: the intake is closing
            log.debug("authors %s: lookup after close dropped", self.label)

    def close(self) -> None:
        """Stop the pool (pending lookups are dropped)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
