"""What the in-memory platform shows for runs and answers: plain text under its limit."""

from __future__ import annotations

from bridge.chunking import split_message
from bridge.run_status import format_duration
from bridge.run_view import RunView

#: Step states as shown.
STEP_MARKS = {"running": ">", "done": "+", "failed": "x"}


def render_status(view: RunView, limit: int) -> str:
    """The live status text of a run, at most ``limit`` characters.

    One line ``agent · state · elapsed``, then the plan, the steps and the notice.
    """
    lines = [f"{view.agent} · {view.state} · {format_duration(view.elapsed_s)}"]
    lines += [f"[{'x' if item.done else ' '}] {item.text}" for item in view.plan]
    if view.earlier_steps:
        lines.append(f"... {view.earlier_steps} earlier steps")
    for step in view.steps:
        detail = f" ({step.detail})" if step.detail else ""
        lines.append(f"{STEP_MARKS.get(step.state, '?')} {step.title}{detail}")
    if view.notice:
        lines.append(f"note: {view.notice}")
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_answer(text: str, footer: str, limit: int) -> list[str]:
    """An answer split into pieces of at most ``limit`` characters, the footer after it.

    The footer ends the last piece (after a blank line) when it fits there;
    else it is a piece of its own. An empty answer is its footer alone.

    Returns:
        The pieces in posting order; empty only when both are empty.
    """
    pieces = split_message(text, limit)
    footer = footer.strip()
    if not footer:
        return pieces
    if pieces and len(pieces[-1]) + 2 + len(footer) <= limit:
        pieces[-1] = f"{pieces[-1]}\n\n{footer}"
        return pieces
    return pieces + split_message(footer, limit)
