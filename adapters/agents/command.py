"""Agent kind ``command``: any program, prompt on stdin, answer on stdout."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import IO

from adapters.agents.childenv import child_env
from bridge.agent import AgentEvent, RunContext, RunDone, RunFailed
from bridge.prompt import Prompt
from bridge.statefiles import operator_umask

log = logging.getLogger(__name__)

#: Lines of stderr kept for the log when a run fails.
STDERR_TAIL_LINES = 20
#: Bytes read from a pipe at a time.
READ_CHUNK = 65536


class ProcessGroup:
    """A child process in its own process group, killable as a whole.

    Args:
        process: The started child (with ``start_new_session=True``).
        grace_s: Seconds between SIGTERM and SIGKILL in :meth:`stop`.
    """

    def __init__(self, process: subprocess.Popen[bytes], grace_s: float) -> None:
        self.process = process
        self.grace_s = grace_s
        self.stopped = threading.Event()

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL it after the grace period (non-blocking)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._signal(signal.SIGTERM)
        threading.Thread(target=self._kill_later, name="kill-later", daemon=True).start()

    def _kill_later(self) -> None:
        # SIGKILL the group even when the leader exited: a grandchild that
        # ignores SIGTERM would otherwise keep the output pipe open forever.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(self.grace_s)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


def read_bounded(stream: IO[bytes], limit: int) -> tuple[bytes, int]:
    """Read a stream to its end, keeping at most ``limit`` bytes.

    Returns:
        (the kept bytes, the total number of bytes read).
    """
    kept = bytearray()
    total = 0
    while chunk := stream.read(READ_CHUNK):
        total += len(chunk)
        if len(kept) < limit:
            kept.extend(chunk[: limit - len(kept)])
    return bytes(kept), total


class CommandRun:
    """One run of a configured command."""

    def __init__(self, argv: Sequence[str], prompt_text: str, workspace: os.PathLike[str],
                 grace_s: float, max_output_bytes: int) -> None:
        self._argv = list(argv)
        self._max = max_output_bytes
        workspace_path = os.fspath(workspace)
        os.makedirs(workspace_path, exist_ok=True)
        process = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=workspace_path, start_new_session=True, env=child_env({}),
            umask=operator_umask(),
        )
        self._group = ProcessGroup(process, grace_s)
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        threading.Thread(target=self._feed, args=(prompt_text,), daemon=True,
                         name="command-stdin").start()
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

    def _drain_stderr(self) -> None:
        stderr = self._group.process.stderr
        assert stderr is not None
        for raw in stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def events(self) -> Iterator[AgentEvent]:
        """Wait for the command; yield RunDone(stdout) on exit 0, else RunFailed."""
        process = self._group.process
        assert process.stdout is not None
        data, total = read_bounded(process.stdout, self._max)
        code = process.wait()
        self._stderr_thread.join(timeout=2)
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
                          self.max_output_bytes)
