"""Pooled pykka actors (actors.pool): pykka's semantics on a few shared threads.

Each test runs its actors on a pool of its own (stopped at the end), so its
thread counts are its own. Waits are on events and futures with deadlines;
nothing here asserts how long anything took.
"""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, cast

import pykka
import pytest
from pykka._envelope import Envelope

from actors.messages import Init
from actors.pool import ActorPool, PooledActor, PooledFuture, PooledInbox, current_actor
from actors.runtime import PooledSupervisedActor, Runtime, SupervisedActor
from tests.support import wait_until

#: Seconds any single wait here may take before the test fails.
WAIT_S = 10.0


@pytest.fixture
def pool() -> Iterator[ActorPool]:
    p = ActorPool(2, name="test-pool")
    yield p
    for ref in pykka.ActorRegistry.get_all():
        if issubclass(ref.actor_class, PooledActor) and ref.actor_class.actor_pool is p:
            ref.stop(block=False)
    p.shutdown()


def on(pool: ActorPool, cls: type[PooledActor]) -> Any:
    """A subclass of ``cls`` whose actors run on ``pool``."""
    return type(cls.__name__, (cls,), {"actor_pool": pool})


class Recorder(PooledActor):
    """Records its messages (and the threads it ran on); answers asks with the message."""

    def __init__(self, expected: int = 0) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.threads: set[str] = set()
        self.expected = expected
        self.all_in = threading.Event()
        self.inside = False
        self.overlaps = 0

    def on_receive(self, message: Any) -> Any:
        if self.inside:
            self.overlaps += 1
        self.inside = True
        self.threads.add(threading.current_thread().name)
        self.seen.append(message)
        if len(self.seen) == self.expected:
            self.all_in.set()
        self.inside = False
        return message


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    actor = ref._actor_weakref()
    assert actor is not None
    return actor


# -- order, one at a time, on_start ------------------------------------------


def test_messages_of_one_actor_are_handled_in_order(pool: ActorPool) -> None:
    ref = on(pool, Recorder).start(expected=2000)
    for i in range(2000):
        ref.tell(i)
    actor = actor_of(ref)
    assert actor.all_in.wait(WAIT_S)
    assert actor.seen == list(range(2000))


def test_each_sender_s_order_holds_and_no_two_workers_run_one_actor() -> None:
    pool = ActorPool(4, name="busy-pool")
    senders, per_sender, actors = 4, 300, 12
    try:
        refs = [on(pool, Recorder).start(expected=senders * per_sender) for _ in range(actors)]

        def send(sender: int) -> None:
            for i in range(per_sender):
                for ref in refs:
                    ref.tell((sender, i))

        threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        used: set[str] = set()
        for ref in refs:
            actor = actor_of(ref)
            assert actor.all_in.wait(WAIT_S)
            assert actor.overlaps == 0
            for sender in range(senders):
                assert [i for s, i in actor.seen if s == sender] == list(range(per_sender))
            used |= actor.threads
        assert all(name.startswith("busy-pool") for name in used)
        assert pool.workers() <= 4
    finally:
        for ref in pykka.ActorRegistry.get_all():
            if getattr(ref.actor_class, "actor_pool", None) is pool:
                ref.stop(block=False)
        pool.shutdown()


