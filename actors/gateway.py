"""Gateway: one per connection (agent identity, platform, space); hosts the platform's intake.

The platform's intake (see :mod:`bridge.platform`) does the platform's work:
connecting, ordering, gap fill, catch-up from the stored cursors, reconnects.
It runs on this actor's thread, one message at a time, and calls back through
the :class:`~bridge.platform.IntakeHost` methods here: ``accept`` journals a
message (the journal is the dedup set) and tells its scope directly, through
the runtime's directory of live refs. The messages accepted while the intake
handles one message (a burst of socket events, a page of history) are
journaled in one write when it returns (with the cursors it stored meanwhile,
so a cursor never passes a message not yet journaled), or before a click is
handed on, so the journal keeps the intake's order; only a scope that is not running is
reached through the supervisor, which spawns it once. ``act`` hands a member's
click on a control (a run's Stop) to its scope the same way; a click for a
scope that is not running is dropped by the supervisor (it has no run to stop).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pykka

from actors.credentials import access_of, invalidate
from actors.messages import Init, NamesReady, Route
from actors.runtime import Runtime, SupervisedActor, may_engage, send
from bridge.board import ConnectionRow
from bridge.config import AgentSettings, Binding
from bridge.model import Action, ConnectionKey, Inbound
from bridge.names import ResolvedNames
from bridge.platform import Access, ChatPlatform, Intake, IntakeStatus
from bridge.store import CursorWrite, JournalWrite

log = logging.getLogger(__name__)

#: Most accepted messages held for one journal write (a long history page
#: is written in parts of this size).
ACCEPT_BATCH_MAX = 500


class Gateway(SupervisedActor):
    """The connection of one agent identity to one space of one platform.

    Args:
        runtime: Shared services.
        child_id: ``gateway:<connection key>``.
        platform: The chat platform.
        connection: (platform, agent, space).
        agent: The agent's settings.
        bindings: The agent's bindings in this space (the intake reads their channels).
    """

    def __init__(self, runtime: Runtime, child_id: str, platform: ChatPlatform,
                 connection: ConnectionKey, agent: AgentSettings,
                 bindings: Sequence[Binding]) -> None:
        super().__init__(runtime, child_id)
        self.platform = platform
        self._connection = connection
        self.agent = agent
        self.bindings = tuple(bindings)
        self.intake: Intake | None = None
        #: Messages accepted during the current handle, not yet journaled.
        self._accepted: list[JournalWrite | CursorWrite] = []

    # -- the actor -------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        """Start the intake on ``Init``; hand every other message to it."""
        if isinstance(message, Init):
            try:
                self.intake = self.platform.open(self, self.agent, self.bindings)
                self.intake.start()
            finally:
                self._journal()
            return
        try:
            handled = self.intake is not None and self.intake.handle(message)
        finally:
            self._journal()
        if not handled:
            super().on_receive(message)

    def cleanup(self) -> None:
        """Close the intake (its socket and threads)."""
        if self.intake is not None:
            self.intake.close()

    # -- IntakeHost --------------------------------------------------------

    @property
    def connection(self) -> ConnectionKey:
        """The (platform, agent, space) this gateway serves."""
        return self._connection

    @property
    def stopping(self) -> bool:
        """True once the bridge stops."""
        return self.runtime.stopping.is_set()

    def tell(self, message: object) -> None:
        """Queue ``message`` for the intake; safe from any thread, silent after stop."""
        try:
            self.actor_ref.tell(message)
        except Exception:  # the actor stopped; a library thread must not die loudly
            log.debug("gateway %s: event after stop dropped", self._connection)

    def schedule(self, delay_s: float, message: object) -> None:
        """Queue ``message`` for the intake after ``delay_s`` seconds."""
        self.runtime.timers.schedule(delay_s, self.actor_ref, message)

    def accept(self, inbound: Inbound, *, advance_cursor: bool = True) -> None:
        """Queue ``inbound`` for the journal; it is routed once its write commits.

        The write happens when the intake's current handle returns (see the
        module docstring), or at once when :data:`ACCEPT_BATCH_MAX` messages wait.
        """
        # Before the connection's names are resolved a binding by channel name does
        # not match yet: keep a row, as if the message may engage (a replay judges it).
        row = not self.runtime.names.ready(self._connection) or may_engage(self.runtime,
                                                                             inbound)
        self._accepted.append(JournalWrite(inbound, advance_cursor, row))
        if len(self._accepted) >= ACCEPT_BATCH_MAX:
            self._journal()

    def _journal(self) -> None:
        """Journal the accepted messages in one write, then tell each new one to its scope.

        A message that may engage its agent (:func:`actors.runtime.may_engage`)
        gets a journal row and goes to its scope, which the supervisor spawns
        when it is not running. One that cannot is stored once, as the
        space's message, without a row for this agent: it goes to its scope
        only when that runs (a scope that starts later reads it back as
        context, :meth:`bridge.store.Store.context`). A duplicate (already
        journaled) is dropped. Messages the store could not take are not
        routed (their cursor did not move); the first such error is raised
        once the others are routed, and the gateway restarts.

        Raises:
            StoreError: the database failed (or another error of one message).
        """
        if not self._accepted:
            return
        batch, self._accepted = self._accepted, []
        outcomes = self.runtime.store.record_inbound_many(batch)
        failure: Exception | None = None
        for write, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failure = failure or outcome
                continue
            if isinstance(write, CursorWrite):
                continue
            inbound = write.inbound
            if outcome:
                send(self.runtime, f"scope:{inbound.scope}", inbound, fallback=Route(inbound),
                     live_only=not write.row)
            else:
                log.debug("gateway %s: duplicate %s dropped", self._connection,
                          inbound.message_id)
        if failure is not None:
            raise failure

    def cursors(self) -> Mapping[str, str]:
        """The stored intake cursor per channel id of this connection."""
        self._journal()
        return self.runtime.store.cursors(self._connection)

    def save_cursor(self, channel_id: str, cursor: str, position: int) -> None:
        """Store a channel's cursor (it never moves back) with the messages accepted before
        it, in the same write (see :meth:`accept`)."""
        self._accepted.append(CursorWrite(self._connection, channel_id, cursor, position))

    def access(self) -> Access:
        """The identity's access to this space (see :func:`actors.credentials.access_of`)."""
        return access_of(self.runtime, self._connection)

    def invalidate(self, token: str) -> None:
        """Report a token the platform refused."""
        invalidate(self.runtime, self._connection, token)

    def names(self) -> ResolvedNames:
        """The names resolved so far on this connection (kept across restarts)."""
        return self.runtime.names.get(self._connection)

    def names_resolved(self, names: ResolvedNames) -> None:
        """Publish the resolved names; tell the supervisor the first time."""
        first = not self.runtime.names.ready(self._connection)
        self.runtime.names.set(self._connection, names)
        supervisor = self.runtime.supervisor
        if first and supervisor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(NamesReady(self._connection))

    def publish(self, status: IntakeStatus) -> None:
        """Show the connection's state on the board."""
        self.runtime.board.put_connection(ConnectionRow(
            agent=self._connection.agent, space=self._connection.space, state=status.state,
            reconnects=status.reconnects, token_at=status.token_at, reason=status.reason,
            channels=status.channels, token_refreshes=status.token_refreshes,
            last_event_at=status.last_event_at, silences=status.silences))

    def act(self, action: Action) -> None:
        """Tell ``action`` to its scope (directly when it runs; see :func:`actors.runtime.send`).

        An action for a conversation of another connection, or of one that is
        not running (so it has no run to stop), is logged and dropped.
        """
        self._journal()  # the messages accepted before the click reach the scope first
        if action.scope.connection != self._connection:
            log.warning("gateway %s: %r click for %s dropped (another connection)",
                        self._connection, action.name, action.scope)
            return
        if not send(self.runtime, f"scope:{action.scope}", action, live_only=True):
            log.info("gateway %s: %r click for %s ignored: no run is live there",
                     self._connection, action.name, action.scope)
