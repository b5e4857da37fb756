"""Tests of the echo and command agents (real child processes for the command agent)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.agents.command import CommandAgent, CommandRun
from adapters.agents.echo import EchoAgent
from bridge.agent import AgentEvent, RunContext, RunDone, RunFailed
from bridge.prompt import Prompt, PromptLine

PROMPT = Prompt(
    agent="helper", space="dev", channel="general",
    messages=(PromptLine("Ann", "first question", 3, "u-ann", True),
              PromptLine("Bob", "and another", 4, "u-bob", True)),
    context=(PromptLine("Cid", "earlier chatter", 2, "u-cid", False),),
)


def context(tmp_path: Path, workspace: str = "ws") -> RunContext:
    return RunContext("run-1", "fabric:helper:dev:c-1", tmp_path / workspace)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


def collect(run: CommandRun) -> list[AgentEvent]:
    return list(run.events())


class Reader:
    """Reads a run's events on a thread, as the Runner does."""

    def __init__(self, run: CommandRun) -> None:
        self.events: list[AgentEvent] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self._run = run
        self.thread.start()

    def _read(self) -> None:
        self.events = list(self._run.events())

    def wait(self, timeout_s: float) -> list[AgentEvent]:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"events() still running after {timeout_s} s"
        return self.events


def test_echo_answers_with_merged_text(tmp_path: Path) -> None:
    run = EchoAgent().start(PROMPT, context(tmp_path))
    assert list(run.events()) == [RunDone("first question\nand another")]


def test_echo_stopped_before_reading(tmp_path: Path) -> None:
    run = EchoAgent().start(PROMPT, context(tmp_path))
    run.stop()
    run.stop()
    assert list(run.events()) == [RunFailed("stopped")]


def test_command_reads_prompt_and_answers(tmp_path: Path) -> None:
    agent = CommandAgent(python("import sys; sys.stdout.write(sys.stdin.read())"))
    events = collect(agent.start(PROMPT, context(tmp_path)))
    assert events == [RunDone(PROMPT.render())]
    answer = events[0]
    assert isinstance(answer, RunDone)
    assert answer.answer.startswith("<bridge-context>\n")
    assert "\n</bridge-context>\n" in answer.answer
    assert ('\n{"seq": 2, "author_id": "u-cid", "author": "Cid", "allowed": false, '
            '"text": "earlier chatter"}\n') in answer.answer
    assert answer.answer.endswith(
        'Messages to answer:\n'
        '{"seq": 3, "author_id": "u-ann", "author": "Ann", "allowed": true, '
        '"text": "first question"}\n'
        '{"seq": 4, "author_id": "u-bob", "author": "Bob", "allowed": true, '
        '"text": "and another"}')


def test_command_transforms_output(tmp_path: Path) -> None:
    agent = CommandAgent(python("import sys; print(len(sys.stdin.read().splitlines()))"))
    events = collect(agent.start(PROMPT, context(tmp_path)))
    assert events == [RunDone(f"{len(PROMPT.render().splitlines())}\n")]


def test_command_runs_in_workspace_created_if_missing(tmp_path: Path) -> None:
    workspace = tmp_path / "deep" / "ws"
    assert not workspace.exists()
    agent = CommandAgent(python("import os; print(os.getcwd(), end='')"))
    run = agent.start(PROMPT, RunContext("r", "s", workspace))
    assert collect(run) == [RunDone(str(workspace))]
    assert workspace.is_dir()


def test_nonzero_exit_is_failure_with_stderr_tail(tmp_path: Path) -> None:
    agent = CommandAgent(python("""
        import sys
        sys.stdin.read()
        print("partial answer")
        print("first problem", file=sys.stderr)
        print("last problem line", file=sys.stderr)
        sys.exit(3)
    """))
    events = collect(agent.start(PROMPT, context(tmp_path)))
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, RunFailed)
    name = os.path.basename(sys.executable)
    assert failed.reason == f"{name} exited with status 3: last problem line"


def test_nonzero_exit_without_stderr(tmp_path: Path) -> None:
    agent = CommandAgent(python("raise SystemExit(1)"))
    events = collect(agent.start(PROMPT, context(tmp_path)))
    assert events == [RunFailed(f"{os.path.basename(sys.executable)} exited with status 1")]


def test_missing_program_raises_oserror(tmp_path: Path) -> None:
    agent = CommandAgent([str(tmp_path / "no-such-program")])
    with pytest.raises(OSError):
        agent.start(PROMPT, context(tmp_path))


