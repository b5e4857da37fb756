"""Scope: one conversation (one agent in one channel): dedup, debounce, serial runs."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pykka

from actors.messages import (
    DebounceElapsed,
    Deliver,
    Forward,
    IdleCheck,
    Init,
    Route,
    RunFinished,
    ScopeIdle,
    StopRun,
)
from actors.runner import Runner
from actors.runtime import Runtime, SupervisedActor
from bridge.board import ActorRow, RunRow
from bridge.commands import Command, help_text, parse_command, unknown_hint
from bridge.config import AgentSettings
from bridge.messages import Inbound
from bridge.scope_logic import ArmDebounce, ScopeLogic, StartRun
from bridge.sessions import policy_fingerprint
from bridge.store import SessionRecord

log = logging.getLogger(__name__)


class Scope(SupervisedActor):
    """Owns one conversation; the rules live in :class:`bridge.scope_logic.ScopeLogic`.

    Args:
        runtime: Shared services.
        child_id: ``scope:<scope key>``.
        first: The message that made the supervisor spawn this scope (for its
            agent, guild and channel; it is routed to the scope like any other).
        agent: The agent's settings.
    """

    def __init__(self, runtime: Runtime, child_id: str, first: Inbound,
                 agent: AgentSettings) -> None:
        super().__init__(runtime, child_id)
        self.key = first.scope_key
        self.agent = agent
        self.guild = first.guild
        self.channel_id = first.channel_id
        self.logic = ScopeLogic(agent.name, first.guild, first.channel_name,
                                runtime.config.bridge.debounce_s)
        self.runner: pykka.ActorRef[Any] | None = None
        self.last_activity = time.time()
        self.processing: Inbound | None = None
        self.idle_generation = 0
        self.stopping_idle = False

    @property
    def delivery_id(self) -> str:
        """Child id of this channel's delivery actor for this agent."""
        return f"delivery:{self.key}"

    def on_receive(self, message: Any) -> None:
        """Handle ``Inbound``, ``DebounceElapsed`` and ``RunFinished``."""
        if isinstance(message, Init):
            self._recover()
        elif isinstance(message, Inbound) and self.stopping_idle:
            # Asked to be stopped: the supervisor routes this to the next instance.
            if self.runtime.supervisor is not None:
                self.runtime.supervisor.tell(Route(message))
            return
        elif isinstance(message, Inbound):
            self.last_activity = time.time()
            self.processing = message
            self.handle(message)
            self._accept(message)
            self.processing = None
        elif isinstance(message, DebounceElapsed):
            self._apply(self.logic.debounce_elapsed(message.generation))
        elif isinstance(message, IdleCheck):
            self._idle_check(message.generation)
            return
        elif isinstance(message, RunFinished):
            self.last_activity = time.time()
            if message.run_id == self.logic.current_run:
                self.runner = None
                self.runtime.board.remove_run(message.run_id)
                self.runtime.board.remove_actor(f"runner:{message.run_id}")
            self._apply(self.logic.run_finished(message.run_id, message.ok))
        else:
            super().on_receive(message)
        self._publish()
        self._arm_idle()

    def _arm_idle(self) -> None:
        self.idle_generation += 1
        self.runtime.timers.schedule(self.runtime.config.bridge.scope_idle_s, self.actor_ref,
                                     IdleCheck(self.idle_generation))

    def _idle_check(self, generation: int) -> None:
        if generation != self.idle_generation or self.logic.state != "idle" or self.runner:
            return
        supervisor = self.runtime.supervisor
        if supervisor is not None:
            log.debug("scope %s: idle, asking to be stopped", self.key)
            self.stopping_idle = True
            supervisor.tell(ScopeIdle(self.child_id))

    def handle(self, message: Inbound) -> None:
        """Hook called for each inbound message before the rules (tests override it)."""

    def _recover(self) -> None:
        """Take the journal's open messages of this scope (after a restart or a crash)."""
        waiting = self.runtime.store.open_inbound(self.key)
        if waiting:
            log.info("scope %s: %d message(s) from the journal", self.key, len(waiting))
        for message in waiting:
            self._accept(message)

    def _accept(self, message: Inbound) -> None:
        command = parse_command(message.content)
        if command is not None:
            if not self.logic.dedup.seen(message.message_id):
                self.runtime.store.mark_done(self.key, message.message_id)
                self._command(command, message)
            return
        actions = self.logic.accept(message)
        if self.logic.verdict != "duplicate":
            self.runtime.store.classify(self.key, message.message_id,
                                        self.logic.verdict == "engaged")
        self._apply(actions)

    def _apply(self, actions: list[ArmDebounce | StartRun]) -> None:
        for action in actions:
            if isinstance(action, ArmDebounce):
                if action.delay_s <= 0:
                    self._apply(self.logic.debounce_elapsed(action.generation))
                else:
                    self.runtime.timers.schedule(action.delay_s, self.actor_ref,
                                                 DebounceElapsed(action.generation))
            else:
                self._start(action)

    def _command(self, command: Command, message: Inbound) -> None:
        """Answer a chat command (never queued, never sent to the agent)."""
        log.info("scope %s: /%s from %s", self.key, command.name, message.author_name)
        store = self.runtime.store
        if command.name == "help":
            text = help_text(self.agent.name)
        elif command.name == "stop":
            if self.runner is not None:
                self.runner.tell(StopRun(f"stopped by {message.author_name}"))
                text = f"stopping the current run of {self.agent.name}"
            else:
                text = f"{self.agent.name} has no run to stop"
        elif command.name == "new":
            store.clear_session(self.key)
            text = f"{self.agent.name}: the next message starts a fresh session"
        elif command.name == "status":
            text = self._status_text()
        elif command.known:
            text = f"/{command.name} is not configured for {self.agent.name}"
        else:
            text = unknown_hint(command)
        self._reply(message, text)

    def _status_text(self) -> str:
        record = self.runtime.store.session(self.key)
        session = record.session_id if record and record.session_id else None
        lines = [f"{self.agent.name} in #{self.logic.channel}: {self.logic.state}",
                 f"session: {session or 'none (the next message starts one)'}",
                 f"workspace: {self._workspace()}",
                 f"queued: {len(self.logic.pending)}"]
        if self.logic.current_run is not None:
            lines.append(f"current run: {self.logic.current_run}")
        return "\n".join(lines)

    def _reply(self, message: Inbound, text: str) -> None:
        self.runtime.store.add_notice(self.key, f"reply:{message.message_id}", text)
        if self.runtime.supervisor is not None:
            self.runtime.supervisor.tell(Forward(self.delivery_id, Deliver(self.key)))

    def _workspace(self) -> Path:
        return self.agent.workspace or self.runtime.config.bridge.state_dir

    def _session_for_run(self, run_id: str) -> tuple[SessionRecord | None, str]:
        """The session to resume and the policy fingerprint of this run."""
        fingerprint = policy_fingerprint(self.key, self.agent, self._workspace())
        record = self.runtime.store.session(self.key)
        if record is not None and record.session_id and record.fingerprint != fingerprint:
            log.warning("scope %s: policy changed since session %s; starting a new one",
                        self.key, record.session_id)
            self.runtime.store.clear_session(self.key)
            self.runtime.store.add_notice(
                self.key, f"policy:{run_id}",
                f"{self.agent.name}: the workspace or policy changed since the last session, "
                "so this run starts a new session.")
            return None, fingerprint
        return record, fingerprint

    def _start(self, action: StartRun) -> None:
        self.runtime.store.start_run(action.run_id, self.key,
                                     action.message_ids + action.context_ids)
        session, fingerprint = self._session_for_run(action.run_id)
        log.info("scope %s: run %s starts with %d message(s)", self.key, action.run_id,
                 len(action.prompt.messages))
        self.runner = Runner.start(self.runtime, self.actor_ref, self.key, self.delivery_id,
                                   action.run_id, action.prompt, self.agent, session,
                                   fingerprint)
        self.runtime.board.put_run(RunRow(action.run_id, self.key, self.agent.name, time.time()))
        self.runtime.board.put_actor(ActorRow(f"runner:{action.run_id}", "runner",
                                              self.child_id, "running"))

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None, tb: TracebackType | None) -> None:
        """Drop the message being handled (it is never replayed), then report the failure."""
        if self.processing is not None:
            log.error("scope %s: message %s dropped: it made the scope fail (%s)", self.key,
                      self.processing.message_id, exception_value)
            self.runtime.store.drop_inbound(self.key, self.processing.message_id)
        super().on_failure(exception_type, exception_value, tb)

    def on_stop(self) -> None:
        """On an idle stop, hand back work that arrived meanwhile (the supervisor respawns)."""
        supervisor = self.runtime.supervisor
        if self.logic.pending and supervisor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(Route(self.logic.pending[0]))
        super().on_stop()

    def cleanup(self) -> None:
        """Stop the current run (its process group) when the scope stops or fails."""
        runner, self.runner = self.runner, None
        if runner is not None:
            try:
                runner.tell(StopRun("the bridge is stopping"))
                runner.stop(block=False)
            except pykka.ActorDeadError:
                pass
            if self.logic.current_run is not None:
                self.runtime.board.remove_run(self.logic.current_run)
                self.runtime.board.remove_actor(f"runner:{self.logic.current_run}")

    def _publish(self) -> None:
        logic = self.logic
        self.runtime.board.update_scope(
            self.key, agent=self.agent.name, channel=logic.channel or self.channel_id,
            state=logic.state, queued=len(logic.pending), last_activity=self.last_activity,
            received=logic.received, engaged=logic.engaged, runs=logic.runs,
            failures=logic.failures)