class Gate(PooledActor):
    """Waits at a shared barrier in its first message: two of them meet only when two
    workers run them at once."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def on_receive(self, message: Any) -> Any:
        return self.barrier.wait()


def test_two_actors_run_at_once_on_two_workers(pool: ActorPool) -> None:
    barrier = threading.Barrier(2, timeout=WAIT_S)
    first, second = on(pool, Gate).start(barrier), on(pool, Gate).start(barrier)
    futures = [first.ask("go", block=False), second.ask("go", block=False)]
    assert sorted(f.get(timeout=WAIT_S) for f in futures) == [0, 1]


class SlowStart(PooledActor):
    """``on_start`` waits for ``release``; records it and every message."""

    def __init__(self, release: threading.Event, log: list[Any]) -> None:
        super().__init__()
        self.release = release
        self.log = log

    def on_start(self) -> None:
        self.release.wait(WAIT_S)
        self.log.append(("start", threading.current_thread().name))

    def on_receive(self, message: Any) -> Any:
        self.log.append(message)
        return len(self.log)


def test_on_start_runs_on_a_worker_before_any_message(pool: ActorPool) -> None:
    release, log = threading.Event(), list[Any]()
    ref = on(pool, SlowStart).start(release, log)
    for i in range(3):
        ref.tell(i)
    answer = ref.ask("last", block=False)
    assert log == []  # on_start is still waiting: nothing ran yet
    release.set()
    assert answer.get(timeout=WAIT_S) == 5
    assert log[0][0] == "start" and log[0][1].startswith("test-pool")
    assert log[1:] == [0, 1, 2, "last"]


# -- stop ---------------------------------------------------------------------


class Stoppable(PooledActor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.stops = 0
        self.stop_queued = threading.Event()
        self.proceed = threading.Event()

    def on_receive(self, message: Any) -> Any:
        if message == "stop yourself":
            self.stop()  # queues the stop request behind what waits
            self.stop_queued.set()
            self.proceed.wait(WAIT_S)
        self.seen.append(message)
        return message

    def on_stop(self) -> None:
        self.stops += 1
        self.seen.append("on_stop")


@pytest.mark.parametrize("block", [True, False])
def test_stop_runs_on_stop_once_after_earlier_messages(pool: ActorPool, block: bool) -> None:
    ref = on(pool, Stoppable).start()
    actor = actor_of(ref)
    for i in range(50):
        ref.tell(i)
    if block:
        assert ref.stop(timeout=WAIT_S) is True
    else:
        assert ref.stop(block=False).get(timeout=WAIT_S) is True
    assert actor.seen == [*range(50), "on_stop"]
    assert actor.stops == 1
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late", timeout=WAIT_S)
    assert ref.stop(timeout=WAIT_S) is False  # already dead, as pykka answers
    assert actor.stops == 1
    assert ref not in pykka.ActorRegistry.get_all()


def test_an_actor_stopping_itself_answers_what_waited_with_actor_dead(
        pool: ActorPool) -> None:
    ref = on(pool, Stoppable).start()
    actor = actor_of(ref)
    ref.tell("stop yourself")
    assert actor.stop_queued.wait(WAIT_S)
    behind = ref.ask("behind", block=False)  # queued behind the stop request
    actor.proceed.set()
    with pytest.raises(pykka.ActorDeadError):
        behind.get(timeout=WAIT_S)
    assert actor.stops == 1
    assert actor.seen == ["stop yourself", "on_stop"]


def test_an_ask_that_reaches_a_closed_inbox_is_answered_with_actor_dead() -> None:
    inbox = PooledInbox()
    assert inbox.close() == []
    future: PooledFuture = PooledFuture()
    inbox.put(Envelope("late", reply_to=future))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=WAIT_S)
    inbox.put(Envelope("a tell: dropped"))
    assert inbox.empty()


def test_an_ask_to_an_actor_whose_pool_is_shut_down_is_answered_with_actor_dead() -> None:
    own = ActorPool(1, name="test-shut")
    ref = on(own, Recorder).start()
    actor = actor_of(ref)
    assert ref.ask("before", timeout=WAIT_S) == "before"
    own.shutdown()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("after", timeout=WAIT_S)
    # Its inbox is closed: later messages are answered at once, none waits in it.
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("later", timeout=WAIT_S)
    assert actor.seen == ["before"]


# -- failures, as pykka's ThreadingActor ---------------------------------------


def failing(base: type[pykka.Actor]) -> Any:
    """An actor on ``base`` that fails on ``"boom"`` and records its hooks."""

    class Failing(base):  # type: ignore[valid-type,misc]
        def __init__(self, hooks: queue.Queue[Any]) -> None:
            super().__init__()
            self.hooks = hooks

        def on_receive(self, message: Any) -> Any:
            if message == "boom":
                raise ValueError("boom")
            if message == "ask boom":
                raise KeyError("ask boom")
            self.hooks.put(("message", message))
            return message

        def on_failure(self, exception_type: type[BaseException] | None,
                       exception_value: BaseException | None,
                       traceback: TracebackType | None) -> None:
            self.hooks.put(("on_failure", repr(exception_value), self.actor_ref.is_alive()))

        def on_stop(self) -> None:
            self.hooks.put(("on_stop",))

    return Failing


def failure_story(cls: Any) -> list[Any]:
    """What an actor of ``cls`` shows around a failing ask and a failing tell."""
    hooks: queue.Queue[Any] = queue.Queue()
    ref = cls.start(hooks)
    story: list[Any] = []
    with pytest.raises(KeyError):
        ref.ask("ask boom", timeout=WAIT_S)
    story.append(("alive after a failing ask", ref.is_alive(), ref.ask("ok", timeout=WAIT_S)))
    ref.tell("boom")
    story.append(hooks.get(timeout=WAIT_S))  # ("message", "ok") from the ask above
    story.append(hooks.get(timeout=WAIT_S))
    wait_until(lambda: not ref.is_alive(), WAIT_S, "the failed actor to stop")
    story.append(("registered", ref in pykka.ActorRegistry.get_all()))
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after")
    story.append(("stop after failure", ref.stop(timeout=WAIT_S)))
    story.append(("more hooks", hooks.qsize()))
    return story


def test_a_failing_message_is_handled_as_a_threading_actor_does(pool: ActorPool) -> None:
    threaded = failure_story(failing(pykka.ThreadingActor))
    pooled = failure_story(on(pool, failing(PooledActor)))
    assert pooled == threaded
    assert pooled == [
        ("alive after a failing ask", True, "ok"),
        ("message", "ok"),
        ("on_failure", "ValueError('boom')", False),
        ("registered", False),
        ("stop after failure", False),
        ("more hooks", 0),
    ]


def test_a_failure_does_not_cost_the_worker() -> None:
    pool = ActorPool(1, name="one-worker")
    try:
        hooks: queue.Queue[Any] = queue.Queue()
        broken = on(pool, failing(PooledActor)).start(hooks)
        broken.tell("boom")
        assert hooks.get(timeout=WAIT_S)[0] == "on_failure"
        other = on(pool, Recorder).start()
        assert other.ask("still here", timeout=WAIT_S) == "still here"
        assert pool.workers() == 1
        other.stop(timeout=WAIT_S)
    finally:
        pool.shutdown()


class FailingStart(PooledActor):
    def __init__(self, hooks: queue.Queue[Any], told: threading.Event) -> None:
        super().__init__()
        self.hooks = hooks
        self.told = told

    def on_start(self) -> None:
        # Fails only once the test's message is in: a tell to an actor that has
        # already stopped raises, for a threading actor too.
        assert self.told.wait(WAIT_S)
        raise RuntimeError("no start")

    def on_receive(self, message: Any) -> Any:
        self.hooks.put(("message", message))

    def on_failure(self, *exc_info: Any) -> None:
        self.hooks.put(("on_failure",))


def test_a_failing_on_start_stops_the_actor_before_any_message(pool: ActorPool) -> None:
    hooks: queue.Queue[Any] = queue.Queue()
    told = threading.Event()
    ref = on(pool, FailingStart).start(hooks, told)
    ref.tell("first")
    told.set()
    wait_until(lambda: not ref.is_alive(), WAIT_S, "the actor to stop")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("more", timeout=WAIT_S)
    assert hooks.empty()  # as pykka: on_failure is not called for on_start, no message ran


# -- asks, proxies, the registry ----------------------------------------------


class Asker(PooledActor):
    """Answers ``n`` by asking the next actor of the chain (blocking) for ``n + 1``."""

    def __init__(self, next_ref: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self.next_ref = next_ref

    def on_receive(self, message: Any) -> Any:
        if self.next_ref is None:
            return [threading.current_thread().name]
        return [threading.current_thread().name, *self.next_ref.ask(message, timeout=WAIT_S)]

    def double(self, value: int) -> int:
        return value * 2


def test_asks_from_a_plain_thread_and_through_a_proxy(pool: ActorPool) -> None:
    ref = on(pool, Asker).start(None)
    answers: queue.Queue[Any] = queue.Queue()
    threads = [threading.Thread(target=lambda: answers.put(ref.ask("x", timeout=WAIT_S)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert [len(answers.get(timeout=WAIT_S)) for _ in threads] == [1, 1, 1]
    assert ref.proxy().double(21).get(timeout=WAIT_S) == 42


def test_a_chain_of_blocking_asks_deeper_than_the_pool_does_not_deadlock() -> None:
    pool = ActorPool(1, name="ask-pool")
    try:
        ref: pykka.ActorRef[Any] | None = None
        for _ in range(6):
            ref = on(pool, Asker).start(ref)
        assert ref is not None
        names = ref.ask("go", block=True, timeout=WAIT_S)
        assert len(names) == 6
        assert len(set(names)) == 6  # each waiting worker was covered by a new one
        assert all(name.startswith("ask-pool") for name in names)
        # the extra workers retire once their waits are over
        wait_until(lambda: pool.workers() == 1 and pool.blocked() == 0, WAIT_S,
                   "the pool back to its size")
    finally:
        pool.shutdown()


class Plain(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        return ("plain", message)


def test_a_pooled_actor_asks_a_threading_actor(pool: ActorPool) -> None:
    plain = Plain.start()
    try:
        ref = on(pool, Asker).start(plain)
        names = ref.ask("hi", timeout=WAIT_S)
        assert names[1:] == ["plain", "hi"]
    finally:
        plain.stop()


def test_the_registry_sees_pooled_actors(pool: ActorPool) -> None:
    cls = on(pool, Recorder)
    ref: pykka.ActorRef[Any] = cls.start()
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is ref
    assert pykka.ActorRegistry.get_by_class(cls) == [ref]
    pykka.ActorRegistry.broadcast("everyone", target_class=cls)
    assert ref.ask("after the broadcast", timeout=WAIT_S) == "after the broadcast"
    assert actor_of(ref).seen == ["everyone", "after the broadcast"]
    ref.stop(timeout=WAIT_S)
    assert pykka.ActorRegistry.get_by_class(cls) == []


# -- threads -------------------------------------------------------------------


def test_many_idle_pooled_actors_add_no_threads(pool: ActorPool) -> None:
    before = threading.active_count()
    cls = on(pool, Recorder)
    refs = [cls.start() for _ in range(5000)]
    futures = [ref.ask("ping", block=False) for ref in refs]
    assert pykka.get_all(futures, timeout=WAIT_S * 3) == ["ping"] * 5000
    assert pool.workers() <= pool.size == 2
    assert threading.active_count() <= before + pool.size
    for ref in refs:
        ref.stop(block=False)
    wait_until(lambda: not any(ref.is_alive() for ref in refs), WAIT_S * 3,
               "5,000 actors to stop")


def test_the_pool_resizes_and_rejects_a_size_below_one() -> None:
    pool = ActorPool(3, name="resize-pool")
    try:
        cls: Callable[..., Any] = on(pool, Gate).start
        barrier = threading.Barrier(3, timeout=WAIT_S)
        refs = [cls(barrier) for _ in range(3)]
        assert sorted(f.get(timeout=WAIT_S) for f in [r.ask("go", block=False) for r in refs]
                      ) == [0, 1, 2]
        assert pool.workers() == 3
        pool.resize(1)
        wait_until(lambda: pool.workers() == 1, WAIT_S, "surplus workers to retire")
        with pytest.raises(ValueError, match="at least 1"):
            pool.resize(0)
        with pytest.raises(ValueError, match="at least 1"):
            ActorPool(0)
        for ref in refs:
            ref.stop(timeout=WAIT_S)
    finally:
        pool.shutdown()


def busy_workers(pool: ActorPool, count: int) -> list[pykka.ActorRef[Any]]:
    """Start ``count`` workers of ``pool`` at once (gates that meet at a barrier)."""
    barrier = threading.Barrier(count, timeout=WAIT_S)
    refs = [on(pool, Gate).start(barrier) for _ in range(count)]
    answers = [f.get(timeout=WAIT_S) for f in [r.ask("go", block=False) for r in refs]]
    assert sorted(answers) == list(range(count))
    assert pool.workers() == count
    return refs


def test_idle_workers_retire_and_work_starts_one_again() -> None:
    pool = ActorPool(3, name="retire-pool", retire_s=0.2)
    try:
        busy_workers(pool, 3)
        wait_until(lambda: pool.workers() == 0, WAIT_S, "idle workers to retire")
        recorder = on(pool, Recorder).start()
        assert recorder.ask("again", timeout=WAIT_S) == "again"
        assert actor_of(recorder).threads  # it ran on a worker started for it
        with pytest.raises(ValueError, match="positive"):
            ActorPool(1, retire_s=0)
    finally:
        pool.shutdown()


def test_under_light_load_one_worker_runs_and_the_others_retire() -> None:
    # Asks one at a time, more often than a worker retires: were idle workers woken
    # in turn, each would be woken before its 0.5 s ran out and all four would stay.
    pool = ActorPool(4, name="stack-pool", retire_s=0.5)
    try:
        busy_workers(pool, 4)
        recorder = on(pool, Recorder).start()

        def asked_and_shrunk() -> bool:
            assert recorder.ask("ping", timeout=WAIT_S) == "ping"
            return pool.workers() <= 2

        wait_until(asked_and_shrunk, WAIT_S, "surplus workers to retire under light load")
    finally:
        pool.shutdown()


class Holder(PooledActor):
    """Holds its worker until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def on_receive(self, message: Any) -> Any:
        assert self.release.wait(WAIT_S)
        return message


