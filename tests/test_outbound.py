"""The outbound budget: answers before edits, overtaken edits never sent, 429s pause it."""

from __future__ import annotations

import pytest

from bridge.outbound import WAITING_S, OutboundBudget, Priority


def test_a_full_bucket_grants_its_burst_then_paces_at_the_rate() -> None:
    budget = OutboundBudget(rate_per_s=2.0, burst=3)
    assert [budget.grant(Priority.ANSWER, "a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.grant(Priority.ANSWER, "a", 0.0) == pytest.approx(0.5)
    assert budget.grant(Priority.ANSWER, "a", 0.5) == 0.0
    assert budget.grant(Priority.ANSWER, "a", 0.5) == pytest.approx(0.5)
    assert (budget.granted, budget.deferred) == (4, 2)


def test_an_edit_leaves_a_token_for_the_next_answer() -> None:
    budget = OutboundBudget(rate_per_s=1.0, burst=2)
    assert budget.grant(Priority.EDIT, "status", 0.0) == 0.0
    # One token left: it is the answers' reserve, so the next edit waits and an answer goes.
    assert budget.grant(Priority.EDIT, "status", 0.0) > 0
    assert budget.grant(Priority.ANSWER, "chat", 0.0) == 0.0


def test_edits_wait_while_an_answer_waits_then_the_answer_goes_first() -> None:
    budget = OutboundBudget(rate_per_s=1.0, burst=2)
    for _ in range(2):
        assert budget.grant(Priority.ANSWER, "one", 0.0) == 0.0
    wait = budget.grant(Priority.ANSWER, "two", 0.0)  # empty: "two" now waits
    assert wait == pytest.approx(1.0)
    # At 1.5 s a token is there, but "two" waits for it: the edit is told to wait.
    assert budget.grant(Priority.EDIT, "three", 1.5) > 0
    assert budget.grant(Priority.ANSWER, "two", 1.5) == 0.0
    # With no answer waiting and the reserve refilled, edits go again.
    assert budget.grant(Priority.EDIT, "three", 3.5) == 0.0


def test_a_slow_down_pauses_every_kind_until_the_retry_after() -> None:
    budget = OutboundBudget(rate_per_s=10.0, burst=10)
    budget.slow_down(2.0, now=0.0)
    assert budget.grant(Priority.ANSWER, "a", 1.0) == pytest.approx(1.0)
    assert budget.grant(Priority.EDIT, "b", 1.0) == pytest.approx(1.0)
    assert budget.grant(Priority.ANSWER, "a", 2.0) == pytest.approx(0.1)  # emptied, refilling
    assert budget.grant(Priority.ANSWER, "a", 2.1) == 0.0


def test_a_claimant_that_stopped_asking_stops_holding_edits_back() -> None:
    budget = OutboundBudget(rate_per_s=1.0, burst=2)
    budget.grant(Priority.ANSWER, "a", 0.0)
    budget.grant(Priority.ANSWER, "a", 0.0)
    budget.grant(Priority.ANSWER, "gone", 0.0)  # waits, then never asks again
    assert budget.grant(Priority.EDIT, "s", 5.0) > 0
    assert budget.grant(Priority.EDIT, "s", WAITING_S + 1.0) == 0.0
    budget.grant(Priority.ANSWER, "x", WAITING_S + 1.0)
    budget.grant(Priority.ANSWER, "x", WAITING_S + 1.0)  # "x" waits now
    budget.withdraw("x")
    assert budget.waiting == {}


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0.5)])
def test_bad_sizes_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        OutboundBudget(rate_per_s=rate, burst=burst)
