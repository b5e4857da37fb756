"""``bridge bench --status-run S``: what live status costs in platform API calls.

Runs the dev guild and the bridge in this process with one agent of kind
``codex`` whose binary is a small script standing in for ``codex exec --json``:
it reports one tool step (a command) every ``tool_every_s`` seconds for
``run_s`` seconds, then answers. A member asks once in each of ``runs``
channels (``--status-runs N``), the asks spread evenly over ``run_s``, so the
runs overlap (all N work at once in the middle) and end one after another,
while the other runs' statuses keep the budget busy; optionally
under an outbound budget for the agent (``--status-budget R``). From the dev
guild's log of API calls the report gives the agent's posts and edits, the
most edits of one status in any second (the bridge edits a status at most once
a second, only when its text changed), the most posts and edits in any second
(against the budget), and how long each answer waited between the agent giving
it and its post reaching the guild (answers go before status edits).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from adapters.chat.fabric.devguild.server import ApiCall

#: The stand-in for ``codex exec --json``: a tool step every STEP seconds for RUN seconds;
#: it notes the moment it gives its answer (``time.monotonic()``) in DONE/<run token>.
FAKE_CODEX = """\
#!{python}
import json, re, sys, time
RUN, STEP, DONE = {run_s}, {tool_every_s}, {done_dir!r}
prompt = sys.stdin.read()
found = re.findall(r"statusrun-[0-9]+", prompt)
token = found[-1] if found else "statusrun-0"
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
with open(f"{{DONE}}/{{token}}", "w") as done:
    done.write(repr(time.monotonic()))
say({{"type": "item.completed", "item": {{"id": "m", "type": "agent_message",
                                        "text": f"status run done {{token}}"}}}})
