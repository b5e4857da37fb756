"""The inflow between a socket library's thread and an intake: order, one doorbell per burst."""

from __future__ import annotations

import threading

from adapters.chat.inflow import Inflow


def test_a_burst_rings_once_and_is_taken_in_order() -> None:
    rings: list[int] = []
    inflow: Inflow[int] = Inflow(lambda: rings.append(len(inflow)))
    for item in range(5):
        inflow.put(item)
    assert rings == [1]  # rung by the first put only
    assert inflow.take() == [0, 1, 2, 3, 4]
    assert inflow.take() == []  # a second doorbell finds nothing left
    inflow.put(5)
    assert rings == [1, 1]  # empty again: the next put rings again
    assert inflow.take() == [5]


def test_every_item_put_from_many_threads_is_taken_once_per_doorbell() -> None:
    """Four threads put 2,000 items each while the consumer takes on each doorbell:
    every item arrives exactly once, each thread's items in its order, and
    every ring found something waiting or taken by the take before it."""
    doorbells = threading.Semaphore(0)
    inflow: Inflow[tuple[int, int]] = Inflow(doorbells.release)
    per_thread = 2000

    def produce(thread: int) -> None:
        for index in range(per_thread):
            inflow.put((thread, index))

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for producer in producers:
        producer.start()
    taken: list[tuple[int, int]] = []
    while len(taken) < 4 * per_thread:
        assert doorbells.acquire(timeout=10), "a put never rang"
        taken += inflow.take()
    for producer in producers:
        producer.join(10)
    assert len(set(taken)) == len(taken) == 4 * per_thread
    for thread in range(4):
        assert [i for t, i in taken if t == thread] == list(range(per_thread))
    assert inflow.take() == []
