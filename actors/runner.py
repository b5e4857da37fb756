"""Runner: one per active run; owns the agent run and forwards its events."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pykka

from actors.credentials import credentials_id
from actors.messages import (
    AgentEventMsg,
    Deliver,
    Progress,
    Route,
    RunActive,
    RunFinished,
    StatusTick,
    StopRun,
)
from actors.runtime import Runtime, send
from bridge.agent import AgentRun, RunContext, RunDone, RunFailed, SessionStarted, ToolStarted
from bridge.board import RunRow
from bridge.config import AgentSettings
from bridge.config_reader import default_workspace
from bridge.model import ScopeKey
from bridge.procs import start_ticks
from bridge.prompt import Prompt
from bridge.run_status import RunStatus, footer_line, shorten
from bridge.secrets import redact
from bridge.store import SessionRecord, StoreError

log = logging.getLogger(__name__)

#: A run shows a status message once it reports a step, or (agents with a process)
#: after this many seconds.
STATUS_AFTER_S = 3.0
#: Seconds between status refreshes while the agent is quiet.
STATUS_TICK_S = 5.0


class Runner(pykka.ThreadingActor):
    """Runs one prompt through the agent; supervised by its scope, not restarted.

    The agent's events are read on a reader thread that only tells this actor.
    Progress goes to the channel's delivery actor as :class:`bridge.run_view.RunView`
    snapshots (which it renders for the platform and throttles to one edit a
    second). On the terminal event the runner puts the answer (split into
    pieces by the platform's renderer, with a footer: duration, tokens, cost)
    in the store's outbox, tells the delivery actor, tells the scope
    ``RunFinished`` and stops; the scope is
    told even when the store fails (the failure is logged and, where the store
    takes it, recorded as the run's outcome), so a run never leaves its scope
    stuck. The agent's session id is saved as soon as it is known, so the next
    message resumes it. ``StopRun`` (``/stop``, timeout, shutdown) kills the
    agent's processes. A runner stopped before its run ended (its scope failed,
    the bridge stops) ends the run as interrupted and hands its messages back
    to the scope for another run. Its timers are cancelled when it stops, so
    nothing of a finished run stays in memory.

    Args:
        runtime: Shared services.
        scope: The scope actor to report to.
        scope_key: The scope's key.
        delivery_id: Child id of the delivery actor for the channel.
        run_id: Unique run id.
        prompt: What to ask.
        agent: The agent's settings.
        session: The scope's session entry to resume (None: a fresh session).
        fingerprint: Policy fingerprint saved with the session.
    """

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, scope: pykka.ActorRef[Any], scope_key: str,
                 delivery_id: str, run_id: str, prompt: Prompt, agent: AgentSettings,
                 session: SessionRecord | None = None, fingerprint: str = "") -> None:
        super().__init__()
        self.runtime = runtime
        self.scope = scope
        self.scope_key = scope_key
        self.delivery_id = delivery_id
        self.run_id = run_id
        self.prompt = prompt
        self.agent = agent
        self.session_id = session.session_id if session else None
        self.fingerprint = fingerprint
        self.workspace = agent.workspace or default_workspace(runtime.config.bridge, agent.name)
        self.run: AgentRun | None = None
        self.stop_reason = ""
        self.finished = False
        self.started_at = time.time()
        self.status = RunStatus(agent.name, self.started_at)
        self.status_shown = False
        key = ScopeKey.parse(scope_key)
        self.connection = key.connection
        self.space = key.space
        #: The scope's platform renders the answer into pieces.
        self.renderer = runtime.platforms[key.platform]
        self.pid_recorded = False
        #: Pending timer handles (the timeout, the next status tick).
        self.timer_handles: dict[str, int] = {}

    def on_start(self) -> None:
        """Start the agent and its reader thread; arm the timeout and the status ticks."""
        self._identity(RunActive(self.space, +1))
        context = RunContext(self.run_id, self.scope_key, self.workspace, self.session_id,
                             on_spawn=self._spawned)
        try:
            assert self.runtime.agents is not None
            self.run = self.runtime.agents(self.agent).start(self.prompt, context)
        except Exception as exc:  # any start-up error must end the run, not hang the scope
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("run %s: could not start agent %s: %s", self.run_id, self.agent.name, why)
            self.actor_ref.tell(AgentEventMsg(RunFailed(
                f"could not start agent {self.agent.name}: {why}")))
            return
        if self.run.pid is not None and not self.pid_recorded:
            self._spawned(self.run.pid)
        threading.Thread(target=self._read, args=(self.run,), daemon=True,
                         name=f"run-{self.run_id}").start()
        self._schedule("timeout", self.agent.timeout_s,
                       StopRun(f"timed out after {self.agent.timeout_s:.0f} s"))
        self._schedule("status", STATUS_AFTER_S, StatusTick())

    def _spawned(self, pid: int) -> None:
        """Record the agent's pid before it may run anything (see :mod:`bridge.procs`)."""
        self.runtime.store.set_run_process(self.run_id, pid, start_ticks(pid))
        self.pid_recorded = True

    def _schedule(self, name: str, delay_s: float, message: Any) -> None:
        self.timer_handles[name] = self.runtime.timers.schedule(delay_s, self.actor_ref, message)

    def _cancel_timers(self) -> None:
        handles, self.timer_handles = self.timer_handles, {}
        for handle in handles.values():
            self.runtime.timers.cancel(handle)

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
        """Handle ``AgentEventMsg``, ``StatusTick`` and ``StopRun``."""
        if isinstance(message, StopRun):
            if self.run is not None and not self.finished:
                log.info("run %s: stopping (%s)", self.run_id, message.reason)
                self.stop_reason = message.reason
                self.run.stop()
        elif isinstance(message, AgentEventMsg):
            self._event(message.event)
        elif isinstance(message, StatusTick):
            if not self.finished:
                self._show_status()
                self._schedule("status", STATUS_TICK_S, StatusTick())
        else:
            super().on_receive(message)

    def _event(self, event: Any) -> None:
        if self.finished:
            return
        changed = self.status.apply(event)
        if isinstance(event, SessionStarted):
            self._save_session(event.session_id)
        if isinstance(event, ToolStarted):
            self.runtime.board.put_run(RunRow(self.run_id, self.scope_key, self.agent.name,
                                              self.started_at, shorten(event.title, 60)))
        if isinstance(event, RunDone):
            if event.session_id:
                self._save_session(event.session_id)
            answer = event.answer.strip() or "(the agent gave an empty answer)"
            self._finish(answer, ok=True, reason="")
        elif isinstance(event, RunFailed):
            if event.session_id:
                self._save_session(event.session_id)
            reason = self.stop_reason or event.reason
            self._finish(f"⚠ {self.agent.name}: run failed: {reason}", ok=False, reason=reason)
        elif changed:
            self._show_status()

    def _show_status(self, final_state: str = "", now: float | None = None) -> None:
        """Send the run's view to delivery (it throttles); from the first step or 3 s on."""
        now = time.time() if now is None else now
        quiet = not self.status.steps and not self.status.plan
        if not final_state and not self.status_shown and quiet and (
            self.agent.kind == "echo" or now - self.started_at < STATUS_AFTER_S
        ):
            return
        if final_state and not self.status_shown:
            return
        self.status_shown = True
        view = self.status.view(self.run_id, now, state=final_state or "working",
                                final=bool(final_state))
        self._to_delivery(Progress(view))

    def _save_session(self, session_id: str) -> None:
        if session_id == self.session_id:
            return
        self.session_id = session_id
        self.runtime.store.save_session(SessionRecord(
            self.scope_key, session_id, str(self.workspace), self.fingerprint))

    def _finish(self, text: str, *, ok: bool, reason: str) -> None:
        """End the run: answer to the outbox, then free the scope whatever happened."""
        self.finished = True
        self._cancel_timers()
        saved = False
        try:
            saved = self._save(text, ok=ok, reason=reason)
        finally:
            self._identity(RunActive(self.space, -1))
            if not saved:
                ok, reason = False, reason or "the answer could not be saved"
            with contextlib.suppress(pykka.ActorDeadError):
                self.scope.tell(RunFinished(self.run_id, ok, reason))
            self.actor_ref.stop(block=False)

    def _save(self, text: str, *, ok: bool, reason: str) -> bool:
        """Put the answer in the outbox and tell delivery; False when the store failed.

        When the store fails, the failure is logged and, if the store takes it
        then, recorded: the run ends ``failed`` with a notice in the channel.
        Else the run stays open in the store and runs again at the next start.
        """
        now = time.time()
        log.info("run %s %s after %.2fs%s", self.run_id, "done" if ok else "failed",
                 now - self.started_at, f": {reason}" if reason else "")
        self._show_status("done" if ok else f"failed: {shorten(reason, 100)}", now)
        text = redact(text)  # before the cut and the split, which could halve a secret
        cap = self.runtime.config.bridge.max_answer_chars
        if len(text) > cap:
            text = f"{text[:cap]}\n\n[answer cut: {len(text) - cap:,} more characters not shown]"
        footer = ""
        if self.status_shown or self.status.usage:
            footer = footer_line(self.status.view(self.run_id, now, final=True))
        pieces = self.renderer.render_answer(text, footer)
        after_seq = max((line.seq for line in self.prompt.messages), default=0)
        store = self.runtime.store
        saved = True
        try:
            store.finish_run(self.run_id, "done" if ok else "failed", pieces,
                             after_seq=after_seq)
        except StoreError as exc:
            saved = False
            log.error("run %s: could not save its answer: %s", self.run_id, exc)
            pieces = [f"⚠ {self.agent.name}: the answer could not be saved (state store "
                      "error); please send your message again."]
            try:
                store.finish_run(self.run_id, "failed", pieces, after_seq=after_seq)
            except StoreError as again:
                log.error("run %s: could not record the failure either (%s); the run stays "
                          "open and runs again at the next start", self.run_id, again)
                pieces = []
        if pieces:
            self._to_delivery(Deliver(self.scope_key))
        return saved

    def _to_delivery(self, message: Any) -> None:
        send(self.runtime, self.delivery_id, message)

    def _identity(self, message: RunActive) -> None:
        send(self.runtime, credentials_id(self.connection), message)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Kill the agent and report the run as failed (in the channel and to the scope)."""
        if self.run is not None:
            self.run.stop()
        if not self.finished:
            try:
                self._finish(f"⚠ {self.agent.name}: run failed: internal error", ok=False,
                             reason=f"runner error: {exception_value}")
            except Exception:
                log.exception("run %s: could not report the failure", self.run_id)

    def on_stop(self) -> None:
        """Make sure no agent process outlives the runner, nor its run state the run.

        A run that had not ended (the scope failed or stopped, the bridge
        stops) ends as interrupted: its messages are reopened in the store
        and routed again, so the scope's next instance runs them (a message
        cut off :data:`bridge.store.MAX_RUN_ATTEMPTS` times is given up, with a
        notice).
        """
        self._cancel_timers()
        board = self.runtime.board
        board.remove_run(self.run_id)
        board.remove_actor(f"runner:{self.run_id}")
        if self.finished:
            return
        self.finished = True
        if self.run is not None:
            self.run.stop()
        self._identity(RunActive(self.space, -1))
        try:
            reopened, given_up = self.runtime.store.interrupt_run(self.run_id)
        except StoreError as exc:
            log.warning("run %s: cut off; could not reopen its messages now (%s); they run "
                        "again at the next start", self.run_id, exc)
            return
        log.info("run %s: cut off; %d message(s) reopened, %d given up", self.run_id,
                 len(reopened), len(given_up))
        supervisor = self.runtime.supervisor
        if supervisor is not None and not self.runtime.stopping.is_set():
            for inbound in reopened:
                with contextlib.suppress(pykka.ActorDeadError):
                    supervisor.tell(Route(inbound))
        if given_up:
            with contextlib.suppress(StoreError):
                self.runtime.store.add_notice(
                    self.scope_key, f"interrupted:{self.run_id}",
                    f"⚠ {self.agent.name}: a run was interrupted twice and was not retried; "
                    "please send your message again.")
                self._to_delivery(Deliver(self.scope_key))