def test_a_pool_grown_runs_the_actors_already_in_line() -> None:
    pool = ActorPool(1, name="grow-pool")
    release = threading.Event()
    try:
        held = on(pool, Holder).start(release).ask("hold", block=False)
        wait_until(lambda: pool.workers() == 1, WAIT_S, "the one worker to be held")
        waiting = on(pool, Recorder).start().ask("waiting", block=False)
        pool.resize(2)  # no new submit: the actor in line needs the second worker now
        assert waiting.get(timeout=WAIT_S) == "waiting"
        assert not release.is_set()
        release.set()
        assert held.get(timeout=WAIT_S) == "hold"
    finally:
        release.set()
        pool.shutdown()


def refuse_one_thread_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the next ``Thread.start`` fail as at a process limit (later ones start);
    returns the list that gets the refused thread's name. Undo with ``monkeypatch``."""
    real_start = threading.Thread.start
    refused: list[str] = []

    def refuse_once(thread: threading.Thread) -> None:
        if not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_once)
    return refused


def test_a_worker_that_cannot_start_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ActorPool(2, name="nothread-pool")
    try:
        refused = refuse_one_thread_start(monkeypatch)
        first = on(pool, Recorder).start()  # its worker cannot start: it waits in line
        assert refused and pool.workers() == 0
        second = on(pool, Recorder).start()  # the next submit starts a worker
        assert first.ask("one", timeout=WAIT_S) == "one"
        assert second.ask("two", timeout=WAIT_S) == "two"
    finally:
        monkeypatch.undo()
        pool.shutdown()


