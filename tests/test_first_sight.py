"""Nothing a member says is ignored: first sight of a channel, and silent sockets.

Every test runs the whole actor tree against the dev guild over real loopback
sockets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from actors.app import BridgeApp
from adapters.chat.fabric import intake as gateway
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.intake import FIRST_SIGHT_MESSAGES
from bridge.board import ConnectionRow
from bridge.isotime import parse_iso
from bridge.model import ConnectionKey
from tests.support import (
    Member,
    script_agent_table,
    start_bridge,
    wait_until,
    write_config,
)

FABRIC_DEV = ConnectionKey("fabric", "echo", "dev")

#: A command agent that answers with its whole prompt (to see the context it got).
PROMPT_AGENT = "import sys; print(sys.stdin.read())"


def connection(app: BridgeApp) -> ConnectionRow:
    row = app.board.connection("echo", "dev")
    assert row is not None
    return row


def test_first_message_of_a_new_dm_is_answered(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url))
    try:
        alice = members("alice")
        echo_id = devguild.user_id("echo")
        for n in range(3):
            # A member opens a DM with the agent and writes at once.
            channel = alice.rest.create_channel(f"dm-new-{n}", "dm", members=[echo_id],
                                                public=False)
            alice.rest.post(channel["id"], f"first words {n}")
        for n in range(3):
            expected = f"first words {n}"
            alice.wait_reply("echo", f"dm-new-{n}", expected.__eq__)
    finally:
        app.stop()


def test_first_start_answers_inside_the_window_and_keeps_older_as_context(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    old = alice.post("general", "said long ago")
    window_s = 1.0
    # Let the first message age past the catch-up window (no answer is expected yet:
    # no bridge runs), then say something fresh before the bridge's first start.
    wait_until(lambda: time.time() - _created(devguild, "general", old["seq"]) > window_s + 0.5,
               what="the old message to age")
    alice.post("general", "said just now")
    app = start_bridge(write_config(tmp_path, devguild.center_url,
                                    bridge_extra=f"catch_up_window_s = {window_s}"))
    try:
        alice.wait_reply("echo", "general", lambda c: c == "said just now")
        assert app.store is not None
        key = f"fabric:echo:dev:{devguild.channel_id('general')}"
        # The old message was not answered, but it is stored (kept, not dropped): as
        # context, without a journal row (stale, it cannot engage); the fresh one has one.
        wait_until(lambda: stored_messages(app) == 2, what="both messages stored")
        assert sum(app.store.count_inbound(key).values()) == 1
        assert alice.messages_from("echo", "general") == ["said just now"]
    finally:
        app.stop()


def stored_messages(app: BridgeApp) -> int:
    """Messages in the store (each once, with or without journal rows)."""
    assert app.store is not None
    return app.store.stats().rows.get("messages", {}).get("rows", 0)


def _created(devguild: DevGuild, channel: str, seq: int) -> float:
    for message in devguild.state.messages(devguild.channel_id(channel)):
        if message["seq"] == seq:
            created = parse_iso(message["createdAt"])
            assert created is not None, message
            return created
    raise KeyError(seq)


def test_a_joined_channels_earlier_messages_become_context(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    agents = script_agent_table(tmp_path, "prompt.py", PROMPT_AGENT)
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents, debounce_s=0.05))
    try:
        alice = members("alice")
        # A work channel the agent is not in yet: nothing there reaches it.
        channel = alice.rest.create_channel("plans", "work", public=False)
        alice.rest.post(channel["id"], "the deploy is frozen until friday")
        echo_id = devguild.user_id("echo")
        answer = requests.post(f"{devguild.guild_url}/api/channels/{channel['id']}/members",
                               json={"userId": echo_id},
                               headers={"Authorization": f"Bearer {alice.access.token}"},
                               timeout=5)
        assert answer.status_code == 200
        wait_until(lambda: connection(app).channels == 5, what="the agent to join plans")
        alice.rest.post(channel["id"], f"<@{echo_id}> can we ship today?")
        prompt = alice.wait_reply("echo", "plans", lambda c: "can we ship today?" in c)
        assert "the deploy is frozen until friday" in prompt
        # It was context: it engaged nothing on its own (a work channel needs a mention).
        assert len(alice.messages_from("echo", "plans")) == 1
    finally:
        app.stop()


def test_long_history_seen_first_costs_one_bounded_page(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        caplog: pytest.LogCaptureFixture) -> None:
    alice = members("alice")
    total = FIRST_SIGHT_MESSAGES + 30
    report = devguild.channel_id("report")  # report: nobody is ever woken
    for n in range(total):
        alice.rest.post(report, f"line {n}")
    with caplog.at_level(logging.INFO, logger="adapters.chat.fabric.intake"):
        app = start_bridge(write_config(tmp_path, devguild.center_url))
        try:
            assert app.store is not None
            key = f"fabric:echo:dev:{report}"
            # Stored as context (report wakes nobody): no journal rows.
            wait_until(lambda: stored_messages(app) == FIRST_SIGHT_MESSAGES,
                       what="the last page stored")
            assert app.store.count_inbound(key) == {}
            assert app.store.cursors(FABRIC_DEV)[report] == str(total)
        finally:
            app.stop()
    assert any(f"seq 1..{total - FIRST_SIGHT_MESSAGES} skipped" in r.getMessage()
               for r in caplog.records)


def test_silent_socket_is_caught_up_and_reconnected(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url, fabric_extra="resync_s = 0.5"))
    try:
        alice = members("alice")
        alice.post("general", "before")
        alice.wait_reply("echo", "general", lambda c: c == "before")
        assert connection(app).last_event_at is not None
        assert devguild.silence_sockets(devguild.user_id("echo")) >= 1
        alice.post("general", "into the void")
        # No event reaches the agent's socket, yet the message is answered.
        alice.wait_reply("echo", "general", lambda c: c == "into the void")
        row = wait_until(lambda: (r := connection(app)).silences >= 1 and r.reconnects >= 1
                         and r.state == "connected" and r, what="a reconnect after the silence")
        assert row.silences >= 1
        # After the reconnect the socket delivers again.
        alice.post("general", "after")
        alice.wait_reply("echo", "general", lambda c: c == "after")
        assert alice.messages_from("echo", "general") == ["before", "into the void", "after"]
    finally:
        app.stop()


def test_a_channel_far_behind_is_caught_up_only_so_far_back(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gateway, "CATCH_UP_MESSAGES", 5)
    config = write_config(tmp_path, devguild.center_url)
    start_bridge(config).stop()  # the channels are known now; then an outage
    alice = members("alice")
    report = devguild.channel_id("report")
    for n in range(12):
        alice.rest.post(report, f"during the outage {n}")
    with caplog.at_level(logging.WARNING, logger="adapters.chat.fabric.intake"):
        app = start_bridge(config)
        try:
            assert app.store is not None
            wait_until(lambda: app.store.cursors(FABRIC_DEV).get(  # type: ignore[union-attr]
                report) == "12", what="report caught up")
            key = f"fabric:echo:dev:{report}"
            assert stored_messages(app) == 5  # as context: no journal rows
            assert app.store.count_inbound(key) == {}
        finally:
            app.stop()
    assert any("seq 1..7 skipped (more than 5 to catch up)" in r.getMessage()
               for r in caplog.records)


def test_a_live_event_dropped_as_bad_is_not_taken_for_a_silent_socket(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url,
                                    fabric_extra="resync_s = 0.3\ncontent_limit = 100"))
    try:
        alice = members("alice")
        alice.post("general", "x" * 150)  # over the bridge's limit: dropped as bad input

        def resyncs() -> int:
            return devguild.api_calls().get(("channels", "echo"), 0)

        seen = resyncs()
        wait_until(lambda: resyncs() >= seen + 3, what="three resyncs")
        row = connection(app)
        assert (row.silences, row.reconnects) == (0, 0)
        alice.post("general", "short")
        alice.wait_reply("echo", "general", lambda c: c == "short")
    finally:
        app.stop()
