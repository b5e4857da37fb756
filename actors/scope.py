"""Scope: one conversation (one agent in one channel): access, engage, commands, runs,
and members' clicks on the controls the bridge posted (a run's Stop).

Where the platform has reactions, the messages a run takes get receipts: the
scope decides them (``receipt_accepted`` when the run starts, then
``receipt_answered`` or ``receipt_failed``) and its delivery sets them.

Every decision (a message engaged, kept as context, dropped, refused; a
command answered or refused; a run started or held back by the run budget) is
logged with its reason and the scope key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import pykka

from actors.credentials import access_of
from actors.messages import (
    ChildIdle,
    DebounceElapsed,
    Deliver,
    IdleCheck,
    Init,
    MessageRef,
    Notify,
    Receipt,
    Route,
    RunFinished,
    StopRun,
    StopScopeRun,
)
from actors.runner import Runner
from actors.runtime import PooledSupervisedActor, Runtime, send
from actors.timers import IdleTimer
from bridge.board import ActorRow, RunRow
from bridge.commands import (
    Command,
    addressed_to,
    help_text,
    parse_command,
    parse_timeout,
    unknown_hint,
)
from bridge.config import AgentSettings
from bridge.config_reader import default_workspace
from bridge.engage import EngageRule
from bridge.errors import ChatError
from bridge.model import Action as Click
from bridge.model import Inbound
from bridge.policy import WorkspaceError, check_workspace
from bridge.scope_logic import Action, ArmDebounce, OverBudget, Refuse, ScopeLogic, StartRun
from bridge.sessions import policy_fingerprint
from bridge.store import SessionRecord

log = logging.getLogger(__name__)


class Scope(PooledSupervisedActor):
    """Owns one conversation; the rules live in :class:`bridge.scope_logic.ScopeLogic`.

    Args:
        runtime: Shared services.
        child_id: ``scope:<scope key>``.
        first: The message that made the supervisor spawn this scope (for its
            agent, space and channel; it is routed to the scope like any other).
        agent: The agent's settings.
    """

    def __init__(self, runtime: Runtime, child_id: str, first: Inbound,
                 agent: AgentSettings) -> None:
        super().__init__(runtime, child_id)
        self.key = first.scope_key
        self.scope = first.scope
        #: The binding keeps a conversation per thread (its context is its thread's).
        self.per_thread = first.per_thread
        self.agent = agent
        self.channel_id = first.channel_id
        config = runtime.config
        names = runtime.names.get(first.connection)
        binding = config.binding_for(agent.name, first.space, first.channel_id,
                                     first.channel_name, names.channels,
                                     platform=first.platform)
        self.rule = binding.engage if binding is not None else EngageRule()
        self.logic = ScopeLogic(agent.name, first.space, first.channel_name,
                                config.bridge.debounce_s, rule=self.rule, access=agent.access,
                                bot_names=config.agents, names=names)
        #: ``/timeout`` of this scope (seconds), None for the agent's ``timeout_s``.
        self.timeout_s: float | None = None
        self.runner: pykka.ActorRef[Any] | None = None
        #: Authors of the messages the current run answers (they may stop it).
        self.requesters: frozenset[str] = frozenset()
        #: The current run's id and the messages that got its receipt.
        self.receipted: tuple[str, tuple[MessageRef, ...]] = ("", ())
        self.last_activity = time.time()
        self.processing: Inbound | None = None
        self.idle = IdleTimer(runtime.timers, self.actor_ref, config.bridge.scope_idle_s,
                              IdleCheck())
        self.stopping_idle = False

    @property
    def delivery_id(self) -> str:
        """Child id of this channel's delivery actor for this agent."""
        return f"delivery:{self.key}"

    def on_receive(self, message: Any) -> None:
        """Handle ``Inbound``, ``DebounceElapsed`` and ``RunFinished``."""
        # The access rules match by id; the connection's resolved names may have grown.
        self.logic.names = self.runtime.names.get(self.scope.connection)
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
        elif isinstance(message, Click):
            self._click(message)
        elif isinstance(message, DebounceElapsed):
            self._apply(self.logic.debounce_elapsed(message.generation))
        elif isinstance(message, StopRun):
            if self.runner is not None:
                self.runner.tell(message)
            return
        elif isinstance(message, IdleCheck):
            self._idle_check()
            return
        elif isinstance(message, RunFinished):
            self.last_activity = time.time()
            if message.run_id == self.logic.current_run:
                self.runner = None
                self.runtime.board.remove_run(message.run_id)
                self.runtime.board.remove_actor(f"runner:{message.run_id}")
                self._outcome_receipt(message.run_id, message.ok)
            self._apply(self.logic.run_finished(message.run_id, message.ok))
        else:
            super().on_receive(message)
        self._close_evicted()
        self._publish()
        self.idle.touch()

    def _close_evicted(self) -> None:
        """Close the context messages dropped beyond the prompt's bounds (never replayed)."""
        evicted = self.logic.take_evicted()
        if evicted:
            self.runtime.store.close_context(self.key, evicted)

    def _idle_check(self) -> None:
        if not self.idle.expired():
            return
        if self.logic.state != "idle" or self.runner:
            self.idle.touch()
            return
        supervisor = self.runtime.supervisor
        if supervisor is not None:
            log.debug("scope %s: idle, asking to be stopped", self.key)
            self.stopping_idle = True
            supervisor.tell(ChildIdle(self.child_id))

    def handle(self, message: Inbound) -> None:
        """Hook called for each inbound message before the rules (tests override it)."""

    def _recover(self) -> None:
        """Take this scope's settings and open messages from the store (after a restart,
        a crash or an idle stop)."""
        self.timeout_s = self.runtime.store.scope_timeout(self.key)
        # Messages no run took that are older than the catch-up window are closed,
        # not loaded: too old to run, or to be context for a later prompt.
        stale_before = time.time() - self.runtime.config.bridge.catch_up_window_s
        waiting = self.runtime.store.open_inbound(self.key, stale_before=stale_before)
        context = self._stored_context(stale_before)
        if waiting or context:
            log.info("scope %s: %d message(s) from the journal, %d of context", self.key,
                     len(waiting), len(context))
        for message in sorted([*waiting, *context], key=lambda m: m.seq):
            self._accept(message)

    def _stored_context(self, since: float) -> list[Inbound]:
        """The channel's messages stored without a row for this agent since the last run
        (they could not engage it: context), its own left out; none when the agent's
        user id cannot be learned (its own answers must not come back as context)."""
        try:
            own_id = access_of(self.runtime, self.scope.connection).user_id
        except ChatError as exc:
            log.warning("scope %s: earlier messages not read as context: %s", self.key, exc)
            return []
        return self.runtime.store.context(self.scope, since=since, exclude_author=own_id,
                                          per_thread=self.per_thread)

    def _accept(self, message: Inbound) -> None:
        command = parse_command(message.content)
        if command is not None:
            if not self.logic.dedup.seen(message.message_id):
                self._command(command, message)  # marks it done, with its answer if any
            return
        actions = self.logic.accept(message)
        verdict, reason = self.logic.verdict, self.logic.reason
        if verdict == "duplicate":
            log.debug("scope %s: message %s is a duplicate", self.key, message.message_id)
        else:
            log.info("scope %s: message %s from %s: %s (%s)", self.key, message.message_id,
                     message.author_name, verdict, reason)
        # Engaged and context messages stay open in the journal (replayed alike after a
        # crash) until a run takes them. An engaged message that waits behind a run
        # (which may take longer than the catch-up window) is marked engaged, so the
        # closing of stale open messages after a crash never takes it for context.
        if verdict == "dropped":
            self.runtime.store.mark_done(self.key, message.message_id)
        elif verdict == "engaged" and self.logic.current_run is not None:
            self.runtime.store.classify(self.key, message.message_id, True)
        self._apply(actions)

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ArmDebounce):
                self.runtime.timers.schedule(action.delay_s, self.actor_ref,
                                             DebounceElapsed(action.generation))
            elif isinstance(action, Refuse):
                self._refuse(action.author_id)
            elif isinstance(action, OverBudget):
                self._over_budget(action)
            else:
                self._start(action)

    def _refuse(self, author_id: str, command: Inbound | None = None) -> None:
        """Post the refusal; keyed by user and clock hour, so that a scope rebuilt after an
        idle stop does not refuse the same user twice within that hour. A refused
        ``command`` is marked done with it, in one transaction."""
        hour = int(time.time() // 3600)
        self._notice(f"refusal:{self.key}:{author_id}:{hour}", self.agent.access.refusal,
                     done=command)

    def _over_budget(self, action: OverBudget) -> None:
        limit = self.agent.access.max_runs_per_hour
        log.warning("scope %s: run budget of %d runs per member per hour spent; %d "
                    "message(s) kept as context instead of a run", self.key, limit,
                    len(action.message_ids))
        for message_id in action.message_ids:
            self.runtime.store.classify(self.key, message_id, False)
        if action.notify:
            self._notice(f"budget:{self.agent.name}:{action.message_ids[0]}",
                         f"⚠ {self.agent.name}: too many runs for you in this channel in the "
                         "last hour; your messages are kept for later and not answered now.")

    def _listening(self) -> bool:
        """Whether the agent takes commands here without a mention."""
        return self.rule.mode in ("addressed", "pattern") or self.logic.gate.active(
            self.logic.clock())

    def _command(self, command: Command, message: Inbound) -> None:
        """Answer a chat command (never queued, never sent to the agent).

        Commands obey the access rules: a channel outside ``allowed_channels``
        and bots are ignored, a member who is not allowed gets the refusal (once
        per hour), and admin-only commands answer "admins only" to the others.
        """
        who = f"/{command.name} from {message.author_name}"
        if not addressed_to(message.content, message.mentioned, self._listening()):
            log.info("scope %s: %s ignored (not addressed to %s)", self.key, who,
                     self.agent.name)
            self.runtime.store.mark_done(self.key, message.message_id)
            return
        sender = self.logic.sender(message)
        if not sender.allowed:
            refuse = sender.kind == "refused" and self.logic.refuse_now(message.author_id)
            log.info("scope %s: %s not run (%s)%s", self.key, who, sender.reason,
                     "; refused" if refuse else "")
            if refuse:
                self._refuse(message.author_id, command=message)
            else:
                self.runtime.store.mark_done(self.key, message.message_id)
            return
        if command.admin_only and sender.kind != "admin":
            log.info("scope %s: %s refused (admins only)", self.key, who)
            self._reply(message, f"/{command.name}: admins only")
            return
        log.info("scope %s: %s (%s)", self.key, who, sender.reason)
        handler = {"help": self._cmd_help, "stop": self._cmd_stop, "new": self._cmd_new,
                   "status": self._cmd_status, "ws": self._cmd_ws, "cd": self._cmd_cd,
                   "timeout": self._cmd_timeout, "release": self._cmd_release}.get(command.name)
        text = handler(command, message) if handler is not None else unknown_hint(command)
        self._reply(message, text)

    def _cmd_help(self, command: Command, message: Inbound) -> str:
        return help_text(self.agent.name)

    def _cmd_stop(self, command: Command, message: Inbound) -> str:
        target = command.args.strip().lstrip("#")
        if target and target not in (self.channel_id, self.logic.channel):
            if self.logic.sender(message).kind != "admin":
                return "/stop CHANNEL (another conversation's run): admins only"
            if self.runtime.supervisor is not None:
                self.runtime.supervisor.tell(StopScopeRun(
                    self.scope.connection, target,
                    f"stopped by {message.author_name} from #{self.logic.channel}"))
            return f"asked {self.agent.name}'s run in #{target[:80]} to stop (if there is one)"
        if self._stop_run(message.author_name):
            return f"stopping the current run of {self.agent.name}"
        return f"{self.agent.name} has no run to stop"

    def _stop_run(self, who: str) -> bool:
        """Stop the current run as ``who`` asked (``/stop``, a Stop click); False: none."""
        if self.runner is None:
            return False
        self.runner.tell(StopRun(f"stopped by {who}"))
        return True

    def _click(self, click: Click) -> None:
        """A member's click on a control the bridge posted; only ``stop`` is known.

        A Stop click carries its run's id: it stops the run as ``/stop`` does
        when that run is still the live one here and the clicker asked for it
        (an author of a message it answers) or is an admin. Anything else is
        logged and ignored.
        """
        who = f"{click.name!r} click from {click.user_name or click.user_id}"
        if click.name != "stop":
            log.info("scope %s: %s ignored (unknown control)", self.key, who)
            return
        if self.runner is None or click.value != self.logic.current_run:
            log.info("scope %s: %s ignored: run %s is not the live run", self.key, who,
                     click.value[:40])
            return
        if click.user_id not in self.requesters and not self.logic.is_admin(click.user_id):
            send(self.runtime, self.delivery_id,
                 Notify(click.user_id, f"Only the member who asked {self.agent.name} for this "
                                       "run, or an admin, can stop it."))
            log.info("scope %s: %s ignored: neither the run's requester nor an admin", self.key,
                     who)
            return
        log.info("scope %s: %s: stopping run %s", self.key, who, click.value)
        self._stop_run(click.user_name or click.user_id)

    def _cmd_new(self, command: Command, message: Inbound) -> str:
        self.runtime.store.clear_session(self.key)
        return f"{self.agent.name}: the next message starts a fresh session"

    def _cmd_status(self, command: Command, message: Inbound) -> str:
        return self._status_text()

    def _cmd_ws(self, command: Command, message: Inbound) -> str:
        current = os.path.realpath(self._workspace())
        lines = [f"{self.agent.name} workspaces (/cd ALIAS, admins):"]
        for alias, path in self._aliases():
            mark = " (current)" if os.path.realpath(path) == current else ""
            lines.append(f"{alias}: {path}{mark}")
        return "\n".join(lines)

    def _cmd_cd(self, command: Command, message: Inbound) -> str:
        alias = command.args.strip()
        aliases = dict(self._aliases())
        if not alias:
            return "usage: /cd ALIAS (/ws lists them)"
        if alias not in aliases:
            log.info("scope %s: /cd %r refused: not a workspace alias", self.key, alias[:80])
            return (f"/cd: {alias[:80]!r} is not a workspace alias of {self.agent.name} "
                    "(/ws lists them)")
        try:
            real = check_workspace(aliases[alias], self.agent.workspace_roots)
        except WorkspaceError as exc:
            log.warning("scope %s: /cd %s refused: %s", self.key, alias, exc)
            return f"/cd {alias}: refused: {exc}"
        store = self.runtime.store
        record = store.session(self.key)
        store.save_session(SessionRecord(self.key, record.session_id if record else None,
                                         str(real), record.fingerprint if record else ""))
        log.info("scope %s: workspace is now %s (%s)", self.key, alias, real)
        return (f"{self.agent.name}: workspace is now {alias} ({real}); the next run starts a "
                "fresh session there")

    def _cmd_timeout(self, command: Command, message: Inbound) -> str:
        if not command.args:
            return f"{self.agent.name}: runs time out after {self._timeout_s() / 60:g} minutes"
        try:
            self.timeout_s = parse_timeout(command.args)
        except ValueError as exc:
            return f"/timeout: {exc}"
        self.runtime.store.set_scope_timeout(self.key, self.timeout_s)
        log.info("scope %s: run timeout set to %.0f s", self.key, self.timeout_s)
        return (f"{self.agent.name}: runs in this channel now time out after "
                f"{self.timeout_s / 60:g} minutes (from the next run)")

    def _cmd_release(self, command: Command, message: Inbound) -> str:
        if self.logic.release():
            return f"{self.agent.name}: released; mention me to talk again"
        return f"{self.agent.name}: not in a conversation here (nothing to release)"

    def _status_text(self) -> str:
        record = self.runtime.store.session(self.key)
        session = record.session_id if record and record.session_id else None
        lines = [f"{self.agent.name} in #{self.logic.channel}: {self.logic.state}",
                 f"session: {session or 'none (the next message starts one)'}",
                 f"workspace: {self._workspace()}",
                 f"engage: {self.rule.mode}"
                 + (" (in a conversation)" if self.logic.gate.active(self.logic.clock()) else ""),
                 f"run timeout: {self._timeout_s() / 60:g} min",
                 f"queued: {len(self.logic.pending)}"]
        if self.logic.current_run is not None:
            lines.append(f"current run: {self.logic.current_run}")
        return "\n".join(lines)

    def _reply(self, message: Inbound, text: str) -> None:
        """Answer the command ``message``: marked done and answered in one transaction."""
        self._notice(f"reply:{self.agent.name}:{message.message_id}", text, message.seq,
                     done=message)

    def _notice(self, key: str, text: str, after_seq: int = 0,
                done: Inbound | None = None) -> None:
        if done is not None:
            self.runtime.store.answer_command(self.key, done.message_id, key, text, after_seq)
        else:
            self.runtime.store.add_notice(self.key, key, text, after_seq)
        if self.runtime.supervisor is not None:
            send(self.runtime, self.delivery_id, Deliver(self.key))

    def _default_workspace(self) -> Path:
        """The agent's own workspace (the config always sets one; never the state dir)."""
        return self.agent.workspace or default_workspace(self.runtime.config.bridge,
                                                         self.agent.name)

    def _aliases(self) -> list[tuple[str, Path]]:
        """``default`` (the agent's workspace) and the configured aliases."""
        default = self._default_workspace()
        return [("default", default), *self.agent.workspaces]

    def _timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else self.agent.timeout_s

    def _workspace(self) -> Path:
        """This scope's workspace: the one chosen with ``/cd`` (saved in the session
        catalog) while it is still a configured alias, else the agent's workspace."""
        return self._workspace_of(self.runtime.store.session(self.key))

    def _workspace_of(self, record: SessionRecord | None) -> Path:
        """The workspace that the scope's session entry ``record`` names (see
        :meth:`_workspace`)."""
        default = self._default_workspace()
        if record is None or not record.workspace:
            return default
        for _, path in self.agent.workspaces:
            if os.path.realpath(path) == os.path.realpath(record.workspace):
                return path
        return default

    def _run_agent(self, record: SessionRecord | None) -> AgentSettings:
        """The agent's settings for a run of this scope (workspace, ``/timeout``), given
        its session entry ``record``.

        The workspace is resolved once, its real path is checked, and that real
        path is what the run gets: an alias (or a link on its way) swapped after
        the check cannot move the run outside the allowed roots. The agent's own
        workspace was checked at load; it is resolved once here too.
        """
        default = self._default_workspace()
        workspace = Path(os.path.realpath(default))
        chosen = self._workspace_of(record)
        if chosen != default:
            try:
                workspace = check_workspace(chosen, self.agent.workspace_roots)
            except WorkspaceError as exc:
                log.warning("scope %s: workspace %s is no longer allowed (%s); using the "
                            "agent's workspace", self.key, chosen, exc)
        return attrs.evolve(self.agent, workspace=workspace, timeout_s=self._timeout_s())

    def _session_for_run(self, run_id: str, agent: AgentSettings,
                         record: SessionRecord | None) -> tuple[SessionRecord | None, str]:
        """The session to resume (of the scope's entry ``record``) and the policy
        fingerprint of this run (``agent`` as :meth:`_run_agent` made it)."""
        assert agent.workspace is not None  # _run_agent resolved it
        fingerprint = policy_fingerprint(self.key, agent, agent.workspace)
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

    def _receipts_on(self) -> bool:
        """Whether members' messages get receipts here (config and platform)."""
        platform = self.runtime.platforms.get(self.scope.platform)
        return (self.runtime.config.bridge.receipts and platform is not None
                and platform.limits.reactions)

    def _accepted_receipt(self, run_id: str, messages: tuple[Inbound, ...]) -> None:
        """React to the messages a run takes (``receipt_accepted``); delivery does it."""
        self.receipted = (run_id, ())
        if not messages or not self._receipts_on():
            return
        refs = tuple(MessageRef.of(message) for message in messages)
        self.receipted = (run_id, refs)
        send(self.runtime, self.delivery_id,
             Receipt(run_id, refs, self.runtime.config.bridge.receipt_accepted))

    def _outcome_receipt(self, run_id: str, ok: bool) -> None:
        """Swap the accepted receipt of a run's messages for its outcome."""
        receipted, refs = self.receipted
        self.receipted = ("", ())
        if receipted != run_id or not refs:
            return
        bridge = self.runtime.config.bridge
        send(self.runtime, self.delivery_id,
             Receipt(run_id, refs, bridge.receipt_answered if ok else bridge.receipt_failed,
                     remove=bridge.receipt_accepted))

    def _start(self, action: StartRun) -> None:
        record = self.runtime.store.start_run(action.run_id, self.key,
                                              action.message_ids + action.context_ids)
        agent = self._run_agent(record)
        session, fingerprint = self._session_for_run(action.run_id, agent, record)
        self.requesters = frozenset(line.author_id for line in action.prompt.messages)
        log.info("scope %s: run %s starts with %d message(s) in %s", self.key, action.run_id,
                 len(action.prompt.messages), agent.workspace)
        self._accepted_receipt(action.run_id, action.messages)
        attachments = tuple((message.seq, attachment) for message in action.messages
                            for attachment in message.attachments)
        self.runner = Runner.start(self.runtime, self.actor_ref, self.key, self.delivery_id,
                                   action.run_id, action.prompt, agent, session,
                                   fingerprint, attachments,
                                   tuple(sorted(self.requesters | self.logic.admin_ids())))
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
