"""Tests for bridge.ops.tui: rendering, the live loop and the plain status text."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

from bridge.board import ActorRow, BoardSnapshot, ConnectionRow, RunRow, ScopeRow
from bridge.ops.tui import format_age, plain_status, render, run_live

NOW = 1_700_000_000.0


def _snapshot(scope_count: int = 3) -> BoardSnapshot:
    actors = (
        ActorRow("supervisor", "supervisor", None, "running"),
        ActorRow("credentials:fabric:echo", "credentials", "supervisor", "running"),
        ActorRow("gateway:echo:dev", "gateway", "supervisor", "running", restarts=2),
        ActorRow(
            "gateway:codex:dev",
            "gateway",
            "supervisor",
            "failed",
            restarts=3,
            detail="gave up after 3 restarts",
        ),
        ActorRow("delivery:fabric:c1", "delivery", "supervisor", "restarting", restarts=1),
        ActorRow("scope:fabric:echo:dev:c1", "scope", "supervisor", "running"),
        ActorRow("runner:r1", "runner", "scope:fabric:echo:dev:c1", "running"),
    )
    connections = (
        ConnectionRow("echo", "dev", "connected", reconnects=1, token_at=NOW - 192, channels=4,
                      last_event_at=NOW - 7, silences=1),
        ConnectionRow("codex", "dev", "failed", reason="login refused"),
        ConnectionRow("claude", "dev", "reconnecting", reconnects=5, token_at=NOW - 30),
        ConnectionRow("cmd", "dev", "connecting"),
        ConnectionRow("old", "dev", "stopped"),
    )
    states = ["queued", "running", "idle", "debouncing"]
    scopes = tuple(
        ScopeRow(
            key=f"fabric:echo:dev:c{i}",
            agent="echo",
            channel=f"chan{i}",
            state=states[i % len(states)],
            queued=3 if i == 0 else 0,
            last_activity=NOW - 12 - i,
            received=10 + i,
            engaged=5,
            runs=2,
            failures=1 if i == 1 else 0,
        )
        for i in range(scope_count)
    )
    runs = (RunRow("0123456789abcdef", "fabric:echo:dev:c1", "echo", NOW - 75, "tool: bash ls"),)
    logs = tuple(f"log line {i} [not markup]" for i in range(20))
    return BoardSnapshot(
        taken_at=NOW - 0.2,
        started_at=NOW - 302,
        pid=4242,
        actors=actors,
        connections=connections,
        scopes=scopes,
        runs=runs,
        logs=logs,
    )


def _text(renderable: object, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.42, "0.4s"),
        (-3, "0.0s"),
        (12.9, "12s"),
        (192, "3m12s"),
        (2 * 3600 + 5 * 60 + 7, "2h05m"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_format_age(seconds: float, expected: str) -> None:
    assert format_age(seconds) == expected


def test_render_shows_every_section() -> None:
    out = _text(render(_snapshot(scope_count=4), NOW, title="mybridge"))
    assert "mybridge" in out
    assert "pid 4242" in out
    assert "up 5m02s" in out
    # tree
    names = ("supervisor", "credentials:fabric:echo", "gateway:echo:dev", "runner:r1",
             "delivery:fabric:c1")
    for name in names:
        assert name in out
    assert "gateway (2)" in out
    assert "failed" in out and "restarts=3" in out and "restarting" in out
    assert "gave up after 3 restarts" in out
    # connections in each state
    for state in ("connected", "reconnecting", "connecting", "stopped"):
        assert state in out
    assert "3m12s" in out  # echo token age
    assert "30s" in out
    assert "login refused" in out
    # scopes
    assert "queued 3" in out
    assert "chan2" in out and "debouncing" in out
    # runs
    assert "01234567" in out and "0123456789abcdef" not in out
    assert "1m15s" in out and "tool: bash ls" in out
    # logs: only the last 8, and brackets kept verbatim
    assert "log line 19 [not markup]" in out
    assert "connections 5  scopes 4  runs 1  1 failed" in out
    assert "log line 12 " in out
    assert "log line 11 " not in out


def test_render_caps_scopes() -> None:
    out = _text(render(_snapshot(scope_count=40), NOW, max_scopes=10))
    assert "+30 more" in out
    assert "chan9" in out
    assert "chan10 " not in out
    assert "scopes (40)" in out


def test_render_caps_tree_children() -> None:
    snap = _snapshot()
    many = tuple(ActorRow(f"scope:s{i}", "scope", "supervisor", "running") for i in range(20))
    out = _text(
        render(BoardSnapshot(NOW, NOW, 1, actors=snap.actors[:1] + many), NOW, max_children=5)
    )
    assert "scope (20)" in out
    assert "+15 more" in out


def test_render_empty_sections() -> None:
    out = _text(render(BoardSnapshot(taken_at=NOW, started_at=NOW, pid=1), NOW))
    for text in (
        "no actors yet",
        "no connections yet",
        "no scopes yet",
        "no active runs",
        "no log lines yet",
    ):
        assert text in out


def test_render_flags_stale_snapshot() -> None:
    snap = BoardSnapshot(taken_at=NOW - 60, started_at=NOW - 120, pid=1)
    assert "status 1m00s old" in _text(render(snap, NOW))


@pytest.mark.parametrize("width", [80, 160])
def test_render_at_widths(width: int) -> None:
    out = _text(render(_snapshot(scope_count=25), NOW), width=width)
    assert "queued 3" in out
    assert max(len(line) for line in out.splitlines()) <= width


def test_run_live_redraws_until_stopped() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    stop = threading.Event()
    calls = 0

    def source() -> BoardSnapshot:
        nonlocal calls
        calls += 1
        if calls >= 3:
            stop.set()
        return _snapshot()

    run_live(source, stop, console=console, refresh_per_second=50)
    assert calls == 3
    out = buf.getvalue()
    assert "gateway:echo:dev" in out
    assert "queued 3" in out
    assert "\x1b[?25h" in out  # cursor shown again: terminal restored


def test_run_live_waiting_text_and_timer_stop() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    thread = threading.Thread(
        target=run_live,
        args=(lambda: None, stop),
        kwargs={
            "console": console,
            "refresh_per_second": 1.0,
            "waiting_text": "waiting for the bridge… (no status in /x/var)",
        },
    )
    thread.start()
    thread.join(0.3 + 0.5 + 0.5)
    timer.cancel()
    assert not thread.is_alive()
    assert "no status in /x/var" in buf.getvalue()


def test_run_live_shows_source_errors() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    stop = threading.Event()

    def source() -> BoardSnapshot | None:
        stop.set()
        raise OSError("disk gone")

    run_live(source, stop, console=console)
    assert "disk gone" in buf.getvalue()


def test_run_live_propagates_keyboard_interrupt() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)

    def source() -> BoardSnapshot | None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_live(source, threading.Event(), console=console)
    assert "\x1b[?25h" in buf.getvalue()


def test_plain_status() -> None:
    text = plain_status(_snapshot(), NOW)
    lines = text.splitlines()
    assert lines[0] == "bridge pid 4242, up 5m02s"
    assert "\x1b" not in text
    assert ("  echo@dev connected reconnects=1 token_age=3m12s renewed=0 channels=4"
            " last_event=7s silences=1") in lines
    assert any(
        line.startswith("  codex@dev failed") and "reason=login refused" in line for line in lines
    )
    assert ("  chan0 echo queued 3 last=12s received=10 engaged=5 runs=2 failures=0"
            " delivered=0 outbox=0 retries=0 last_piece=-") in lines
    assert "  01234567 echo c1 1m15s tool: bash ls" in lines
    assert "      runner:r1 running" in lines
    assert any("gateway:codex:dev failed restarts=3" in line for line in lines)
    assert lines[-1] == "  log line 19 [not markup]"


def test_plain_status_empty() -> None:
    text = plain_status(BoardSnapshot(taken_at=NOW, started_at=NOW - 5, pid=7), NOW)
    assert text.splitlines() == [
        "bridge pid 7, up 5s",
        "actors:",
        "  none",
        "connections:",
        "  none",
        "scopes:",
        "  none",
        "runs:",
        "  none",
        "store:",
        "  not measured yet",
        "logs:",
        "  none",
    ]
