"""What Fabric shows for a run: one status text message, and the answer in pieces."""

from __future__ import annotations

from adapters.chat.fabric.rules import CONTENT_LIMIT_UTF16, content_length
from bridge.agent import PlanItem
from bridge.chunking import split_message
from bridge.run_status import format_duration, shorten
from bridge.run_view import RunView, plan_window

#: Plan items shown (from the one before the first open item; the others are
#: counted in "… N earlier" / "… +N more" lines).
MAX_PLAN_ITEMS = 12

_MARKS = {"working": "⏳", "done": "✅"}
_ICONS = {"running": "▶", "done": "✓", "failed": "✗"}


class FabricRenderer:
    """Fabric's :class:`bridge.run_view.Renderer`: runs and answers as text messages.

    Args:
        content_limit: Most characters a message may hold, counted as Fabric
            counts them (see :func:`adapters.chat.fabric.rules.content_length`).
    """

    def __init__(self, content_limit: int) -> None:
        self.content_limit = content_limit

    def render_status(self, view: RunView) -> str:
        """The status message text: a header line, the plan, the steps and the notice.

        Args:
            view: A snapshot of the run.

        Returns:
            Lines such as ``⏳ coder · working · 1m05s``, ``plan:``, ``  [>] fix it``,
            ``… 5 earlier steps``, ``✓ edit src/app.py``, ``note: …``.
        """
        mark = _MARKS.get(view.state, "⚠️")
        lines = [f"{mark} {view.agent} · {view.state} · {format_duration(view.elapsed_s)}"]
        if view.plan:
            lines.append("plan:")
            lines.extend(_plan_lines(view.plan))
        if view.earlier_steps:
            lines.append(f"… {view.earlier_steps} earlier steps")
        for step in view.steps:
            extra = f" ({step.detail})" if step.detail else ""
            lines.append(f"{_ICONS[step.state]} {step.title}{extra}")
        if view.notice:
            lines.append(f"note: {view.notice}")
        return "\n".join(lines)

    def render_answer(self, text: str, footer: str) -> list[str]:
        """The answer split under the content limit, the footer at the end of the last piece.

        Args:
            text: The agent's answer (may be empty).
            footer: One line (duration, tokens, cost), or empty for none.

        Returns:
            The pieces in posting order, each within the content limit; ``[]``
            for an empty answer.
        """
        limit = self.content_limit
        if footer:
            limit -= content_length(footer) + 2
        pieces = split_message(text, limit, utf16=CONTENT_LIMIT_UTF16)
        if footer and pieces:
            pieces[-1] = f"{pieces[-1]}\n\n{footer}"
        return pieces


def _plan_lines(items: tuple[PlanItem, ...]) -> list[str]:
    """At most :data:`MAX_PLAN_ITEMS` items (see :func:`bridge.run_view.plan_window`)."""
    window = plan_window(items, MAX_PLAN_ITEMS)
    lines = [f"  … {window.earlier} earlier"] if window.earlier else []
    for item in window.shown:
        box = "[x]" if item.done else ("[>]" if item.active else "[ ]")
        lines.append(f"  {box} {shorten(item.text)}")
    if window.later:
        lines.append(f"  … +{window.later} more")
    return lines
