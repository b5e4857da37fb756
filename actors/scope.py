"""Scope: one conversation (one agent in one channel): dedup, debounce, serial runs."""

from __future__ import annotations

import contextlib
import logging
import time
from types import TracebackType
from typing import Any

import pykka

from actors.messages import (
    DebounceElapsed,
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
from bridge.config import AgentSettings
from bridge.messages import Inbound
from bridge.scope_logic import ArmDebounce, ScopeLogic, StartRun

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

    def _start(self, action: StartRun) -> None:
        self.runtime.store.start_run(action.run_id, self.key,
                                     action.message_ids + action.context_ids)
        log.info("scope %s: run %s starts with %d message(s)", self.key, action.run_id,
                 len(action.prompt.messages))
        self.runner = Runner.start(self.runtime, self.actor_ref, self.key, self.delivery_id,
                                   action.run_id, action.prompt, self.agent)
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
