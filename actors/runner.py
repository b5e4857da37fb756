"""Runner: one per active run; owns the agent run and forwards its events."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pykka

from actors.messages import AgentEventMsg, Deliver, Forward, RunFinished, StopRun
from actors.runtime import Runtime
from adapters.agents import build_agent
from bridge.agent import AgentRun, RunContext, RunDone, RunFailed, TextDelta, ToolStarted
from bridge.board import RunRow
from bridge.chunking import split_message
from bridge.config import AgentSettings
from bridge.prompt import Prompt

log = logging.getLogger(__name__)


class Runner(pykka.ThreadingActor):
    """Runs one prompt through the agent; supervised by its scope, not restarted.

    The agent's events are read on a reader thread that only tells this actor.
    On the terminal event the runner asks the channel's delivery actor (via the
    supervisor) to post the answer, tells the scope ``RunFinished`` and stops.
    ``StopRun`` (``/stop``, timeout, shutdown) kills the agent's process group.

    Args:
        runtime: Shared services.
        scope: The scope actor to report to.
        scope_key: The scope's key.
        delivery_id: Child id of the delivery actor for the channel.
        run_id: Unique run id.
        prompt: What to ask.
        agent: The agent's settings.
    """

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, scope: pykka.ActorRef[Any], scope_key: str,
                 delivery_id: str, run_id: str, prompt: Prompt, agent: AgentSettings) -> None:
        super().__init__()
        self.runtime = runtime
        self.scope = scope
        self.scope_key = scope_key
        self.delivery_id = delivery_id
        self.run_id = run_id
        self.prompt = prompt
        self.agent = agent
        self.run: AgentRun | None = None
        self.stop_reason = ""
        self.finished = False
        self.started_at = time.time()

    def on_start(self) -> None:
        """Start the agent and its reader thread; arm the run timeout."""
        context = RunContext(self.run_id, self.scope_key,
                             self.agent.workspace or self.runtime.config.bridge.state_dir)
        try:
            self.run = build_agent(self.agent).start(self.prompt, context)
        except Exception as exc:  # any start-up error must end the run, not hang the scope
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("run %s: could not start agent %s: %s", self.run_id, self.agent.name, why)
            self.actor_ref.tell(AgentEventMsg(RunFailed(
                f"could not start agent {self.agent.name}: {why}")))
            return
        threading.Thread(target=self._read, args=(self.run,), daemon=True,
                         name=f"run-{self.run_id}").start()
        self.runtime.timers.schedule(self.agent.timeout_s, self.actor_ref,
                                     StopRun(f"timed out after {self.agent.timeout_s:.0f} s"))

    def _read(self, run: AgentRun) -> None:
        try:
            for event in run.events():
                self.actor_ref.tell(AgentEventMsg(event))
        except pykka.ActorDeadError:
            run.stop()
        except Exception as exc:  # an agent bug must still end the run
            log.exception("run %s: agent raised", self.run_id)
            with contextlib.suppress(pykka.ActorDeadError):
                self.actor_ref.tell(AgentEventMsg(RunFailed(f"agent error: {exc}")))

    def on_receive(self, message: Any) -> None:
        """Handle ``AgentEventMsg`` and ``StopRun``."""
        if isinstance(message, StopRun):
            if self.run is not None and not self.finished:
                log.info("run %s: stopping (%s)", self.run_id, message.reason)
                self.stop_reason = message.reason
                self.run.stop()
        elif isinstance(message, AgentEventMsg):
            self._event(message.event)
        else:
            super().on_receive(message)

    def _event(self, event: Any) -> None:
        if self.finished:
            return
        if isinstance(event, ToolStarted | TextDelta):
            detail = event.title if isinstance(event, ToolStarted) else event.text[-60:]
            self.runtime.board.put_run(RunRow(self.run_id, self.scope_key, self.agent.name,
                                              self.started_at, detail.replace("\n", " ")))
        if isinstance(event, RunDone):
            self._finish(event.answer, ok=True, reason="")
        elif isinstance(event, RunFailed):
            reason = self.stop_reason or event.reason
            self._finish(f"⚠ {self.agent.name}: run failed: {reason}", ok=False, reason=reason)

    def _finish(self, text: str, *, ok: bool, reason: str) -> None:
        self.finished = True
        elapsed = time.time() - self.started_at
        log.info("run %s %s after %.2fs%s", self.run_id, "done" if ok else "failed", elapsed,
                 f": {reason}" if reason else "")
        pieces = split_message(text, self.runtime.config.fabric.content_limit)
        self.runtime.store.finish_run(self.run_id, "done" if ok else "failed", pieces)
        supervisor = self.runtime.supervisor
        if supervisor is not None and pieces:
            supervisor.tell(Forward(self.delivery_id, Deliver(self.scope_key)))
        with contextlib.suppress(pykka.ActorDeadError):
            self.scope.tell(RunFinished(self.run_id, ok, reason))
        self.actor_ref.stop(block=False)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Kill the agent and report the run as failed to the scope."""
        if self.run is not None:
            self.run.stop()
        if not self.finished:
            with contextlib.suppress(pykka.ActorDeadError):
                self.scope.tell(RunFinished(self.run_id, False, f"runner error: {exception_value}"))

    def on_stop(self) -> None:
        """Make sure no agent process outlives the runner."""
        if self.run is not None and not self.finished:
            self.run.stop()
