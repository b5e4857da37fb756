"""Fabric's rendering of a run: the live status text and the answer's pieces."""

from __future__ import annotations

from adapters.chat.fabric.render import MAX_PLAN_ITEMS, FabricRenderer
from adapters.chat.fabric.rules import CONTENT_LIMIT, content_length
from bridge.agent import Notice, Plan, PlanItem, SessionStarted, ToolFinished, ToolStarted
from bridge.chunking import split_message
from bridge.run_status import MAX_STEPS, RunStatus
from bridge.run_view import RunView, StepView

RENDER = FabricRenderer(CONTENT_LIMIT)


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
    text = RENDER.render_status(status.view("r1", now=165.0))
    assert text.splitlines()[0] == "⏳ coder · working · 1m05s"
    assert "  [x] find the bug" in text and "  [>] fix it" in text and "  [ ] run tests" in text
    assert "✗ pytest -q tests/test_x.py (exit 1)" in text
    assert "✓ edit src/app.py" in text
    assert "note: retrying after a 429" in text
    assert status.session_id == "thread-1"
    assert RENDER.render_status(status.view("r1", now=170.0, state="done")).startswith(
        "✅ coder · done · 1m10s")


def test_the_whole_status_text() -> None:
    view = RunView("r1", "coder", "failed: boom", 5.0,
                   steps=(StepView("a", "ls"), StepView("b", "make", "done", "ok")),
                   earlier_steps=2, plan=(PlanItem("plan it", active=True),),
                   notice="slow")
    assert RENDER.render_status(view) == (
        "⚠️ coder · failed: boom · 5s\nplan:\n  [>] plan it\n… 2 earlier steps\n"
        "▶ ls\n✓ make (ok)\nnote: slow")


def test_only_the_latest_steps_are_listed() -> None:
    status = RunStatus("coder", started_at=0.0)
    for i in range(MAX_STEPS + 5):
        status.apply(ToolStarted(f"s{i}", f"step {i}"))
    text = RENDER.render_status(status.view("r1", now=1.0))
    assert "… 5 earlier steps" in text
    assert "step 4\n" not in text and f"step {MAX_STEPS + 4}" in text


def test_a_long_run_keeps_a_bounded_status() -> None:
    status = RunStatus("coder", started_at=0.0)
    for i in range(10_000):
        status.apply(ToolStarted(f"s{i}", f"step {i}"))
        status.apply(ToolFinished(f"s{i}", ok=True))
    assert len(status.steps) == MAX_STEPS  # not one entry per step of the run
    status.apply(Plan(tuple(PlanItem(f"item {i}", done=i < 300) for i in range(500))))
    text = RENDER.render_status(status.view("r1", now=1.0))
    assert f"… {10_000 - MAX_STEPS} earlier steps" in text
    assert "✓ step 9999" in text and "step 9987\n" not in text
    plan = [line for line in text.splitlines() if line.startswith("  [")]
    assert len(plan) == MAX_PLAN_ITEMS
    assert plan[0] == "  [x] item 299" and plan[1] == "  [ ] item 300"  # around the open item
    assert "  … 299 earlier" in text and f"  … +{500 - 299 - MAX_PLAN_ITEMS} more" in text
    assert len(text.splitlines()) <= MAX_STEPS + MAX_PLAN_ITEMS + 5


def test_an_answer_is_split_under_the_limit_with_the_footer_last() -> None:
    render = FabricRenderer(100)
    footer = "— 1m05s · 1,234 tokens"
    answer = " ".join(f"word{i} 😀" for i in range(60))  # emoji count 2 UTF-16 units
    pieces = render.render_answer(answer, footer)
    assert len(pieces) > 1
    assert all(content_length(piece) <= 100 for piece in pieces)
    assert pieces[-1].endswith(f"\n\n{footer}")
    body = [*pieces[:-1], pieces[-1].removesuffix(f"\n\n{footer}")]
    assert body == split_message(answer, 100 - content_length(footer) - 2, utf16=True)


def test_an_answer_without_a_footer_uses_the_whole_limit() -> None:
    render = FabricRenderer(10)
    assert render.render_answer("aaaa bbbb cccc", "") == ["aaaa bbbb", "cccc"]
    assert render.render_answer("four", "— 1s") == ["four\n\n— 1s"]  # 4 + 2 + 4 units
    assert render.render_answer("", "— 1s") == []
