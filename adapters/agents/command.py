"""Agent kind ``command``: any program, prompt on stdin, answer on stdout."""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from adapters.agents.childenv import child_env
from bridge.agent import AgentEvent, RunContext, RunDone, RunFailed
from bridge.procs import (
    MARKER_VAR,
    RunCgroup,
    find_run_processes,
    kill_run,
    run_marker,
    signal_run,
)
from bridge.prompt import Prompt
from bridge.statefiles import operator_umask

log = logging.getLogger(__name__)

#: Lines of stderr kept for the log when a run fails.
STDERR_TAIL_LINES = 20
#: Bytes read from a pipe at a time.
READ_CHUNK = 65536
#: Seconds to wait for the output pipes to close once the run's processes are killed
#: (only a process that escaped every kind of tracking keeps them open longer).
PIPE_CLOSE_WAIT_S = 2.0
#: Seconds between checks, during a grace period, whether a run's processes have exited.
GONE_CHECK_S = 0.02

#: Holds the child until the bridge has tracked it (cgroup, pid in the store): ``sh``
#: reads one go line from stdin (``read`` takes no byte past the newline from a
#: pipe; EOF: the bridge gave up, exit 125), then becomes the agent with ``exec``
#: (same pid, same group), whose stdin goes on with the prompt.
HOLD_SCRIPT = 'read -r _ || exit 125; exec "$@"'
#: The line that lets the held child go.
GO_LINE = b"go\n"
#: The shell that runs :data:`HOLD_SCRIPT`.
HOLD_SHELL = "/bin/sh"


def resolve_program(program: str, env: Mapping[str, str], cwd: str) -> str:
    """Check that ``program`` can be started as :class:`subprocess.Popen` would find it.

    Args:
        program: A path (with ``/``, relative to ``cwd``) or a name looked up on
            the ``PATH`` of ``env``.
        env: The child's environment.
        cwd: The child's working directory.

    Returns:
        The program's path.

    Raises:
        FileNotFoundError: when there is no such program.
        PermissionError: when it is not an executable file.
    """
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return path
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


