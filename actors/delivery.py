"""Delivery: one per conversation; posts the outbox's pieces exactly once, in order.

Runs put their answers in the store's outbox (split under the content limit,
one idempotency key ``<run_id>:<index>`` per piece) and tell this actor
``Deliver``. It posts pending pieces in order and marks each one posted in
the store right after the platform accepted it. Transient failures (5xx, 429,
network) are retried with backoff that honours Retry-After. Landing is
decided by identity, never by text: every post carries the piece's key as its
idempotency key, and before posting a piece whose earlier attempt had an
unknown outcome (no answer, a 5xx, or a piece left pending by a crash) the
chat adapter searches the channel for a message of ours with that key, paging
back to the message the piece answers or the time it entered the outbox, so a
post that did land is never posted a second time and a look-alike never
counts as it.

Runs also send their live status text (``Progress``): the first one is
posted as the run's status message (idempotency key ``status:<run_id>``, so a
post whose answer was lost is found and edited rather than posted again),
later ones edit it, only when the text changed and at most once a second; the
last state is always shown. Where the platform has buttons, the status carries
a Stop button (control ``stop`` carrying the run id) until the run's last state
replaces it. Where the platform shows a run natively (Slack's streamed
message: ``limits.native_status``), that live status takes the snapshots
instead, at the same pace; on its first refusal the posted status message
takes over for the rest of the run.

File pieces (a run's files, staged in the state dir; see :mod:`bridge.run_files`)
are uploaded in their place in the queue, with the piece's key as idempotency key
and the same "did it land?" check; the staged copy is removed once the file is
uploaded or given up, and a refused upload (the platform says no: not allowed, a
bad request, too large) is given up with a notice naming the file and the error.

Receipts (``Receipt`` from the scope: reactions on members' messages) are
best-effort: tried once, a failure logged (at warning the first time per kind of
error, then at debug), never retried and never in the way of a piece.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import pykka

from actors.credentials import access_of, invalidate
from actors.messages import (
    ChildIdle,
    Deliver,
    FlushStatus,
    Forward,
    IdleCheck,
    Init,
    Notify,
    Progress,
    Receipt,
    RetryDelivery,
)
from actors.runtime import PooledSupervisedActor, Runtime
from actors.timers import IdleTimer
from bridge.errors import ChatError, LoginRefused, RetryLater, Unauthorized
from bridge.model import Control, ScopeKey
from bridge.outbound import Priority
from bridge.platform import Access, ChatClient, LiveStatus, Unsupported
from bridge.run_view import RunView
from bridge.secrets import redact
from bridge.store import Piece

log = logging.getLogger(__name__)

#: Retry backoff for failed posts: first delay and cap, in seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
#: Times one status text is tried again after a transient failure (a 429, a 5xx,
#: a timeout) before it is given up; the final state is worth these tries.
STATUS_RETRIES = 5


@attrs.define
class StatusView:
    """The status message of one run in this channel."""

    message_id: str | None = None
    shown: str = ""
    latest: str = ""
    last_edit: float = 0.0
    final: bool = False
    generation: int = 0
    scheduled: bool = False
    first_try: float | None = None
    uncertain: bool = False
    snapshot: RunView | None = None
    live: LiveStatus | None = None
    live_started: bool = False
    fallback: bool = False
    failures: int = 0


class Delivery(PooledSupervisedActor):
    """Posts one conversation's pieces to its target as its agent.

    Args:
        runtime: Shared services.
        child_id: ``delivery:<scope key>``.
        key: The conversation (its platform, agent identity, space and target).
    """

    def __init__(self, runtime: Runtime, child_id: str, key: ScopeKey) -> None:
        super().__init__(runtime, child_id)
        self.key = key
        self.scope_key = str(key)
        self.target = key.target
        self.platform = runtime.platforms[key.platform]
        self.edit_interval_s = self.platform.limits.edit_interval_s
        self.uncertain: set[str] = set()
        self.attempts = 0
        self.generation = 0
        self.waiting = False
        self.delivered = 0
        self.retries = 0
        self.last_key = ""
        self.statuses: dict[str, StatusView] = {}
        self.undelivered = 0
        self.idle = IdleTimer(runtime.timers, self.actor_ref, runtime.config.bridge.scope_idle_s,
                              IdleCheck())
        self.stopping_idle = False
        self.status_edits = 0
        #: Kinds of receipt failures already logged at warning.
        self.receipt_failures: set[str] = set()

    def on_receive(self, message: Any) -> None:
        """Handle ``Init``, ``Deliver``, ``RetryDelivery``, ``Progress`` and idle checks."""
        if self.stopping_idle and isinstance(message, Deliver | Progress | Receipt | Notify):
            # Asked to be stopped: the supervisor hands this to the next instance.
            if self.runtime.supervisor is not None:
                self.runtime.supervisor.tell(Forward(self.child_id, message))
            return
        if isinstance(message, IdleCheck):
            self._idle_check()
            return
        self._handle(message)
        self.idle.touch()

    def _idle_check(self) -> None:
        if not self.idle.expired():
            return
        if self.waiting or self.statuses or self.undelivered:
            self.idle.touch()
            return
        if self.runtime.supervisor is not None:
            self.stopping_idle = True
            self.runtime.supervisor.tell(ChildIdle(self.child_id))

    def _handle(self, message: Any) -> None:
        if isinstance(message, Init):
            # Pieces pending from an earlier process, or whose post began in an
            # instance of this actor that died, may have landed: check the history
            # before posting each of them. A piece never tried cannot have.
            self.uncertain.update(p.key for p in self.runtime.store.pending_pieces(
                self.scope_key) if p.created_at < self.runtime.started_at
                or p.key in self.runtime.posting)
            self._drain()
        elif isinstance(message, Deliver):
            if not self.waiting:
                self._drain()
        elif isinstance(message, RetryDelivery):
            if message.generation == self.generation:
                self.waiting = False
                self._drain()
        elif isinstance(message, Progress):
            view = self.statuses.setdefault(message.run_id, StatusView())
            # no known secret leaves for the chat
            view.latest = redact(self.platform.render_status(message.view))
            view.snapshot = message.view
            view.final = view.final or message.final
            self._show_status(message.run_id)
        elif isinstance(message, Receipt):
            self._receipt(message)
        elif isinstance(message, Notify):
            self._notify(message)
        elif isinstance(message, FlushStatus):
            waiting = self.statuses.get(message.run_id)
            if waiting is not None and waiting.generation == message.generation:
                waiting.scheduled = False
                self._show_status(message.run_id)
        else:
            super().on_receive(message)

    def _show_status(self, run_id: str) -> None:
        """Post or edit the run's status message: only when changed, at most once a second."""
        view = self.statuses[run_id]
        if view.latest == view.shown:
            if view.final:
                del self.statuses[run_id]
            return
        wait = view.last_edit + self.edit_interval_s - time.monotonic()
        if not (view.message_id is not None or view.live_started) or wait <= 0:
            # The identity's budget serves answers first: a status waits its turn,
            # and only its newest text is sent then (overtaken edits never are).
            wait = self._grant(Priority.EDIT)
        if wait > 0:
            if not view.scheduled:
                view.generation += 1
                view.scheduled = True
                self.runtime.timers.schedule(wait, self.actor_ref,
                                             FlushStatus(run_id, view.generation))
            return
        try:
            if not self._show_live(run_id, view):
                client = self._client()
                if view.message_id is None:
                    self._post_status(client, run_id, view)
                elif view.message_id:
                    client.update(self.target, view.message_id, view.latest,
                                  controls=self._controls(run_id, view))
            self.status_edits += 1
        except (ChatError, pykka.Timeout) as exc:  # the status is best-effort
            if isinstance(exc, RetryLater) and exc.ambiguous and view.message_id is None:
                view.uncertain = True
            if isinstance(exc, RetryLater) and exc.retry_after_s is not None:
                self._slow_down(exc.retry_after_s)
            if isinstance(exc, RetryLater | pykka.Timeout) and view.failures < STATUS_RETRIES:
                # Transient: the newest text is tried again (a final one must not be lost).
                view.failures += 1
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (view.failures - 1))
                if isinstance(exc, RetryLater) and exc.retry_after_s is not None:
                    delay = max(delay, exc.retry_after_s)
                log.info("delivery %s: status of run %s not shown (%s); again in %.1fs",
                         self.scope_key, run_id, exc, delay)
                view.last_edit = time.monotonic()
                if not view.scheduled:
                    view.generation += 1
                    view.scheduled = True
                    self.runtime.timers.schedule(delay, self.actor_ref,
                                                 FlushStatus(run_id, view.generation))
                return
            log.warning("delivery %s: status of run %s not shown: %s", self.scope_key, run_id,
                        exc)
        else:
            view.failures = 0
        view.shown = view.latest
        view.last_edit = time.monotonic()
        if view.final:
            del self.statuses[run_id]

    def _show_live(self, run_id: str, view: StatusView) -> bool:
        """Show the run natively where the platform can (Slack's streamed message); False:
        it cannot here, or refused once, and the posted status message takes over."""
        if view.fallback or not self.platform.limits.native_status or view.snapshot is None:
            return False
        if view.live is None:
            view.live = self.platform.live_status(self._access(), self.target, run_id)
            if view.live is None:
                view.fallback = True
                return False
        try:
            if view.final:
                view.live.finish(view.snapshot)
            else:
                view.live.show(view.snapshot)
        except RetryLater:
            raise  # transient: the same live status is tried again (see _show_status)
        except ChatError as exc:
            log.warning("delivery %s: live status of run %s refused (%s); a status message "
                        "takes over", self.scope_key, run_id, exc)
            view.live, view.fallback = None, True
            return False
        view.live_started = True
        return True

    def _post_status(self, client: ChatClient, run_id: str, view: StatusView) -> None:
        """Post the run's status message, or find the one an unanswered post left."""
        key = f"status:{run_id}"
        if view.uncertain and view.first_try is not None:
            landed = client.find_posted(self.target, key, not_before=view.first_try)
            if landed is not None:
                view.message_id = landed
                view.uncertain = False
                if view.message_id:
                    client.update(self.target, view.message_id, view.latest,
                                  controls=self._controls(run_id, view))
                return
        if view.first_try is None:
            view.first_try = time.time()
        view.message_id = client.post(self.target, view.latest, idempotency_key=key,
                                      controls=self._controls(run_id, view))
        view.uncertain = False

    def _controls(self, run_id: str, view: StatusView) -> tuple[Control, ...]:
        """The Stop button of a working run's status, where the platform has buttons."""
        if view.final or not self.platform.limits.buttons:
            return ()
        snapshot = view.snapshot
        return (Control("stop", "Stop", run_id,
                        for_users=snapshot.stoppers if snapshot is not None else (),
                        policy=snapshot.policy if snapshot is not None else ""),)

    def _receipt(self, receipt: Receipt) -> None:
        """Set a receipt on members' messages: once, best-effort (see the module docstring)."""
        if not self.platform.limits.reactions:
            return
        try:
            client = self._client()
            for ref in receipt.messages:
                if receipt.remove:
                    client.react(ref.target, ref.message_id, receipt.remove, on=False)
                client.react(ref.target, ref.message_id, receipt.add)
        except Unsupported:
            log.debug("delivery %s: no reactions here", self.scope_key)
        except (ChatError, pykka.Timeout) as exc:
            kind = type(exc).__name__
            level = logging.DEBUG if kind in self.receipt_failures else logging.WARNING
            self.receipt_failures.add(kind)
            log.log(level, "delivery %s: receipt %r of run %s not set (not retried): %s",
                    self.scope_key, receipt.add, receipt.run_id, exc)

    def _notify(self, notify: Notify) -> None:
        """Show a member a line of their own: once, best-effort."""
        try:
            self._client().notify(self.target, notify.user_id, notify.text)
        except Unsupported:
            log.debug("delivery %s: no messages for one member here", self.scope_key)
        except (ChatError, pykka.Timeout) as exc:
            log.warning("delivery %s: note for %s not shown (not retried): %s", self.scope_key,
                        notify.user_id, exc)

    def _drain(self) -> None:
        store = self.runtime.store
        pending = store.pending_pieces(self.scope_key)
        self.undelivered = len(pending)
        refused = False
        for piece in pending:
            wait = self._grant(Priority.ANSWER)
            if wait > 0:  # the identity's budget is spent for now: ask again then
                self.generation += 1
                self.waiting = True
                self.runtime.timers.schedule(wait, self.actor_ref, RetryDelivery(self.generation))
                self._publish()
                return
            try:
                message_id = self._post(piece)
            except RetryLater as exc:
                self._retry(piece, exc, exc.retry_after_s, ambiguous=exc.ambiguous)
                return
            except (Unauthorized, LoginRefused) as exc:
                self._retry(piece, exc, None, ambiguous=False)
                return
            except pykka.Timeout:
                self._retry(piece, RetryLater("credentials did not answer"), None,
                            ambiguous=False)
                return
            except (ChatError, OSError) as exc:
                if not isinstance(exc, ChatError) and piece.kind != "file":
                    raise  # an adapter's bug: the actor fails and is restarted
                log.error("delivery %s: piece %s given up: %s", self.scope_key, piece.key, exc)
                store.mark_failed(piece.key, str(exc))
                self.runtime.posting.discard(piece.key)
                self.undelivered -= 1
                if piece.kind == "file":
                    refused = self._refused(piece, exc) or refused
                continue
            store.mark_posted(piece.key, message_id)
            self.runtime.posting.discard(piece.key)
            self.undelivered -= 1
            self.uncertain.discard(piece.key)
            self.attempts = 0
            self.delivered += 1
            self.last_key = piece.key
            if piece.kind == "file":
                self._unstage(piece)
        if refused:  # post the notices of refused files now
            self._drain()
            return
        self._publish()

    def _refused(self, piece: Piece, exc: Exception) -> bool:
        """A file given up: its staged copy removed, and a notice naming it and the error
        (none where the platform takes no files). Returns whether a notice was queued."""
        self._unstage(piece)
        if isinstance(exc, Unsupported):
            return False
        name = Path(piece.content).name
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.runtime.store.add_notice(self.scope_key, f"{piece.key}:refused",
                                      f"⚠ {self.key.agent}: the file {name!r} could not be "
                                      f"sent: {why}", piece.after_seq)
        return True

    @staticmethod
    def _unstage(piece: Piece) -> None:
        """Remove a file piece's staged copy (and its run's folder once empty)."""
        path = Path(piece.content)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
            path.parent.rmdir()

    def _post(self, piece: Piece) -> str | None:
        access = self._access()
        client = self.platform.client(access)
        try:
            if piece.key in self.uncertain:
                landed = client.find_posted(self.target, piece.key, after_seq=piece.after_seq,
                                            not_before=piece.created_at or None)
                if landed is not None:
                    log.info("delivery %s: piece %s had landed; not posting it again",
                             self.scope_key, piece.key)
                    return landed
            self.runtime.posting.add(piece.key)  # from here on it may land
            if piece.kind == "file":
                path = Path(piece.content)
                return client.upload(self.target, path, title=path.name,
                                     idempotency_key=piece.key)
            return client.post(self.target, redact(piece.content), idempotency_key=piece.key)
        except Unauthorized:
            self._invalidate(access.token)
            raise

    def _retry(self, piece: Piece, exc: Exception, retry_after_s: float | None, *,
               ambiguous: bool) -> None:
        self.attempts += 1
        self.retries += 1
        self.runtime.store.count_attempt(piece.key)
        if ambiguous:
            self.uncertain.add(piece.key)
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.attempts - 1))
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
            self._slow_down(retry_after_s)
        log.warning("delivery %s: %s; retry %d in %.1fs", self.scope_key, exc, self.attempts,
                    delay)
        self.generation += 1
        self.waiting = True
        self.runtime.timers.schedule(delay, self.actor_ref, RetryDelivery(self.generation))
        self._publish()

    def _grant(self, priority: Priority) -> float:
        """Seconds to wait before this send (0: send now), from the identity's budget."""
        return self.runtime.budgets.grant(self.key.connection, self.platform.limits, priority,
                                          self.scope_key)

    def _slow_down(self, retry_after_s: float) -> None:
        """The platform asked the identity to slow down: every conversation of it waits."""
        self.runtime.budgets.slow_down(self.key.connection, self.platform.limits, retry_after_s)

    def _client(self) -> ChatClient:
        return self.platform.client(self._access())

    def _access(self) -> Access:
        return access_of(self.runtime, self.key.connection)

    def _invalidate(self, token: str) -> None:
        invalidate(self.runtime, self.key.connection, token)

    def _publish(self) -> None:
        detail = (f"delivered {self.delivered}, retries {self.retries}"
                  + (f", last {self.last_key}" if self.last_key else "")
                  + (", waiting to retry" if self.waiting else ""))
        self.runtime.board.update_actor(self.child_id, detail=detail)
        self.runtime.board.update_scope(self.scope_key, delivered=self.delivered,
                                        undelivered=self.undelivered, retries=self.retries,
                                        last_delivered=self.last_key)
