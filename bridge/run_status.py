"""Run state as the channel sees it: the live status message and the final footer."""

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

#: Tool steps kept and shown in the status message (the latest ones; the
#: others are counted in a "… N earlier steps" line).
MAX_STEPS = 12
#: Plan items shown (from the one before the first open item; the others are
#: counted in "… N earlier" / "… +N more" lines).
MAX_PLAN_ITEMS = 12
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

    def apply(self, event: AgentEvent | SessionStarted | Plan | Notice) -> bool:
        """Take one event; return True when the status text may have changed."""
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

    def render(self, now: float, *, state: str = "working") -> str:
        """The status message text.

        Args:
            now: Epoch seconds.
            state: ``working``, ``done``, ``failed: <why>`` or ``stopped: <why>``.
        """
        mark = {"working": "⏳", "done": "✅"}.get(state, "⚠️")
        lines = [f"{mark} {self.agent} · {state} · {format_duration(now - self.started_at)}"]
        if self.plan:
            lines.append("plan:")
            lines.extend(self._plan_lines())
        if self.earlier_steps:
            lines.append(f"… {self.earlier_steps} earlier steps")
        for step in self.steps:
            icon = {"running": "▶", "done": "✓", "failed": "✗"}[step.state]
            extra = f" ({step.detail})" if step.detail else ""
            lines.append(f"{icon} {step.title}{extra}")
        if self.notice:
            lines.append(f"note: {self.notice}")
        return "\n".join(lines)

    def _plan_lines(self) -> list[str]:
        """At most :data:`MAX_PLAN_ITEMS` items, from the one before the first open item."""
        items = self.plan
        start = 0
        if len(items) > MAX_PLAN_ITEMS:
            current = next((i for i, item in enumerate(items) if not item.done), len(items))
            start = max(0, min(current - 1, len(items) - MAX_PLAN_ITEMS))
        shown = items[start:start + MAX_PLAN_ITEMS]
        lines = [f"  … {start} earlier"] if start else []
        for item in shown:
            box = "[x]" if item.done else ("[>]" if item.active else "[ ]")
            lines.append(f"  {box} {shorten(item.text)}")
        more = len(items) - start - len(shown)
        if more:
            lines.append(f"  … +{more} more")
        return lines

    def footer(self, now: float) -> str:
        """One line for the end of the answer: duration, tokens, cost where known."""
        parts = [format_duration(now - self.started_at)]
        if self.usage is not None:
            tokens = self.usage.input_tokens + self.usage.output_tokens
            if tokens:
                parts.append(f"{tokens:,} tokens")
            if self.usage.cost_usd is not None:
                parts.append(f"${self.usage.cost_usd:.4f}")
        return "— " + " · ".join(parts)
