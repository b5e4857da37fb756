"""Tests of actors.timers.Timers with a real pykka actor."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.timers import IdleTimer, Timers


class Recorder(pykka.ThreadingActor):
    """Puts every message it receives into a queue."""

    def __init__(self, inbox: queue.Queue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


@pytest.fixture
def timers() -> Iterator[Timers]:
    t = Timers()
    t.start()
    yield t
    t.stop()


@pytest.fixture
def recorder() -> Iterator[tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]]:
    inbox: queue.Queue[Any] = queue.Queue()
    ref = Recorder.start(inbox)
    yield ref, inbox
    if ref.is_alive():
        ref.stop()


def test_timers_arrive_in_due_order(
    timers: Timers, recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]
) -> None:
    ref, inbox = recorder
    timers.schedule(0.3, ref, "late")
    timers.schedule(0.05, ref, "early")
    assert inbox.get(timeout=5) == "early"
    assert inbox.get(timeout=5) == "late"
    assert timers.pending() == 0


def test_same_due_time_keeps_schedule_order(
    timers: Timers, recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]
) -> None:
    ref, inbox = recorder
    for i in range(5):
        timers.schedule(-1, ref, i)  # non-positive delay: as soon as possible
    assert [inbox.get(timeout=5) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_timer_to_stopped_actor_is_dropped(
    timers: Timers, recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]
) -> None:
    ref, inbox = recorder
    dead_inbox: queue.Queue[Any] = queue.Queue()
    dead = Recorder.start(dead_inbox)
    dead.stop()
    timers.schedule(0, dead, "to the dead")
    timers.schedule(0.05, ref, "after")
    # The timer thread survived the dead actor and delivered the next timer.
    assert inbox.get(timeout=5) == "after"
    assert dead_inbox.empty()
    assert timers.pending() == 0


def test_stop_drops_pending_timers(
    recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]
) -> None:
    ref, inbox = recorder
    timers = Timers()
    timers.start()
    timers.schedule(0.5, ref, "never")
    assert timers.pending() == 1
    timers.stop()
    assert timers.pending() == 0
    timers.schedule(0, ref, "after stop")
    assert timers.pending() == 0
    # The actor still works; a marker sent directly arrives, and nothing else does.
    ref.tell("marker")
    assert inbox.get(timeout=5) == "marker"
    with pytest.raises(queue.Empty):
        inbox.get(timeout=1.0)


def test_stop_before_start_is_safe() -> None:
    timers = Timers()
    timers.stop()
    assert timers.pending() == 0


def test_idle_timer_keeps_one_timer_and_fires_after_quiet(
        timers: Timers, recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]) -> None:
    ref, inbox = recorder
    idle = IdleTimer(timers, ref, 0.2, "idle?")
    for _ in range(100):
        idle.touch()
    assert timers.pending() == 1  # one timer, however much activity
    assert inbox.get(timeout=5) == "idle?"
    assert idle.expired() is True
    idle.touch()
    assert inbox.get(timeout=5) == "idle?"
    idle.touch()  # activity after the timer was set: the check re-arms
    assert idle.expired() is False
    assert timers.pending() == 1
    assert inbox.get(timeout=5) == "idle?"
    assert idle.expired() is True


def test_cancelled_timers_are_skipped_and_the_others_keep_their_order(
        timers: Timers, recorder: tuple[pykka.ActorRef[Recorder], queue.Queue[Any]]) -> None:
    ref, inbox = recorder
    handles = [timers.schedule(0.05 + i / 1000, ref, i) for i in range(200)]
    assert all(timers.cancel(h) for i, h in enumerate(handles) if i % 3)  # 133 cancelled
    assert not timers.cancel(handles[1])  # a second cancel finds nothing
    assert timers.pending() == 67
    assert [inbox.get(timeout=5) for _ in range(67)] == list(range(0, 200, 3))
    assert timers.pending() == 0
    assert not timers.cancel(handles[0])  # delivered: nothing left to cancel
    timers.schedule(0.3, ref, "marker")  # due after every cancelled one
    assert inbox.get(timeout=5) == "marker"
