"""Shared machinery of the agents that print JSON lines (codex, claude).

:class:`JsonlRun` starts the CLI in its own process group with a minimal
environment, feeds the prompt on stdin and closes it, reads stdout line by line
(each line bounded), hands every JSON object to a :class:`Translator` and yields
the typed events it returns. It ends the run with one clear ``RunFailed`` line
when the child writes something that is not JSON, exits without a terminal
event, or stays silent past the idle timeout; the stderr tail then goes to the
log. ``stop()`` kills the run's processes (SIGTERM, SIGKILL after the grace):
the child and everything it started, in its group or not (see
:class:`adapters.agents.command.ProcessGroup`); so does the end of the run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from adapters.agents.command import STDERR_TAIL_LINES, ProcessGroup, spawn
from bridge.agent import AgentEvent, RunDone, RunFailed, SessionStarted
from bridge.secrets import redact

log = logging.getLogger(__name__)

#: A stdout line longer than this (bytes) is skipped with a warning (it cannot be parsed cut).
MAX_LINE_BYTES = 4_000_000
#: Characters kept of one stderr line.
STDERR_LINE_CHARS = 500
#: Seconds between checks, while waiting for output, that the child still runs.
EXIT_CHECK_S = 0.5
class Translator(Protocol):
    """Turns the CLI's JSON objects into typed events (pure, no I/O)."""

    def feed(self, event: Mapping[str, Any]) -> list[AgentEvent]:
        """Return the events for one JSON object (unknown types give none)."""
        ...

    @property
    def session_id(self) -> str | None:
        """The session/thread id seen so far, if any."""
        ...


