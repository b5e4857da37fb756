"""Supervisor: the root actor (one_for_one).

It spawns one Credentials actor per agent identity on each platform, one
Gateway per connection (agent, platform, space) and the Upkeep actor (store
retention) at start, a Scope per conversation on its first message, and a
Delivery per conversation on its first answer. Messages do not pass through
it once their receiver runs: senders find live children in the runtime's
directory, and come here only to have a child spawned (or buffered while it
restarts). A child that dies of an
exception is restarted alone, after a backoff (0.1 s doubling); messages for
it are kept meanwhile and handed to the new instance. A child that fails more
than 3 times in 10 s is not restarted: the failure is escalated (logged as an
error and shown as ``failed``). An escalated scope gets a fresh start from the
next message that arrives after the 10-second window.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pykka

from actors.credentials import Credentials, credentials_id
from actors.delivery import Delivery
from actors.gateway import Gateway
from actors.messages import (
    ChildFailed,
    ChildIdle,
    Deliver,
    Forward,
    NamesReady,
    RestartChild,
    Route,
    Shutdown,
    StopRun,
    StopScopeRun,
)
from actors.runtime import Runtime, may_engage
from actors.scope import Scope
from actors.upkeep import Upkeep
from bridge.board import ActorRow
from bridge.model import ConnectionKey, Inbound, ScopeKey
from bridge.names import channel_entries, user_entries
from bridge.procs import OpenRun, kill_leftovers

log = logging.getLogger(__name__)

#: At most this many restarts ...
MAX_RESTARTS = 3
#: ... within this window (seconds); one more failure escalates.
RESTART_WINDOW_S = 10.0
#: First restart delay (seconds), doubled per failure within the window.
RESTART_BACKOFF_S = 0.1
#: Messages kept for a child while it restarts.
BUFFER_LIMIT = 10_000
#: Open messages read per page by the recovery at start.
RECOVERY_PAGE_ROWS = 500
#: Stop order at shutdown: reverse dependency order.
STOP_ORDER = ("upkeep", "gateway", "scope", "delivery", "credentials")

ROOT_ID = "supervisor"


@attrs.define
class Child:
    """The supervisor's record of one child."""

    id: str
    kind: str
    factory: Callable[[], pykka.ActorRef[Any]]
    ref: pykka.ActorRef[Any] | None = None
    state: str = "running"
    restarts: int = 0
    generation: int = 0
    failed_at: float = 0.0
    last_failure: str = ""
    failures: collections.deque[float] = attrs.field(factory=collections.deque)
    buffer: list[Any] = attrs.field(factory=list)


