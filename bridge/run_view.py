"""The structured state of one run, as a platform's renderer gets it.

The runner publishes :class:`RunView` snapshots while a run works and a last
one when it ends; each chat platform turns them into what it shows (a text
message edited in place, a stream of task chunks, a card). The core never
renders for a platform.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from bridge.agent import PlanItem, Usage


@attrs.frozen
class StepView:
    """One tool step of a run.

    Attributes:
        step_id: The agent's id of the step (unique within the run).
        title: One line, already shortened for display.
        state: ``running``, ``done`` or ``failed``.
        detail: A short result line (may be empty).
    """

    step_id: str
    title: str
    state: str = "running"
    detail: str = ""


@attrs.frozen
class RunView:
    """A snapshot of one run.

    Attributes:
        run_id: The run.
        agent: The agent's name.
        state: ``working``, ``done``, ``failed: <why>`` or ``stopped: <why>``.
        elapsed_s: Seconds since the run started.
        steps: The latest steps, oldest first.
        earlier_steps: How many older steps are not in ``steps``.
        plan: The agent's plan (may be empty).
        notice: The agent's last notice line (may be empty).
        usage: Tokens and cost so far, where the agent reports them.
        final: True for the run's last snapshot (always shown).
        stoppers: Member ids who may stop the run from its status (its requesters and
            the agent's admins known by id); a platform that signs its Stop button
            names them in it.
        policy: The policy fingerprint the run works under (signed with the button).
    """

    run_id: str
    agent: str
    state: str
    elapsed_s: float
    steps: tuple[StepView, ...] = ()
    earlier_steps: int = 0
    plan: tuple[PlanItem, ...] = ()
    notice: str = ""
    usage: Usage | None = None
    final: bool = False
    stoppers: tuple[str, ...] = ()
    policy: str = ""


class Renderer(Protocol):
    """What a chat platform shows for runs, answers and notices, under its limits."""

    def render_status(self, view: RunView) -> str:
        """The live status message text of ``view``."""

    def render_answer(self, text: str, footer: str) -> list[str]:
        """An answer and its footer line, split into pieces under the platform's text limit.

        Args:
            text: The agent's answer (may be empty).
            footer: One line (duration, tokens, cost).

        Returns:
            One or more pieces, in posting order.
        """


@attrs.frozen
class PlanWindow:
    """The part of a long plan a status shows.

    Attributes:
        earlier: Items before the window (not shown).
        shown: The items shown, in order.
        later: Items after the window (not shown).
    """

    earlier: int
    shown: tuple[PlanItem, ...]
    later: int


def plan_window(items: tuple[PlanItem, ...], limit: int) -> PlanWindow:
    """At most ``limit`` plan items, from the one before the first open item.

    Args:
        items: The whole plan, in order.
        limit: Most items to show (at least 1).
    """
    start = 0
    if len(items) > limit:
        current = next((i for i, item in enumerate(items) if not item.done), len(items))
        start = max(0, min(current - 1, len(items) - limit))
    shown = items[start:start + limit]
    return PlanWindow(start, shown, len(items) - start - len(shown))
