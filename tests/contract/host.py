"""A small IntakeHost for the contract tests: one thread drives an intake as the port says.

The thread calls :meth:`Intake.start`, then :meth:`Intake.handle` for each
queued message, one at a time, and :meth:`Intake.close` at the end. Delayed
messages wait on :class:`threading.Timer` objects (cancelled at the end).
:meth:`TestHost.accept` is the journal: it records every call, keeps each
message id once, and stores cursors in a dict that a later host can start from;
:meth:`TestHost.act` records the members' clicks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bridge.config import AgentSettings, Binding
from bridge.errors import NotFound
from bridge.model import Action, ConnectionKey, Inbound
from bridge.names import ResolvedNames
from bridge.platform import Access, ChatPlatform, Intake, IntakeStatus, Session
from tests.support import wait_until

#: Queued to end the host's thread.
_STOP = object()


class TestHost:
    """Drives one intake of ``platform`` for ``agent`` in ``space``.

    Args:
        platform: The platform under test.
        agent: The agent whose identity connects.
        space: The space.
        bindings: The agent's bindings in the space.
        cursors: Stored cursors to start from: channel id -> (cursor, position).
    """

    __test__ = False  # not a test class, for pytest

    def __init__(self, platform: ChatPlatform, agent: AgentSettings, space: str,
                 bindings: list[Binding],
                 cursors: Mapping[str, tuple[str, int]] | None = None) -> None:
        self.platform = platform
        self.agent = agent
        self.bindings = bindings
        self._connection = ConnectionKey(platform.name, agent.name, space)
        self._stopping = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue()
        self._timers: list[threading.Timer] = []
        self._session: Session | None = None
        self._names = ResolvedNames()
        #: Every accept() call, duplicates included.
        self.calls: list[Inbound] = []
        #: Accepted (journaled) messages, each id once.
        self.accepted: list[Inbound] = []
        self.saved: dict[str, tuple[str, int]] = dict(cursors or {})
        self.statuses: list[IntakeStatus] = []
        #: Every act() call, in order.
        self.actions: list[Action] = []
        #: Messages the intake answered False for, and exceptions it raised.
        self.unknown: list[object] = []
        self.errors: list[BaseException] = []
        self.intake: Intake = platform.open(self, agent, bindings)
        self._thread = threading.Thread(target=self._run, name=f"host {self._connection}",
                                        daemon=True)

    # -- driving -----------------------------------------------------------------

    def start(self) -> TestHost:
        """Start the thread (it starts the intake) and wait until the intake is connected."""
        self._thread.start()
        self.wait(lambda: self.status.state == "connected", "the intake to connect")
        return self

    def stop(self) -> None:
        """Stop taking messages, close the intake and end the thread (again: nothing)."""
        if self._stopping:
            return
        self._stopping = True
        with self._lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        self._queue.put(_STOP)
        if self._thread.ident is None:
            return  # never started
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the host's thread did not end"

    def _run(self) -> None:
        try:
            self.intake.start()
            while (message := self._queue.get()) is not _STOP:
                if not self.intake.handle(message):
                    self.unknown.append(message)
        except BaseException as exc:  # shown by the test that waits
            self.errors.append(exc)
        finally:
            self.intake.close()

    def wait(self, predicate: Callable[[], Any], what: str) -> Any:
        """Wait until ``predicate`` holds (failing the test after a long deadline)."""
        def check() -> Any:
            assert not self.errors, f"the intake raised: {self.errors!r}"
            return predicate()
        return wait_until(check, what=what)

    @property
    def status(self) -> IntakeStatus:
        """The last status the intake published."""
        with self._lock:
            return self.statuses[-1] if self.statuses else IntakeStatus("connecting")

    def contents(self) -> list[str]:
        """The contents of the accepted messages, in order."""
        with self._lock:
            return [inbound.content for inbound in self.accepted]

    def calls_with(self, content: str) -> list[Inbound]:
        """The accept() calls (duplicates included) for messages with this content."""
        with self._lock:
            return [inbound for inbound in self.calls if inbound.content == content]

    def wait_accepted(self, content: str) -> Inbound:
        """Wait until a message with ``content`` is accepted; return it."""
        found: Inbound = self.wait(
            lambda: next((i for i in list(self.accepted) if i.content == content), None),
            f"{content!r} accepted")
        return found

    # -- IntakeHost ----------------------------------------------------------------

    @property
    def connection(self) -> ConnectionKey:
        return self._connection

    @property
    def stopping(self) -> bool:
        return self._stopping

    def tell(self, message: object) -> None:
        self._queue.put(message)

    def schedule(self, delay_s: float, message: object) -> None:
        timer = threading.Timer(delay_s, self.tell, (message,))
        timer.daemon = True
        with self._lock:
            if self._stopping:
                return
            self._timers.append(timer)
        timer.start()

    def accept(self, inbound: Inbound, *, advance_cursor: bool = True) -> None:
        assert inbound.author_id != self._session_user(), "the identity's own message"
        with self._lock:
            self.calls.append(inbound)
            if any(seen.message_id == inbound.message_id for seen in self.accepted):
                return
            self.accepted.append(inbound)
        if advance_cursor:
            self.save_cursor(inbound.channel_id, inbound.cursor, inbound.seq)

    def cursors(self) -> Mapping[str, str]:
        with self._lock:
            return {channel: cursor for channel, (cursor, _) in self.saved.items()}

    def save_cursor(self, channel_id: str, cursor: str, position: int) -> None:
        with self._lock:
            if position >= self.saved.get(channel_id, ("", -1))[1]:
                self.saved[channel_id] = (cursor, position)

    def _session_user(self) -> str:
        session = self._session
        access = session.access(self._connection.space) if session is not None else None
        return access.user_id if access is not None else ""

    def access(self) -> Access:
        if self._session is None:
            self._session = self.platform.login(self.agent)
        access = self._session.access(self._connection.space)
        if access is None:
            raise NotFound(f"{self.agent.name} may not use space {self._connection.space}")
        return access

    def invalidate(self, token: str) -> None:
        if self._session is not None and self._session.holds(token):
            self._session = None

    def names(self) -> ResolvedNames:
        return self._names

    def names_resolved(self, names: ResolvedNames) -> None:
        self._names = names

    def publish(self, status: IntakeStatus) -> None:
        with self._lock:
            self.statuses.append(status)

    def act(self, action: Action) -> None:
        with self._lock:
            self.actions.append(action)