class HeldWorker:
    """A size-1 pool whose only worker a :class:`Holder`'s turn holds until
    :attr:`release` is set (:func:`only_worker_held`)."""

    def __init__(self, pool: ActorPool) -> None:
        self.pool = pool
        self.release = threading.Event()
        self.holder = on(pool, Holder).start(self.release)
        self.held = self.holder.ask("hold", block=False)


@contextmanager
def only_worker_held(name: str) -> Iterator[HeldWorker]:
    """A new size-1 pool named ``name`` with its only worker held by a turn; on exit the
    turn is released and answered, and the pool shut down."""
    pool = ActorPool(1, name=name)
    state: HeldWorker | None = None
    try:
        state = HeldWorker(pool)
        wait_until(lambda: pool.idle() == 0 and pool.workers() == 1, WAIT_S,
                   "the turn to hold the only worker")
        yield state
        state.release.set()
        assert state.held.get(timeout=WAIT_S) == "hold"
        state.holder.stop(timeout=WAIT_S)
    finally:
        if state is not None:
            state.release.set()
        pool.shutdown()


def test_a_call_whose_worker_cannot_start_runs_on_the_next_free_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A size-1 pool whose one turn is held: the call's thread cannot start, so the
    # call waits; the held turn's worker takes it when the turn ends, and the
    # actor that waited in line behind that turn still gets a worker of its own.
    call_over = threading.Event()

    def call() -> None:
        ran.put(threading.current_thread().name)
        assert call_over.wait(WAIT_S * 3)  # longer than the ask below waits

    ran: queue.Queue[str] = queue.Queue()
    with only_worker_held("nocall-pool") as busy:
        try:
            waiting = on(busy.pool, Recorder).start()  # in line behind the held turn
            refused = refuse_one_thread_start(monkeypatch)
            busy.pool.run_blocking(call)
            assert refused and busy.pool.workers() == 1 and busy.pool.blocked() == 1
            monkeypatch.undo()
            busy.release.set()
            assert busy.held.get(timeout=WAIT_S) == "hold"
            assert ran.get(timeout=WAIT_S).startswith("nocall-pool")
            # The call holds that worker now: the actor's turn runs beside it.
            assert waiting.ask("after", timeout=WAIT_S) == "after"
            call_over.set()
            wait_until(lambda: busy.pool.blocked() == 0, WAIT_S, "the call to end")
            waiting.stop(timeout=WAIT_S)
        finally:
            monkeypatch.undo()
            call_over.set()


