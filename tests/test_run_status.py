"""A run's state folded from its events, as RunView snapshots, and the answer footer."""

from __future__ import annotations

from bridge.agent import (
    Notice,
    Plan,
    PlanItem,
    RunDone,
    SessionStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from bridge.run_status import MAX_STEPS, RunStatus, footer_line, format_duration, shorten
from bridge.run_view import RunView, StepView


def test_steps_go_from_running_to_done_or_failed() -> None:
    status = RunStatus("coder", started_at=100.0)
    assert status.apply(ToolStarted("s1", "pytest -q tests/test_x.py"))
    assert status.apply(ToolStarted("s2", "edit   src/app.py"))
    view = status.view("r1", now=101.0)
    assert view.steps == (StepView("s1", "pytest -q tests/test_x.py"),
                          StepView("s2", "edit src/app.py"))
    assert status.apply(ToolFinished("s1", ok=False, detail="exit 1"))
    assert status.apply(ToolFinished("s2", ok=True))
    after = status.view("r1", now=165.0)
    assert after.steps == (StepView("s1", "pytest -q tests/test_x.py", "failed", "exit 1"),
                           StepView("s2", "edit src/app.py", "done"))
    assert view.steps[0].state == "running"  # an earlier snapshot does not change
    assert (after.run_id, after.agent, after.state, after.elapsed_s) == ("r1", "coder",
                                                                         "working", 65.0)
    assert not after.final and after.earlier_steps == 0


def test_the_view_holds_plan_notice_usage_and_the_final_state() -> None:
    status = RunStatus("coder", started_at=0.0)
    plan = (PlanItem("find the bug", done=True), PlanItem("fix it", active=True))
    assert status.apply(Plan(plan))
    assert status.apply(Notice("retrying  after a 429"))
    assert not status.apply(SessionStarted("thread-1"))
    assert not status.apply(Usage(input_tokens=10, output_tokens=5, cost_usd=0.5))
    assert not status.apply(TextDelta("hello"))
    assert not status.apply(RunDone("hello"))
    view = status.view("r2", now=9.5, state="failed: boom", final=True)
    assert view == RunView("r2", "coder", "failed: boom", 9.5, plan=plan,
                           notice="retrying after a 429",
                           usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.5),
                           final=True)
    assert status.session_id == "thread-1" and status.text_chars == 5


def test_the_view_keeps_the_latest_steps_and_counts_the_earlier_ones() -> None:
    status = RunStatus("coder", started_at=0.0)
    for i in range(MAX_STEPS + 5):
        status.apply(ToolStarted(f"s{i}", f"step {i}"))
    view = status.view("r3", now=1.0)
    assert view.earlier_steps == 5
    assert [s.title for s in view.steps] == [f"step {i}" for i in range(5, MAX_STEPS + 5)]


def test_footer_has_duration_tokens_and_cost() -> None:
    status = RunStatus("coder", started_at=0.0)
    assert footer_line(status.view("r", now=42.0)) == "— 42s"
    status.apply(Usage(input_tokens=1200, output_tokens=34, cost_usd=0.01234))
    assert footer_line(status.view("r", now=3725.0)) == "— 1h02m · 1,234 tokens · $0.0123"


def test_shorten_and_durations() -> None:
    assert shorten("a  b\nc") == "a b c"
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
    assert [format_duration(s) for s in (0, 59, 60, 3599, 3600)] == [
        "0s", "59s", "1m00s", "59m59s", "1h00m"]
