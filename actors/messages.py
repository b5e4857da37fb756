"""Messages between actors: frozen attrs classes, sent with ``tell``."""

from __future__ import annotations

from typing import Any

import attrs

from bridge.agent import AgentEvent, AgentRun
from bridge.model import ConnectionKey, Inbound, Target
from bridge.run_view import RunView


@attrs.frozen
class Init:
    """Told by an actor to itself from ``on_start``, so start-up failures reach ``on_failure``."""


@attrs.frozen
class Route:
    """Gateway to supervisor: deliver this message to its scope (spawned on demand)."""

    inbound: Inbound


@attrs.frozen
class Forward:
    """To the supervisor: pass ``message`` to the child ``child_id`` (spawning deliveries)."""

    child_id: str
    message: Any


@attrs.frozen
class ChildFailed:
    """A supervised child died of an exception.

    Attributes:
        child_id: The child.
        reason: One line: the exception.
        leftovers: Messages that were waiting in its inbox, in order.
    """

    child_id: str
    reason: str
    leftovers: tuple[Any, ...] = ()


@attrs.frozen
class RestartChild:
    """Timer to supervisor: the backoff for ``child_id`` elapsed; restart it."""

    child_id: str
    generation: int


@attrs.frozen
class Shutdown:
    """Ask the supervisor to stop every child in reverse dependency order."""

    timeout_s: float = 4.0


@attrs.frozen
class GetAccess:
    """Ask an identity's credentials for its access to ``space`` (replies an ``Access``)."""

    space: str


@attrs.frozen
class Invalidate:
    """Tell an identity's credentials that ``token`` was refused (401 or refused connect)."""

    token: str = attrs.field(repr=False)


@attrs.frozen
class DebounceElapsed:
    """Scope timer: the debounce window ``generation`` elapsed."""

    generation: int


@attrs.frozen
class RunFinished:
    """Runner to scope: the run ended."""

    run_id: str
    ok: bool
    reason: str = ""


@attrs.frozen
class AgentEventMsg:
    """Reader thread to runner: one event from the agent."""

    event: AgentEvent


@attrs.frozen
class AgentStarted:
    """Lent worker to runner: the agent is started (its events follow)."""

    run: AgentRun


@attrs.frozen
class StopRun:
    """To a runner: stop the agent (``/stop``, timeout, shutdown)."""

    reason: str


@attrs.frozen
class Deliver:
    """To a delivery actor: the outbox has new pieces for ``scope_key``; post them."""

    scope_key: str


@attrs.frozen
class RetryDelivery:
    """Delivery timer: try the head of the queue again."""

    generation: int


@attrs.frozen
class IdleCheck:
    """Idle timer of a scope or delivery: check whether it has been idle long enough."""


@attrs.frozen
class ChildIdle:
    """Scope or delivery to supervisor: I am idle; stop me (rebuilt on the next message)."""

    child_id: str


@attrs.frozen
class Progress:
    """Runner to delivery: a new snapshot of the run (the platform renders it).

    Attributes:
        view: The run's state; ``view.final`` marks its last update (always shown).
    """

    view: RunView

    @property
    def run_id(self) -> str:
        """The run."""
        return self.view.run_id

    @property
    def final(self) -> bool:
        """True for the last update of the run."""
        return self.view.final


@attrs.frozen
class FlushStatus:
    """Delivery timer: show the latest status text of ``run_id`` now."""

    run_id: str
    generation: int


@attrs.frozen
class StatusTick:
    """Runner timer: refresh the status (elapsed time) while the run works."""


@attrs.frozen
class NamesReady:
    """Gateway to supervisor: the config's names on ``connection`` were resolved for the
    first time (the open conversations recovered at start may go on)."""

    connection: ConnectionKey


@attrs.frozen
class PruneTick:
    """Upkeep timer: prune the state store now, then schedule the next prune."""


@attrs.frozen
class CheckpointTick:
    """Upkeep timer: checkpoint the store's WAL now, then schedule the next."""


@attrs.frozen
class MeasureTick:
    """Upkeep timer: publish the store's size and row counts, then schedule the next."""


@attrs.frozen
class RunActive:
    """To an identity's credentials: a run started (+1) or ended (-1) in ``space``."""

    space: str
    delta: int


@attrs.frozen
class RefreshLogin:
    """Credentials timer: log in again before the session lifetime ends (``generation``
    ignores a timer overtaken by a newer login)."""

    generation: int


@attrs.frozen
class PresenceSettle:
    """Credentials timer: set the presence in ``space`` once its count of runs has not
    changed for ``PRESENCE_SETTLE_S`` (one pending per space: ``actors.timers.IdleTimer``)."""

    space: str


@attrs.frozen
class StopScopeRun:
    """Scope to supervisor: an admin asked to stop the run in another channel.

    Attributes:
        connection: The (platform, agent, space) of the asking scope.
        channel: The channel's id or name.
        reason: Shown in the stopped run's channel.
    """

    connection: ConnectionKey
    channel: str
    reason: str


@attrs.frozen
class MessageRef:
    """A member's message, to react to.

    Attributes:
        target: Its channel (and thread).
        message_id: Its id.
    """

    target: Target
    message_id: str

    @classmethod
    def of(cls, message: Inbound) -> MessageRef:
        """The reference of an accepted message."""
        return cls(Target(message.channel_id, message.thread), message.message_id)


@attrs.frozen
class Receipt:
    """Scope to delivery: set a receipt (a reaction) on the messages a run takes.

    Best-effort: a failure is logged, never retried, and never holds up a piece.

    Attributes:
        run_id: The run the messages went into.
        messages: The members' messages.
        add: The reaction to add (the platform's name, e.g. ``eyes``).
        remove: The reaction to take off first (empty: none).
    """

    run_id: str
    messages: tuple[MessageRef, ...]
    add: str
    remove: str = ""


@attrs.frozen
class Notify:
    """Scope to delivery: show ``text`` to one member only (why their click did nothing).

    Best-effort, like :class:`Receipt`: where the platform cannot, or it fails, it is
    logged and dropped.

    Attributes:
        user_id: The member.
        text: One line.
    """

    user_id: str
    text: str
