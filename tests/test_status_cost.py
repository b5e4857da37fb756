"""What live status costs in platform calls: a burst of agent events is one edit."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from adapters.chat.fabric.devguild import DevGuild
from bridge.board import Board
from bridge.cli.compose import bridge_app
from tests.fakes.runs import fake_cli
from tests.support import Member, wait_until, write_config

#: A stand-in for ``codex exec --json``: 100 tool steps at once, then it waits for a
#: file named ``gate`` in its workspace before it finishes the turn.
BURSTY_CODEX = """
    import json, os, sys, time
    sys.stdin.read()
    def say(event):
        print(json.dumps(event), flush=True)
    say({"type": "thread.started", "thread_id": "t-burst"})
    say({"type": "turn.started"})
    for i in range(50):
        item = {"id": f"c{i}", "type": "command_execution", "command": f"step {i}",
                "status": "in_progress"}
        say({"type": "item.started", "item": item})
        say({"type": "item.completed", "item": dict(item, status="completed", exit_code=0)})
    while not os.path.exists("gate"):
        time.sleep(0.02)
    say({"type": "item.completed", "item": {"id": "m", "type": "agent_message",
                                            "text": "burst done"}})
    say({"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 5}})
"""


def test_a_burst_of_events_costs_one_post_and_one_edit(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    binary = fake_cli(tmp_path / "bin", "codex", BURSTY_CODEX)
    workspace = tmp_path / "ws"
    agents = textwrap.dedent(f"""
        [agents.echo]
        kind = "codex"
        api_key = "fak_dev_echo"
        binary = "{binary}"
        workspace = "{workspace}"
    """)
    app = bridge_app(write_config(tmp_path, devguild.center_url, agents=agents,
                                 debounce_s=0.05), Board())
    app.start()
    try:
        wait_until(lambda: (r := app.board.connection("echo", "dev")) and
                   r.state == "connected", what="connected")
        alice = members("alice")
        before = devguild.api_calls()
        alice.post("general", "do fifty things")
        status = alice.wait_reply("echo", "general", lambda c: "step 49" in c)
        assert "… 38 earlier steps" in status
        calls = devguild.api_calls()
        assert calls.get(("post", "echo"), 0) - before.get(("post", "echo"), 0) == 1
        edits = calls.get(("edit", "echo"), 0) - before.get(("edit", "echo"), 0)
        assert edits <= 1, f"{edits} edits for one burst"
        (workspace / "gate").touch()
        alice.wait_reply("echo", "general", lambda c: c.startswith("burst done"))
        wait_until(lambda: any(c.startswith("✅ echo · done")
                               for c in alice.messages_from("echo", "general")),
                   what="the final status")
    finally:
        app.stop()
