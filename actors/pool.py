"""Pooled pykka actors: many actors, a few shared worker threads.

A :class:`pykka.ThreadingActor` owns a thread for its whole life, idle or
not. A :class:`PooledActor` keeps pykka's API (``start()``, ``ActorRef.tell``,
``ask``, ``stop``, proxies, the ``ActorRegistry``, and the hooks ``on_start``,
``on_receive``, ``on_failure``, ``on_stop``) but has no thread of its own: a
message put in its inbox schedules the actor on an :class:`ActorPool`, whose
workers run it for a turn (up to :attr:`PooledActor.turn_messages` messages)
and put it back in line while messages remain. It uses pykka's documented
extension point for new actor types (``_create_actor_inbox``,
``_create_future``, ``_start_actor_loop``) and pykka's own per-message code
(``_handle_receive``, ``_handle_failure``, ``_stop``).

What holds, as for a thread per actor (``tests/test_pool.py``):

- An actor's messages are handled in the order they were put, one at a time:
  an actor is in the pool's line at most once and only the worker that runs
  it takes it out again, so two workers never run one actor.
- ``on_start`` runs in the actor's first turn, before any message.
- ``stop()`` (blocking or not) runs ``on_stop`` once, after the messages put
  before it; later tells raise :class:`pykka.ActorDeadError`, and an ask that
  slips in while it stops is answered with that error (pykka would leave it
  unanswered).
- An exception in ``on_receive`` of a ``tell`` is logged, the actor is
  unregistered and stopped, and ``on_failure`` is called (pykka's
  ``ThreadingActor`` does the same; ``on_stop`` is not called); an exception
  in an ``ask`` goes to the asker and the actor lives on. The worker is not
  harmed either way.
- Idle actors cost no thread: the pool starts its workers on demand, up to its
  size, and a worker with no work for ``retire_s`` seconds ends. At most
  ``size`` workers wait idle; a worker freed beyond that ends at once.
- A turn starts only while fewer than ``size`` run, whatever the number of
  workers (a worker whose wait on a future ends finishes its turn, so for that
  long more can run).

**Blocking asks grow the pool.** A worker that waits on the future of a
pooled actor (``ask(...)``, ``stop(block=True)``, ``proxy().x.get()``) is
counted as blocked: its place goes to the actors in line, on an idle worker
or a new one, so a pooled actor asking another pooled actor (or a chain of
them deeper than the pool) cannot starve the pool. Once the waits end, the
extra workers go back to the pool (beyond ``size`` idle ones they end at
once); a delivery asking its identity's pooled credentials actor is such a
wait. A wait on a *thread-based* actor's future
is not counted: that actor answers on its own thread, so it costs one worker
for the wait but cannot deadlock the pool. Cycles of blocking asks deadlock as
they do with threads. Long blocking work in ``on_receive`` (an HTTP post) holds one worker: the
pool's size bounds how many such calls run at once.

**Blocking calls borrow a worker.** :meth:`ActorPool.run_blocking` runs work
that blocks for long (a runner reading its agent's output) on a worker that
counts as blocked while it runs, so the actors keep ``size`` places for
turns; it then goes back to the pool. A call is handed at once to an idle
worker or a new one, so it never waits behind the actors' turns. Such work
costs no thread start while an idle worker is at hand, and no thread once it
is over.

**Work is handed to a worker, not announced.** A submit or a call takes the
idle worker that went idle last off the idle stack and gives it the work
itself; a worker that ends a turn or a call takes the next actor in line in
the same hold of the pool's lock. So a worker is always counted as running a
turn, lent, or idle, never as none of them, and the count of turns cannot
start a worker that an ending turn would have served. (An earlier version
woke a worker to look at the line and ended a worker freed from a call
whenever the turn places were full: with runs coming and going, that was a
thread start for most runs.)
"""

from __future__ import annotations

import collections
import itertools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar, cast

import attrs
import pykka
from pykka import ActorDeadError, ActorRegistry, messages
from pykka._envelope import Envelope

log = logging.getLogger(__name__)
#: pykka's own logger: failures are logged where pykka logs them.
pykka_log = logging.getLogger("pykka")

#: Worker threads of the shared pool unless configured (``[bridge] actor_threads``).
DEFAULT_POOL_SIZE = 8
#: Seconds a worker waits without work before it ends (started again on demand).
DEFAULT_RETIRE_S = 10.0