def test_empty_argv_rejected() -> None:
    with pytest.raises(ValueError):
        CommandAgent([])


def test_output_over_limit_is_cut_with_note(tmp_path: Path) -> None:
    agent = CommandAgent(python("import sys; sys.stdin.read(); sys.stdout.write('x' * 250000)"),
                         max_output_bytes=1000)
    events = collect(agent.start(PROMPT, context(tmp_path)))
    assert events == [RunDone("x" * 1000 + "\n\n[output cut: 249000 more bytes not shown]")]


def test_output_at_limit_is_not_cut(tmp_path: Path) -> None:
    agent = CommandAgent(python("import sys; sys.stdout.write('y' * 1000)"),
                         max_output_bytes=1000)
    assert collect(agent.start(PROMPT, context(tmp_path))) == [RunDone("y" * 1000)]


def sleeper_script(pid_file: Path, *, ignore_term: bool, grandchild_ignores_term: bool) -> str:
    """A child that spawns a sleeping grandchild, writes both pids, then sleeps.

    The pids are written only once the grandchild is set up (its signal disposition
    is in place), so a test that reads them can act at once.
    """
    ready = str(pid_file) + ".grand"
    grand_setup = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
        if grandchild_ignores_term else ""
    grand_script = grand_setup + f"import time; open({ready!r}, 'w').close(); time.sleep(60)"
    return f"""
        import os, signal, subprocess, sys, time
        if {ignore_term!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grand = subprocess.Popen([sys.executable, "-c", {grand_script!r}])
        deadline = time.monotonic() + 10
        while not os.path.exists({ready!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
        with open({str(pid_file)!r} + ".tmp", "w") as f:
            f.write(f"{{os.getpid()}} {{grand.pid}}")
        os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(60)
    """


def read_pids(pid_file: Path) -> tuple[int, int]:
    wait_for(pid_file.exists, 10, "the child to write its pids")
    child, grand = pid_file.read_text().split()
    return int(child), int(grand)


def kill_quietly(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("ignore_term", [False, True], ids=["obeys-sigterm", "ignores-sigterm"])
def test_stop_kills_whole_process_group(tmp_path: Path, ignore_term: bool) -> None:
    pid_file = tmp_path / "pids"
    agent = CommandAgent(
        python(sleeper_script(pid_file, ignore_term=ignore_term, grandchild_ignores_term=False)),
        stop_grace_s=0.3,
    )
    run = agent.start(PROMPT, context(tmp_path))
    child, grand = read_pids(pid_file)
    try:
        assert pid_alive(child) and pid_alive(grand)
        reader = Reader(run)
        run.stop()
        run.stop()  # safe twice
        assert reader.wait(15) == [RunFailed("stopped")]
        wait_for(lambda: not pid_alive(grand), 10, "the grandchild to die")
        wait_for(lambda: not pid_alive(child), 10, "the child to die")
    finally:
        kill_quietly(child, grand)


def test_stop_kills_grandchild_that_ignores_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    agent = CommandAgent(
        python(sleeper_script(pid_file, ignore_term=False, grandchild_ignores_term=True)),
        stop_grace_s=0.3,
    )
    run = agent.start(PROMPT, context(tmp_path))
    child, grand = read_pids(pid_file)
    try:
        reader = Reader(run)
        run.stop()
        wait_for(lambda: not pid_alive(grand), 5, "the grandchild to die")
        assert reader.wait(5) == [RunFailed("stopped")]
    finally:
        kill_quietly(child, grand)


def test_what_the_command_left_running_cleans_up_before_it_is_killed(tmp_path: Path) -> None:
    # Like ``pyenv rehash`` from a login shell's ~/.bashrc: a leftover holding a lock
    # file that its EXIT trap removes. A SIGKILL left the lock for every later shell.
    lock = tmp_path / "shims.lock"
    agent = CommandAgent(python(f"""
        import os, subprocess, time
        subprocess.Popen(["bash", "-c", "trap 'sleep 0.2; rm -f {lock}' EXIT; "
                          ": > {lock}; while true; do sleep 0.1; done"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        while not os.path.exists({str(lock)!r}):
            time.sleep(0.01)
        print("answer", end="")
    """), stop_grace_s=5)
    assert Reader(agent.start(PROMPT, context(tmp_path))).wait(15) == [RunDone("answer")]
    assert not lock.exists()
