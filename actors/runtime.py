"""What every actor is given: config, board, timers, the supervisor and a directory."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import attrs
import pykka

from actors.budgets import Budgets
from actors.messages import ChildFailed, Forward, Init
from actors.pool import PooledActor
from actors.timers import Timers
from bridge.agent import Agent
from bridge.board import Board
from bridge.commands import parse_command
from bridge.config import AgentSettings, Config
from bridge.engage import EngageGate, EngageRule
from bridge.model import ConnectionKey, Inbound
from bridge.names import ResolvedNames
from bridge.platform import Access, ChatPlatform
from bridge.store import Store

log = logging.getLogger(__name__)


class Directory:
    """Thread-safe map of child id to the current ActorRef, written only by the supervisor.

    Actors use it to reach a child (a scope, a delivery, an identity's
    credentials) without holding a ref that a restart would make stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, pykka.ActorRef[Any]] = {}

    def set(self, child_id: str, ref: pykka.ActorRef[Any] | None) -> None:
        """Record (or, with None, forget) the ref of ``child_id``."""
        with self._lock:
            if ref is None:
                self._refs.pop(child_id, None)
            else:
                self._refs[child_id] = ref

    def get(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """The current ref of ``child_id``, or None while it is (re)starting."""
        with self._lock:
            return self._refs.get(child_id)


class NameBook:
    """Thread-safe map of connection to what the config's names resolved to there.

    Written only by that connection's gateway (the pins live here, so a
    restarted gateway keeps them); read by the supervisor and the scopes, whose
    access rules and bindings match channels and authors by id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[ConnectionKey, ResolvedNames] = {}

    def set(self, connection: ConnectionKey, names: ResolvedNames) -> None:
        """Record (replacing any earlier record) the names of ``connection``."""
        with self._lock:
            self._names[connection] = names

    def get(self, connection: ConnectionKey) -> ResolvedNames:
        """The names of ``connection``; an empty :class:`ResolvedNames` (no name
        resolves to any id) before the gateway's first channel list."""
        with self._lock:
            return self._names.get(connection) or ResolvedNames()

    def ready(self, connection: ConnectionKey) -> bool:
        """Whether the gateway of ``connection`` loaded its channel list once."""
        with self._lock:
            return connection in self._names


class CredentialCache:
    """Thread-safe cache of each connection's access, written by the credentials actors.

    Gateways and deliveries read it on every call instead of asking an actor;
    an entry older than its platform's session lifetime reads as missing (the
    reader then asks the credentials actor, which logs in again).

    Args:
        ttl_s: The session lifetime (seconds) per platform name.
    """

    def __init__(self, ttl_s: Mapping[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._ttl_s = dict(ttl_s or {})
        self._access: dict[ConnectionKey, Access] = {}

    def put(self, connection: ConnectionKey, access: Access) -> None:
        """Remember ``access`` for ``connection``."""
        with self._lock:
            self._access[connection] = access

    def get(self, connection: ConnectionKey) -> Access | None:
        """The cached access of ``connection``, or None when missing or too old."""
        with self._lock:
            access = self._access.get(connection)
            ttl_s = self._ttl_s.get(connection.platform, 0.0)
        if access is None or time.time() - access.issued_at >= ttl_s:
            return None
        return access

    def invalidate(self, connection: ConnectionKey, token: str) -> None:
        """Forget the access of ``connection`` if it holds ``token`` (it was refused)."""
        with self._lock:
            access = self._access.get(connection)
            if access is not None and access.token == token:
                del self._access[connection]


@attrs.define
class Runtime:
    """Shared, long-lived services handed to every actor.

    Attributes:
        config: The validated config.
        board: Where actors publish their state.
        timers: The timer thread.
        store: The state store.
        directory: Current refs of supervised children.
        names: What the config's channel and user names resolved to, per connection.
        platforms: The chat platforms by name.
        agents: Builds the agent of an ``[agents.NAME]`` table (the registry of kinds).
        credentials: Each connection's current access (see :class:`CredentialCache`).
        supervisor: Ref of the root supervisor (set once it started).
        started_at: Epoch seconds when this process's runtime was made: outbox
            pieces older than it were left by an earlier process.
        posting: Keys of pieces whose post began in this process and is not yet
            recorded (a delivery that died meanwhile leaves them uncertain).
        budgets: Each identity's outbound budget, shared by its deliveries.
        stopping: Set when the bridge begins to stop: actors skip new work (it is
            in the journal or on the platform, and is picked up at the next start).
    """

    config: Config
    board: Board
    timers: Timers
    store: Store
    directory: Directory = attrs.field(factory=Directory)
    names: NameBook = attrs.field(factory=NameBook)
    platforms: Mapping[str, ChatPlatform] = attrs.field(factory=dict)
    agents: Callable[[AgentSettings], Agent] | None = None
    credentials: CredentialCache = attrs.field(factory=CredentialCache)
    supervisor: pykka.ActorRef[Any] | None = None
    stopping: threading.Event = attrs.field(factory=threading.Event)
    started_at: float = attrs.field(factory=time.time)
    posting: set[str] = attrs.field(factory=set)
    budgets: Budgets = attrs.field(factory=Budgets)


def may_engage(runtime: Runtime, inbound: Inbound) -> bool:
    """Whether ``inbound`` could engage its agent whatever its scope's state (or is a command).

    Exact for the stateless engage modes (``addressed``, ``mention``); True for
    ``mention-sticky`` (the sticky window is the scope's state) and ``pattern``
    (a search of a member's text against the operator's regex, with its time
    limit, belongs on the scope, not on a gateway or the supervisor). A
    message for which this is False is context only: the gateway stores it
    without a journal row, and the supervisor spawns no scope for it.

    Args:
        runtime: Shared services (the config's bindings, the resolved names).
        inbound: The accepted message.
    """
    if parse_command(inbound.content) is not None:
        return True
    names = runtime.names.get(inbound.connection)
    binding = runtime.config.binding_for(inbound.agent, inbound.space, inbound.channel_id,
                                         inbound.channel_name, names.channels,
                                         platform=inbound.platform)
    rule = binding.engage if binding is not None else EngageRule()
    if rule.mode in ("mention-sticky", "pattern"):
        return True
    return EngageGate(rule).decide(inbound, time.monotonic()).engage


def send(runtime: Runtime, child_id: str, message: Any, *, fallback: Any = None,
         live_only: bool = False) -> bool:
    """Tell a supervised child ``message``: directly when it runs, else via the supervisor.

    The supervisor spawns a missing child (a scope for ``Route``, a delivery for
    ``Forward``) and buffers for one that restarts; a live child gets the
    message without a hop through it.

    Args:
        runtime: Shared services (the directory of live children).
        child_id: The receiver, e.g. ``delivery:<scope key>``.
        message: A frozen attrs message.
        fallback: What the supervisor gets when the child is not live (default
            ``Forward(child_id, message)``).
        live_only: Tell only a live child; otherwise drop the message.

    Returns:
        True when a live child got it directly.
    """
    ref = runtime.directory.get(child_id)
    if ref is not None:
        try:
            ref.tell(message)
            return True
        except pykka.ActorDeadError:
            pass  # stopped or failed meanwhile: the supervisor knows what to do
    supervisor = runtime.supervisor
    if supervisor is not None and not live_only:
        with contextlib.suppress(pykka.ActorDeadError):  # stopping: the store keeps the work
            supervisor.tell(fallback if fallback is not None else Forward(child_id, message))
    return False


class Supervised(pykka.Actor):
    """What every supervised actor does, on a thread or on the pool: ``Init`` as its
    first message, ``ChildFailed`` to the supervisor on failure. Subclass :class:`SupervisedActor`
    or :class:`PooledSupervisedActor`.

    Args:
        runtime: Shared services.
        child_id: This actor's id in the supervision tree.
    """

    def __init__(self, runtime: Runtime, child_id: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.child_id = child_id
        # Init is the first message, ahead of what the supervisor hands over right
        # after start (set-up errors go through on_failure like any other). Told
        # from on_start it would queue behind those on the pool.
        self.actor_ref.tell(Init())

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   tb: TracebackType | None) -> None:
        """Report the failure to the supervisor (which restarts us with backoff)."""
        self.cleanup()
        reason = "".join(traceback.format_exception_only(exception_value)).strip() if (
            exception_value is not None) else "unknown"
        leftovers = self.drain_inbox()
        supervisor = self.runtime.supervisor
        if supervisor is not None:
            try:
                supervisor.tell(ChildFailed(self.child_id, reason, leftovers))
            except pykka.ActorDeadError:
                log.warning("%s failed after the supervisor stopped: %s", self.child_id, reason)

    def drain_inbox(self) -> tuple[Any, ...]:
        """Take the messages still waiting in this (failed) actor's inbox.

        pykka discards the inbox of an actor that dies; handing the waiting
        ``tell``s back to the supervisor lets the restarted instance get them.
        Asks are answered with an error by pykka itself and are not taken.
        """
        kept: list[Any] = []
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            message = envelope.message
            if envelope.reply_to is None and not type(message).__module__.startswith("pykka"):
                kept.append(message)
            elif envelope.reply_to is not None:
                envelope.reply_to.set_exception(exc_info=(
                    pykka.ActorDeadError, pykka.ActorDeadError(f"{self.child_id} failed"), None))
        return tuple(kept)

    def on_stop(self) -> None:
        """Release what the actor holds (sockets, processes)."""
        self.cleanup()

    def cleanup(self) -> None:
        """Override to release resources; called on stop and on failure. Must not raise."""


class SupervisedActor(Supervised, pykka.ThreadingActor):
    """A supervised actor on a thread of its own (it may block for long: a socket's
    intake, the store's upkeep)."""

    use_daemon_thread = True


class PooledSupervisedActor(Supervised, PooledActor):
    """A supervised actor on the process's actor pool (:mod:`actors.pool`): one per
    conversation (scopes, deliveries) or per identity (credentials), so idle ones
    cost no thread. Its handlers should not block for long: a blocking call holds
    one of the pool's ``[bridge] actor_threads`` workers meanwhile."""
