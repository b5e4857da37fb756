"""The live status text and the answer footer."""

from __future__ import annotations

from bridge.agent import Notice, Plan, PlanItem, SessionStarted, ToolFinished, ToolStarted, Usage
from bridge.run_status import MAX_PLAN_ITEMS, MAX_STEPS, RunStatus, format_duration, shorten


def test_steps_plan_and_notice_render() -> None:
    status = RunStatus("coder", started_at=100.0)
    assert status.apply(ToolStarted("s1", "pytest -q tests/test_x.py"))
    assert status.apply(ToolStarted("s2", "edit src/app.py"))
    assert status.apply(ToolFinished("s1", ok=False, detail="exit 1"))
    assert status.apply(ToolFinished("s2", ok=True))
    assert status.apply(Plan((PlanItem("find the bug", done=True), PlanItem("fix it", active=True),
                              PlanItem("run tests"))))
    assert status.apply(Notice("retrying after a 429"))
    assert not status.apply(SessionStarted("thread-1"))
    text = status.render(now=165.0)
    assert text.splitlines()[0] == "⏳ coder · working · 1m05s"
    assert "  [x] find the bug" in text and "  [>] fix it" in text and "  [ ] run tests" in text
    assert "✗ pytest -q tests/test_x.py (exit 1)" in text
    assert "✓ edit src/app.py" in text
    assert "note: retrying after a 429" in text
    assert status.session_id == "thread-1"
    assert status.render(now=170.0, state="done").startswith("✅ coder · done · 1m10s")


def test_only_the_latest_steps_are_listed() -> None:
    status = RunStatus("coder", started_at=0.0)
    for i in range(MAX_STEPS + 5):
        status.apply(ToolStarted(f"s{i}", f"step {i}"))
    text = status.render(now=1.0)
    assert "… 5 earlier steps" in text
    assert "step 4\n" not in text and f"step {MAX_STEPS + 4}" in text


def test_a_long_run_keeps_a_bounded_status() -> None:
    status = RunStatus("coder", started_at=0.0)
    for i in range(10_000):
        status.apply(ToolStarted(f"s{i}", f"step {i}"))
        status.apply(ToolFinished(f"s{i}", ok=True))
    assert len(status.steps) == MAX_STEPS  # not one entry per step of the run
    status.apply(Plan(tuple(PlanItem(f"item {i}", done=i < 300) for i in range(500))))
    text = status.render(now=1.0)
    assert f"… {10_000 - MAX_STEPS} earlier steps" in text
    assert "✓ step 9999" in text and "step 9987\n" not in text
    plan = [line for line in text.splitlines() if line.startswith("  [")]
    assert len(plan) == MAX_PLAN_ITEMS
    assert plan[0] == "  [x] item 299" and plan[1] == "  [ ] item 300"  # around the open item
    assert "  … 299 earlier" in text and f"  … +{500 - 299 - MAX_PLAN_ITEMS} more" in text
    assert len(text.splitlines()) <= MAX_STEPS + MAX_PLAN_ITEMS + 5


def test_footer_has_duration_tokens_and_cost() -> None:
    status = RunStatus("coder", started_at=0.0)
    assert status.footer(now=42.0) == "— 42s"
    status.apply(Usage(input_tokens=1200, output_tokens=34, cost_usd=0.01234))
    assert status.footer(now=3725.0) == "— 1h02m · 1,234 tokens · $0.0123"


def test_shorten_and_durations() -> None:
    assert shorten("a  b\nc") == "a b c"
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
    assert [format_duration(s) for s in (0, 59, 60, 3599, 3600)] == [
        "0s", "59s", "1m00s", "59m59s", "1h00m"]
