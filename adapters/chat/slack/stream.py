"""The native live status of one run: Slack streaming chunks, sent as deltas.

``chat.startStream``/``appendStream``/``stopStream`` take ``chunks``: a
``plan_update`` sets the title over the task list, a ``task_update`` adds or
changes one task by its ``id`` (docs.slack.dev reference/methods/chat.appendStream;
shapes as ``slack_sdk.models.messages.chunk`` writes them). :class:`StatusStream`
holds what Slack confirmed, so each call sends only what changed, and a failed
call is sent again whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slack_sdk.models.messages.chunk import PlanUpdateChunk, TaskUpdateChunk

from adapters.chat.slack.render import summary_line
from bridge.run_status import shorten
from bridge.run_view import RunView, StepView

#: Step states as task statuses (``pending``, ``in_progress``, ``complete``, ``error``).
TASK_STATUS = {"running": "in_progress", "done": "complete", "failed": "error"}
#: Characters of a plan title (no documented limit; task ``details`` and ``output``
#: are reported to allow 256).
TITLE_CHARS = 120

#: What Slack last confirmed of a task: (title, status, details).
_Task = tuple[str, str, str]


def headline(view: RunView) -> str:
    """The plan title while the run works: ``agent: state``, then the plan's current item.

    The elapsed time is left out: it changes every second.

    Returns:
        E.g. ``coder: working · run the tests``, at most :data:`TITLE_CHARS` characters.
    """
    current = next((item for item in view.plan if item.active), None)
    current = current or next((item for item in view.plan if not item.done), None)
    title = f"{view.agent}: {view.state}"
    if current is not None:
        title += f" · {current.text}"
    return shorten(title, TITLE_CHARS)


def _plan(title: str) -> dict[str, Any]:
    return PlanUpdateChunk(title=title).to_dict()


def _task(step_id: str, task: _Task) -> dict[str, Any]:
    title, status, details = task
    return TaskUpdateChunk(id=step_id, title=title, status=status,
                           details=details or None).to_dict()


class StatusStream:
    """What the stream of one run shows, and the chunks that bring it up to date.

    Pure state, no I/O. Call :meth:`pending` (or :meth:`final`), send the chunks,
    and :meth:`commit` them only once Slack answered ok: after a failed call
    nothing is committed, so the next :meth:`pending` sends the same delta again.
    Steps that scrolled out of the view (``earlier_steps``) keep their last
    confirmed state and are not sent again while the run works.
    """

    def __init__(self) -> None:
        self._title: str | None = None
        self._tasks: dict[str, _Task] = {}

    def pending(self, view: RunView) -> list[dict[str, Any]]:
        """The chunks Slack has not confirmed for ``view``.

        Args:
            view: A snapshot of the run.

        Returns:
            A ``plan_update`` with :func:`headline` when it changed, then one
            ``task_update`` per step whose title, status or details changed,
            oldest first; ``[]`` when Slack shows ``view`` already.
        """
        title = headline(view)
        chunks = [_plan(title)] if title != self._title else []
        return chunks + self._deltas(
            view.steps, lambda step: TASK_STATUS.get(step.state, "in_progress"))

    def final(self, view: RunView) -> list[dict[str, Any]]:
        """The last chunks of the run: its task deltas and a summary title.

        Tasks still in progress are closed (``complete`` when the run is
        ``done``, else ``error``), those scrolled out of the view included, so
        nothing spins on once the stream stops.

        Args:
            view: The run's last snapshot.

        Returns:
            The ``task_update`` deltas, then a ``plan_update`` titled
            ``agent: state · elapsed`` (with tokens and cost when reported).
        """
        closed = "complete" if view.state == "done" else "error"

        def status(step: StepView) -> str:
            return closed if step.state == "running" else TASK_STATUS.get(step.state, closed)

        chunks = self._deltas(view.steps, status)
        shown = {step.step_id for step in view.steps}
        for step_id, (title, last, details) in self._tasks.items():
            if step_id not in shown and last == "in_progress":
                chunks.append(_task(step_id, (title, closed, details)))
        summary = shorten(f"{view.agent}: {summary_line(view)}", TITLE_CHARS)
        return [*chunks, _plan(summary)]

    def commit(self, chunks: Sequence[Mapping[str, Any]]) -> None:
        """Mark ``chunks`` as shown: call only after Slack accepted them.

        Args:
            chunks: What :meth:`pending` or :meth:`final` returned, as sent.
        """
        for chunk in chunks:
            if chunk.get("type") == PlanUpdateChunk.type:
                self._title = str(chunk["title"])
            elif chunk.get("type") == TaskUpdateChunk.type:
                self._tasks[str(chunk["id"])] = (
                    str(chunk["title"]), str(chunk["status"]), str(chunk.get("details") or ""))

    def _deltas(self, steps: Sequence[StepView],
                status: Callable[[StepView], str]) -> list[dict[str, Any]]:
        """``task_update`` chunks for the steps whose shown task changed."""
        chunks = []
        for step in steps:
            task = (step.title, status(step), step.detail)
            if self._tasks.get(step.step_id) != task:
                chunks.append(_task(step.step_id, task))
        return chunks