def spawn(argv: Sequence[str], *, cwd: str, env: Mapping[str, str], run_id: str = "",
          on_spawn: Callable[[int], None] | None = None,
          ) -> tuple[subprocess.Popen[bytes], str, RunCgroup | None]:
    """Start ``argv`` in a new session, tracked before it can run anything.

    The child starts as :data:`HOLD_SCRIPT`, which waits for a go line on
    stdin. Meanwhile the bridge moves it into a cgroup of its own (where one can
    be made, see :mod:`bridge.procs`) and calls ``on_spawn(pid)``; then it
    sends the go line and the child ``exec``s ``argv``. The child's environment
    carries the run's marker (:data:`bridge.procs.MARKER_VAR`). stdin, stdout
    and stderr are pipes.

    Args:
        argv: Program and arguments.
        cwd: Working directory.
        env: The child's environment (the marker is added).
        run_id: The run (for the marker); empty: a marker of its own.
        on_spawn: Called with the pid before the child runs anything.

    Returns:
        (the process, its marker, its cgroup or None).

    Raises:
        OSError: when the program cannot be started (not found, not executable).
        Exception: whatever ``on_spawn`` raises (the child is killed first).
    """
    resolve_program(argv[0], env, cwd)
    marker = run_marker(run_id or "run")
    process = subprocess.Popen(
        [HOLD_SHELL, "-c", HOLD_SCRIPT, "bridge-run", *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=cwd, env={**env, MARKER_VAR: marker}, start_new_session=True,
        umask=operator_umask(),
    )
    cgroup = RunCgroup.create(marker)
    if cgroup is not None and not cgroup.add(process.pid):
        cgroup.remove(0)
        cgroup = None
    try:
        if on_spawn is not None:
            on_spawn(process.pid)
        assert process.stdin is not None
        process.stdin.write(GO_LINE)
        process.stdin.flush()
    except BaseException:
        process.kill()
        process.wait()
        if cgroup is not None:
            cgroup.remove()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        raise
    return process, marker, cgroup


class ProcessGroup:
    """A child process and everything it starts, killable as a whole.

    What the child starts is found by its cgroup, its marker, its process group
    and the parent chain (see :mod:`bridge.procs`), so that a ``setsid`` or a
    double fork does not outlive the run.

    Every process gets SIGTERM and the grace period before SIGKILL, also what
    the child left running when it exited: a program cleans up on SIGTERM (a
    shell's EXIT trap removes its lock file, as ``pyenv rehash`` from a login
    shell's ``~/.bashrc`` does; ``git`` removes ``index.lock``), while a
    SIGKILL leaves such files behind, and a stale lock can stall every later
    shell of the user (Claude Code's Bash tool waited 60 s on each command).

    Args:
        process: The started child (with ``start_new_session=True``).
        grace_s: Seconds between SIGTERM and SIGKILL in :meth:`stop`.
        marker: The run's marker in the child's environment (None: not marked).
        cgroup: The run's cgroup (None: no cgroup).
    """

    def __init__(self, process: subprocess.Popen[bytes], grace_s: float,
                 marker: str | None = None, cgroup: RunCgroup | None = None) -> None:
        self.process = process
        self.grace_s = grace_s
        self.marker = marker
        self.cgroup = cgroup
        self.stopped = threading.Event()

    def stop(self) -> None:
        """SIGTERM the run's processes, then SIGKILL them after the grace period (non-blocking)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._signal(signal.SIGTERM)
        threading.Thread(target=self._kill_later, name="kill-later", daemon=True).start()

    def _kill_later(self) -> None:
        # SIGKILL them even when the leader exited: a grandchild that
        # ignores SIGTERM would otherwise keep the output pipe open forever.
        # Until then each gets the grace period, not just the leader.
        self.wait_gone(self.grace_s)
        self.kill_all()

    def end(self) -> int:
        """End what is left of the run: SIGTERM, up to the grace period to exit, then SIGKILL.

        Used when the leader exited or the run is over (blocks up to ``grace_s``
        seconds, only while something is left). After :meth:`stop` no second
        SIGTERM is sent; what is left gets the grace period.

        Returns:
            The number of processes that were still running.
        """
        left = len(self.alive()) if self.stopped.is_set() else self._signal(signal.SIGTERM)
        if left:
            self.wait_gone(self.grace_s)
        self.kill_all()
        return left

    def alive(self) -> set[int]:
        """Pids of the run's live processes (zombies left out)."""
        pid = self.process.pid
        pids = find_run_processes(self.marker, pgid=pid, leader=pid)
        if self.cgroup is not None:
            pids |= self.cgroup.pids()
        return pids

    def wait_gone(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until no process of the run is left.

        Returns:
            True when none is left.
        """
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(GONE_CHECK_S)
        return True

    def kill_all(self) -> int:
        """SIGKILL every process of the run now (the leader too), then remove its cgroup.

        Used at the end of :meth:`stop` and :meth:`end`, once the grace period is over.

        Returns:
            The number of processes killed (outside the cgroup).
        """
        pid = self.process.pid
        killed = kill_run(self.marker, pgid=pid, leader=pid, cgroup=self.cgroup)
        if self.cgroup is not None:
            self.cgroup.remove()
        return killed

    def _signal(self, sig: signal.Signals) -> int:
        pid = self.process.pid
        return signal_run(sig, self.marker, pgid=pid, leader=pid, cgroup=self.cgroup)


class CommandRun:
    """One run of a configured command.

    Args:
        argv: Program and arguments.
        prompt_text: Written to stdin, which is then closed.
        workspace: Working directory (created if missing).
        grace_s: Seconds between SIGTERM and SIGKILL.
        max_output_bytes: Bytes of stdout kept.
        run_id: The run (its marker in the child's environment).
        on_spawn: Called with the child's pid before it runs anything.

    Raises:
        OSError: when the program cannot be started.
    """

    def __init__(self, argv: Sequence[str], prompt_text: str, workspace: os.PathLike[str],
                 grace_s: float, max_output_bytes: int, run_id: str = "",
                 on_spawn: Callable[[int], None] | None = None) -> None:
        self._argv = list(argv)
        self._max = max_output_bytes
        workspace_path = os.fspath(workspace)
        os.makedirs(workspace_path, exist_ok=True)
        process, marker, cgroup = spawn(self._argv, cwd=workspace_path, env=child_env({}),
                                        run_id=run_id, on_spawn=on_spawn)
        self._group = ProcessGroup(process, grace_s, marker, cgroup)
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._out = bytearray()
        self._out_total = 0
        self._out_lock = threading.Lock()
        threading.Thread(target=self._feed, args=(prompt_text,), daemon=True,
                         name="command-stdin").start()
        self._stdout_thread = threading.Thread(target=self._drain_stdout, daemon=True,
                                               name="command-stdout")
        self._stdout_thread.start()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True,
                                               name="command-stderr")
        self._stderr_thread.start()

    def _feed(self, text: str) -> None:
        stdin = self._group.process.stdin
        assert stdin is not None
        try:
            stdin.write(text.encode("utf-8", "replace"))
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _drain_stdout(self) -> None:
        stdout = self._group.process.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(stdout.fileno(), READ_CHUNK):
                with self._out_lock:
                    self._out_total += len(chunk)
                    if len(self._out) < self._max:
                        self._out.extend(chunk[: self._max - len(self._out)])

    def _drain_stderr(self) -> None:
        stderr = self._group.process.stderr
        assert stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for raw in stderr:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def events(self) -> Iterator[AgentEvent]:
        """Wait for the command; yield RunDone(stdout) on exit 0, else RunFailed.

        When the command exits, whatever it left running (in its group, its
        cgroup, or carrying its marker) is ended (SIGTERM, SIGKILL after the
        grace period), so a detached child neither outlives the run nor holds
        its output open.
        """
        process = self._group.process
        code = process.wait()
        left = self._group.end()
        if left:
            log.info("command %s left %d process(es) running; ended them",
                     os.path.basename(self._argv[0]), left)
        self._stdout_thread.join(timeout=PIPE_CLOSE_WAIT_S)
        self._stderr_thread.join(timeout=PIPE_CLOSE_WAIT_S)
        with self._out_lock:
            data, total = bytes(self._out), self._out_total
        if self._group.stopped.is_set():
            yield RunFailed("stopped")
            return
        if code != 0:
            name = os.path.basename(self._argv[0])
            why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            tail = " | ".join(self._stderr)
            log.warning("command %s %s; stderr tail: %s", name, why, tail or "(empty)")
            last = self._stderr[-1] if self._stderr else ""
            yield RunFailed(f"{name} {why}" + (f": {last[:200]}" if last else ""))
            return
        answer = data.decode("utf-8", "replace")
        if total > len(data):
            answer += f"\n\n[output cut: {total - len(data)} more bytes not shown]"
        yield RunDone(answer)

    @property
    def pid(self) -> int | None:
        """The command's pid (the leader of its process group)."""
        return self._group.process.pid

    def stop(self) -> None:
        """Kill the command's process group (SIGTERM, then SIGKILL after the grace period)."""
        self._group.stop()


class CommandAgent:
    """Runs ``argv`` per run: prompt on stdin, answer on stdout, non-zero exit is a failure.

    Args:
        argv: Program and arguments.
        stop_grace_s: Seconds between SIGTERM and SIGKILL.
        max_output_bytes: Bytes of stdout kept; the rest is cut with a note.
    """

    def __init__(self, argv: Sequence[str], stop_grace_s: float = 3.0,
                 max_output_bytes: int = 1_000_000) -> None:
        if not argv:
            raise ValueError("command agent needs a non-empty argv")
        self.argv = tuple(argv)
        self.stop_grace_s = stop_grace_s
        self.max_output_bytes = max_output_bytes

    def start(self, prompt: Prompt, context: RunContext) -> CommandRun:
        """Start the command in the run's workspace.

        Raises:
            OSError: when the program cannot be started (not found, not executable).
        """
        return CommandRun(self.argv, prompt.render(), context.workspace, self.stop_grace_s,
                          self.max_output_bytes, context.run_id, context.on_spawn)
