"""Scope: one conversation (one agent in one channel): dedup, debounce, serial runs."""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.messages import DebounceElapsed, Init, RunFinished, StopRun
from actors.runner import Runner
from actors.runtime import Runtime, SupervisedActor
from bridge.board import ActorRow, RunRow, ScopeRow
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

    @property
    def delivery_id(self) -> str:
        """Child id of this channel's delivery actor for this agent."""
        return f"delivery:{self.key}"

    def on_receive(self, message: Any) -> None:
        """Handle ``Inbound``, ``DebounceElapsed`` and ``RunFinished``."""
        if isinstance(message, Init):
            self._publish()
            return
        if isinstance(message, Inbound):
            self.last_activity = time.time()
            self.handle(message)
            self._apply(self.logic.accept(message))
        elif isinstance(message, DebounceElapsed):
            self._apply(self.logic.debounce_elapsed(message.generation))
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

    def handle(self, message: Inbound) -> None:
        """Hook called for each inbound message before the rules (tests override it)."""

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
        log.info("scope %s: run %s starts with %d message(s)", self.key, action.run_id,
                 len(action.prompt.messages))
        self.runner = Runner.start(self.runtime, self.actor_ref, self.key, self.delivery_id,
                                   action.run_id, action.prompt, self.agent)
        self.runtime.board.put_run(RunRow(action.run_id, self.key, self.agent.name, time.time()))
        self.runtime.board.put_actor(ActorRow(f"runner:{action.run_id}", "runner",
                                              self.child_id, "running"))

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
        self.runtime.board.put_scope(ScopeRow(
            key=self.key, agent=self.agent.name, channel=logic.channel or self.channel_id,
            state=logic.state, queued=len(logic.pending), last_activity=self.last_activity,
            received=logic.received, engaged=logic.engaged, runs=logic.runs,
            failures=logic.failures))