def test_a_blocking_call_lends_a_worker_and_leaves_the_pool_its_size() -> None:
    # One worker: the call holds it, so the actor's turn needs a worker started for it.
    pool = ActorPool(1, name="blocking-pool")
    try:
        release = threading.Event()
        ran_on: queue.Queue[str] = queue.Queue()

        def read() -> None:
            ran_on.put(threading.current_thread().name)
            assert release.wait(WAIT_S)

        pool.run_blocking(read)
        first = ran_on.get(timeout=WAIT_S)
        recorder = on(pool, Recorder).start()
        assert recorder.ask("while it blocks", timeout=WAIT_S) == "while it blocks"
        assert actor_of(recorder).threads != {first}
        assert pool.blocked() == 1
        release.set()
        wait_until(lambda: pool.blocked() == 0, WAIT_S, "the call to end")
        recorder.stop(timeout=WAIT_S)
    finally:
        pool.shutdown()


def test_a_blocking_call_s_worker_goes_back_to_the_pool() -> None:
    pool = ActorPool(1, name="lending-pool")
    try:
        ran_on: queue.Queue[str] = queue.Queue()
        pool.run_blocking(lambda: ran_on.put(threading.current_thread().name))
        first = ran_on.get(timeout=WAIT_S)
        wait_until(lambda: pool.idle() == 1, WAIT_S, "the worker to wait for work")
        spawns = pool.spawns()
        pool.run_blocking(lambda: ran_on.put(threading.current_thread().name))
        assert ran_on.get(timeout=WAIT_S) == first
        assert pool.spawns() == spawns
    finally:
        pool.shutdown()


