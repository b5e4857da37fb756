"""``bin/bridge bench``: smoke runs through the CLI (Fabric, ``--platform slack`` and
``--platform lark``), and the token bookkeeping."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.rest import FabricCenter, FabricGuild
from adapters.chat.lark.double import Delivery as LarkDelivery
from adapters.chat.slack.double import Delivery, SlackDouble
from bridge.ops.aiomembers import Crowd, pace
from bridge.ops.bench import JSON_FIELDS, _Tracker, agent_names, bench_seed
from bridge.ops.bench_lark import JSON_FIELDS as LARK_JSON_FIELDS
from bridge.ops.bench_lark import LarkTracker
from bridge.ops.bench_lark import config_text as lark_config_text
from bridge.ops.bench_slack import JSON_FIELDS as SLACK_JSON_FIELDS
from bridge.ops.bench_slack import SlackTracker
from bridge.ops.bench_slack import config_text as slack_config_text
from bridge.ops.bench_status import STATUS_FIELDS, min_gap, most_in_window

ROOT = Path(__file__).resolve().parent.parent

INT_FIELDS = ("channels", "agents", "messages", "sent", "answered", "lost", "extra",
              "post_errors", "threads_idle", "threads_peak", "threads_end", "actors", "scopes",
              "agent_posts", "agent_edits", "agent_presence", "bridge_log_warnings",
              "bridge_log_errors")
FLOAT_FIELDS = ("rate", "floor_p50_ms", "floor_p99_ms", "bridge_p50_ms", "bridge_p99_ms",
                "overhead_p50_ms", "overhead_p99_ms", "throughput_per_s", "throughput_rate",
                "rss_mb", "rss_idle_mb", "rss_end_mb", "posts_per_answer", "edits_per_answer",
                "api_calls_per_answer", "presence_per_answer", "duration_s")
STEP_INT_FIELDS = ("sent", "answered", "lost", "threads_peak")
STEP_FLOAT_FIELDS = ("rate", "post_rate", "answered_per_s", "duration_s", "p50_ms", "p99_ms",
                     "floor_p50_ms", "floor_p99_ms", "bridge_cpu_pct", "bench_cpu_pct")
#: Step fields of the Fabric bench only (the doubles' benches do not have them).
GUILD_STEP_INT_FIELDS = ("delivered",)
GUILD_STEP_FLOAT_FIELDS = ("guild_cpu_pct",)
#: Fields about the bridge, 0 when no bridge ran (--agents 0).
BRIDGE_FIELDS = ("bridge_p50_ms", "bridge_p99_ms", "overhead_p50_ms", "overhead_p99_ms",
                 "throughput_per_s", "answered", "lost", "extra", "rss_mb", "threads_idle",
                 "rss_idle_mb", "threads_peak", "rss_end_mb", "threads_end", "actors", "scopes",
                 "agent_posts", "agent_edits", "agent_presence", "posts_per_answer",
                 "edits_per_answer",
                 "api_calls_per_answer", "presence_per_answer", "bridge_log_warnings",
                 "bridge_log_errors")
BRIDGE_STEP_FIELDS = ("answered", "lost", "answered_per_s", "duration_s", "p50_ms", "p99_ms",
                      "threads_peak", "bridge_cpu_pct")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_smoke_run_prints_every_documented_field() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--channels", "3", "--agents",
         "2", "--messages", "20", "--rate", "20", "--steps", "2", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == set(JSON_FIELDS) == {*INT_FIELDS, *FLOAT_FIELDS, "steps"}
    for name in INT_FIELDS:
        assert isinstance(data[name], int) and not isinstance(data[name], bool), name
    for name in FLOAT_FIELDS:
        assert _number(data[name]), name
    assert (data["channels"], data["agents"], data["messages"]) == (3, 2, 20)
    assert data["answered"] > 0
    assert data["floor_p99_ms"] > 0 and data["bridge_p99_ms"] > 0
    assert data["rss_mb"] > 0 and data["threads_peak"] > 0 and data["threads_idle"] > 0
    assert 0 < data["rss_end_mb"] <= data["rss_mb"] and data["threads_end"] > 0
    assert 0 < data["rss_idle_mb"] <= data["rss_mb"]
    assert data["api_calls_per_answer"] >= 1 and data["posts_per_answer"] >= 1
    assert isinstance(data["steps"], list) and 1 <= len(data["steps"]) <= 2
    for step in data["steps"]:
        _check_guild_step(step)
        assert step["p99_ms"] > 0 and step["bridge_cpu_pct"] > 0
        assert step["delivered"] == step["sent"]


def _check_guild_step(step: dict[str, Any]) -> None:
    assert set(step) == {*STEP_INT_FIELDS, *STEP_FLOAT_FIELDS, *GUILD_STEP_INT_FIELDS,
                         *GUILD_STEP_FLOAT_FIELDS}
    for name in (*STEP_INT_FIELDS, *GUILD_STEP_INT_FIELDS):
        assert isinstance(step[name], int), name
    for name in (*STEP_FLOAT_FIELDS, *GUILD_STEP_FLOAT_FIELDS):
        assert _number(step[name]), name
    assert step["bench_cpu_pct"] > 0 and step["guild_cpu_pct"] > 0


def test_smoke_run_without_agents_measures_the_floor_and_runs_no_bridge() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--channels", "3", "--agents",
         "0", "--messages", "30", "--rate", "50", "--steps", "2", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == set(JSON_FIELDS)
    assert (data["channels"], data["agents"], data["messages"]) == (3, 0, 30)
    assert data["post_errors"] == 0 and data["sent"] == 30 * len(data["steps"])
    assert data["floor_p99_ms"] > 0 and data["floor_p50_ms"] > 0
    assert data["throughput_rate"] >= 50  # the first step passed: every post reached bob
    for name in BRIDGE_FIELDS:
        assert data[name] == 0, name
    assert 1 <= len(data["steps"]) <= 2
    for step in data["steps"]:
        _check_guild_step(step)
        assert step["sent"] == 30 and step["delivered"] == 30
        assert step["floor_p99_ms"] > 0 and step["post_rate"] > 0
        for name in BRIDGE_STEP_FIELDS:
            assert step[name] == 0, name


def test_no_agents_refuses_a_bridge_config(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--agents", "0", "-c",
         str(config)], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 1
    assert "--agents 0" in result.stderr


def test_help_documents_every_json_field() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--help"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in JSON_FIELDS:
        assert f"{name}:" in text, name
    lark = text.split("JSON fields with --platform lark:", 1)[1]
    for name in LARK_JSON_FIELDS:
        assert f"{name}:" in lark, name


def test_seed_adds_agent_users_with_their_keys() -> None:
    assert agent_names(3) == ["echo", "echo2", "echo3"]
    users = {user.name: user for user in bench_seed(3).users}
    assert users["echo"].api_key == "fak_dev_echo"
    assert users["echo3"].api_key == "fak_dev_echo3" and users["echo3"].kind == "agent"
    assert len({user.id for user in users.values()}) == len(users)


class _Fake:
    """Stands in for a member's inbox (``name`` and ``events``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()


