"""The real Codex CLI through the whole bridge on Slack: its steps live in the thread, Stop ends it.

The config has only ``[platforms.slack]``; the agent is the pinned Codex CLI
(:mod:`tests.fakes.clis`) against the scripted model on loopback
(:mod:`tests.fakes.models`), set up as :mod:`tests.test_agents_e2e` does. The
model makes Codex run two shell steps that each wait for a gate file the test
creates (so each step is seen working, then done), then a long ``sleep``; alice
clicks Stop while it sleeps. The fixtures are those of :mod:`tests.test_slack_e2e`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from actors.app import BridgeApp
from adapters.chat.slack.double import SlackDouble
from adapters.chat.slack.render import STEP_MARKS
from adapters.chat.slack.stream import TASK_STATUS
from bridge.procs import processes, start_ticks
from tests import test_slack_e2e as slack
from tests.fakes.clis import INSTALL_HINT, installed
from tests.fakes.models import Say, ScriptedModel, Shell, Step
from tests.support import start_bridge, wait_until
from tests.test_agents_e2e import RUN_WAIT_S, agent_table
from tests.test_slack_e2e import Room, _stop_value, slack_config

pytestmark = pytest.mark.skipif(not installed("codex"),
                                reason=f"the Codex CLI is not installed; run: {INSTALL_HINT}")

_no_proxy = slack._no_proxy
double = slack.double
app_ = slack.app_
room = slack.room

#: A step the model has Codex run: waits for ``gate-<name>`` in the workspace.
STEP_SCRIPT = '#!/bin/sh\nwhile [ ! -e "gate-$1" ]; do sleep 0.05; done\necho "step $1 done"\n'
GATED_STEPS = ("./step one", "./step two")
#: The long step: far longer than the test waits for anything.
LONG_STEP = "sleep 67.5"
#: Milliseconds Codex lets the long step run before it reports back (the most it
#: takes; by default it answers after 10 s, with the command left running).
LONG_WAIT_MS = 30_000
NEVER_SAID = "the answer after the long step"
#: Seconds within which the run's processes must be gone after the click.
KILL_WAIT_S = 10.0

#: A step's state as the status message marks it, in the stream's task statuses.
_MARK_STATUS = {mark: TASK_STATUS[state] for state, mark in STEP_MARKS.items()}


def step_states(room: Room, thread: str, mode: str) -> dict[str, list[str]]:
    """Each step the thread's live status shows, by title: the states it was shown in.

    Stream mode: every ``task_update`` the stream got, in order (``in_progress``,
    ``complete``, ``error``). Message mode: the one state its line in the status
    message now shows (:data:`STEP_MARKS`), as a task status.
    """
    states: dict[str, list[str]] = {}
    for message in room.bot_messages(room.general):
        if message.get("thread_ts") != thread:
            continue
        if mode == "stream":
            for chunk in message.get("chunks") or []:
                if chunk.get("type") == "task_update":
                    states.setdefault(chunk["title"], []).append(chunk["status"])
        else:
            for line in message.get("text", "").split("\n"):
                mark, _, rest = line.partition(" ")
                if mark in _MARK_STATUS:
                    title = re.sub(r" \([^)]*\)$", "", rest)
                    states.setdefault(title, []).append(_MARK_STATUS[mark])
    return states


def process_tree(leader: int) -> dict[int, str | None]:
    """``leader`` and its live descendants (by parent pid), with their start times."""
    table = processes()
    children: dict[int, list[int]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = set(), [leader]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    alive = {info.pid for info in table}
    return {pid: start_ticks(pid) for pid in found & alive}


def still_alive(tree: dict[int, str | None]) -> set[int]:
    """The processes of ``tree`` still running (a reused pid is another process)."""
    alive = {info.pid for info in processes()}
    return {pid for pid, ticks in tree.items() if pid in alive and start_ticks(pid) == ticks}


def command_line(pid: int) -> str:
    """``pid``'s arguments joined by spaces ('' once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


@pytest.mark.parametrize("mode", ["stream", "message"])
def test_codex_steps_show_live_in_the_thread_and_stop_kills_the_run(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp],
        mode: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "step").write_text(STEP_SCRIPT, encoding="utf-8")
    (workspace / "step").chmod(0o755)
    script: list[Step] = [Shell(GATED_STEPS[0], "Running the steps."), Shell(GATED_STEPS[1]),
                          Shell(LONG_STEP, wait_ms=LONG_WAIT_MS), Say(NEVER_SAID)]
    with ScriptedModel(script) as model:
        agent = agent_table("codex", tmp_path, model, name="echo")
        app = start_bridge(slack_config(tmp_path, double, agent, live_status=mode), apps=apps)
        asked = room.post(room.general, room.mention("run the steps, then the long one"))

        def shown(title: str, status: str) -> bool:
            return step_states(room, asked, mode).get(title, [])[-1:] == [status]

        for title in GATED_STEPS:
            wait_until(functools.partial(shown, title, "in_progress"), RUN_WAIT_S,
                       what=f"{title!r} shown working")
            (workspace / f"gate-{title.split()[-1]}").touch()
            wait_until(functools.partial(shown, title, "complete"), RUN_WAIT_S,
                       what=f"{title!r} shown done")
        wait_until(lambda: shown(LONG_STEP, "in_progress"), RUN_WAIT_S,
                   what="the long step shown working")

        stop = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                        if m.get("thread_ts") == asked and _stop_value(m)),
                                       None), what="the Stop button in the thread")
        run_id = _stop_value(stop)
        assert app.store is not None
        leader = next(pid for rid, pid, _ in app.store.open_runs() if rid == run_id)
        assert leader is not None
        tree: dict[int, str | None] = wait_until(
            lambda: (found := process_tree(leader)) and any(
                command_line(pid) == LONG_STEP for pid in found) and found,
            RUN_WAIT_S, what="the long step running under the Codex process")

        double.click(room.alice, room.general, stop["ts"], "stop", run_id)
        wait_until(lambda: not still_alive(tree), KILL_WAIT_S,
                   what="the Codex process and all it started gone")
        wait_until(lambda: not app.board.snapshot().runs, what="the run ended")

        if mode == "stream":
            status = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                              if m.get("thread_ts") == asked and "chunks" in m
                                              and not m["streaming"]), None),
                                what="the stream stopped")
            wait_until(lambda: all(m["ts"] != stop["ts"] for m in room.bot_messages(
                room.general)), what="the Stop message deleted")
            plans = [c["title"] for c in status["chunks"] if c.get("type") == "plan_update"]
            assert "stopped by alice" in plans[-1]
            shown_first = ["in_progress"]  # the stream keeps every state it was sent
        else:
            status = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                              if m["ts"] == stop["ts"] and "stopped by alice"
                                              in m.get("text", "")), None),
                                what="the status saying alice stopped the run")
            assert _stop_value(status) == ""  # the button is gone
            assert all(f"{title} (exit 0)" in status["text"] for title in GATED_STEPS)
            shown_first = []  # the message shows the last state only
        # The killed step is not left spinning.
        assert step_states(room, asked, mode) == {
            GATED_STEPS[0]: [*shown_first, "complete"], GATED_STEPS[1]: [*shown_first, "complete"],
            LONG_STEP: [*shown_first, "error"]}
        others = [m.get("text", "") for m in room.bot_messages(room.general)
                  if m.get("thread_ts") == asked and m["ts"] != status["ts"]]
        assert len(others) == 1 and others[0].startswith("⚠ echo: run failed: stopped by alice")
        assert len(model.main_requests()) == 3  # the long step's output never reached it
