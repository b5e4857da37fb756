"""Helpers for agent-run tests: collecting events with a deadline, fake CLIs, process checks."""

from __future__ import annotations

import os
import queue
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bridge.agent import AgentEvent, AgentRun, RunContext, RunDone, RunFailed
from bridge.prompt import Prompt, PromptLine

#: Seconds a test waits for a run that should end quickly.
RUN_WAIT_S = 60.0


def prompt(text: str, author: str = "Ann") -> Prompt:
    """A one-message prompt."""
    return Prompt(agent="coder", space="dev", channel="general",
                  messages=(PromptLine(author, text, 1, f"u-{author.lower()}", True),))


def context(workspace: Path, session_id: str | None = None) -> RunContext:
    """A run context in ``workspace``."""
    return RunContext("run-1", "fabric:coder:dev:c-1", workspace, session_id)


class Collector:
    """Reads a run's events on a thread, like the runner does.

    Args:
        run: The started run.
    """

    def __init__(self, run: AgentRun) -> None:
        self.run = run
        self.events: list[AgentEvent] = []
        self._queue: queue.Queue[AgentEvent | BaseException | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True, name="collector")
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.run.events():
                self._queue.put(event)
        except BaseException as exc:  # surface agent bugs in the test
            self._queue.put(exc)
        finally:
            self._queue.put(None)

    def until_end(self, timeout_s: float = RUN_WAIT_S) -> list[AgentEvent]:
        """All events up to the end of the stream; fails after the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.run.stop()
                raise AssertionError(f"run did not end within {timeout_s} s; "
                                     f"events so far: {self.events}")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                return self.events
            if isinstance(item, BaseException):
                raise item
            self.events.append(item)

    def terminal(self, timeout_s: float = RUN_WAIT_S) -> RunDone | RunFailed:
        """The run's terminal event (checks there is exactly one, and last)."""
        events = self.until_end(timeout_s)
        terminals = [e for e in events if isinstance(e, RunDone | RunFailed)]
        assert len(terminals) == 1 and events[-1] is terminals[0], events
        return terminals[0]


def run_to_end(run: AgentRun, timeout_s: float = RUN_WAIT_S) -> list[AgentEvent]:
    """Collect all events of a run."""
    return Collector(run).until_end(timeout_s)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; raise AssertionError after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def fake_cli(folder: Path, name: str, body: str) -> Path:
    """Write an executable Python script standing in for a CLI; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body), encoding="utf-8")
    path.chmod(0o755)
    return path


def no_leaks(pid: int) -> None:
    """Assert the run's process group is gone (it is killed after the run)."""
    wait_for(lambda: not group_alive(pid), 10, f"process group {pid} to be gone")
    assert os.getpgid(os.getpid()) != pid
