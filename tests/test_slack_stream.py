"""The live status of a run as Slack streaming chunks: deltas, commits and retries."""

from __future__ import annotations

from typing import Any

import attrs
from slack_sdk.models.messages.chunk import Chunk

from adapters.chat.slack.stream import StatusStream, headline
from bridge.agent import PlanItem, Usage
from bridge.run_view import RunView, StepView


def _view(**changes: Any) -> RunView:
    """A working run with two steps and a plan, with ``changes`` applied."""
    view = RunView(
        "r1", "coder", "working", 12.0,
        steps=(StepView("s1", "pytest -q", "done", "3 passed"), StepView("s2", "edit app.py")),
        plan=(PlanItem("find the bug", done=True), PlanItem("fix it", active=True)))
    return attrs.evolve(view, **changes)


def _types(chunks: list[dict[str, Any]]) -> list[str]:
    return [chunk["type"] for chunk in chunks]


def test_first_emission_has_the_title_and_every_step() -> None:
    chunks = StatusStream().pending(_view())
    assert chunks == [
        {"type": "plan_update", "title": "coder: working · fix it"},
        {"type": "task_update", "id": "s1", "title": "pytest -q", "status": "complete",
         "details": "3 passed"},
        {"type": "task_update", "id": "s2", "title": "edit app.py", "status": "in_progress"},
    ]
    assert all(Chunk.parse(chunk) is not None for chunk in chunks)  # shapes the SDK knows


def test_nothing_is_pending_after_a_commit() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    assert stream.pending(_view()) == []
    assert stream.pending(_view(elapsed_s=47.0)) == []  # the elapsed time is not in the title


def test_a_failed_append_is_sent_again() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    later = _view(steps=(*_view().steps, StepView("s3", "ruff check")))
    first_try = stream.pending(later)  # the append fails: nothing committed
    assert stream.pending(later) == first_try
    assert _types(first_try) == ["task_update"] and first_try[0]["id"] == "s3"
    stream.commit(first_try)
    assert stream.pending(later) == []


def test_a_finished_step_is_one_task_update() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    done = _view(steps=(_view().steps[0], StepView("s2", "edit app.py", "done")))
    assert stream.pending(done) == [
        {"type": "task_update", "id": "s2", "title": "edit app.py", "status": "complete"}]
    failed = _view(steps=(_view().steps[0],
                          StepView("s2", "edit app.py", "failed", "no such file")))
    assert stream.pending(failed) == [
        {"type": "task_update", "id": "s2", "title": "edit app.py", "status": "error",
         "details": "no such file"}]


def test_a_new_title_is_one_plan_update() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    plan = (PlanItem("find the bug", done=True), PlanItem("fix it", done=True),
            PlanItem("run tests"))
    assert stream.pending(_view(plan=plan)) == [
        {"type": "plan_update", "title": "coder: working · run tests"}]


def test_scrolled_out_steps_are_not_sent_again() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    scrolled = _view(steps=(StepView("s2", "edit app.py"),), earlier_steps=1)
    assert stream.pending(scrolled) == []


def test_final_closes_open_tasks_and_ends_with_the_summary() -> None:
    stream = StatusStream()
    stream.commit(stream.pending(_view()))
    last = _view(state="done", elapsed_s=65.0, final=True, earlier_steps=1,
                 steps=(StepView("s3", "ruff check", "done"),),
                 usage=Usage(1000, 234, cost_usd=0.5))
    chunks = stream.final(last)
    assert chunks == [
        {"type": "task_update", "id": "s3", "title": "ruff check", "status": "complete"},
        {"type": "task_update", "id": "s2", "title": "edit app.py", "status": "complete"},
        {"type": "plan_update", "title": "coder: done · 1m05s · 1,234 tokens · $0.5000"},
    ]


def test_final_of_a_stopped_run_marks_running_steps_as_errors() -> None:
    stream = StatusStream()
    chunks = stream.final(_view(state="stopped: by ana", final=True))
    assert chunks[1] == {"type": "task_update", "id": "s2", "title": "edit app.py",
                         "status": "error"}
    assert chunks[-1] == {"type": "plan_update", "title": "coder: stopped: by ana · 12s"}


def test_headline_is_short_and_names_the_current_item() -> None:
    assert headline(_view(plan=())) == "coder: working"
    assert headline(_view(plan=(PlanItem("a", done=True), PlanItem("b")))) == "coder: working · b"
    assert len(headline(_view(plan=(PlanItem("x" * 500),)))) <= 120
