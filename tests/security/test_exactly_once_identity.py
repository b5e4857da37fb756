"""Exactly-once decided by identity: each post's idempotency key, never its text.

Attacks reproduced (issue "Trust boundaries", item 3): an answer whose mention
the guild rewrites was posted twice after an answer lost in transit; a landed
piece buried under more than 50 newer messages was posted again after a
restart; an identical earlier answer ("Done.") made a piece that never landed
count as delivered. Also: the dev guild's nonce field and the adapter's search.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

import actors.runner
import adapters.chat.fabric.devguild.state as guild_state
from actors.app import BridgeApp
from adapters.chat.fabric import rules
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.rest import FabricCenter, FabricGuild, message_nonce
from bridge.cli.compose import load_config
from bridge.store import Store
from tests.support import (
    Member,
    gated_config,
    script_agent_table,
    start_bridge,
    wait_until,
    write_config,
)


def scope_key(guild: DevGuild, channel: str) -> str:
    """The echo agent's scope key for a channel of the dev guild."""
    return f"fabric:echo:dev:{guild.channel_id(channel)}"


def echo_messages(guild: DevGuild, channel: str) -> list[dict[str, Any]]:
    """Every message by echo in ``channel``, by seq."""
    echo_id = guild.user_id("echo")
    return [m for m in guild.state.messages(guild.channel_id(channel))
            if m["authorUserId"] == echo_id]


def rest_as(guild: DevGuild, name: str) -> FabricGuild:
    """A REST client of the dev guild logged in as the seeded user ``name``."""
    return FabricGuild(FabricCenter(guild.center_url).login(guild.api_key(name)).guilds["dev"])


# -- the bridge, end to end -----------------------------------------------------


def test_answer_with_a_rewritten_mention_after_a_lost_answer_is_posted_once(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    """Attack: the guild rewrites ``<@user.name:bob>``, so a text comparison never
    recognises the landed answer and posts it again."""
    agents = script_agent_table(tmp_path, "mention.py", "import sys\nsys.stdin.read()\n"
                                "print('Done, <@user.name:bob> can look.')\n")
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents,
                                    debounce_s=0.05))
    apps.append(app)
    assert app.store is not None
    store = app.store
    key = scope_key(devguild, "general")
    # The answer is stored and announced, but the bridge gets a 502.
    devguild.fail_next_posts(1, 502, user_id=devguild.user_id("echo"), landed=True)
    members("alice").post("general", "please do it")
    wait_until(lambda: store.outbox_counts(key) == {"posted": 1}, what="the answer delivered")
    posted = echo_messages(devguild, "general")
    assert [m["content"] for m in posted] == [
        f"Done, <@{devguild.user_id('bob')}> can look."]
    assert posted[0][rules.MESSAGE_NONCE_FIELD].endswith(":0")


