"""The real Codex CLI through the bridge on Feishu/Lark: steps live on the card, Stop ends it.

The config has only ``[platforms.lark]``; the agent is the pinned Codex CLI
(:mod:`tests.fakes.clis`) against the scripted model on loopback
(:mod:`tests.fakes.models`), as :mod:`tests.test_slack_codex` sets it up. The
model makes Codex run two shell steps that each wait for a gate file the test
creates (so each is seen working, then done on the streamed card), then a long
``sleep``; alice clicks the card's Stop button while it sleeps.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from actors.app import BridgeApp
from adapters.chat.lark.double import LarkDouble
from adapters.chat.lark.render import STEP_MARKS
from tests import test_lark_e2e as lark
from tests.fakes.clis import INSTALL_HINT, installed
from tests.fakes.models import Say, ScriptedModel, Shell, Step
from tests.support import start_bridge, wait_until
from tests.test_agents_e2e import RUN_WAIT_S, agent_table
from tests.test_lark_e2e import Room, _stop_value, lark_config
from tests.test_slack_codex import (
    GATED_STEPS,
    KILL_WAIT_S,
    LONG_STEP,
    LONG_WAIT_MS,
    NEVER_SAID,
    STEP_SCRIPT,
    command_line,
    process_tree,
    still_alive,
)

pytestmark = pytest.mark.skipif(not installed("codex"),
                                reason=f"the Codex CLI is not installed; run: {INSTALL_HINT}")

_no_proxy = lark._no_proxy
double = lark.double
app_ = lark.app_
room = lark.room


def card_line(room: Room, asked: str, title: str) -> str:
    """The live card's line for the step ``title`` (its mark first); '' while not shown."""
    for message in room.bot_messages(room.group):
        if asked in (message["parent_id"], message["root_id"]) and message["card"]:
            for line in str(message["text"]).split("\n"):
                if line[2:].startswith(title):
                    return line
    return ""


def test_codex_steps_stream_on_the_card_and_its_stop_button_kills_the_run(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "step").write_text(STEP_SCRIPT, encoding="utf-8")
    (workspace / "step").chmod(0o755)
    script: list[Step] = [Shell(GATED_STEPS[0], "Running the steps."), Shell(GATED_STEPS[1]),
                          Shell(LONG_STEP, wait_ms=LONG_WAIT_MS), Say(NEVER_SAID)]
    with ScriptedModel(script) as model:
        agent = agent_table("codex", tmp_path, model, name="echo")
        app = start_bridge(lark_config(tmp_path, double, agent), apps=apps)
        asked = room.post(room.group, "run the steps, then the long one", mention=True)

        def shown(title: str, state: str) -> bool:
            return card_line(room, asked, title).startswith(STEP_MARKS[state])

        for title in GATED_STEPS:
            wait_until(functools.partial(shown, title, "running"), RUN_WAIT_S,
                       what=f"{title!r} shown working")
            (workspace / f"gate-{title.split()[-1]}").touch()
            wait_until(functools.partial(shown, title, "done"), RUN_WAIT_S,
                       what=f"{title!r} shown done")
        wait_until(lambda: shown(LONG_STEP, "running"), RUN_WAIT_S,
                   what="the long step shown working")

        card = wait_until(lambda: next((m for m in room.bot_messages(room.group)
                                        if _stop_value(m) is not None), None),
                          what="the card's Stop button")
        assert card["streaming"] and asked in (card["parent_id"], card["root_id"])
        assert app.store is not None
        [(_, leader, _)] = app.store.open_runs()
        assert leader is not None
        tree: dict[int, str | None] = wait_until(
            lambda: (found := process_tree(leader)) and any(
                command_line(pid) == LONG_STEP for pid in found) and found,
            RUN_WAIT_S, what="the long step running under the Codex process")

        double.click(room.alice, card["message_id"], name="stop")
        wait_until(lambda: not still_alive(tree), KILL_WAIT_S,
                   what="the Codex process and all it started gone")
        wait_until(lambda: not app.board.snapshot().runs, what="the run ended")
        final = wait_until(lambda: (m := double.message(card["message_id"]))
                           and "stopped by alice" in m["text"] and m,
                           what="the card saying alice stopped the run")
        assert _stop_value(final) is None and not final["streaming"]
        for title in GATED_STEPS:
            assert card_line(room, asked, title).startswith(STEP_MARKS["done"])
        assert card_line(room, asked, LONG_STEP).startswith(STEP_MARKS["failed"])
        assert not room.answers(room.group, lambda m: NEVER_SAID in str(m["text"]))
        assert len(model.main_requests()) == 3  # the long step's output never reached it