class Supervisor(pykka.ThreadingActor):
    """Root of the actor tree.

    Args:
        runtime: Shared services (its ``supervisor`` is set to this actor's ref on start).
        scope_class: The Scope actor class (tests pass a subclass that misbehaves).
    """

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, scope_class: type[Scope] = Scope) -> None:
        super().__init__()
        self.runtime = runtime
        self.scope_class = scope_class
        self.children: dict[str, Child] = {}
        self.shutting_down = False
        #: Conversations recovered at start that wait for their connection's names.
        self.parked: dict[ConnectionKey, list[Inbound]] = {}

    def on_start(self) -> None:
        """Recover the store, then spawn the credentials, the gateways and upkeep (store
        retention), then the conversations an earlier process left with work."""
        self.runtime.supervisor = self.actor_ref
        self.runtime.board.put_actor(ActorRow(ROOT_ID, "supervisor", None, "running"))
        # Before any intake runs: what the store recovers is settled when messages arrive.
        self._recover_store()
        config = self.runtime.config
        platforms = self.runtime.platforms
        identities = sorted({(b.platform, b.agent) for b in config.bindings})
        for platform_name, agent_name in identities:
            platform = platforms[platform_name]
            mine = [b for b in config.bindings
                    if (b.platform, b.agent) == (platform_name, agent_name)]
            child_id = credentials_id(ConnectionKey(platform_name, agent_name, ""))
            self._add(child_id, "credentials", functools.partial(
                Credentials.start, self.runtime, child_id, platform, config.agents[agent_name],
                platform.spaces(mine)))
        for platform_name, agent_name in identities:
            platform = platforms[platform_name]
            mine = [b for b in config.bindings
                    if (b.platform, b.agent) == (platform_name, agent_name)]
            for space in platform.spaces(mine):
                connection = ConnectionKey(platform_name, agent_name, space)
                bindings = [b for b in mine if b.space == space]
                child_id = f"gateway:{connection}"
                self._add(child_id, "gateway", functools.partial(
                    Gateway.start, self.runtime, child_id, platform, connection,
                    config.agents[agent_name], bindings))
        self._add("upkeep", "upkeep", functools.partial(Upkeep.start, self.runtime, "upkeep"))
        self._recover()

    def _recover_store(self) -> None:
        """Settle what an earlier process left in the store: its agent processes killed,
        cut-off runs recovered or given up, open messages older than the window closed."""
        store = self.runtime.store
        open_runs = [OpenRun(run_id, pid, ticks) for run_id, pid, ticks in store.open_runs()]
        for run_id, count in kill_leftovers(open_runs, store.known_runs).items():
            log.warning("killed %d process(es) that run %s left running (a crash, or a child "
                        "that escaped its run)", count, run_id)
        for run_id, scope_key, given_up in store.recover_runs():
            log.warning("run %s of %s was cut off by a restart; %s", run_id, scope_key,
                        "given up" if given_up else "its messages run again")
            if given_up:
                agent = ScopeKey.parse(scope_key).agent
                store.add_notice(scope_key, f"interrupted:{run_id}",
                                 f"⚠ {agent}: a run was interrupted twice by bridge restarts "
                                 "and was not retried; please send your message again.")
        window_s = self.runtime.config.bridge.catch_up_window_s
        closed = store.close_stale(time.time() - window_s)
        if closed:
            log.info("%d open message(s) older than the catch-up window (%.0f s) closed: "
                     "context only, and too old for later prompts", closed, window_s)

    def _recover(self) -> None:
        """Start the conversations an earlier process left with work (open messages, the
        outbox)."""
        for inbound in self._scopes_with_work():
            if self._names_pending(inbound):
                self.parked.setdefault(inbound.connection, []).append(inbound)
            else:
                self._route(inbound, spawn=True)
        for connection, waiting in sorted(self.parked.items()):
            log.info("%d conversation(s) of %s wait for its channel list: the access rules "
                     "and bindings name channels or users, matched by the ids they resolve to",
                     len(waiting), connection)
        for scope_key in self.runtime.store.pending_scopes():
            self._forward(f"delivery:{scope_key}", Deliver(scope_key))

    def on_receive(self, message: Any) -> Any:
        """Handle ``Route``, ``Forward``, ``ChildFailed``, ``RestartChild`` and ``Shutdown``."""
        if isinstance(message, Route):
            self._route(message.inbound)
        elif isinstance(message, NamesReady):
            for inbound in self.parked.pop(message.connection, []):
                self._route(inbound, spawn=True)
        elif isinstance(message, Forward):
            self._forward(message.child_id, message.message)
        elif isinstance(message, ChildFailed):
            self._failed(message.child_id, message.reason, message.leftovers)
        elif isinstance(message, RestartChild):
            child = self.children.get(message.child_id)
            if child is not None and child.state == "restarting" and (
                child.generation == message.generation
            ):
                self._spawn(child)
        elif isinstance(message, StopScopeRun):
            self._stop_scope_run(message)
        elif isinstance(message, ChildIdle):
            self._evict(message.child_id)
        elif isinstance(message, Shutdown):
            self._shutdown(message.timeout_s)
        else:
            return super().on_receive(message)
        return None

    # -- children --------------------------------------------------------

    def _add(self, child_id: str, kind: str, start: Callable[[], pykka.ActorRef[Any]],
             first: Sequence[Any] = ()) -> Child:
        child = Child(child_id, kind, start, buffer=list(first))
        self.children[child_id] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        """Start ``child``, hand it what waited for it, then make it reachable directly.

        The directory entry is written last: a sender that finds the child there
        can only queue behind the messages handed over here, so a conversation's
        messages keep their order across a spawn or a restart.
        """
        child.ref = child.factory()
        child.state = "running"
        buffered, child.buffer = child.buffer, []
        for message in buffered:
            self._deliver(child, message)
        self.runtime.directory.set(child.id, child.ref)
        self._publish(child)

    def _route(self, inbound: Inbound, *, spawn: bool = False) -> None:
        """Hand a message to its scope.

        A message that cannot engage (and is no command) does not spawn a scope
        that is not running: it stays in the journal and becomes context when
        the scope next runs. So threads follow active conversations, not every
        channel ever seen.

        Args:
            inbound: The message.
            spawn: Spawn the scope whatever the message (recovery).
        """
        if self.shutting_down:
            return
        child_id = f"scope:{inbound.scope_key}"
        child = self.children.get(child_id)
        if child is None:
            agent = self.runtime.config.agents.get(inbound.agent)
            if agent is None:
                log.warning("no agent %r for scope %s; message dropped", inbound.agent,
                            inbound.scope_key)
                return
            if not spawn and not may_engage(self.runtime, inbound):
                log.debug("scope %s not running; %s kept in the journal as context",
                          inbound.scope_key, inbound.message_id)
                return
            self._add(child_id, "scope", functools.partial(
                self.scope_class.start, self.runtime, child_id, inbound, agent),
                first=(inbound,))
            return
        self._deliver(child, inbound)

    def _scopes_with_work(self) -> Iterator[Inbound]:
        """One open message per scope that has work a run could take, read page by page.

        A scope has work when a message of a cut-off run waits (``engaged``),
        or an open message could engage it (:func:`actors.runtime.may_engage`). Scopes with
        context alone are not spawned, and their messages are not loaded: they
        become context when the scope next runs (within the catch-up window).
        A scope whose engage rules wait for its connection's names is picked
        on its first open message (judged once the names are known).
        """
        chosen: set[str] = set()
        after = 0
        while True:
            page = self.runtime.store.open_rows(after, RECOVERY_PAGE_ROWS)
            if not page:
                return
            after = page[-1][0]
            for _, state, inbound in page:
                key = inbound.scope_key
                if key in chosen:
                    continue
                if state == "engaged" or self._names_pending(inbound) or may_engage(self.runtime,
                        inbound):
                    chosen.add(key)
                    yield inbound

    def _names_pending(self, inbound: Inbound) -> bool:
        """Whether a recovered message must wait for its connection to resolve the config's
        names (it would be judged by ids alone before; see :mod:`bridge.names`)."""
        agent = self.runtime.config.agents.get(inbound.agent)
        connection = inbound.connection
        if agent is None or f"gateway:{connection}" not in self.children:
            return False
        if self.runtime.names.ready(connection):
            return False
        bindings = self.runtime.config.bindings_of(connection.platform, connection.agent,
                                                   connection.space)
        return bool(channel_entries(bindings, agent.access) or user_entries(agent.access))

    def _forward(self, child_id: str, message: Any) -> None:
        if self.shutting_down and not child_id.startswith("delivery:"):
            return
        child = self.children.get(child_id)
        if child is None:
            if not child_id.startswith("delivery:"):
                log.warning("message for unknown child %s dropped", child_id)
                return
            key = ScopeKey.parse(child_id.removeprefix("delivery:"))
            self._add(child_id, "delivery", functools.partial(
                Delivery.start, self.runtime, child_id, key), first=(message,))
            return
        self._deliver(child, message)

    def _deliver(self, child: Child, message: Any) -> None:
        if child.state == "failed":
            if child.kind == "scope" and time.monotonic() - child.failed_at > RESTART_WINDOW_S:
                log.info("%s: fresh start after escalation", child.id)
                child.failures.clear()
                self._spawn(child)
            else:
                log.warning("%s is failed; %s dropped", child.id, type(message).__name__)
                return
        if child.state == "restarting" or child.ref is None:
            if len(child.buffer) < BUFFER_LIMIT:
                child.buffer.append(message)
            else:
                log.error("%s: restart buffer full; %s dropped", child.id,
                          type(message).__name__)
            return
        try:
            child.ref.tell(message)
        except pykka.ActorDeadError:
            child.buffer.append(message)  # its failure report is on the way

    def _failed(self, child_id: str, reason: str, leftovers: tuple[Any, ...] = ()) -> None:
        child = self.children.get(child_id)
        if child is None or self.shutting_down:
            return
        child.buffer[:0] = leftovers
        now = time.monotonic()
        child.ref = None
        child.last_failure = reason
        self.runtime.directory.set(child_id, None)
        child.failures.append(now)
        while child.failures and now - child.failures[0] > RESTART_WINDOW_S:
            child.failures.popleft()
        if len(child.failures) > MAX_RESTARTS:
            child.state = "failed"
            child.failed_at = now
            log.error("%s failed %d times in %.0f s; not restarted (escalated): %s", child_id,
                      len(child.failures), RESTART_WINDOW_S, reason)
            if child.buffer:
                log.error("%s: %d buffered message(s) dropped", child_id, len(child.buffer))
                child.buffer = []
            self._publish(child)
            return
        delay = RESTART_BACKOFF_S * 2 ** (len(child.failures) - 1)
        child.state = "restarting"
        child.restarts += 1
        child.generation += 1
        log.warning("%s failed (%s); restart %d in %.1fs", child_id, reason, child.restarts,
                    delay)
        self._publish(child)
        self.runtime.timers.schedule(delay, self.actor_ref,
                                     RestartChild(child_id, child.generation))

    def _stop_scope_run(self, message: StopScopeRun) -> None:
        """Pass an admin's ``/stop CHANNEL`` to the scope of that channel (by id or name)."""
        names = {row.key: row.channel for row in self.runtime.board.snapshot().scopes}
        for child_id, child in self.children.items():
            if child.kind != "scope" or child.ref is None:
                continue
            key = ScopeKey.parse(child_id.removeprefix("scope:"))
            if key.connection != message.connection:
                continue
            if message.channel in (key.channel, names.get(str(key))):
                log.info("%s: run stop requested (%s)", child_id, message.reason)
                child.ref.tell(StopRun(message.reason))

    def _evict(self, child_id: str) -> None:
        """Stop an idle scope or delivery; its next message spawns a new one from the store."""
        child = self.children.get(child_id)
        if child is None or child.state != "running" or child.ref is None or (
            self.shutting_down
        ):
            return
        del self.children[child_id]
        self.runtime.directory.set(child_id, None)
        child.ref.stop(block=False)
        self.runtime.board.remove_actor(child_id)
        if child.kind == "scope":
            self.runtime.board.remove_scope(child_id.removeprefix("scope:"))
        log.debug("%s stopped after being idle", child_id)

    def _shutdown(self, timeout_s: float) -> None:
        self.shutting_down = True
        deadline = time.monotonic() + timeout_s
        for kind in STOP_ORDER:
            refs = [c.ref for c in self.children.values() if c.kind == kind and c.ref]
            futures = [ref.stop(block=False) for ref in refs]
            for future in futures:
                try:
                    future.get(timeout=max(0.05, deadline - time.monotonic()))
                except (pykka.Timeout, pykka.ActorDeadError):
                    log.warning("a %s actor did not stop in time", kind)
            for child in self.children.values():
                if child.kind == kind:
                    child.state = "stopped"
                    child.ref = None
                    self.runtime.directory.set(child.id, None)
                    self.runtime.board.remove_actor(child.id)
        self.runtime.board.put_actor(ActorRow(ROOT_ID, "supervisor", None, "stopped"))

    def _publish(self, child: Child) -> None:
        detail = f"last failure: {child.last_failure}"[:200] if child.last_failure else ""
        self.runtime.board.put_actor(ActorRow(child.id, child.kind, ROOT_ID, child.state,
                                              child.restarts, detail))
