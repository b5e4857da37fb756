"""Delivery: one per (agent, channel); posts answers exactly once, in order.

An answer is split under the content limit at line or word boundaries. Each
piece has an idempotency key ``<run_id>:<index>``; a key that was posted is
never posted again. Transient failures (5xx, 429, network) are retried with
backoff that honours Retry-After; before retrying a post whose outcome is
unknown (no answer, or a 5xx), the recent channel history is checked for the
piece, so a post that did land is not posted a second time.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import attrs
import pykka

from actors.messages import Deliver, GetAccess, Init, Invalidate, RetryDelivery
from actors.runtime import Runtime, SupervisedActor
from adapters.chat.fabric_rest import FabricGuild, GuildAccess, http_session
from bridge.chunking import split_message
from bridge.errors import ChatError, LoginRefused, RetryLater, Unauthorized

log = logging.getLogger(__name__)

#: Retry backoff for failed posts: first delay and cap, in seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
#: Idempotency keys remembered (per channel).
KEYS_REMEMBERED = 10_000
#: Messages of recent history searched for an ambiguous post.
HISTORY_CHECK = 50
#: Seconds to wait for the token cache.
TOKEN_ASK_TIMEOUT_S = 15.0


@attrs.frozen
class Piece:
    """One message to post.

    Attributes:
        key: Idempotency key, ``<run_id>:<index>``.
        content: Text, under the content limit.
    """

    key: str
    content: str


class Delivery(SupervisedActor):
    """Posts pieces to one channel as one agent identity.

    Args:
        runtime: Shared services.
        child_id: ``delivery:<scope key>``.
        agent: Agent name (whose token posts).
        guild: Guild node id.
        channel_id: Channel id.
    """

    def __init__(self, runtime: Runtime, child_id: str, agent: str, guild: str,
                 channel_id: str) -> None:
        super().__init__(runtime, child_id)
        self.agent = agent
        self.guild = guild
        self.channel_id = channel_id
        self.http = http_session()
        self.queue: collections.deque[Piece] = collections.deque()
        self.posted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.attempts = 0
        self.check_history = False
        self.generation = 0
        self.waiting = False
        self.delivered = 0
        self.retries = 0

    def on_receive(self, message: Any) -> None:
        """Handle ``Deliver`` and ``RetryDelivery``."""
        if isinstance(message, Init):
            self._publish()
        elif isinstance(message, Deliver):
            limit = self.runtime.config.fabric.content_limit
            for index, content in enumerate(split_message(message.text, limit)):
                key = f"{message.run_id}:{index}"
                if key not in self.posted:
                    self.queue.append(Piece(key, content))
            if not self.waiting:
                self._drain()
        elif isinstance(message, RetryDelivery):
            if message.generation == self.generation:
                self.waiting = False
                self._drain()
        else:
            super().on_receive(message)

    def _drain(self) -> None:
        while self.queue:
            piece = self.queue[0]
            try:
                self._post(piece)
            except RetryLater as exc:
                self._retry(exc, exc.retry_after_s, ambiguous=exc.ambiguous)
                return
            except (Unauthorized, LoginRefused) as exc:
                self._retry(exc, None, ambiguous=False)
                return
            except pykka.Timeout:
                self._retry(RetryLater("token cache did not answer"), None, ambiguous=False)
                return
            except ChatError as exc:
                log.error("delivery %s: piece %s dropped: %s", self.child_id, piece.key, exc)
            self.queue.popleft()
            self.attempts = 0
            self.check_history = False
        self._publish()

    def _post(self, piece: Piece) -> None:
        access = self._access()
        guild = FabricGuild(access, self.http)
        try:
            if self.check_history and self._already_posted(guild, access, piece):
                log.info("delivery %s: piece %s had landed; not posting again", self.child_id,
                         piece.key)
            else:
                guild.post(self.channel_id, piece.content)
        except Unauthorized:
            self._invalidate(access.token)
            raise
        self._remember(piece.key)
        self.delivered += 1

    def _already_posted(self, guild: FabricGuild, access: GuildAccess, piece: Piece) -> bool:
        recent = guild.history(self.channel_id, limit=HISTORY_CHECK)
        return any(m.get("authorUserId") == access.user_id and m.get("content") == piece.content
                   for m in recent)

    def _retry(self, exc: Exception, retry_after_s: float | None, *, ambiguous: bool) -> None:
        self.attempts += 1
        self.retries += 1
        self.check_history = self.check_history or ambiguous
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.attempts - 1))
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        log.warning("delivery %s: %s; retry %d in %.1fs", self.child_id, exc, self.attempts,
                    delay)
        self.generation += 1
        self.waiting = True
        self.runtime.timers.schedule(delay, self.actor_ref, RetryDelivery(self.generation))
        self._publish()

    def _remember(self, key: str) -> None:
        self.posted[key] = None
        if len(self.posted) > KEYS_REMEMBERED:
            self.posted.popitem(last=False)

    def _access(self) -> GuildAccess:
        tokens = self.runtime.directory.get(f"tokens:{self.agent}")
        if tokens is None:
            raise RetryLater("token cache is restarting")
        access = tokens.ask(GetAccess(self.guild), timeout=TOKEN_ASK_TIMEOUT_S)
        assert isinstance(access, GuildAccess)
        return access

    def _invalidate(self, token: str) -> None:
        tokens = self.runtime.directory.get(f"tokens:{self.agent}")
        if tokens is not None:
            tokens.tell(Invalidate(token))

    def _publish(self) -> None:
        detail = f"delivered {self.delivered}, queued {len(self.queue)}, retries {self.retries}"
        self.runtime.board.update_actor(self.child_id, detail=detail)
