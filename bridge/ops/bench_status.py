"""``bridge bench --status-run S``: what live status costs in platform API calls.

Runs the dev guild and the bridge in this process with one agent of kind
``codex`` whose binary is a small script standing in for ``codex exec --json``:
it reports one tool step (a command) every ``tool_every_s`` seconds for
``run_s`` seconds, then answers. A member asks once; the report counts the
agent's posts and edits (the dev guild's counters) and the edits per second of
the run. The bridge edits a status message at most once a second, only when
its text changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import attrs

#: The stand-in for ``codex exec --json``: a tool step every STEP seconds for RUN seconds.
FAKE_CODEX = """\
#!{python}
import json, sys, time
RUN, STEP = {run_s}, {tool_every_s}
sys.stdin.read()
def say(event):
    print(json.dumps(event), flush=True)
say({{"type": "thread.started", "thread_id": "bench-status"}})
say({{"type": "turn.started"}})
start, i = time.monotonic(), 0
while time.monotonic() - start < RUN:
    item = {{"id": f"c{{i}}", "type": "command_execution", "command": f"step {{i}}",
            "status": "in_progress"}}
    say({{"type": "item.started", "item": item}})
    time.sleep(STEP)
    say({{"type": "item.completed", "item": dict(item, status="completed", exit_code=0)}})
    i += 1
say({{"type": "item.completed", "item": {{"id": "m", "type": "agent_message",
                                        "text": "status run done"}}}})
say({{"type": "turn.completed", "usage": {{"input_tokens": 1, "output_tokens": 1}}}})
"""


@attrs.frozen
class LiveStatusReport:
    """Platform calls of one run with live status.

    Attributes:
        run_s: Seconds the run worked (measured from the question to the answer).
        tool_steps: Tool steps the agent reported.
        posts: Messages the agent posted (the status message and the answer).
        edits: Edits of the status message.
        edits_per_s: ``edits / run_s``.
    """

    run_s: float
    tool_steps: int
    posts: int
    edits: int
    edits_per_s: float


def measure_live_status(run_s: float = 60.0, tool_every_s: float = 1.0) -> LiveStatusReport:
    """Run one agent run with a tool step every ``tool_every_s`` seconds for ``run_s``.

    Raises:
        ValueError: when ``run_s`` or ``tool_every_s`` is not positive.
        RuntimeError: when the answer does not arrive in ``run_s + 60`` seconds.
    """
    if run_s <= 0 or tool_every_s <= 0:
        raise ValueError("run_s and tool_every_s must be positive")
    from adapters.chat.fabric.devguild import DevGuild, load_seed
    from adapters.chat.fabric.rest import FabricCenter, FabricGuild
    from bridge.cli.compose import bridge_app, load_config

    with tempfile.TemporaryDirectory(prefix="bridge-status-") as tmp, \
            DevGuild(load_seed(), center_port=0, guild_port=0) as guild:
        folder = Path(tmp)
        binary = folder / "codex"
        binary.write_text(FAKE_CODEX.format(python=sys.executable, run_s=run_s,
                                            tool_every_s=tool_every_s), encoding="utf-8")
        binary.chmod(0o755)
        config = folder / "bridge.toml"
        config.write_text(textwrap.dedent(f"""
            [bridge]
            state_dir = "var"
            debounce_s = 0
            log_level = "warning"
            [fabric]
            center_url = "{guild.center_url}"
            [agents.coder]
            kind = "codex"
            api_key = "{guild.api_key('echo')}"
            binary = "{binary}"
            workspace = "ws"
            idle_timeout_s = {run_s + 30}
            [[bindings]]
            agent = "coder"
            guild = "dev"
            channels = ["general"]
        """), encoding="utf-8")
        app = bridge_app(load_config(config))
        app.start()
        try:
            deadline = time.monotonic() + 30
            while not ((row := app.board.connection("coder", "dev")) and
                       row.state == "connected"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the bridge did not connect")
                time.sleep(0.05)
            member = FabricGuild(FabricCenter(guild.center_url).login(
                guild.api_key("alice")).guilds["dev"])
            before = guild.api_calls()
            general = guild.channel_id("general")
            echo_id = guild.user_id("echo")
            asked = time.monotonic()
            member.post(general, "work for a while")
            deadline = asked + run_s + 60
            while not any(m["authorUserId"] == echo_id and
                          m["content"].startswith("status run done")
                          for m in guild.state.messages(general)):
                if time.monotonic() > deadline:
                    raise RuntimeError("no answer in time")
                time.sleep(0.1)
            took = time.monotonic() - asked
            time.sleep(1.5)  # the final status edit waits for the once-a-second slot
            after = guild.api_calls()
        finally:
            app.stop()
    posts = after.get(("post", "echo"), 0) - before.get(("post", "echo"), 0)
    edits = after.get(("edit", "echo"), 0) - before.get(("edit", "echo"), 0)
    steps = max(1, round(run_s / tool_every_s))
    return LiveStatusReport(round(took, 2), steps, posts, edits, round(edits / took, 3))


def main_status_run(run_s: float, as_json: bool) -> int:
    """``bridge bench --status-run S``: print the report; 0 when the run completed, else 1."""
    try:
        report = measure_live_status(run_s)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"bridge bench: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(attrs.asdict(report)), flush=True)
    else:
        print(f"live status: a {report.run_s:.1f}s run with {report.tool_steps} tool steps "
              f"cost {report.posts} posts and {report.edits} edits "
              f"({report.edits_per_s:.2f} edits/s)")
    return 0