def test_landed_piece_under_more_than_a_page_of_newer_messages_is_not_posted_again(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    """Attack: 250 messages after a landed piece whose answer was lost, then a
    restart; a check of the last 50 messages missed it and posted it twice."""
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    first = start_bridge(config)
    apps.append(first)
    assert first.store is not None
    store = first.store
    key = scope_key(devguild, "work")
    # The answer lands, the bridge gets a 503 and would retry in a minute.
    devguild.fail_next_posts(1, 503, retry_after_s=60, user_id=devguild.user_id("echo"),
                             landed=True)
    members("alice").post("work", "<@user.name:echo> answer me once")
    wait_until(lambda: echo_messages(devguild, "work"), what="the answer to land")
    wait_until(lambda: any(p.attempts for p in store.pending_pieces(key)),
               what="the lost answer recorded as a failed attempt")
    first.stop()
    bob, work = devguild.user_id("bob"), devguild.channel_id("work")
    for i in range(250):  # no mention: context only, nothing engages
        devguild.state.post(bob, work, f"filler {i}")
    second = start_bridge(load_config(config.path))
    apps.append(second)
    assert second.store is not None
    wait_until(lambda: second.store is not None and not second.store.pending_pieces(key),
               what="the pending piece settled")
    answers = [m["content"] for m in echo_messages(devguild, "work")]
    assert len(answers) == 1 and "answer me once" in answers[0], answers


def test_identical_earlier_answer_does_not_stand_in_for_a_piece_that_never_landed(
        tmp_path: Path, devguild: DevGuild, apps: list[BridgeApp]) -> None:
    """Attack: the agent already said "Done." after the question; a piece "Done."
    left pending by a crash, which never landed, was taken as delivered."""
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    general = devguild.channel_id("general")
    asked = devguild.state.post(devguild.user_id("alice"), general, "finish it")
    devguild.state.post(devguild.user_id("echo"), general, "Done.")
    key = scope_key(devguild, "general")
    store = Store(config.bridge.state_dir / "bridge.db")
    try:
        store.start_run("r-never", key, [])
        store.finish_run("r-never", "ok", ["Done."], after_seq=asked.message["seq"])
    finally:
        store.close()
    app = start_bridge(config)
    apps.append(app)
    wait_until(lambda: app.store is not None and not app.store.pending_pieces(key),
               what="the pending piece settled")
    done = [m for m in echo_messages(devguild, "general") if m["content"] == "Done."]
    assert [m[rules.MESSAGE_NONCE_FIELD] for m in done] == [None, "r-never:0"]


def test_status_message_whose_answer_was_lost_is_edited_not_posted_again(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp], monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: the live status post lands but its answer is lost; the next status
    update posted a second status message instead of editing the first."""
    monkeypatch.setattr(actors.runner, "STATUS_AFTER_S", 0.2)
    monkeypatch.setattr(actors.runner, "STATUS_TICK_S", 0.3)
    config, workspace = gated_config(tmp_path, devguild.center_url, debounce_s=0.05)
    app = start_bridge(config)
    apps.append(app)
    devguild.fail_next_posts(1, 502, user_id=devguild.user_id("echo"), landed=True)
    members("alice").post("general", "take your time")

    # While the gate is closed the run goes on, and all echo says is its status.
    def updated() -> bool:
        seen = echo_messages(devguild, "general")
        return len(seen) > 1 or any(m["editedAt"] for m in seen)

    wait_until(updated, 15, "the status to be updated after the lost answer")
    statuses = echo_messages(devguild, "general")
    (workspace / "gate").touch()
    assert len(statuses) == 1, [m["content"] for m in statuses]
    assert statuses[0][rules.MESSAGE_NONCE_FIELD].startswith("status:")
    wait_until(lambda: len(echo_messages(devguild, "general")) == 2, what="the answer")


# -- the dev guild's nonce ------------------------------------------------------


def test_dev_guild_stores_the_nonce_and_returns_it_everywhere(
        devguild: DevGuild, members: Callable[[str], Member]) -> None:
    bob = members("bob")
    alice = rest_as(devguild, "alice")
    general = devguild.channel_id("general")
    posted = alice.post(general, "hello <@user.name:bob>", idempotency_key="k-1")
    assert posted[rules.MESSAGE_NONCE_FIELD] == "k-1"
    history = alice.history(general)
    assert history[-1][rules.MESSAGE_NONCE_FIELD] == "k-1"
    event = wait_until(lambda: [e for e in bob.seen if e["messageId"] == posted["messageId"]],
                       what="the socket event")[0]
    assert event[rules.MESSAGE_NONCE_FIELD] == "k-1"
    edited = alice.edit(general, posted["messageId"], "changed")
    assert edited[rules.MESSAGE_NONCE_FIELD] == "k-1"
    plain = alice.post(general, "no key")
    assert plain[rules.MESSAGE_NONCE_FIELD] is None


@pytest.mark.parametrize("nonce", [7, ["k"], {"k": 1}, True, "", "n" * 65])
def test_dev_guild_refuses_a_nonce_that_is_not_a_short_string(
        devguild: DevGuild, nonce: Any) -> None:
    """Attack: a nonce of another type or of unbounded size is stored as given."""
    alice = rest_as(devguild, "alice")
    general = devguild.channel_id("general")
    answer = requests.post(f"{alice.api}/channels/{general}/messages", timeout=5,
                           headers={"Authorization": f"Bearer {alice.access.token}"},
                           json={"content": "x", rules.MESSAGE_NONCE_FIELD: nonce})
    assert answer.status_code == 400, answer.text
    assert devguild.state.messages(general) == []
    ok = alice.post(general, "x", idempotency_key="n" * rules.MESSAGE_NONCE_MAX)
    assert ok[rules.MESSAGE_NONCE_FIELD] == "n" * rules.MESSAGE_NONCE_MAX


# -- the adapter's search -------------------------------------------------------


def test_message_nonce_fits_the_bound_and_is_stable() -> None:
    long_key = "reply:some-agent:" + "x" * 100
    assert message_nonce("run1:0") == "run1:0"
    assert message_nonce(long_key) == message_nonce(long_key)
    assert len(message_nonce(long_key)) == rules.MESSAGE_NONCE_MAX
    assert message_nonce(long_key) != message_nonce(long_key + "y")


def test_find_posted_pages_back_and_matches_by_key_only(devguild: DevGuild) -> None:
    echo = rest_as(devguild, "echo")
    general = devguild.channel_id("general")
    alice_id = devguild.user_id("alice")
    asked = devguild.state.post(alice_id, general, "question").message["seq"]
    echo.post(general, "Done.", idempotency_key="other:0")  # same text, another key
    target = echo.post(general, "Done.", idempotency_key="mine:0")
    for i in range(450):
        devguild.state.post(alice_id, general, f"later {i}")
    found = echo.find_posted(general, "mine:0", after_seq=asked)
    assert found is not None and found["messageId"] == target["messageId"]
    assert echo.find_posted(general, "absent:0", after_seq=asked) is None
    # Another identity's message with the same nonce is not ours.
    assert rest_as(devguild, "alice").find_posted(general, "mine:0") is None


def test_find_posted_stops_at_its_page_bound_with_a_warning(
        devguild: DevGuild, caplog: pytest.LogCaptureFixture) -> None:
    echo = rest_as(devguild, "echo")
    general = devguild.channel_id("general")
    echo.post(general, "old", idempotency_key="deep:0")
    for i in range(450):
        devguild.state.post(devguild.user_id("alice"), general, f"later {i}")
    with caplog.at_level(logging.WARNING, logger="adapters.chat.fabric.rest"):
        assert echo.find_posted(general, "deep:0", max_pages=2) is None
    assert "not found in the last 2 history pages" in caplog.text
    assert echo.find_posted(general, "deep:0", max_pages=3) is not None


def test_find_posted_stops_at_the_first_send_time(
        devguild: DevGuild, monkeypatch: pytest.MonkeyPatch) -> None:
    echo = rest_as(devguild, "echo")
    general = devguild.channel_id("general")
    # Every message is a day older than the piece: one page shows it is not there.
    monkeypatch.setattr(guild_state, "now_iso", lambda: "2000-01-01T00:00:00.000Z")
    for i in range(450):
        devguild.state.post(devguild.user_id("alice"), general, f"earlier {i}")
    calls: list[dict[str, Any]] = []
    history = echo.history

    def counted(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append(kwargs)
        return history(*args, **kwargs)

    monkeypatch.setattr(echo, "history", counted)
    assert echo.find_posted(general, "late:0", not_before=946684800.0 + 86400) is None
    assert len(calls) == 1
    assert echo.find_posted(general, "late:0") is None  # no time bound: the whole channel
    assert len(calls) == 4


def test_find_posted_fetches_the_rest_of_a_page_the_guild_cut_short(
        devguild: DevGuild, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guild whose history pages are smaller than asked still gets searched whole."""
    echo = rest_as(devguild, "echo")
    general = devguild.channel_id("general")
    alice_id = devguild.user_id("alice")
    for i in range(100):
        devguild.state.post(alice_id, general, f"before {i}")
    target = echo.post(general, "here", idempotency_key="cut:0")
    for i in range(300):
        devguild.state.post(alice_id, general, f"after {i}")
    small = types.SimpleNamespace(**{**vars(rules), "HISTORY_LIMIT_MAX": 30})
    monkeypatch.setattr(guild_state, "rules", small)
    found = echo.find_posted(general, "cut:0", after_seq=50)
    assert found is not None and found["messageId"] == target["messageId"]


def test_find_posted_covers_as_many_messages_when_the_history_has_gaps(
        devguild: DevGuild, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: messages deleted just below the newest page cut one history window
    short; the search then asked for pages of that short size, so its page bound
    covered a fraction of the messages and a landed piece was posted again."""
    echo = rest_as(devguild, "echo")
    me = echo.access.user_id
    # A guild that leaves deleted messages out of its history: seqs 606..800 are gone.
    kept: list[dict[str, Any]] = [
        {"seq": 1, "authorUserId": me, rules.MESSAGE_NONCE_FIELD: message_nonce("gap:0")}]
    kept += [{"seq": seq, "authorUserId": "alice", rules.MESSAGE_NONCE_FIELD: None}
             for seq in range(2, 1001) if not 606 <= seq <= 800]
    calls: list[dict[str, Any]] = []

    def history(channel_id: str, seq_from: int | None = None, seq_to: int | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
        calls.append({"seq_from": seq_from, "seq_to": seq_to, "limit": limit})
        chosen = [m for m in kept if (seq_from is None or m["seq"] >= seq_from)
                  and (seq_to is None or m["seq"] <= seq_to)]
        limit = min(limit, rules.HISTORY_LIMIT_MAX)
        return chosen[:limit] if seq_from is not None else chosen[-limit:]

    monkeypatch.setattr(echo, "history", history)
    found = echo.find_posted("c1", "gap:0")
    assert found is not None and found["seq"] == 1
    # 805 messages are 5 pages of the largest size, gaps or not.
    assert len(calls) == 5
    assert all(call["limit"] == rules.HISTORY_LIMIT_MAX for call in calls)
