"""Terminal escapes: channel names and member text acting on the operator's terminal.

Each test names the attack it reproduces. A member who names a channel
``\\x1b]0;pwned\\x07`` (OSC: set the window title) or writes ``\\x1b[2J`` (CSI:
clear the screen) had those bytes written raw to the bridge's log lines,
``bridge status`` and the live UI; rich's ``Text`` keeps ESC.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from adapters.chat.fabric.chat import ChatSession
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.rest import FabricCenter
from bridge.board import ActorRow, Board, BoardSnapshot, ConnectionRow, RunRow, ScopeRow
from bridge.cli.compose import bridge_app
from bridge.logs import remove_logging, setup_logging
from bridge.ops.doctor import failure, format_check
from bridge.ops.tui import plain_status, render
from bridge.statefiles import StateLock, write_status
from tests.support import Member, wait_until, write_config

ROOT = Path(__file__).resolve().parents[2]
#: A channel name that sets the window title, clears the screen, reverses the
#: text that follows, and starts a C1 CSI sequence.
CHANNEL = "lab\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m"
#: A message that does the same, then forges a log line.
TEXT = "hi\x1b]0;pwned\x07\x1b[2J\r\n12:00:00 ERROR   bridge: forged line"
#: Sequences that must never reach an output raw.
RAW = ("\x1b]", "\x1b[2J", "\x07", "\u202e", "\x9b", "\r")
NOW = 1_700_000_000.0


def assert_no_raw(output: str) -> None:
    for sequence in RAW:
        assert sequence not in output, f"{sequence!r} reached the output raw"


def hostile_snapshot() -> BoardSnapshot:
    return BoardSnapshot(
        taken_at=NOW, started_at=NOW - 60, pid=4321,
        actors=(ActorRow("supervisor", "supervisor", None, "running"),
                ActorRow("runner:r1", "runner", "supervisor", "running", detail=TEXT)),
        connections=(ConnectionRow("echo", "dev", "reconnecting", reason=TEXT),),
        scopes=(ScopeRow("fabric:echo:dev:c-1", "echo", CHANNEL, "running"),),
        runs=(RunRow("r1", "fabric:echo:dev:c-1", "echo", NOW - 5, TEXT),),
        logs=(f"scope fabric:echo:dev:c-1: message from {CHANNEL}: {TEXT}",),
    )


@pytest.fixture
def logged() -> Iterator[tuple[Board, io.StringIO]]:
    """The bridge's logging set-up, to a board and a stream (as ``start --no-tui``)."""
    board, stream = Board(), io.StringIO()
    handlers = setup_logging(board, "INFO", stream)
    try:
        yield board, stream
    finally:
        remove_logging(handlers)


def test_channel_name_and_message_in_a_log_line_are_escaped(
        logged: tuple[Board, io.StringIO]) -> None:
    board, stream = logged
    log = logging.getLogger("actors.gateway")
    log.info("gateway echo@dev: joining new channel %s", CHANNEL)
    log.info("scope fabric:echo:dev:c-1: message m-1 from %s: %s", "mallory", TEXT)
    written = stream.getvalue()
    assert_no_raw(written)
    assert_no_raw("\n".join(board.snapshot().logs))
    assert "joining new channel lab\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x9b31m\n" in written
    # the forged line stays part of the real one
    assert written.count("\n") == 2
    assert "hi\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x0a12:00:00 ERROR   bridge: forged line" in written


def test_exception_text_in_a_log_line_is_escaped(logged: tuple[Board, io.StringIO]) -> None:
    board, stream = logged
    try:
        raise ValueError(f"bad channel {CHANNEL}")
    except ValueError:
        logging.getLogger("actors.gateway").exception("channel list failed")
    assert_no_raw(stream.getvalue())
    assert_no_raw("\n".join(board.snapshot().logs))
    assert "ValueError: bad channel lab\\x1b]0;pwned" in stream.getvalue()


def test_status_text_shows_escapes_not_raw(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1/api")
    state_dir = tmp_path / "var"
    write_status(state_dir, hostile_snapshot())
    with StateLock(state_dir):  # this test process plays the running bridge
        result = subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), "status", "-c",
                                 str(config.path)], capture_output=True, text=True, timeout=60,
                                check=False)
    assert result.returncode == 0, result.stderr
    assert_no_raw(result.stdout)
    assert "  lab\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x9b31m echo running" in result.stdout


def test_plain_status_shows_escapes_not_raw() -> None:
    text = plain_status(hostile_snapshot(), now=NOW)
    assert_no_raw(text)
    assert "\\x1b]0;pwned\\x07" in text


def test_tui_render_shows_escapes_not_raw() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=300,
                      height=60)
    console.print(render(hostile_snapshot(), now=NOW))
    assert_no_raw(out.getvalue())  # the console's own colour codes are \x1b[...m only
    recorder = Console(record=True, width=300, file=io.StringIO())
    recorder.print(render(hostile_snapshot(), now=NOW))
    assert "lab\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x9b31m" in recorder.export_text()


def test_doctor_line_shows_escapes_not_raw() -> None:
    # doctor quotes what the guild answers, e.g. a bound channel it could not find
    line = format_check(failure("guild dev (echo)", f"channel {CHANNEL} answered: {TEXT}"))
    assert_no_raw(line)
    assert "\n" not in line and "channel lab\\x1b]0;pwned" in line


def test_chat_client_prints_another_members_escapes_as_text(
        devguild: DevGuild, members: Callable[[str], Member]) -> None:
    out = io.StringIO()
    session = ChatSession(FabricCenter(devguild.center_url), devguild.api_key("alice"), "dev",
                          "general", out)
    try:
        session.connect()
        members("bob").post("general", TEXT)
        wait_until(lambda: "forged line" in out.getvalue(), what="bob's message printed")
    finally:
        session.close()
    assert_no_raw(out.getvalue())
    assert "] bob: hi\\x1b]0;pwned\\x07\\x1b[2J\\x0d\n12:00:00 ERROR" in out.getvalue()


def test_hostile_channel_over_the_dev_guild_reaches_no_output_raw(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = bridge_app(write_config(tmp_path, devguild.center_url, debounce_s=0.05), Board())
    stream = io.StringIO()
    handlers = setup_logging(None, "DEBUG", stream)
    app.start()
    try:
        wait_until(lambda: (row := app.board.connection("echo", "dev"))
                   and row.state == "connected", what="echo connected")
        alice = members("alice")
        created = alice.rest.create_channel(CHANNEL, "general",
                                            members=[devguild.user_id("echo")])
        wait_until(lambda: (row := app.board.connection("echo", "dev")) and row.channels == 5,
                   what="echo joined the new channel")
        alice.rest.post(created["id"], TEXT)
        wait_until(lambda: [m for m in devguild.state.messages(created["id"])
                            if m["authorUserId"] == devguild.user_id("echo")],
                   what="the echo answer")
        scope = wait_until(lambda: next((s for s in app.board.snapshot().scopes
                                         if s.key.endswith(created["id"])), None))
        assert scope.channel == CHANNEL  # the board keeps the data as it is
        snapshot = app.board.snapshot()
    finally:
        app.stop()
        remove_logging(handlers)
    assert_no_raw(stream.getvalue())
    assert "joining new channel lab\\x1b]0;pwned" in stream.getvalue()
    assert_no_raw("\n".join(snapshot.logs))
    assert_no_raw(plain_status(snapshot))
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=300, height=80).print(render(snapshot))
    assert_no_raw(out.getvalue())
    assert "lab\\x1b]0;pwned" in out.getvalue()