def _created(author: str, content: str, message_id: str) -> dict[str, Any]:
    return {"authorUserId": author, "content": content, "messageId": message_id}


def test_tracker_matches_floor_answers_and_counts_extras() -> None:
    alice, bob = _Fake("alice"), _Fake("bob")
    tracker = _Tracker(["a1", "a2"])
    tracker.expect("bn1-000000", 10.0, "alice", "a1")
    tracker.expect("bn1-000001", 10.5, "alice", "a1")
    bob.events.append((10.01, _created("alice-id", "bn1-000000 from alice", "m1")))
    alice.events.append((10.02, _created("a1", "bn1-000000 from alice\nbn1-000001 from alice",
                                         "m2")))
    alice.events.append((10.03, _created("a1", "bn1-000000 from alice", "m2")))  # again
    alice.events.append((10.04, _created("a2", "bn1-000001 from alice", "m3")))  # not woken
    alice.events.append((10.05, _created("a1", "bn1-000001 from alice", "m4")))  # twice
    tracker.drain([alice, bob])
    assert tracker.floor == {"bn1-000000": 10.01}
    assert tracker.answers == {"bn1-000000": 10.02, "bn1-000001": 10.02}
    assert tracker.extra == 2


def test_tracker_takes_the_floor_without_agents() -> None:
    alice, bob = _Fake("alice"), _Fake("bob")
    tracker = _Tracker([])
    tracker.expect("bn1-000000", 10.0, "alice", "")
    tracker.expect("bn1-000001", 10.0, "bob", "")
    alice.events.append((10.01, _created("alice-id", "bn1-000000 from alice", "m1")))  # own
    bob.events.append((10.02, _created("alice-id", "bn1-000000 from alice", "m1")))
    bob.events.append((10.03, _created("bob-id", "bn1-000001 from bob", "m2")))  # own
    tracker.drain([alice, bob])
    assert tracker.floor == {"bn1-000000": 10.02}
    assert tracker.answers == {} and tracker.extra == 0