class Payload:
    """Something a blocking call holds (a reader holds its runner)."""


def test_an_idle_worker_holds_nothing_of_what_it_ran() -> None:
    # A finished run's runner must be freed though the worker that ran it lives on.
    pool = ActorPool(1, name="forget-pool")
    try:
        ref = on(pool, Recorder).start()  # its first turn starts the worker
        assert ref.ask("x", timeout=WAIT_S) == "x"
        actor = weakref.ref(actor_of(ref))
        ref.stop(timeout=WAIT_S)
        del ref
        payload = Payload()
        held = weakref.ref(payload)
        done: queue.Queue[int] = queue.Queue()

        def read(payload: Payload = payload) -> None:
            done.put(id(payload))

        pool.run_blocking(read)
        done.get(timeout=WAIT_S)
        del payload, read
        wait_until(lambda: pool.idle() == 1 and pool.blocked() == 0, WAIT_S,
                   "the worker idle again")
        gc.collect()
        assert actor() is None and held() is None
        assert pool.workers() == 1  # the same worker, alive and idle
    finally:
        pool.shutdown()


def test_a_blocking_call_does_not_wait_behind_a_busy_turn() -> None:
    with only_worker_held("busy-pool") as busy:
        ran: queue.Queue[str] = queue.Queue()
        busy.pool.run_blocking(lambda: ran.put("ran"))
        assert ran.get(timeout=WAIT_S) == "ran"
        assert not busy.release.is_set()  # it ran while the turn still held its worker