say({{"type": "turn.completed", "usage": {{"input_tokens": 1, "output_tokens": 1}}}})
"""
#: Seconds to wait after the last answer for the runs' final status edits.
FINAL_EDITS_S = 1.5


@attrs.frozen
class LiveStatusReport:
    """Platform calls of concurrent runs with live status, one run per channel.

    Attributes:
        run_s: Seconds from the first question to the last answer (the asks are
            spread over one run's length).
        tool_steps: Tool steps each run's agent reported.
        posts: Messages the agent posted (per run: the status message and the answer).
        edits: Edits of the status messages.
        edits_per_s: Edits per second of one run (``edits / runs`` over one run's
            time: ``run_s`` less the last ask's offset).
        runs: Concurrent runs (one per channel).
        send_per_s: The agent's outbound budget, posts and edits per second (0: none).
        send_burst: The budget's burst, posts and edits.
        max_channel_edits_1s: Most edits of one channel's status in any 1-second window.
        min_edit_gap_s: Shortest time between two edits of one status message, seconds
            (0 when no status was edited twice).
        max_calls_1s: Most posts and edits of the agent in any 1-second window.
        answer_delay_p50_s: From an agent's answer (its process wrote it) to the
            answer's post reaching the guild, median over the runs, seconds.
        answer_delay_max_s: The same, the slowest run.
    """

    run_s: float
    tool_steps: int
    posts: int
    edits: int
    edits_per_s: float
    runs: int = 1
    send_per_s: float = 0.0
    send_burst: int = 0
    max_channel_edits_1s: int = 0
    min_edit_gap_s: float = 0.0
    max_calls_1s: int = 0
    answer_delay_p50_s: float = 0.0
    answer_delay_max_s: float = 0.0


#: The ``--json`` fields of a status run, documented in ``bridge bench --help``.
STATUS_FIELDS = {
    "run_s": "seconds from the first question to the last answer (the asks spread over "
             "one run's length)",
    "tool_steps": "tool steps each run reported",
    "posts": "the agent's posts (per run: the status message and the answer)",
    "edits": "the agent's edits of status messages",
    "edits_per_s": "edits per second of one run",
    "runs": "concurrent runs, one per channel",
    "send_per_s": "the agent's outbound budget, posts and edits per second (0: none)",
    "send_burst": "the budget's burst (0: none)",
    "max_channel_edits_1s": "most edits of one status in any 1-second window",
    "min_edit_gap_s": "shortest time between two edits of one status, s",
    "max_calls_1s": "most posts and edits of the agent in any 1-second window",
    "answer_delay_p50_s": "from the agent giving its answer to the answer's post at the "
                          "guild, median, s",
    "answer_delay_max_s": "the same, slowest run, s",
}


def status_fields_help() -> str:
    """The status run's ``--json`` fields as text for ``bridge bench --help``."""
    return "; ".join(f"{name}: {text}" for name, text in STATUS_FIELDS.items())


def most_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """Most of ``times`` (seconds, any order) inside any half-open window ``[t, t + window_s)``."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def min_gap(times: Sequence[float]) -> float | None:
    """The shortest time between two consecutive ``times`` (seconds); None for fewer than two."""
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return min(gaps) if gaps else None


def measure_live_status(run_s: float = 60.0, tool_every_s: float = 1.0, runs: int = 1,
                        send_per_s: float = 0.0, send_burst: int = 20) -> LiveStatusReport:
    """Run ``runs`` concurrent agent runs, each a tool step every ``tool_every_s`` for ``run_s``.

    One run per channel: with ``runs == 1`` in ``general``, else in channels
    ``status-0`` ... created for the bench. A member asks in every channel, the
    asks spread evenly over ``run_s``; the agent's outbound budget is
    ``send_per_s`` / ``send_burst`` (``[platforms.fabric]``; 0: none).

    Raises:
        ValueError: when ``run_s``, ``tool_every_s`` or ``runs`` is not positive.
        RuntimeError: when the answers do not arrive in ``2 * run_s + 60`` seconds.
    """
    if run_s <= 0 or tool_every_s <= 0 or runs < 1 or send_per_s < 0 or send_burst < 1:
        raise ValueError("run_s, tool_every_s, runs and send_burst must be positive")
    from adapters.chat.fabric.devguild import DevGuild, load_seed
    from adapters.chat.fabric.rest import FabricCenter, FabricGuild
    from bridge.cli.compose import bridge_app, load_config

    with tempfile.TemporaryDirectory(prefix="bridge-status-") as tmp, \
            DevGuild(load_seed(), center_port=0, guild_port=0) as guild:
        folder = Path(tmp)
        done_dir = folder / "done"
        done_dir.mkdir()
        binary = folder / "codex"
        binary.write_text(FAKE_CODEX.format(python=sys.executable, run_s=run_s,
                                            tool_every_s=tool_every_s, done_dir=str(done_dir)),
                          encoding="utf-8")
        binary.chmod(0o755)
        member = FabricGuild(FabricCenter(guild.center_url).login(
            guild.api_key("alice")).guilds["dev"])
        echo_id = guild.user_id("echo")
        if runs == 1:
            channel_ids = [guild.channel_id("general")]
            names = ["general"]
        else:
            names = [f"status-{i}" for i in range(runs)]
            channel_ids = [str(member.create_channel(name, "work", members=[echo_id])["id"])
                           for name in names]
        budget = (f"send_per_s = {send_per_s}\nsend_burst = {send_burst}"
                  if send_per_s > 0 else "")
        config = folder / "bridge.toml"
        config.write_text(textwrap.dedent(f"""
            [bridge]
            state_dir = "var"
            debounce_s = 0
            log_level = "warning"
            [platforms.fabric]
            center_url = "{guild.center_url}"
            {{budget}}
            [agents.coder]
            kind = "codex"
            api_key = "{guild.api_key('echo')}"
            binary = "{binary}"
            workspace = "ws"
            idle_timeout_s = {run_s + 30}
            [[bindings]]
            agent = "coder"
            guild = "dev"
            channels = {json.dumps(names)}
        """).replace("{budget}", budget), encoding="utf-8")
        app = bridge_app(load_config(config))
        app.start()
        try:
            deadline = time.monotonic() + 30 + runs / 10
            while not ((row := app.board.connection("coder", "dev")) and
                       row.state == "connected" and row.channels >= runs):
                if time.monotonic() > deadline:
                    raise RuntimeError("the bridge did not connect")
                time.sleep(0.05)
            start_log = len(guild.api_call_log())
            asked = time.monotonic()
            for i, channel_id in enumerate(channel_ids):
                pause = asked + i * run_s / runs - time.monotonic()
                if pause > 0:  # the asks spread over one run: the runs end one by one
                    time.sleep(pause)
                member.post(channel_id, f"work for a while statusrun-{i}", echo_id)
            deadline = asked + 2 * run_s + 60 + runs / 10
            answered: dict[str, float] = {}
            while len(answered) < runs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{runs - len(answered)} of {runs} runs not answered "
                                       f"in time")
                time.sleep(0.1)
                for channel_id in channel_ids:
                    if channel_id not in answered and any(
                            m["authorUserId"] == echo_id and
                            m["content"].startswith("status run done")
                            for m in guild.state.messages(channel_id)):
                        answered[channel_id] = time.monotonic()
            took = max(answered.values()) - asked
            time.sleep(FINAL_EDITS_S)  # the final status edit waits for its once-a-second slot
            calls = [c for c in guild.api_call_log()[start_log:] if c.user == "echo"]
            done = {int(p.name.rpartition("-")[2]): float(p.read_text()) for p in
                    done_dir.iterdir()}
        finally:
            app.stop()
    return _report(calls, channel_ids, done, runs, run_s, tool_every_s, took, send_per_s,
                   send_burst if send_per_s > 0 else 0)


def _report(calls: Sequence[ApiCall], channel_ids: Sequence[str], done: Mapping[int, float],
            runs: int, run_s: float, tool_every_s: float, took: float, send_per_s: float,
            send_burst: int) -> LiveStatusReport:
    posts = [c for c in calls if c.kind == "post"]
    edits = [c for c in calls if c.kind == "edit"]
    per_channel = {cid: [c.at for c in edits if c.channel_id == cid] for cid in channel_ids}
    gaps = [g for times in per_channel.values() if (g := min_gap(times)) is not None]
    delays = []
    for i, cid in enumerate(channel_ids):
        answer_posts = [c.at for c in posts if c.channel_id == cid]
        if i in done and answer_posts:
            delays.append(max(answer_posts) - done[i])
    delays.sort()
    steps = max(1, round(run_s / tool_every_s))
    return LiveStatusReport(
        run_s=round(took, 2), tool_steps=steps, posts=len(posts), edits=len(edits),
        edits_per_s=round(len(edits) / runs / max(0.001, took - (runs - 1) * run_s / runs), 3),
        runs=runs, send_per_s=send_per_s, send_burst=send_burst,
        max_channel_edits_1s=max((most_in_window(t) for t in per_channel.values()), default=0),
        min_edit_gap_s=round(min(gaps), 3) if gaps else 0.0,
        max_calls_1s=most_in_window([c.at for c in calls]),
        answer_delay_p50_s=round(delays[len(delays) // 2], 3) if delays else 0.0,
        answer_delay_max_s=round(delays[-1], 3) if delays else 0.0)


def main_status_run(run_s: float, as_json: bool, runs: int = 1, send_per_s: float = 0.0) -> int:
    """``bridge bench --status-run S [--status-runs N] [--status-budget R]``: print the report.

    Returns:
        0 when the runs completed, else 1.
    """
    try:
        report = measure_live_status(run_s, runs=runs, send_per_s=send_per_s,
                                     send_burst=max(1, round(send_per_s)) if send_per_s else 20)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"bridge bench: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(attrs.asdict(report)), flush=True)
        return 0
    budget = (f"a budget of {report.send_per_s:g}/s (burst {report.send_burst})"
              if report.send_per_s else "no budget")
    print(f"live status: {report.runs} run(s) of {report.run_s:.1f}s with "
          f"{report.tool_steps} tool steps each, {budget}: {report.posts} posts and "
          f"{report.edits} edits ({report.edits_per_s:.2f} edits/s per run); at most "
          f"{report.max_channel_edits_1s} edit(s) of one status in a second (shortest gap "
          f"{report.min_edit_gap_s:.2f}s); at most {report.max_calls_1s} posts+edits in a "
          f"second; answer posted {report.answer_delay_p50_s:.3f}s (median) / "
          f"{report.answer_delay_max_s:.3f}s (slowest) after the agent gave it")
    return 0
