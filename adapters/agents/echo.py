"""The built-in echo agent: answers with the merged prompt."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from bridge.agent import AgentEvent, RunContext, RunDone, RunFailed
from bridge.prompt import Prompt


class EchoRun:
    """A run that answers at once with the user's merged text."""

    def __init__(self, prompt: Prompt) -> None:
        self._prompt = prompt
        self._stopped = threading.Event()

    def events(self) -> Iterator[AgentEvent]:
        """Yield one terminal event: the merged text, or a failure when stopped first."""
        if self._stopped.is_set():
            yield RunFailed("stopped")
            return
        yield RunDone(self._prompt.user_text())

    @property
    def pid(self) -> int | None:
        """None: the echo agent has no process."""
        return None

    def stop(self) -> None:
        """Mark the run stopped (it has no process)."""
        self._stopped.set()


class EchoAgent:
    """Agent kind ``echo``: no process, no workspace use; for trying the bridge."""

    def start(self, prompt: Prompt, context: RunContext) -> EchoRun:
        """Start a run (never fails)."""
        return EchoRun(prompt)