def shorten(text: str, width: int = 80) -> str:
    """One line of at most ``width`` characters: whitespace collapsed, cut with ``…``."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def short_path(path: str, cwd: Path | None = None, width: int = 60) -> str:
    """A file path for a status line: relative to ``cwd`` when inside it, tail-cut to ``width``."""
    if cwd is not None:
        with contextlib.suppress(ValueError):
            path = str(Path(path).relative_to(cwd))
    if len(path) <= width:
        return path
    return "…" + path[-(width - 1):]


def read_line(stream: IO[bytes], limit: int) -> tuple[bytes, bool]:
    """Read one line of at most ``limit`` bytes; the rest of a longer line is discarded.

    Returns:
        (the line without its newline, True when it was cut). ``(b"", False)`` at EOF.
    """
    line = stream.readline(limit + 1)
    if not line:
        return b"", False
    if line.endswith(b"\n"):
        return line[:-1], False
    if len(line) <= limit:
        return line, False  # last line without a newline
    while True:  # skip the rest of the oversize line
        rest = stream.readline(1 << 16)
        if not rest or rest.endswith(b"\n"):
            return line[:limit], True


class JsonlRun:
    """One run of a JSON-lines CLI.

    Args:
        name: Short name for messages (``codex``, ``claude``).
        argv: Program and arguments.
        prompt_text: Written to stdin, which is then closed.
        cwd: Working directory (created if missing).
        env: The child's complete environment.
        translator: Turns JSON objects into events.
        grace_s: Seconds between SIGTERM and SIGKILL.
        idle_timeout_s: Seconds of silence (no stdout or stderr) that fail the run.
        max_answer_chars: Characters of the answer kept; the rest is cut with a note.
        run_id: The run (its marker in the child's environment).
        on_spawn: Called with the child's pid before it runs anything.

    Raises:
        OSError: when the program cannot be started.
    """

    def __init__(self, name: str, argv: Sequence[str], prompt_text: str, cwd: Path,
                 env: Mapping[str, str], translator: Translator, *, grace_s: float,
                 idle_timeout_s: float, max_answer_chars: int, run_id: str = "",
                 on_spawn: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.translator = translator
        self.idle_timeout_s = idle_timeout_s
        self.max_answer_chars = max_answer_chars
        cwd.mkdir(parents=True, exist_ok=True)
        process, marker, cgroup = spawn(self.argv, cwd=str(cwd), env=dict(env), run_id=run_id,
                                        on_spawn=on_spawn)
        self.group = ProcessGroup(process, grace_s, marker, cgroup)
        self._leftovers_killed = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._lines: queue.Queue[tuple[bytes, bool] | None] = queue.Queue()
        self._activity = time.monotonic()
        self._stderr_done = threading.Event()
        threading.Thread(target=self._feed, args=(prompt_text,), daemon=True,
                         name=f"{name}-stdin").start()
        threading.Thread(target=self._read_stdout, daemon=True, name=f"{name}-stdout").start()
        threading.Thread(target=self._read_stderr, daemon=True, name=f"{name}-stderr").start()

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.group.process.pid

    def _feed(self, text: str) -> None:
        stdin = self.group.process.stdin
        assert stdin is not None
        try:
            stdin.write(text.encode("utf-8"))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read_stdout(self) -> None:
        stdout = self.group.process.stdout
        assert stdout is not None
        try:
            while True:
                line, cut = read_line(stdout, MAX_LINE_BYTES)
                if not line and not cut:
                    break
                self._activity = time.monotonic()
                self._lines.put((line, cut))
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def _read_stderr(self) -> None:
        stderr = self.group.process.stderr
        assert stderr is not None
        try:
            while True:
                line, _ = read_line(stderr, 4 * STDERR_LINE_CHARS)
                if not line and not _:
                    break
                self._activity = time.monotonic()
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.stderr_tail.append(text[:STDERR_LINE_CHARS])
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()

    def _next_line(self) -> tuple[bytes, bool] | str | None:
        """The next stdout line, None at EOF, or ``"idle"`` after the idle timeout.

        Once the child has exited, what it left running is ended (SIGTERM, then
        SIGKILL after the grace period), so that a detached process holding
        stdout open cannot keep the run waiting.
        """
        while True:
            remaining = self._activity + self.idle_timeout_s - time.monotonic()
            if remaining <= 0:
                return "idle"
            try:
                return self._lines.get(timeout=min(remaining, EXIT_CHECK_S))
            except queue.Empty:
                if not self._leftovers_killed and self.group.process.poll() is not None:
                    self._leftovers_killed = True
                    self.group.end()
                continue  # stderr may have moved the deadline; re-check

    def events(self) -> Iterator[AgentEvent]:
        """Yield translated events until one terminal event (see the module docstring)."""
        try:
            yield from self._events()
        finally:
            self._reap()

    def _events(self) -> Iterator[AgentEvent]:
        while True:
            item = self._next_line()
            if item == "idle":
                self.group.stop()
                yield self._failed(f"{self.name} wrote nothing for {self.idle_timeout_s:g} s; "
                                   f"stopped")
                return
            if item is None:
                yield self._ended()
                return
            assert isinstance(item, tuple)
            line, cut = item
            if cut:
                log.warning("%s: skipped an output line over %d bytes", self.name, MAX_LINE_BYTES)
                continue
            if not line.strip():
                continue
            # Known secrets go before anything reads the line: titles and reasons are
            # shortened later, which could leave half a secret that redaction misses.
            text = redact(line.decode("utf-8", "replace"))
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                self.group.stop()
                shown = shorten(text, 80)
                yield self._failed(f"{self.name} wrote a line that is not a JSON object: "
                                   f"{shown!r}")
                return
            for event in self.translator.feed(value):
                if isinstance(event, RunDone):
                    event = self._cut_answer(event)
                yield event
                if isinstance(event, RunDone | RunFailed):
                    if isinstance(event, RunFailed):
                        self._log_tail(event.reason)
                    return

    def _cut_answer(self, event: RunDone) -> RunDone:
        if len(event.answer) <= self.max_answer_chars:
            return event
        more = len(event.answer) - self.max_answer_chars
        return RunDone(event.answer[: self.max_answer_chars]
                       + f"\n\n[answer cut: {more} more characters not shown]", event.session_id)

    def _ended(self) -> RunFailed:
        """The failure for a child whose stdout ended without a terminal event."""
        process = self.group.process
        try:
            code: int | None = process.wait(timeout=max(self.group.grace_s, 1.0))
        except subprocess.TimeoutExpired:
            code = None
        self._stderr_done.wait(timeout=2)
        if self.group.stopped.is_set():
            return self._failed("stopped")
        if code is None:
            why = "closed its output"
        elif code < 0:
            why = f"was killed by signal {-code}"
        else:
            why = f"exited with status {code}"
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        return self._failed(f"{self.name} {why} before finishing"
                            + (f": {shorten(last, 200)}" if last else ""))

    def _failed(self, reason: str) -> RunFailed:
        self._log_tail(reason)
        return RunFailed(reason, self.translator.session_id)

    def _log_tail(self, reason: str) -> None:
        self._stderr_done.wait(timeout=0.5 if self.group.process.poll() is not None else 0)
        tail = " | ".join(self.stderr_tail)
        log.warning("%s run failed: %s; stderr tail: %s", self.name, reason, tail or "(empty)")

    def _reap(self) -> None:
        """After the run: give the child the grace period to exit, then end what is left.

        Ending is SIGTERM, up to the grace period, then SIGKILL (see
        :class:`adapters.agents.command.ProcessGroup`).

        What is left: the child itself, or anything it started (in its group,
        its cgroup, carrying its marker, or below it).
        """
        process = self.group.process
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.group.grace_s)
        left = self.group.end()
        if left:
            log.info("%s run left %d process(es) running; ended them", self.name, left)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.group.grace_s + 2)

    def stop(self) -> None:
        """Kill the run's processes (SIGTERM, then SIGKILL after the grace period)."""
        self.group.stop()


def session_event(session_id: str | None, known: str | None) -> list[AgentEvent]:
    """``[SessionStarted(session_id)]`` the first time an id shows up, else ``[]``."""
    if session_id and session_id != known:
        return [SessionStarted(session_id)]
    return []
