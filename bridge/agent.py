"""What an agent is to the bridge: start a run, read typed events, stop it.

Agents (``adapters/agents``) implement :class:`Agent`; the Runner actor reads
:class:`AgentRun.events` on a reader thread and forwards each event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import attrs

from bridge.prompt import Prompt


@attrs.frozen
class RunContext:
    """Where and how one run happens.

    Attributes:
        run_id: Unique run id.
        scope_key: Scope that asked for the run.
        workspace: Working directory (created if missing).
        session_id: The agent's session/thread to resume, if any.
        images: Image files to attach to the prompt (agents that cannot take
            images ignore them).
        on_spawn: Called with the child's pid once it exists and before it may
            run anything (the runner records it in the store), by agents with a
            process; an exception from it stops the start.
    """

    run_id: str
    scope_key: str
    workspace: Path
    session_id: str | None = None
    images: tuple[Path, ...] = ()
    on_spawn: Callable[[int], None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class SessionStarted:
    """The agent opened (or resumed) a session/thread; remember it to continue later.

    Attributes:
        session_id: The agent's id, passed back as :attr:`RunContext.session_id`.
    """

    session_id: str


@attrs.frozen
class PlanItem:
    """One step of an agent's plan.

    Attributes:
        text: What the step is.
        done: True once the agent marked it completed.
        active: True while the agent works on it (where the agent says so).
    """

    text: str
    done: bool = False
    active: bool = False


@attrs.frozen
class Plan:
    """The agent's current plan (replaces any earlier plan of the run)."""

    items: tuple[PlanItem, ...]


@attrs.frozen
class Notice:
    """Something worth a line in the log or status (a retry, a warning); not fatal."""

    text: str


@attrs.frozen
class TextDelta:
    """Text the agent wrote while working (progress; the answer is in :class:`RunDone`)."""

    text: str


@attrs.frozen
class ToolStarted:
    """The agent started a tool step (a command, a file change, ...)."""

    step_id: str
    title: str


@attrs.frozen
class ToolFinished:
    """A tool step ended.

    Attributes:
        step_id: The id given in :class:`ToolStarted`.
        ok: False when the step failed (non-zero exit, error result, declined).
        detail: Short outcome, e.g. ``exit 1``; may be empty.
    """

    step_id: str
    ok: bool
    detail: str = ""


@attrs.frozen
class Usage:
    """What the run cost, where the agent reports it.

    Attributes:
        input_tokens: Prompt tokens, cached ones included.
        output_tokens: Generated tokens.
        cost_usd: Cost in US dollars, when the agent reports one.
        turns: Model turns the run took, when the agent reports it (0: unknown).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    turns: int = 0


@attrs.frozen
class RunDone:
    """The run ended with an answer (terminal event)."""

    answer: str
    session_id: str | None = None


@attrs.frozen
class RunFailed:
    """The run ended without an answer (terminal event).

    Attributes:
        reason: One line for the channel, never a secret.
        session_id: The session the run used, when known (it stays resumable).
    """

    reason: str
    session_id: str | None = None


AgentEvent = (TextDelta | ToolStarted | ToolFinished | Usage | RunDone | RunFailed
              | SessionStarted | Plan | Notice)
TERMINAL_EVENTS = (RunDone, RunFailed)


class AgentRun(Protocol):
    """One running agent invocation."""

    def events(self) -> Iterator[AgentEvent]:
        """Yield events until, and including, one terminal event (RunDone or RunFailed).

        Blocking; called on the runner's reader thread, exactly once.
        """
        ...

    @property
    def pid(self) -> int | None:
        """Process id of the agent process (its group leader), or None without a process."""
        ...

    def stop(self) -> None:
        """Stop the run (kill its process group); safe to call more than once, from any thread."""
        ...


class Agent(Protocol):
    """An agent kind, configured once and started once per run."""

    def start(self, prompt: Prompt, context: RunContext) -> AgentRun:
        """Start a run.

        Raises:
            OSError: when the agent process cannot be started.
        """
        ...
