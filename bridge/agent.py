"""What an agent is to the bridge: start a run, read typed events, stop it.

Agents (``adapters/agents``) implement :class:`Agent`; the Runner actor reads
:class:`AgentRun.events` on a reader thread and forwards each event.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    """

    run_id: str
    scope_key: str
    workspace: Path
    session_id: str | None = None


@attrs.frozen
class TextDelta:
    """Part of the answer as the agent writes it."""

    text: str


@attrs.frozen
class ToolStarted:
    """The agent started a tool step (a command, a file change, ...)."""

    step_id: str
    title: str


@attrs.frozen
class ToolFinished:
    """A tool step ended."""

    step_id: str
    ok: bool


@attrs.frozen
class Usage:
    """What the run cost, where the agent reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


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
    """

    reason: str


AgentEvent = TextDelta | ToolStarted | ToolFinished | Usage | RunDone | RunFailed
TERMINAL_EVENTS = (RunDone, RunFailed)


class AgentRun(Protocol):
    """One running agent invocation."""

    def events(self) -> Iterator[AgentEvent]:
        """Yield events until, and including, one terminal event (RunDone or RunFailed).

        Blocking; called on the runner's reader thread, exactly once.
        """
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