def test_calls_one_after_another_beside_a_busy_turn_reuse_one_worker() -> None:
    # The runner pool's steady state: every turn place busy, runs coming and going.
    # A worker lent to a call goes back to the pool when the call ends, so the next
    # call takes it instead of starting a thread of its own.
    with only_worker_held("reuse-pool") as busy:
        pool = busy.pool
        ran_on: queue.Queue[str] = queue.Queue()
        pool.run_blocking(lambda: ran_on.put(threading.current_thread().name))
        first = ran_on.get(timeout=WAIT_S)
        wait_until(lambda: pool.blocked() == 0 and pool.idle() == 1, WAIT_S,
                   "the call's worker back in the pool")
        spawns = pool.spawns()
        for _ in range(5):
            pool.run_blocking(lambda: ran_on.put(threading.current_thread().name))
            assert ran_on.get(timeout=WAIT_S) == first
            wait_until(lambda: pool.idle() == 1, WAIT_S, "the worker back in the pool")
        assert pool.spawns() == spawns
        assert pool.workers() == 2  # the held turn's and the lent one


def test_turns_never_run_on_more_workers_than_the_size_after_calls_end() -> None:
    # Workers that calls leave idle take turns only within the pool's size.
    pool = ActorPool(2, name="bound-pool")
    release = threading.Event()
    try:
        gate = threading.Event()
        for _ in range(4):
            pool.run_blocking(lambda: gate.wait(WAIT_S))
        wait_until(lambda: pool.workers() == 4, WAIT_S, "a worker per call")
        gate.set()
        wait_until(lambda: pool.blocked() == 0, WAIT_S, "the calls to end")
        assert pool.workers() == 2 and pool.idle() == 2  # at most ``size`` wait idle
        holders = [on(pool, Holder).start(release) for _ in range(3)]
        held = [ref.ask("hold", block=False) for ref in holders]
        wait_until(lambda: pool.idle() == 0, WAIT_S, "two turns to hold the workers")
        assert pool.workers() == 2  # the third holder waits in line: no thread for it
        release.set()
        assert [future.get(timeout=WAIT_S) for future in held] == ["hold"] * 3
        for ref in holders:
            ref.stop(timeout=WAIT_S)
    finally:
        release.set()
        pool.shutdown()


def test_a_blocking_call_that_raises_is_logged_and_the_pool_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = ActorPool(1, name="raising-pool")
    try:
        def broken() -> None:
            raise RuntimeError("reader broke")

        pool.run_blocking(broken)
        recorder = on(pool, Recorder).start()
        assert recorder.ask("after", timeout=WAIT_S) == "after"
        wait_until(lambda: "blocking call broke off" in caplog.text, WAIT_S, "the log line")
        wait_until(lambda: pool.blocked() == 0, WAIT_S, "the call to end")
        recorder.stop(timeout=WAIT_S)
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            pool.run_blocking(broken)
    finally:
        pool.shutdown()


def test_current_actor_names_the_pooled_actor_of_this_turn(pool: ActorPool) -> None:
    class Who(PooledActor):
        def on_receive(self, message: Any) -> Any:
            return current_actor() is self

    assert on(pool, Who).start().ask("who", block=True, timeout=WAIT_S) is True
    assert current_actor() is None


@pytest.mark.parametrize("base", [SupervisedActor, PooledSupervisedActor])
def test_init_is_a_supervised_actor_s_first_message(base: type[Any]) -> None:
    """What the supervisor hands over right after start comes after ``Init``."""

    class Child(base):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(cast(Runtime, None), "child")
            self.seen: list[Any] = []

        def on_receive(self, message: Any) -> Any:
            self.seen.append(type(message).__name__ if isinstance(message, Init) else message)
            return list(self.seen)

    ref = Child.start()
    try:
        ref.tell("handed over")
        assert ref.ask("then", block=True, timeout=WAIT_S) == ["Init", "handed over", "then"]
    finally:
        ref.stop(timeout=WAIT_S)
