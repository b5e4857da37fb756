"""A run's state folded from its AgentEvents, published as :class:`RunView` snapshots."""

from __future__ import annotations

import attrs

from bridge.agent import (
    AgentEvent,
    Notice,
    Plan,
    PlanItem,
    RunDone,
    RunFailed,
    SessionStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from bridge.run_view import RunView, StepView

#: Tool steps kept in a run's view (the latest ones; the others are only counted).
MAX_STEPS = 12
#: Characters of a step title shown.
MAX_TITLE = 80


def shorten(text: str, limit: int = MAX_TITLE) -> str:
    """One line of at most ``limit`` characters, with ``…`` where it was cut."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m`` for a duration in seconds."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


@attrs.define
class Step:
    """One tool step of a run."""

    step_id: str
    title: str
    state: str = "running"  # running | done | failed
    detail: str = ""


@attrs.define
class RunStatus:
    """What a run did so far, fed with its AgentEvents.

    Args:
        agent: Agent name.
        started_at: Epoch seconds when the run started.
        stoppers: Member ids who may stop the run (:attr:`RunView.stoppers`).
        policy: The run's policy fingerprint (:attr:`RunView.policy`).
    """

    agent: str
    started_at: float
    steps: list[Step] = attrs.field(factory=list)
    earlier_steps: int = 0
    plan: tuple[PlanItem, ...] = ()
    notice: str = ""
    session_id: str | None = None
    usage: Usage | None = None
    text_chars: int = 0
    stoppers: tuple[str, ...] = ()
    policy: str = ""

    def apply(self, event: AgentEvent | SessionStarted | Plan | Notice) -> bool:
        """Take one event; return True when the run's view may have changed."""
        if isinstance(event, ToolStarted):
            self.steps.append(Step(event.step_id, shorten(event.title)))
            if len(self.steps) > MAX_STEPS:  # a long run must not grow without bound
                del self.steps[0]
                self.earlier_steps += 1
        elif isinstance(event, ToolFinished):
            for step in reversed(self.steps):
                if step.step_id == event.step_id:
                    step.state = "done" if event.ok else "failed"
                    step.detail = shorten(event.detail, 40)
                    break
        elif isinstance(event, Plan):
            self.plan = event.items
        elif isinstance(event, Notice):
            self.notice = shorten(event.text, 120)
        elif isinstance(event, SessionStarted):
            self.session_id = event.session_id
            return False
        elif isinstance(event, Usage):
            self.usage = event
            return False
        elif isinstance(event, TextDelta):
            self.text_chars += len(event.text)
            return False
        elif isinstance(event, RunDone | RunFailed):
            return False
        return True

    def view(self, run_id: str, now: float, *, state: str = "working",
             final: bool = False) -> RunView:
        """A snapshot of the run for a platform's renderer.

        Args:
            run_id: The run.
            now: Epoch seconds (the elapsed time is counted up to it).
            state: ``working``, ``done``, ``failed: <why>`` or ``stopped: <why>``.
            final: True for the run's last snapshot.

        Returns:
            The run's steps (the latest :data:`MAX_STEPS`), plan, notice and usage so far.
        """
        return RunView(
            run_id, self.agent, state, now - self.started_at,
            steps=tuple(StepView(s.step_id, s.title, s.state, s.detail) for s in self.steps),
            earlier_steps=self.earlier_steps, plan=self.plan, notice=self.notice,
            usage=self.usage, final=final, stoppers=self.stoppers, policy=self.policy)


def footer_line(view: RunView) -> str:
    """One line for the end of the answer: duration, tokens, cost where known.

    Args:
        view: The run's last snapshot.

    Returns:
        ``— 42s``, or e.g. ``— 1h02m · 1,234 tokens · $0.0123`` with usage.
    """
    parts = [format_duration(view.elapsed_s)]
    if view.usage is not None:
        tokens = view.usage.input_tokens + view.usage.output_tokens
        if tokens:
            parts.append(f"{tokens:,} tokens")
        if view.usage.cost_usd is not None:
            parts.append(f"${view.usage.cost_usd:.4f}")
    return "— " + " · ".join(parts)
