"""What every actor is given: config, board, timers, the supervisor and a directory."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import attrs
import pykka

from actors.messages import ChildFailed, Init
from actors.timers import Timers
from bridge.board import Board
from bridge.config import Config
from bridge.names import ResolvedNames
from bridge.run_view import Renderer
from bridge.store import Store

log = logging.getLogger(__name__)


class Directory:
    """Thread-safe map of child id to the current ActorRef, written only by the supervisor.

    Actors use it to ``ask`` the token cache without holding a ref that a
    restart would make stale.
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
    """Thread-safe map of (agent, guild) to what the config's names resolved to.

    Written only by that connection's gateway (it also keeps the pins here, so a
    restarted gateway keeps them); read by the supervisor and the scopes, whose
    access rules and bindings match channels and authors by id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[tuple[str, str], ResolvedNames] = {}

    def set(self, agent: str, guild: str, names: ResolvedNames) -> None:
        """Record the names of (``agent``, ``guild``), replacing any earlier record.

        Args:
            agent: The agent's name in the config.
            guild: The guild's node id.
            names: What the config's channel and user names resolved to (with pins).
        """
        with self._lock:
            self._names[(agent, guild)] = names

    def get(self, agent: str, guild: str) -> ResolvedNames:
        """The names of (``agent``, ``guild``); none resolved before its first load.

        Args:
            agent: The agent's name in the config.
            guild: The guild's node id.

        Returns:
            The last record, or an empty :class:`ResolvedNames` (no name resolves
            to any id) before the gateway's first channel list.
        """
        with self._lock:
            return self._names.get((agent, guild)) or ResolvedNames()

    def ready(self, agent: str, guild: str) -> bool:
        """Whether the gateway of (``agent``, ``guild``) loaded its channel list once.

        Args:
            agent: The agent's name in the config.
            guild: The guild's node id.

        Returns:
            True once :meth:`set` was called for this connection.
        """
        with self._lock:
            return (agent, guild) in self._names


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
        supervisor: Ref of the root supervisor (set once it started).
        platforms: Each chat platform's renderer, by platform name (a scope key's
            ``platform``).
        stopping: Set when the bridge begins to stop: actors skip new work (it is
            in the journal or on the guild, and is picked up at the next start).
    """

    config: Config
    board: Board
    timers: Timers
    store: Store
    directory: Directory = attrs.field(factory=Directory)
    names: NameBook = attrs.field(factory=NameBook)
    supervisor: pykka.ActorRef[Any] | None = None
    stopping: threading.Event = attrs.field(factory=threading.Event)
    platforms: Mapping[str, Renderer] = attrs.field(factory=dict)


class SupervisedActor(pykka.ThreadingActor):
    """Base of supervised actors: ``Init`` on start, ``ChildFailed`` to the supervisor on failure.

    Args:
        runtime: Shared services.
        child_id: This actor's id in the supervision tree.
    """

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, child_id: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.child_id = child_id

    def on_start(self) -> None:
        """Tell ourselves ``Init``, so that set-up errors go through ``on_failure``."""
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
