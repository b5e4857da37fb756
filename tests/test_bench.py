"""``bin/bridge bench``: a smoke run through the CLI, and the token bookkeeping."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge.ops.bench import JSON_FIELDS, _Listener, _Tracker, agent_names, bench_seed

ROOT = Path(__file__).resolve().parent.parent

INT_FIELDS = ("channels", "agents", "messages", "sent", "answered", "lost", "extra",
              "post_errors", "threads_idle", "threads_peak", "actors", "scopes",
              "agent_posts", "agent_edits", "agent_presence", "bridge_log_warnings",
              "bridge_log_errors")
FLOAT_FIELDS = ("rate", "floor_p50_ms", "floor_p99_ms", "bridge_p50_ms", "bridge_p99_ms",
                "overhead_p50_ms", "overhead_p99_ms", "throughput_per_s", "throughput_rate",
                "rss_mb", "posts_per_answer", "edits_per_answer", "api_calls_per_answer",
                "presence_per_answer", "duration_s")
STEP_INT_FIELDS = ("sent", "answered", "lost", "threads_peak")
STEP_FLOAT_FIELDS = ("rate", "post_rate", "answered_per_s", "duration_s", "p50_ms", "p99_ms",
                     "floor_p50_ms", "floor_p99_ms", "bridge_cpu_pct", "bench_cpu_pct")


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
    assert data["api_calls_per_answer"] >= 1 and data["posts_per_answer"] >= 1
    assert isinstance(data["steps"], list) and 1 <= len(data["steps"]) <= 2
    for step in data["steps"]:
        assert set(step) == {*STEP_INT_FIELDS, *STEP_FLOAT_FIELDS}
        for name in STEP_INT_FIELDS:
            assert isinstance(step[name], int), name
        for name in STEP_FLOAT_FIELDS:
            assert _number(step[name]), name
        assert step["p99_ms"] > 0


def test_help_documents_every_json_field() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "bench", "--help"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in JSON_FIELDS:
        assert f"{name}:" in text, name


def test_seed_adds_agent_users_with_their_keys() -> None:
    assert agent_names(3) == ["echo", "echo2", "echo3"]
    users = {user.name: user for user in bench_seed(3).users}
    assert users["echo"].api_key == "fak_dev_echo"
    assert users["echo3"].api_key == "fak_dev_echo3" and users["echo3"].kind == "agent"
    assert len({user.id for user in users.values()}) == len(users)


class _Fake:
    """Stands in for a member's listener (only ``name`` and ``events`` are used)."""

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
    listeners: list[_Listener] = [alice, bob]  # type: ignore[list-item]
    tracker.drain(listeners)
    assert tracker.floor == {"bn1-000000": 10.01}
    assert tracker.answers == {"bn1-000000": 10.02, "bn1-000001": 10.02}
    assert tracker.extra == 2


def test_status_run_reports_posts_and_edits() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "bench",
                             "--status-run", "3", "--json"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"run_s", "tool_steps", "posts", "edits", "edits_per_s"}
    assert data["posts"] == 2  # the status message and the answer
    assert data["edits"] >= 1 and data["tool_steps"] == 3
