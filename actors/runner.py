"""Runner: one per active run; owns the agent run and forwards its events."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pykka

from actors.credentials import access_of, credentials_id
from actors.messages import (
    AgentEventMsg,
    AgentStarted,
    Deliver,
    Progress,
    Route,
    RunActive,
    RunFinished,
    StatusTick,
    StopRun,
)
from actors.pool import DEFAULT_POOL_SIZE, ActorPool, PooledActor
from actors.runtime import Runtime, send
from bridge.agent import (
    TERMINAL_EVENTS,
    AgentRun,
    RunContext,
    RunDone,
    RunFailed,
    SessionStarted,
    ToolStarted,
)
from bridge.board import RunRow
from bridge.config import AgentSettings
from bridge.config_reader import default_workspace
from bridge.errors import ChatError, TooLarge
from bridge.model import Attachment, ScopeKey
from bridge.procs import start_ticks
from bridge.prompt import Outbox, Prompt, PromptFile
from bridge.run_files import (
    BRIDGE_DIR,
    MAX_UPLOADS,
    collect_outbox,
    prepare_inbox,
    prepare_outbox,
    safe_file_name,
    staging_dir,
    write_staged,
)
from bridge.run_status import RunStatus, footer_line, shorten
from bridge.secrets import redact
from bridge.store import SessionRecord, StoreError

log = logging.getLogger(__name__)

#: A run shows a status message once it reports a step, or (agents with a process)
#: after this many seconds.
STATUS_AFTER_S = 3.0
#: Seconds between status refreshes while the agent is quiet.
STATUS_TICK_S = 5.0
#: The name of the whole answer uploaded when it is too long for the chat.
ANSWER_FILE = "answer.md"
#: Longest notice about files left out (characters).
NOTICE_CHARS = 1500


#: The workers that run the runners' turns (started on demand, retired when idle).
RUNNER_POOL = ActorPool(DEFAULT_POOL_SIZE, name="runner-pool")


class Runner(PooledActor):
    """Runs one prompt through the agent; supervised by its scope, not restarted.

    A pooled actor (:mod:`actors.pool`) on a pool of its own
    (:data:`RUNNER_POOL`): a run starts no thread. The blocking parts of a run
    (fetching the members' files, starting the agent's process, then reading
    its events) run on a worker of that pool lent for the run's length
    (:meth:`actors.pool.ActorPool.run_blocking`), so the runners' turns never
    wait behind them. That worker tells this actor ``AgentStarted``, then
    each event; while it starts the run it also records the agent's pid (in
    the store, and ``pid_recorded``, which only it reads) and queues the
    notice of files left out; the actor's other state changes on its turns.
    The timeout counts from the agent's start. A ``StopRun`` that comes while
    the files are fetched keeps the agent from starting, a later one stops it
    as soon as it is handed over.
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

    Where the platform takes files (:mod:`bridge.run_files`), the members' files
    are fetched into the workspace before the agent starts and named in its
    prompt (a file over ``max_file_bytes``, or one that cannot be fetched, is
    named in a notice instead and the run goes on); the run's outbox folder is
    made empty and named in the prompt; at the end its files are staged and put
    in the outbox after the answer, and an answer of more than
    ``answer_file_after_pieces`` pieces is posted as its first piece with the
    whole answer uploaded as ``answer.md``.

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
        attachments: The files of the messages it answers: (the message's seq, the file).
        stoppers: Member ids who may stop the run from its status (requesters, admins).
    """

    actor_pool = RUNNER_POOL

    def __init__(self, runtime: Runtime, scope: pykka.ActorRef[Any], scope_key: str,
                 delivery_id: str, run_id: str, prompt: Prompt, agent: AgentSettings,
                 session: SessionRecord | None = None, fingerprint: str = "",
                 attachments: Sequence[tuple[int, Attachment]] = (),
                 stoppers: tuple[str, ...] = ()) -> None:
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
        self.status = RunStatus(agent.name, self.started_at, stoppers=stoppers,
                                policy=fingerprint)
        self.status_shown = False
        key = ScopeKey.parse(scope_key)
        self.connection = key.connection
        self.space = key.space
        #: The scope's platform renders the answer into pieces.
        self.renderer = runtime.platforms[key.platform]
        self.attachments = tuple(attachments)
        #: Files fetched and sent where the platform takes them.
        self.files_on = self.renderer.limits.files
        self.pid_recorded = False
        #: Pending timer handles (the timeout, the next status tick).
        self.timer_handles: dict[str, int] = {}
        #: Guards the hand-over of the started agent between the lent worker and the
        #: actor's turns (``started``, ``cut_off``, ``stop_asked``), so no agent
        #: outlives its runner.
        self.start_lock = threading.Lock()
        self.started: AgentRun | None = None
        #: The runner stopped (``on_stop``, ``on_failure``): start nothing.
        self.cut_off = False
        #: A ``StopRun`` came before the agent was handed over: start nothing.
        self.stop_asked = False
        #: The last seq of the messages the run answers (its notices and answer go after).
        self.after_seq = max((line.seq for line in prompt.messages), default=0)

    def on_start(self) -> None:
        """Start the run on a lent worker: the files, the agent, the reading of its events.

        When no worker can be lent (the runner pool is shut down: the process
        stops), the run fails at once and its scope is told.
        """
        self._identity(RunActive(self.space, +1))
        try:
            self.turn_pool.run_blocking(self._start_and_read)
        except RuntimeError as exc:
            self._finish(f"⚠ {self.agent.name}: run failed: {exc}", ok=False, reason=str(exc))

    def _start_and_read(self) -> None:
        """On the lent worker: fetch the files, start the agent, hand it to the actor,
        then read its events until they end.

        Any error before the hand-over ends the run as failed (an agent already
        started is stopped first, in :meth:`_start_agent`), so no run is left
        without an end.
        """
        try:
            run = self._start_agent()
        except Exception as exc:  # any start-up error must end the run, not hang the scope
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("run %s: could not start agent %s: %s", self.run_id, self.agent.name, why)
            self._tell(AgentEventMsg(RunFailed(f"could not start agent {self.agent.name}: {why}")))
            return
        if run is None:
            return
        with self.start_lock:
            cut_off = self.cut_off
            if not cut_off:
                self.started = run
        if cut_off or not self._tell(AgentStarted(run)):
            run.stop()  # the runner stopped meanwhile: no agent may run unwatched
            return
        self._read(run)

    def _start_agent(self) -> AgentRun | None:
        """Fetch the members' files and start the agent (on the lent worker); None when
        the run was stopped first (a ``StopRun`` is answered with a failed run, a
        stopped runner needs nothing).

        Raises:
            Exception: whatever the fetch, the agent's start or the pid's record raised.
        """
        prompt = self.prompt
        images: tuple[Path, ...] = ()
        if self._stopped_before_start():
            return None
        if self.files_on:
            prompt, images = self._prepare_files(prompt)
        if self._stopped_before_start():
            return None
        context = RunContext(self.run_id, self.scope_key, self.workspace, self.session_id,
                             images=images, on_spawn=self._spawned)
        assert self.runtime.agents is not None
        run = self.runtime.agents(self.agent).start(prompt, context)
        try:
            if run.pid is not None and not self.pid_recorded:
                self._spawned(run.pid)
        except BaseException:
            run.stop()
            raise
        return run

    def _stopped_before_start(self) -> bool:
        """Whether the run was stopped before its agent started (on the lent worker); a
        ``StopRun`` is answered with a failed run, a stopped runner needs nothing."""
        with self.start_lock:
            cut_off, stop_asked = self.cut_off, self.stop_asked
        if stop_asked and not cut_off:
            self._tell(AgentEventMsg(RunFailed("stopped before the agent started")))
        return cut_off or stop_asked

    def _tell(self, message: Any) -> bool:
        """Tell this runner ``message`` (from the lent worker); False when it is gone."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            return False
        return True

    def _started(self, run: AgentRun) -> None:
        """The agent is running: keep it, stop it if asked meanwhile, arm the timers."""
        self.run = run
        if self.finished:
            run.stop()
            return
        if self.stop_reason:
            log.info("run %s: stopping (%s)", self.run_id, self.stop_reason)
            run.stop()
            return
        self._schedule("timeout", self.agent.timeout_s,
                       StopRun(f"timed out after {self.agent.timeout_s:.0f} s"))
        self._schedule("status", STATUS_AFTER_S, StatusTick())

    def _stop_agent(self) -> None:
        """Stop the agent, started or starting (a start still under way stops it itself)."""
        with self.start_lock:
            self.cut_off = True
            run = self.started
        if run is not None:
            run.stop()

    def _prepare_files(self, prompt: Prompt) -> tuple[Prompt, tuple[Path, ...]]:
        """Fetch the members' files, make the outbox folder, name both in ``prompt``
        (on the lent worker).

        Returns:
            The prompt that names them, and the fetched pictures (absolute paths), for
            agents that take images.
        """
        limit = self.runtime.config.bridge.max_file_bytes
        files = self._fetch_files(limit) if self.attachments else ()
        outbox = None
        try:
            folder = prepare_outbox(self.workspace, self.run_id)
            outbox = Outbox(str(folder.relative_to(self.workspace)), MAX_UPLOADS, limit)
        except OSError as exc:
            log.warning("run %s: no outbox folder for files (%s)", self.run_id, exc)
        prompt = attrs.evolve(prompt, files=files, outbox=outbox)
        return prompt, tuple(self.workspace / file.path for file in files if file.image)

    def _fetch_files(self, limit: int) -> tuple[PromptFile, ...]:
        """Fetch the members' files into the run's inbox folder; a notice names those left out."""
        fetched: list[PromptFile] = []
        refused: list[str] = []
        taken: set[str] = set()
        try:
            folder = prepare_inbox(self.workspace, self.run_id)
            client = self.renderer.client(access_of(self.runtime, self.connection))
        except (ChatError, OSError) as exc:
            log.warning("run %s: members' files not fetched: %s", self.run_id, exc)
            refused = [f"{safe_file_name(a.name)!r} (could not be fetched: {exc})"
                       for _, a in self.attachments]
            self._files_left_out(refused)
            return ()
        for seq, attachment in self.attachments:
            name = safe_file_name(attachment.name, taken)
            if attachment.size_bytes > limit:
                refused.append(f"{name!r} ({attachment.size_bytes:,} bytes, over the limit of "
                               f"{limit:,} bytes)")
                continue
            try:
                path = client.fetch(attachment, folder / name, max_bytes=limit)
                size = path.stat().st_size
            except TooLarge:
                refused.append(f"{name!r} (over the limit of {limit:,} bytes)")
                continue
            except (ChatError, OSError) as exc:
                log.warning("run %s: file %r not fetched: %s", self.run_id, name, exc)
                refused.append(f"{name!r} (could not be fetched: {exc})")
                continue
            taken.add(name)
            fetched.append(PromptFile(seq, f"{BRIDGE_DIR}/inbox/{self.run_id}/{name}", size,
                                      attachment.mime_type))
        self._files_left_out(refused)
        return tuple(fetched)

    def _files_left_out(self, refused: list[str]) -> None:
        """Queue one notice naming the members' files the agent does not get (if any)."""
        if not refused:
            return
        log.info("run %s: %d member file(s) left out", self.run_id, len(refused))
        try:
            self.runtime.store.add_notice(
                self.scope_key, f"{self.run_id}:files-in",
                shorten(f"⚠ {self.agent.name}: not given to the agent: {'; '.join(refused)}",
                        NOTICE_CHARS), self.after_seq)
        except StoreError as exc:
            log.error("run %s: could not queue the notice of the files left out: %s",
                      self.run_id, exc)
            return
        self._to_delivery(Deliver(self.scope_key))

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
        """Tell each of the agent's events (on the lent worker) until it ends; an agent
        whose events break off (it raised, or ended without a result) is stopped and
        the run fails."""
        ended = False
        try:
            for event in run.events():
                if not self._tell(AgentEventMsg(event)):
                    run.stop()
                    return
                ended = ended or isinstance(event, TERMINAL_EVENTS)
        except Exception as exc:  # an agent bug must still end the run
            log.exception("run %s: agent raised", self.run_id)
            run.stop()
            self._tell(AgentEventMsg(RunFailed(f"agent error: {exc}")))
            return
        if not ended:
            run.stop()
            self._tell(AgentEventMsg(RunFailed("the agent ended without a result")))

    def on_receive(self, message: Any) -> None:
        """Handle ``AgentStarted``, ``AgentEventMsg``, ``StatusTick`` and ``StopRun``."""
        if isinstance(message, StopRun):
            if self.finished:
                return
            self.stop_reason = message.reason
            if self.run is not None:
                log.info("run %s: stopping (%s)", self.run_id, message.reason)
                self.run.stop()
            else:
                log.info("run %s: to stop once its agent is started (%s)", self.run_id,
                         message.reason)
                with self.start_lock:
                    self.stop_asked = True
        elif isinstance(message, AgentStarted):
            self._started(message.run)
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
        full = text
        cap = self.runtime.config.bridge.max_answer_chars
        if len(text) > cap:
            text = f"{text[:cap]}\n\n[answer cut: {len(text) - cap:,} more characters not shown]"
        footer = ""
        if self.status_shown or self.status.usage:
            footer = footer_line(self.status.view(self.run_id, now, final=True))
        pieces = self.renderer.render_answer(text, footer)
        files: list[Path] = []
        if self.files_on:
            pieces, files = self._files_out(full, text, footer, pieces)
        store = self.runtime.store
        saved = True
        try:
            store.finish_run(self.run_id, "done" if ok else "failed", pieces,
                             after_seq=self.after_seq, files=files)
        except StoreError as exc:
            saved = False
            log.error("run %s: could not save its answer: %s", self.run_id, exc)
            pieces = [f"⚠ {self.agent.name}: the answer could not be saved (state store "
                      "error); please send your message again."]
            try:
                store.finish_run(self.run_id, "failed", pieces, after_seq=self.after_seq)
            except StoreError as again:
                log.error("run %s: could not record the failure either (%s); the run stays "
                          "open and runs again at the next start", self.run_id, again)
                pieces = []
        if pieces:
            self._to_delivery(Deliver(self.scope_key))
        return saved

    def _files_out(self, full: str, text: str, footer: str,
                   pieces: list[str]) -> tuple[list[str], list[Path]]:
        """The pieces and the files to upload after them (where the platform takes files).

        An answer of more than ``answer_file_after_pieces`` pieces becomes its first
        piece (saying that the whole answer is attached) and ``answer.md`` (the whole
        answer, not cut at ``max_answer_chars``); then the files the agent left in its
        outbox folder, staged, in name order. What is left out (too large, too many,
        not a regular file) is named in a notice piece after the answer.
        """
        bridge = self.runtime.config.bridge
        staging = staging_dir(bridge.state_dir, self.run_id)
        files: list[Path] = []
        notes: list[str] = []
        if len(pieces) > bridge.answer_file_after_pieces:
            content = full.encode("utf-8")[:bridge.max_file_bytes].decode(
                "utf-8", "ignore").encode("utf-8")
            try:
                files.append(write_staged(staging, ANSWER_FILE, content))
                pieces = self._first_piece(text, footer)
            except OSError as exc:
                log.warning("run %s: the answer could not be staged as %s (%s); posting it "
                            "in pieces", self.run_id, ANSWER_FILE, exc)
        try:
            collected = collect_outbox(self.workspace, self.run_id, staging,
                                       max_bytes=bridge.max_file_bytes,
                                       taken={path.name for path in files})
            files += collected.files
            notes += collected.refused
        except OSError as exc:
            log.warning("run %s: the outbox folder's files could not be staged: %s",
                        self.run_id, exc)
            notes.append(f"the files could not be staged ({exc.strerror})")
        if notes:
            log.info("run %s: outbox: %s", self.run_id, "; ".join(notes))
            notice = shorten(f"⚠ {self.agent.name}: files not sent: {'; '.join(notes)}",
                             NOTICE_CHARS)
            pieces = [*pieces, *self.renderer.render_answer(notice, "")]
        return pieces, files

    def _first_piece(self, text: str, footer: str) -> list[str]:
        """One piece: the answer's beginning, cut at a line where it can be, and a line
        saying the whole answer is attached (the platform's renderer decides the fit)."""
        note = f"… (the full answer is attached as {ANSWER_FILE})"
        cut = max(100, self.renderer.limits.text_chars - len(note) - len(footer) - 20)
        first: list[str] = []
        for _ in range(12):
            head = text[:cut]
            line_end = head.rfind("\n")
            if line_end > cut // 2:
                head = head[:line_end]
            first = self.renderer.render_answer(f"{head.rstrip()}\n\n{note}", footer)
            if len(first) == 1:
                return first
            cut = int(cut * 0.7)
        return first[:1]

    def _to_delivery(self, message: Any) -> None:
        send(self.runtime, self.delivery_id, message)

    def _identity(self, message: RunActive) -> None:
        send(self.runtime, credentials_id(self.connection), message)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Kill the agent and report the run as failed (in the channel and to the scope)."""
        self._stop_agent()
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
        self._stop_agent()
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