_local = threading.local()
_pool_counter = itertools.count(1)


class ActorPool:
    """A fixed number of worker threads that run pooled actors' turns, in arrival order.

    Workers start on demand (the first actors to have work), up to ``size``
    running turns, and retire after ``retire_s`` seconds without work, so a
    pool whose actors are all idle holds no thread. More start only while
    workers wait on pooled futures or are lent to blocking calls (see the
    module docstring); afterwards they go back to the pool, where at most
    ``size`` wait idle. Work goes to the worker that went idle last (a stack,
    not a line): under light load the same few workers run, and the others
    reach their retirement instead of taking turns.

    Args:
        size: Workers that run actors at once (at least 1).
        name: Prefix of the workers' thread names.
        retire_s: Seconds a worker waits without work before it ends.

    Raises:
        ValueError: ``size`` is below 1, or ``retire_s`` is not positive.
    """

    def __init__(self, size: int = DEFAULT_POOL_SIZE, name: str = "actor-pool",
                 retire_s: float = DEFAULT_RETIRE_S) -> None:
        if size < 1:
            raise ValueError(f"an actor pool needs at least 1 thread, got {size}")
        if retire_s <= 0:
            raise ValueError(f"idle workers retire after a positive time, got {retire_s} s")
        self._lock = threading.Lock()
        # Actors waiting for a turn; non-empty only while ``size`` turns run.
        self._ready: collections.deque[PooledActor] = collections.deque()
        # Blocking calls no worker could be started for (a process limit); the
        # next free worker takes them first.
        self._calls: collections.deque[_BlockingCall] = collections.deque()
        self._size = size
        self._retire_s = retire_s
        self._name = f"{name}-{next(_pool_counter)}"
        # Workers in an actor turn, or handed one and on their way to it.
        self._turning = 0
        # Of those, the ones waiting on a pooled future (they leave their place).
        self._waiting = 0
        # Blocking calls handed out and not over yet.
        self._lent = 0
        # Idle workers, the most recently idle last: work goes to that one, so
        # under light load the same few workers run and the others time out.
        self._idlers: list[_Idler] = []
        self._closed = False
        self._threads: set[threading.Thread] = set()
        self._spawns = 0

    @property
    def size(self) -> int:
        """Workers that run actors at once."""
        with self._lock:
            return self._size

    def resize(self, size: int) -> None:
        """Set the number of workers; surplus workers retire once they are free.

        Raises:
            ValueError: ``size`` is below 1.
        """
        if size < 1:
            raise ValueError(f"an actor pool needs at least 1 thread, got {size}")
        with self._lock:
            self._size = size
            # Actors already in line get the new free places now, not at the next submit.
            self._dispatch()
            while len(self._idlers) > self._size:  # the idle ones beyond the size retire
                self._idlers.pop(0).hand(None)

    def workers(self) -> int:
        """Worker threads alive now (blocked ones included)."""
        with self._lock:
            return len(self._threads)

    def spawns(self) -> int:
        """Workers started since the pool was made (it grows when work comes after
        the workers retired)."""
        with self._lock:
            return self._spawns

    def idle(self) -> int:
        """Workers waiting for work now."""
        with self._lock:
            return len(self._idlers)

    def blocked(self) -> int:
        """Workers waiting on a pooled actor's future, or lent to a blocking call, now."""
        with self._lock:
            return self._waiting + self._lent

    def submit(self, actor: PooledActor) -> bool:
        """Put ``actor`` in line for a turn (its inbox calls this; never twice at once).

        Returns:
            True when it is in line; False when the pool is shut down (the actor
            gets no turn).
        """
        with self._lock:
            if self._closed:
                return False
            self._ready.append(actor)
            self._dispatch()
        return True

    def run_blocking(self, fn: Callable[[], object]) -> None:
        """Run ``fn``, long blocking work (reading an agent's output until it ends), on
        one of the pool's threads, beside the actors' turns.

        The worker that runs it is lent for as long as it runs (as one waiting on
        a pooled future), so ``size`` workers stay free for the actors; afterwards
        it goes back to the pool and takes turns, waits for work or retires like
        any other. So such work costs a thread only while it runs, and no thread
        start when an idle worker is at hand. An exception ``fn`` raises is
        logged and goes no further.

        Raises:
            RuntimeError: the pool is shut down.
        """
        call = _BlockingCall(fn)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is shut down")
            # Lent from now on: it never waits behind the actors' turns.
            self._lent += 1
            self._calls.append(call)
            self._dispatch()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the workers once the actors in line have had their turn (tests use it;
        the shared pool lives as long as the process).

        Args:
            timeout_s: Seconds to wait for each worker.
        """
        with self._lock:
            self._closed = True
            while self._idlers:
                self._idlers.pop().hand(None)
        joined: set[threading.Thread] = {threading.current_thread()}
        while True:  # workers started for the line meanwhile are joined too
            with self._lock:
                threads = self._threads - joined
            if not threads:
                return
            for thread in threads:
                thread.join(timeout_s)
            joined |= threads

    def _spawn(self, work: PooledActor | _BlockingCall) -> bool:
        """Start one worker with its first work (the caller holds the lock).

        Returns:
            False when no thread could be started (a process limit).
        """
        # In a list the worker empties: a thread keeps its args until it ends, and
        # an idle worker must hold nothing of what it ran (a finished runner is freed).
        thread = threading.Thread(target=self._work, args=([work],),
                                  name=f"{self._name}-{self._spawns + 1}", daemon=True)
        try:
            thread.start()
        except Exception:  # no thread to be had (a process limit): the work waits
            log.exception("actor pool: could not start a worker (%d running)",
                          len(self._threads))
            return False
        self._spawns += 1
        self._threads.add(thread)
        return True

    def _dispatch(self) -> None:
        """Hand the calls that found no worker, then the actors in line while fewer
        than ``size`` turns run, to workers: the idle worker that went idle last,
        else a new one (the caller holds the lock). What gets neither waits for a
        running turn to end."""
        while self._calls:  # calls no thread could be started for, first
            if self._idlers:
                self._idlers.pop().hand(self._calls.popleft())
            elif not self._spawn(self._calls[0]):
                break
            else:
                self._calls.popleft()
        while self._turn_place_free():
            actor = self._ready.popleft()
            self._turning += 1
            if self._idlers:
                self._idlers.pop().hand(actor)
            elif not self._spawn(actor):
                self._turning -= 1
                self._ready.appendleft(actor)
                return

    def _turn_place_free(self) -> bool:
        """Whether an actor waits in line and fewer than ``size`` turns run (the caller
        holds the lock)."""
        return bool(self._ready) and self._turning - self._waiting < self._size

    def _next(self) -> PooledActor | _BlockingCall | None:
        """The next work for a worker that is free, or None (the caller holds the lock)."""
        if self._calls:
            call = self._calls.popleft()
            self._dispatch()  # the turn place this worker leaves goes to the line
            return call
        if self._turn_place_free():
            self._turning += 1
            return self._ready.popleft()
        return None

    def _work(self, first: list[PooledActor | _BlockingCall]) -> None:
        _local.pool = self
        work: PooledActor | _BlockingCall | None = first.pop()
        idler = _Idler(threading.Condition(self._lock))
        while work is not None:
            if isinstance(work, _BlockingCall):
                lent = True
                self._call(work)
            else:
                lent = False
                self._turn(work)
            # An idle worker holds nothing of what it ran (a stopped actor is freed).
            work = None
            # Done, next and (if nothing) the end in one hold of the lock: a worker
            # is always counted as in a turn, lent, idle or gone, never as none.
            with self._lock:
                if lent:
                    self._lent -= 1
                else:
                    self._turning -= 1
                work = self._next()
                # At most ``size`` idle workers wait; the others end now.
                if work is None and not self._closed and len(self._idlers) < self._size:
                    work = idler.wait(self._idlers, self._retire_s)
                if work is None:
                    self._threads.discard(threading.current_thread())

    @staticmethod
    def _turn(actor: PooledActor) -> None:
        """Run one turn of ``actor`` on this worker."""
        _local.actor = actor
        try:
            actor._pool_turn()  # the pool is the actor's runtime
        except BaseException:  # a worker outlives any actor
            log.exception("actor pool: a turn of %s broke off", actor)
        finally:
            _local.actor = None

    @staticmethod
    def _call(call: _BlockingCall) -> None:
        """Run one blocking call (lent since :meth:`run_blocking`)."""
        _local.blocking = True
        try:
            call.fn()
        except BaseException:  # a worker outlives any call
            log.exception("actor pool: a blocking call broke off")
        finally:
            _local.blocking = False

    def _block(self) -> None:
        """A worker in a turn starts waiting on a pooled future: its place goes to
        the actors in line, so ``size`` turns can still run."""
        with self._lock:
            self._waiting += 1
            self._dispatch()

    def _unblock(self) -> None:
        with self._lock:
            self._waiting -= 1


class _Idler:
    """An idle worker's place on the pool's idle stack: work is handed to it there."""

    def __init__(self, wake: threading.Condition) -> None:
        self._wake = wake
        self._work: PooledActor | _BlockingCall | None = None
        self._woken = False

    def hand(self, work: PooledActor | _BlockingCall | None) -> None:
        """Wake the worker with ``work`` (None: retire); the caller holds the pool's
        lock and has taken this place off the stack."""
        self._work, self._woken = work, True
        self._wake.notify()

    def wait(self, idlers: list[_Idler], retire_s: float) -> PooledActor | _BlockingCall | None:
        """Wait on the stack for work up to ``retire_s`` seconds (the caller holds the
        pool's lock).

        Returns:
            The work handed over, or None: retire (timed out, or the pool is shut
            down or smaller).
        """
        self._work, self._woken = None, False
        idlers.append(self)
        self._wake.wait_for(lambda: self._woken, retire_s)
        if not self._woken:  # timed out: still on the stack
            idlers.remove(self)
        work, self._work = self._work, None  # the worker alone holds it from now on
        return work


@attrs.frozen
class _BlockingCall:
    """Work handed to :meth:`ActorPool.run_blocking`."""

    fn: Callable[[], object]


_shared_lock = threading.Lock()
_shared: ActorPool | None = None


def shared_pool() -> ActorPool:
    """The process's pool, used by pooled actors that name none (made on first use)."""
    global _shared  # one pool per process
    with _shared_lock:
        if _shared is None:
            _shared = ActorPool(DEFAULT_POOL_SIZE, name="actors")
        return _shared


def configure_shared_pool(size: int) -> ActorPool:
    """Set the number of workers of the process's pool (``[bridge] actor_threads``).

    Raises:
        ValueError: ``size`` is below 1.
    """
    pool = shared_pool()
    pool.resize(size)
    return pool


def current_actor() -> PooledActor | None:
    """The pooled actor whose turn runs on this thread, or None (not a pool's worker,
    or between turns): what a thread's name says for a :class:`pykka.ThreadingActor`."""
    actor: PooledActor | None = getattr(_local, "actor", None)
    return actor


class PooledFuture(pykka.ThreadingFuture[Any]):
    """The future of an ask to a pooled actor: a worker that waits on it counts as
    blocked, so the pool starts another worker meanwhile (see the module docstring)."""

    def get(self, *, timeout: float | None = None) -> Any:
        """The value, as :meth:`pykka.ThreadingFuture.get`.

        Raises:
            pykka.Timeout: no value within ``timeout`` seconds.
            Exception: what the actor raised (ActorDeadError when it stopped).
        """
        pool: ActorPool | None = getattr(_local, "pool", None)
        if pool is None or getattr(_local, "blocking", False) or self._result is not None:
            return super().get(timeout=timeout)
        _local.blocking = True
        pool._block()
        try:
            return super().get(timeout=timeout)
        finally:
            pool._unblock()
            _local.blocking = False


class PooledInbox:
    """A pooled actor's inbox: a locked deque that puts its actor in the pool's line.

    ``scheduled`` is true from the put that found the actor out of line until
    the worker running it finds the inbox empty; ``closed`` once the actor
    stopped (later puts are answered with ActorDeadError or dropped).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[Envelope[Any]] = collections.deque()
        self._actor: PooledActor | None = None
        self._pool: ActorPool | None = None
        self._scheduled = False
        self._closed = False

    def open(self, actor: PooledActor, pool: ActorPool) -> None:
        """Bind the inbox to its started actor and give it its first turn (``on_start``)."""
        with self._lock:
            self._actor, self._pool = actor, pool
            self._scheduled = True
        self._submit(pool, actor)

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue a message; put the actor in line unless it is in line or running."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.append(envelope)
                if self._scheduled or self._pool is None or self._actor is None:
                    return
                self._scheduled = True
                pool, actor = self._pool, self._actor
        if closed:
            _refuse(envelope, "stopped before handling the message")
            return
        self._submit(pool, actor)

    def get(self) -> Envelope[Any]:
        """The oldest message (pykka's inbox API; callers check :meth:`empty` first).

        Raises:
            IndexError: the inbox is empty.
        """
        with self._lock:
            return self._queue.popleft()

    def take(self) -> Envelope[Any] | None:
        """The oldest message, or None when empty."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def empty(self) -> bool:
        """Whether no message waits."""
        with self._lock:
            return not self._queue

    def release(self) -> None:
        """End a turn: back in line while messages wait, else out of line."""
        with self._lock:
            if not self._queue or self._pool is None or self._actor is None:
                self._scheduled = False
                return
            pool, actor = self._pool, self._actor
        self._submit(pool, actor)

    def _submit(self, pool: ActorPool, actor: PooledActor) -> None:
        """Put the actor in line; when its pool is shut down, close the inbox and answer
        what waits (asks with ActorDeadError), so no ask waits for a turn that never
        comes. The actor itself is not stopped (its ``on_stop`` needs a turn): a pool
        is shut down only by tests, and the shared pools never are."""
        if pool.submit(actor):
            return
        for envelope in self.close():
            _refuse(envelope, f"{actor} cannot run: its pool is shut down")

    def close(self) -> list[Envelope[Any]]:
        """Close the inbox (no message is queued after this); return what still waited
        (pykka's teardown, or :meth:`_submit`, answers it)."""
        with self._lock:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._actor = None
        return left


def _refuse(envelope: Envelope[Any], why: str) -> None:
    """Answer an ask that reached a stopped actor as pykka does: ActorDeadError
    (``None`` for a stop request: the actor is stopped)."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        envelope.reply_to.set_exception(exc_info=(
            ActorDeadError, ActorDeadError(f"actor {why}"), None))


class PooledActor(pykka.Actor):
    """A pykka actor run in turns on an :class:`ActorPool` instead of a thread of its own.

    Subclass it as you would :class:`pykka.ThreadingActor`; see the module
    docstring for what holds.

    Attributes:
        actor_pool: The pool of this class's actors; None: the process's shared
            pool (:func:`shared_pool`).
        turn_messages: Most messages handled in one turn before the actor goes to
            the back of the line (fairness between busy actors).
    """

    actor_pool: ClassVar[ActorPool | None] = None
    turn_messages: ClassVar[int] = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pooled_inbox = cast(PooledInbox, self.actor_inbox)
        self._pool_started = False

    @staticmethod
    def _create_actor_inbox() -> PooledInbox:
        return PooledInbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return PooledFuture()

    @property
    def turn_pool(self) -> ActorPool:
        """The pool this actor's turns run on (:attr:`actor_pool`, else the shared one)."""
        return type(self).actor_pool or shared_pool()

    def _start_actor_loop(self) -> None:
        self._pooled_inbox.open(self, self.turn_pool)

    def _pool_turn(self) -> None:
        """One turn on a worker: ``on_start`` first, then up to ``turn_messages`` messages."""
        if not self._pool_started:
            self._pool_started = True
            self._actor_loop_setup()
        handled = 0
        while not self.actor_stopped.is_set() and handled < self.turn_messages:
            envelope = self._pooled_inbox.take()
            if envelope is None:
                break
            handled += 1
            self._pool_handle(envelope)
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
        else:
            self._pooled_inbox.release()

    def _pool_handle(self, envelope: Envelope[Any]) -> None:
        """Handle one message as pykka's ``_actor_loop_running`` does."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                pykka_log.info(f"Exception returned from {self} to caller:",
                               exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            pykka_log.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
            self._stop()
            ActorRegistry.stop_all()

    def _actor_loop_teardown(self) -> None:
        """Close the inbox; answer the asks left in it (``stop`` with None, others with
        ActorDeadError), as pykka does; the tells are dropped."""
        for envelope in self._pooled_inbox.close():
            _refuse(envelope, f"{self.actor_ref} stopped before handling the message")