class _Clock:
    """A fake monotonic clock that only ``sleep`` moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_pace_starts_each_post_once_in_order_when_due() -> None:
    clock = _Clock()
    started: list[tuple[int, float]] = []

    async def post(i: int) -> None:
        started.append((i, clock()))
        await asyncio.sleep(0)

    asyncio.run(pace(25, 10.0, post, 4, clock=clock, sleep=clock.sleep))
    assert [i for i, _ in started] == list(range(25))
    for i, at in started:
        assert at >= i / 10.0 - 1e-9, (i, at)  # never early
    assert started[-1][1] < 24 / 10.0 + 1e-6  # nor late: no sleep beyond the schedule
    assert len(clock.slept) == 24  # the first post is due at once


def test_pace_keeps_at_most_limit_in_flight_and_catches_up() -> None:
    clock = _Clock()
    running, peak, done = [0], [0], []

    async def run() -> None:
        gate = asyncio.Event()

        async def post(i: int) -> None:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if i < 3:
                await gate.wait()  # the first three hold every slot
            running[0] -= 1
            done.append(i)

        async def later() -> None:
            while running[0] < 3:
                await asyncio.sleep(0)
            clock.now += 5.0  # the held posts take 5 s: posts 3..9 are all due
            gate.set()

        opener = asyncio.create_task(later())
        await pace(10, 2.0, post, 3, clock=clock, sleep=clock.sleep)
        await opener

    asyncio.run(run())
    assert peak[0] == 3 and running[0] == 0
    assert sorted(done) == list(range(10))
    # posts 1-3 waited for their time; 4-9 were due when the slots freed: no more waits
    assert clock.slept == [0.5, 0.5, 0.5]


def test_members_post_log_in_again_on_401_and_hear_each_other() -> None:
    with DevGuild(bench_seed(0)) as guild:
        owner = FabricGuild(FabricCenter(guild.center_url).login(
            guild.api_key("alice")).guilds["dev"])
        channel = str(owner.create_channel("bench-0", "work",
                                           members=[guild.user_id("bob")])["id"])

        async def run() -> tuple[bool, bool, list[str]]:
            crowd = await Crowd.open(guild.center_url, {n: guild.api_key(n)
                                                        for n in ("alice", "bob")},
                                     [channel], pool=4)
            try:
                alice, bob = crowd.members
                before = alice.access
                guild.expire_tokens()  # the next post is refused with 401 once
                posted = await alice.post(channel, "bn1-000000 from alice")
                relogged = alice.access is not before
                deadline = time.monotonic() + 10
                while not bob.events and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                return posted, relogged, [p["content"] for _, p in bob.events]
            finally:
                await crowd.close()

        posted, relogged, heard = asyncio.run(run())
        assert posted and relogged
        assert heard == ["bn1-000000 from alice"]
        assert guild.api_calls()[("post", "alice")] == 1  # the refused one is not counted


def test_status_run_reports_posts_and_edits() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "bench",
                             "--status-run", "3", "--json"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == set(STATUS_FIELDS)
    assert data["posts"] == 2  # the status message and the answer
    assert data["edits"] >= 1 and data["tool_steps"] == 3
    assert data["runs"] == 1 and data["max_channel_edits_1s"] >= 1


def test_concurrent_status_runs_under_a_budget_answer_every_run_once() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "bench",
                             "--status-run", "2", "--status-runs", "4", "--status-budget", "5",
                             "--json"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["runs"], data["send_per_s"], data["send_burst"]) == (4, 5.0, 5)
    assert data["posts"] == 8  # per run: the status message and the answer
    assert data["answer_delay_max_s"] >= data["answer_delay_p50_s"] >= 0


def test_windows_and_gaps_of_call_times() -> None:
    assert most_in_window([]) == 0
    assert most_in_window([0.0, 0.5, 0.99, 1.0, 1.2, 5.0]) == 4  # [0.5, 1.5) holds 4
    assert most_in_window([3.0, 1.0, 2.0]) == 1
    assert min_gap([2.0, 0.5, 1.25]) == 0.75
    assert min_gap([1.0]) is None


# -- --platform slack ------------------------------------------------------------

SLACK_INT_FIELDS = ("channels", "agents", "messages", "sent", "answered", "lost", "doubled",
                    "extra", "post_errors", "threads_idle", "threads_peak", "actors", "scopes",
                    "api_calls", "bridge_log_warnings", "bridge_log_errors")
SLACK_FLOAT_FIELDS = ("rate", "ack_p50_ms", "ack_p99_ms", "bridge_p50_ms", "bridge_p99_ms",
                      "overhead_p50_ms", "overhead_p99_ms", "throughput_per_s",
                      "throughput_rate", "rss_mb", "posts_per_answer", "api_calls_per_answer",
                      "reconnect_s", "reconnect_disconnect_s", "duration_s")


def test_slack_smoke_run_answers_every_message_once_and_recovers() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--platform", "slack",
         "--channels", "2", "--agents", "2", "--messages", "10", "--rate", "20", "--steps", "1",
         "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == set(SLACK_JSON_FIELDS) == {
        *SLACK_INT_FIELDS, *SLACK_FLOAT_FIELDS, "steps", "platform", "api_methods"}
    for name in SLACK_INT_FIELDS:
        assert isinstance(data[name], int) and not isinstance(data[name], bool), name
    for name in SLACK_FLOAT_FIELDS:
        assert _number(data[name]), name
    assert data["platform"] == "slack"
    assert (data["channels"], data["agents"], data["messages"]) == (2, 2, 10)
    assert (data["sent"], data["answered"], data["lost"]) == (10, 10, 0)
    assert (data["doubled"], data["extra"], data["post_errors"]) == (0, 0, 0)
    assert data["ack_p99_ms"] > 0 and data["bridge_p99_ms"] > 0
    assert data["reconnect_s"] > 0 and data["reconnect_disconnect_s"] > 0  # -1: not answered
    assert data["rss_mb"] > 0 and data["threads_peak"] > 0 and data["threads_idle"] > 0
    assert data["api_methods"]["chat.postMessage"] >= 10 and data["posts_per_answer"] >= 1
    assert data["api_calls"] == sum(data["api_methods"].values())
    assert len(data["steps"]) == 1
    step = data["steps"][0]
    assert set(step) == {*STEP_INT_FIELDS, *STEP_FLOAT_FIELDS}
    assert (step["sent"], step["answered"], step["lost"]) == (10, 10, 0)
    assert step["floor_p99_ms"] == data["ack_p99_ms"] and step["p99_ms"] == data["bridge_p99_ms"]


def test_slack_config_hands_tokens_by_environment_only(tmp_path: Path) -> None:
    text = slack_config_text("http://127.0.0.1:9/api/", tmp_path / "var", 2)
    assert 'bot_token = "env:BRIDGE_BENCH_SLACK_BOT_ECHO2"' in text
    assert 'app_token = "env:BRIDGE_BENCH_SLACK_APP_ECHO"' in text
    assert "[platforms.slack]" in text and "[fabric]" not in text
    assert "xoxb-" not in text and "xapp-" not in text


def test_the_double_tells_observers_of_posts_and_edits() -> None:
    with SlackDouble() as double:
        app = double.add_app("echo")
        alice = double.add_user("alice")
        channel = double.add_channel("bench-0", [alice, app])
        seen: list[tuple[str, str, str, str]] = []
        double.observe(lambda change, m: seen.append(
            (change, m["channel"], m["user"], m["text"])))
        ts = double.post(alice, channel, "first")
        double.edit(alice, channel, ts, "second")
        double.post(alice, channel, "in the thread", thread_ts=ts)
    assert seen == [("posted", channel, alice, "first"), ("changed", channel, alice, "second"),
                    ("posted", channel, alice, "in the thread")]


def _ack(app_id: str, ts: str, kind: str = "app_mention") -> tuple[str, Delivery]:
    envelope = {"envelope_id": "e", "type": "events_api",
                "payload": {"event": {"type": kind, "ts": ts}}}
    return app_id, Delivery(envelope, True, None, False)


def test_slack_tracker_matches_answers_in_threads_and_counts_doubles() -> None:
    tracker = SlackTracker("Ualice", {"Ubot1": "A1", "Ubot2": "A2"})
    for token in ("bn1-000000", "bn1-000001", "bn1-000002"):
        tracker.expect(token, 10.0, "Ubot1")
    tracker.expect("bn1-000003", 10.0, "Ubot2")

    def message(user: str, text: str, ts: str, thread_ts: str = "") -> dict[str, Any]:
        found = {"user": user, "text": text, "ts": ts}
        if user != "Ualice":
            found["bot_id"] = "B" + user
        if thread_ts:
            found["thread_ts"] = thread_ts
        return found

    for n in range(4):
        tracker.on_message("posted", message("Ualice", f"<@Ubot1> bn1-00000{n}", f"1.{n}"))
    tracker.on_ack(*_ack("A2", "1.0"))  # the app not mentioned: no floor
    tracker.on_ack(*_ack("A1", "1.0", kind="message"))  # not the mention's envelope
    tracker.on_ack(*_ack("A1", "1.0"))
    tracker.on_message("posted", message("Ubot1", "<@Ubot1> bn1-000000", "2.0", "1.0"))
    tracker.on_message("changed", message("Ubot1", "<@Ubot1> bn1-000000", "2.0", "1.0"))
    tracker.on_message("posted", message("Ubot1", "<@Ubot1> bn1-000000", "2.1", "1.0"))  # twice
    tracker.on_message("posted", message("Ubot1", "<@Ubot1> bn1-000001", "2.2"))  # not threaded
    tracker.on_message("posted", message("Ubot2", "<@Ubot1> bn1-000002", "2.3", "1.2"))  # other
    tracker.on_message("posted", message("Ubot2", "<@Ubot1> bn1-000003", "2.4", "1.3"))
    tracker.drain()
    assert set(tracker.answers) == {"bn1-000000", "bn1-000003"}
    assert set(tracker.floor) == {"bn1-000000"}
    assert tracker.extra == 3 and tracker.doubled == 1
    assert tracker.posted(["bn1-000000", "bn9-000000"]) == {"bn1-000000": 10.0}


# -- --platform lark -------------------------------------------------------------

LARK_INT_FIELDS = ("channels", "agents", "messages", "sent", "answered", "lost", "doubled",
                   "extra", "post_errors", "threads_idle", "threads_peak", "actors", "scopes",
                   "api_calls", "bridge_log_warnings", "bridge_log_errors")
LARK_FLOAT_FIELDS = ("rate", "ack_p50_ms", "ack_p99_ms", "bridge_p50_ms", "bridge_p99_ms",
                     "overhead_p50_ms", "overhead_p99_ms", "throughput_per_s",
                     "throughput_rate", "rss_mb", "posts_per_answer", "api_calls_per_answer",
                     "reconnect_s", "duration_s")
LARK_REPLY = "POST /open-apis/im/v1/messages/:message_id/reply"


def test_lark_smoke_run_answers_every_message_once_and_recovers() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--platform", "lark",
         "--channels", "2", "--agents", "2", "--messages", "10", "--rate", "20", "--steps", "1",
         "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == set(LARK_JSON_FIELDS) == {
        *LARK_INT_FIELDS, *LARK_FLOAT_FIELDS, "steps", "platform", "api_methods"}
    for name in LARK_INT_FIELDS:
        assert isinstance(data[name], int) and not isinstance(data[name], bool), name
    for name in LARK_FLOAT_FIELDS:
        assert _number(data[name]), name
    assert data["platform"] == "lark"
    assert (data["channels"], data["agents"], data["messages"]) == (2, 2, 10)
    assert (data["sent"], data["answered"], data["lost"]) == (10, 10, 0)
    assert (data["doubled"], data["extra"], data["post_errors"]) == (0, 0, 0)
    assert data["ack_p99_ms"] > 0 and data["bridge_p99_ms"] > 0
    assert data["reconnect_s"] > 0  # -1: not answered after the dropped connection
    assert data["rss_mb"] > 0 and data["threads_peak"] > 0 and data["threads_idle"] > 0
    assert data["api_methods"][LARK_REPLY] >= 10 and data["posts_per_answer"] >= 1
    assert data["api_calls"] == sum(data["api_methods"].values())
    assert all(route.split(" ", 1)[1].startswith("/open-apis/")
               for route in data["api_methods"])
    assert len(data["steps"]) == 1
    step = data["steps"][0]
    assert set(step) == {*STEP_INT_FIELDS, *STEP_FLOAT_FIELDS}
    assert (step["sent"], step["answered"], step["lost"]) == (10, 10, 0)
    assert step["floor_p99_ms"] == data["ack_p99_ms"] and step["p99_ms"] == data["bridge_p99_ms"]


def test_lark_config_hands_credentials_by_environment_only(tmp_path: Path) -> None:
    text = lark_config_text("http://127.0.0.1:9", tmp_path / "var", 2)
    assert 'app_id = "env:BRIDGE_BENCH_LARK_ID_ECHO2"' in text
    assert 'app_secret = "env:BRIDGE_BENCH_LARK_SECRET_ECHO"' in text
    assert "[platforms.lark]" in text and 'domain = "http://127.0.0.1:9"' in text
    assert "[fabric]" not in text and "[platforms.slack]" not in text
    assert text.count('platform = "lark"') == 2 and text.count('scope = "thread"') == 2
    assert "cli_" not in text


def _lark_ack(app_id: str, message_id: str, text: str, *, code: int = 200,
              kind: str = "im.message.receive_v1") -> tuple[str, LarkDelivery]:
    event = {"header": {"event_id": "e", "event_type": kind},
             "event": {"message": {"message_id": message_id,
                                   "content": json.dumps({"text": f"@_user_1 {text}"})}}}
    return app_id, LarkDelivery("e", kind, "f", 0, code == 200, code, None, event)


def _lark_message(app_id: str, message_id: str, text: str, parent: str = "") -> dict[str, Any]:
    return {"message_id": message_id, "app_id": app_id, "text": text, "parent_id": parent,
            "root_id": parent}


def test_lark_tracker_matches_replies_and_acks_and_counts_doubles() -> None:
    tracker = LarkTracker({"ou_bot1": "cli_1", "ou_bot2": "cli_2"})
    for n in range(3):
        tracker.expect(f"bn1-00000{n}", 10.0, "ou_bot1")
    tracker.expect("bn1-000003", 10.0, "ou_bot2")
    for n in range(3):
        tracker.posted_as(f"bn1-00000{n}", f"om_{n}")
    tracker.posted_as("bn1-000000", "om_other")  # the first id stays
    tracker.on_ack(*_lark_ack("cli_2", "om_0", "bn1-000000"))  # not the app mentioned
    tracker.on_ack(*_lark_ack("cli_1", "om_0", "bn1-000000", code=500))  # refused: no floor
    tracker.on_ack(*_lark_ack("cli_1", "om_0", "bn1-000000", kind="im.message.recalled_v1"))
    tracker.on_ack(*_lark_ack("cli_1", "om_0", "bn1-000000"))
    tracker.on_ack(*_lark_ack("cli_2", "om_3", "bn1-000003"))  # names the post's id
    tracker.on_message("posted", _lark_message("", "om_0", "bn1-000000"))  # a person's: ignored
    tracker.on_message("posted", _lark_message("cli_1", "om_a", "working on bn1-000000 now",
                                               "om_0"))  # holds it, does not end with it
    tracker.on_message("posted", _lark_message("cli_1", "om_b", "@_user_1 bn1-000000", "om_0"))
    tracker.on_message("changed", _lark_message("cli_1", "om_b", "@_user_1 bn1-000000",
                                                "om_0"))  # the same message again: once
    tracker.on_message("posted", _lark_message("cli_1", "om_c", "bn1-000001"))  # not a reply
    tracker.on_message("posted", _lark_message("cli_2", "om_d", "bn1-000002", "om_2"))  # other
    tracker.on_message("posted", _lark_message("cli_2", "om_e", "bn1-000003", "om_3"))
    tracker.drain()
    assert set(tracker.answers) == {"bn1-000000", "bn1-000003"}
    assert set(tracker.floor) == {"bn1-000000", "bn1-000003"}
    assert tracker.sent["bn1-000000"].ref == "om_0" and tracker.sent["bn1-000003"].ref == "om_3"
    assert tracker.extra == 3 and tracker.doubled == 1
    assert tracker.posted(["bn1-000000", "bn9-000000"]) == {"bn1-000000": 10.0}


def test_lark_tracker_holds_an_answer_until_its_post_has_an_id() -> None:
    tracker = LarkTracker({"ou_bot1": "cli_1"})
    tracker.expect("bn1-000000", 10.0, "ou_bot1")
    tracker.on_message("posted", _lark_message("cli_1", "om_b", "bn1-000000", "om_0"))
    tracker.drain()
    assert tracker.answers == {} and tracker.extra == 0
    tracker.posted_as("bn1-000000", "om_0")
    tracker.drain()
    assert list(tracker.answers) == ["bn1-000000"] and tracker.extra == 0


def test_profile_writes_the_bridge_s_stacks_and_prints_its_top_functions(
        tmp_path: Path) -> None:
    stacks = tmp_path / "bridge.stacks"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--channels", "2", "--agents",
         "1", "--messages", "40", "--rate", "40", "--steps", "1", "--profile", str(stacks),
         "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answered"] > 0  # the JSON stays alone on stdout
    assert stacks.exists()
    assert "function (file:line)" in result.stderr and "samples" in result.stderr
    refused = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--agents", "0", "--profile",
         str(tmp_path / "none")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 1 and "--profile" in refused.stderr
