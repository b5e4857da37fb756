"""The whole actor tree against the dev guild over real loopback sockets."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.app import BridgeApp
from actors.scope import Scope
from adapters.chat.fabric.devguild import DevGuild
from bridge.cli.compose import load_config
from bridge.model import Inbound, ScopeKey
from tests.support import (
    Member,
    gated_config,
    script_agent_table,
    start_bridge,
    wait_until,
    write_config,
)


@pytest.fixture
def bridge(tmp_path: Path, devguild: DevGuild) -> Iterator[BridgeApp]:
    """A bridge with the echo agent bound to every channel of the dev guild."""
    app = start_bridge(write_config(tmp_path, devguild.center_url))
    try:
        yield app
    finally:
        app.stop()


def test_hello_gets_echo_answer(bridge: BridgeApp, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    alice.post("general", "hello")
    assert alice.wait_reply("echo", "general", lambda c: "hello" in c) == "hello"
    row = wait_until(lambda: next((s for s in bridge.board.snapshot().scopes
                                   if s.channel == "general" and s.runs == 1), None))
    assert (row.received, row.engaged) == (1, 1)


def test_context_messages_do_not_engage(bridge: BridgeApp, devguild: DevGuild,
                                        members: Callable[[str], Member]) -> None:
    alice = members("alice")
    alice.post("report", "numbers for today")  # report: nobody is woken
    alice.post("dm-alice-echo", "ping")         # a dm always engages
    alice.wait_reply("echo", "dm-alice-echo", lambda c: c == "ping")
    assert alice.messages_from("echo", "report") == []
    # No scope (no thread) for a conversation that never engaged: the message is
    # stored, without a journal row (it cannot engage), as context for the next run.
    assert not any(s.channel == "report" for s in bridge.board.snapshot().scopes)
    assert bridge.store is not None
    report = ScopeKey("fabric", "echo", "dev", devguild.channel_id("report"))
    assert bridge.store.count_inbound(str(report)) == {}
    assert [m.content for m in bridge.store.context(report, since=0.0, exclude_author="")] == [
        "numbers for today"]


def test_context_from_before_the_scope_existed_reaches_the_prompt(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    agents = script_agent_table(tmp_path, "cat.py", "import sys; print(sys.stdin.read())")
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents,
                                    debounce_s=0.05))
    try:
        alice, bob = members("alice"), members("bob")
        bob.post("work", "the build is red since noon")  # work: no mention, no wakeup
        alice.post("work", f"<@{devguild.user_id('echo')}> what is going on?")
        prompt = alice.wait_reply("echo", "work", lambda c: "Messages to answer:" in c)
        lines = prompt.split("</bridge-context>\n", 1)[1].strip().split("\n")
        assert lines[0] == "Earlier messages in the channel (context only):"
        assert lines[2] == "Messages to answer:" and len(lines) == 4
        context, asked = json.loads(lines[1]), json.loads(lines[3])
        assert {k: context[k] for k in ("author_id", "author", "allowed", "text")} == {
            "author_id": devguild.user_id("bob"), "author": "bob", "allowed": True,
            "text": "the build is red since noon"}
        assert (asked["author_id"], asked["author"], asked["allowed"]) == (
            devguild.user_id("alice"), "alice", True)
        assert asked["text"].startswith("<@") and asked["text"].endswith("what is going on?")
    finally:
        app.stop()


def test_redelivered_event_is_answered_once(bridge: BridgeApp, devguild: DevGuild,
                                            members: Callable[[str], Member]) -> None:
    alice = members("alice")
    first = alice.post("general", "only once")
    alice.wait_reply("echo", "general", lambda c: c == "only once")
    assert devguild.redeliver(devguild.channel_id("general"), first["seq"]) >= 1
    alice.post("general", "next one")
    alice.wait_reply("echo", "general", lambda c: c == "next one")
    assert alice.messages_from("echo", "general") == ["only once", "next one"]


def test_debounce_merges_a_burst_into_one_run(tmp_path: Path, devguild: DevGuild,
                                              members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url, debounce_s=1.5))
    try:
        alice = members("alice")
        for text in ("one", "two", "three"):
            alice.post("general", text)
        alice.wait_reply("echo", "general", lambda c: "three" in c)
        assert alice.messages_from("echo", "general") == ["one\ntwo\nthree"]
    finally:
        app.stop()




def test_messages_during_a_run_go_into_the_next_run(tmp_path: Path, devguild: DevGuild,
                                                     members: Callable[[str], Member]) -> None:
    config, workspace = gated_config(tmp_path, devguild.center_url)
    app = start_bridge(config)
    try:
        alice = members("alice")
        alice.post("general", "first")
        wait_until(lambda: app.board.snapshot().runs, what="the first run")
        alice.post("general", "second")
        alice.post("general", "third")
        wait_until(lambda: any(s.state == "queued" and s.queued == 2
                               for s in app.board.snapshot().scopes), what="two queued")
        (workspace / "gate").touch()
        alice.wait_reply("echo", "general", lambda c: c == "answer to: first")
        wait_until(lambda: not (workspace / "gate").exists() and app.board.snapshot().runs,
                   what="the second run")
        (workspace / "gate").touch()
        alice.wait_reply("echo", "general", lambda c: "second" in c)
        assert alice.messages_from("echo", "general") == [
            "answer to: first", "answer to: second + third"]
    finally:
        app.stop()


def test_dropped_socket_reconnects_with_fresh_token_and_catches_up(
        bridge: BridgeApp, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    alice.post("general", "before the drop")
    alice.wait_reply("echo", "general", lambda c: c == "before the drop")
    first_token_at = bridge.board.connection("echo", "dev").token_at  # type: ignore[union-attr]
    devguild.expire_tokens()
    assert devguild.drop_sockets() >= 1
    wait_until(lambda: bridge.board.connection("echo", "dev").state  # type: ignore[union-attr]
               == "reconnecting", what="reconnecting")
    alice.post("general", "while you were away")
    alice.post("dm-alice-echo", "also in the dm")
    alice.wait_reply("echo", "general", lambda c: c == "while you were away")
    alice.wait_reply("echo", "dm-alice-echo", lambda c: c == "also in the dm")
    row = bridge.board.connection("echo", "dev")
    assert row is not None and row.state == "connected" and row.reconnects == 1
    assert row.token_at is not None and first_token_at is not None
    assert row.token_at > first_token_at
    assert row.token_refreshes >= 1
    alice.post("general", "after the reconnect")
    alice.wait_reply("echo", "general", lambda c: c == "after the reconnect")
    assert alice.messages_from("echo", "general") == [
        "before the drop", "while you were away", "after the reconnect"]


class BoomScope(Scope):
    """A scope that raises on the message ``boom`` (to test supervision)."""

    def handle(self, message: Inbound) -> None:
        if message.content == "boom":
            raise RuntimeError("boom in scope")


def test_crashing_scope_is_restarted_while_others_answer(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url), scope_class=BoomScope)
    try:
        alice = members("alice")
        alice.post("general", "boom")
        alice.post("dm-alice-echo", "still answering")
        alice.wait_reply("echo", "dm-alice-echo", lambda c: c == "still answering")
        general = f"scope:fabric:echo:dev:{devguild.channel_id('general')}"
        row = wait_until(lambda: next((a for a in app.board.snapshot().actors
                                       if a.id == general and a.restarts == 1
                                       and a.state == "running"), None), what="restart")
        assert "boom in scope" in row.detail
        alice.post("general", "after the crash")
        alice.wait_reply("echo", "general", lambda c: c == "after the crash")
        assert alice.messages_from("echo", "general") == ["after the crash"]
        gateway = next(a for a in app.board.snapshot().actors if a.kind == "gateway")
        assert gateway.restarts == 0
    finally:
        app.stop()


def test_malformed_events_are_dropped_without_harm(bridge: BridgeApp, devguild: DevGuild,
                                                   members: Callable[[str], Member]) -> None:
    alice = members("alice")
    general = devguild.channel_id("general")
    hostile: list[object] = [
        None, "text", 42, [], {"messageId": 7}, {"channelId": general, "seq": "1"},
        {"channelId": general, "seq": 10**6, "messageId": "m", "content": None,
         "authorUserId": "u"},
        {"channelId": "no-such-channel", "seq": 1, "messageId": "x", "content": "hi",
         "authorUserId": devguild.user_id("alice"), "wakeup": True},
        {"channelId": general, "seq": 999, "messageId": "big", "content": "x" * 100_000,
         "authorUserId": devguild.user_id("alice"), "wakeup": True},
    ]
    for payload in hostile:
        devguild.emit_raw(general, "message.created", payload)
    devguild.emit_raw(general, "no.such.event", {"a": 1})
    alice.post("general", "still fine")
    alice.wait_reply("echo", "general", lambda c: c == "still fine")
    assert alice.messages_from("echo", "general") == ["still fine"]
    assert all(a.restarts == 0 for a in bridge.board.snapshot().actors)
    logs = "\n".join(bridge.board.snapshot().logs)
    assert "message.created dropped" in logs


def test_refused_login_shows_failed_and_others_keep_working(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    agents = textwrap.dedent("""
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        [agents.ghost]
        kind = "echo"
        api_key = "fak_not_a_real_key"
    """)
    bindings = textwrap.dedent("""
        [[bindings]]
        agent = "echo"
        guild = "dev"
        [[bindings]]
        agent = "ghost"
        guild = "dev"
    """)
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents,
                                    bindings=bindings), agents=["echo"])
    try:
        row = wait_until(lambda: (r := app.board.connection("ghost", "dev")) and
                         r.state == "failed" and r, what="ghost failed")
        assert "refused" in row.reason
        alice = members("alice")
        alice.post("general", "hi echo")
        alice.wait_reply("echo", "general", lambda c: c == "hi echo")
        assert all(a.restarts == 0 for a in app.board.snapshot().actors)
        text = "\n".join(app.board.snapshot().logs)
        assert "fak_not_a_real_key" not in text and "fak_dev_echo" not in text
    finally:
        app.stop()


def test_failing_posts_are_retried_and_answered_once(
        bridge: BridgeApp, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    echo_id = devguild.user_id("echo")
    devguild.fail_next_posts(2, 500, user_id=echo_id)
    alice.post("general", "through errors")
    alice.wait_reply("echo", "general", lambda c: c == "through errors")
    devguild.fail_next_posts(1, 429, retry_after_s=1, user_id=echo_id)
    alice.post("general", "through a rate limit")
    alice.wait_reply("echo", "general", lambda c: c == "through a rate limit")
    devguild.fail_next_posts(1, 502, user_id=echo_id, landed=True)
    alice.post("general", "answer lost after the write")
    alice.wait_reply("echo", "general", lambda c: c == "answer lost after the write")
    alice.post("general", "and after that")
    alice.wait_reply("echo", "general", lambda c: c == "and after that")
    assert alice.messages_from("echo", "general") == [
        "through errors", "through a rate limit", "answer lost after the write",
        "and after that"]
    scope = wait_until(lambda: next((r for r in bridge.board.snapshot().scopes
                                     if r.channel == "general" and r.delivered == 4), None),
                       what="the scope row to show four delivered pieces")
    assert scope.retries >= 4 and scope.undelivered == 0 and scope.last_delivered


def test_long_answer_is_split_under_the_limit_in_order(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    agents = script_agent_table(tmp_path, "long.py", "import sys\nsys.stdin.read()\n"
                                "for i in range(300):\n    print(f'line {i:03d} ' + 'x' * 60)\n")
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents,
                                    fabric_extra="content_limit = 8000"))
    try:
        alice = members("alice")
        alice.post("general", "write a lot")
        wait_until(lambda: any("line 299" in c for c in alice.messages_from("echo", "general")),
                   what="the last piece")
        pieces = alice.messages_from("echo", "general")
        assert len(pieces) == 3
        assert all(len(p) <= 8000 for p in pieces)
        lines = "\n".join(pieces).splitlines()
        assert [line[:8] for line in lines] == [f"line {i:03d}" for i in range(300)]
    finally:
        app.stop()


def test_new_channel_is_joined_on_channel_joined(
        bridge: BridgeApp, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    bob = members("bob")
    created = bob.rest.create_channel("lab", "general", members=[devguild.user_id("echo")])
    channel_id = created["id"]
    wait_until(lambda: (row := bridge.board.connection("echo", "dev")) and row.channels == 5,
               what="echo joined the new channel")
    bob.rest.post(channel_id, "hello lab")
    wait_until(lambda: [m for m in devguild.state.messages(channel_id)
                        if m["authorUserId"] == devguild.user_id("echo")
                        and m["content"] == "hello lab"], what="an answer in the new channel")


def test_scope_failing_too_often_is_escalated(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url, debounce_s=0.05),
                       scope_class=BoomScope)
    try:
        alice = members("alice")
        general = f"scope:fabric:echo:dev:{devguild.channel_id('general')}"
        for _ in range(4):
            alice.post("general", "boom")
        row = wait_until(lambda: next((a for a in app.board.snapshot().actors
                                       if a.id == general and a.state == "failed"), None),
                         what="escalation")
        assert row.restarts == 3
        assert "not restarted (escalated)" in "\n".join(app.board.snapshot().logs)
        alice.post("dm-alice-echo", "others still answer")
        alice.wait_reply("echo", "dm-alice-echo", lambda c: c == "others still answer")
    finally:
        app.stop()


def test_hostile_content_and_reused_ids_are_handled(bridge: BridgeApp, devguild: DevGuild,
                                                    members: Callable[[str], Member]) -> None:
    alice = members("alice")
    general = devguild.channel_id("general")
    first = alice.post("general", "original text")
    alice.wait_reply("echo", "general", lambda c: c == "original text")
    alice_id = devguild.user_id("alice")
    nested: object = "deep"
    for _ in range(150):  # 300 levels: as deep as the server's encoder will send
        nested = {"a": [nested]}
    devguild.emit_raw(general, "message.created", {
        "messageId": first["messageId"], "channelId": general, "seq": first["seq"] + 1,
        "content": "same id, other content", "authorUserId": alice_id, "wakeup": True})
    devguild.emit_raw(general, "message.created", {
        "messageId": "nested", "channelId": general, "seq": first["seq"] + 2,
        "content": nested, "authorUserId": alice_id, "wakeup": True})
    alice.post("general", "broken \udc80 text")  # JSON can carry a lone surrogate
    alice.wait_reply("echo", "general", lambda c: c.startswith("broken"))
    replies = alice.messages_from("echo", "general")
    assert replies == ["original text", "broken ? text"]
    assert all(a.restarts == 0 for a in bridge.board.snapshot().actors)


def test_idle_scope_and_delivery_are_stopped_and_rebuilt_from_the_store(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    text = config.path.read_text().replace("[bridge]", "[bridge]\nscope_idle_s = 0.3")
    config.path.write_text(text)
    app = start_bridge(load_config(config.path))
    try:
        alice = members("alice")
        scope_id = f"scope:fabric:echo:dev:{devguild.channel_id('general')}"
        first = alice.post("general", "before the nap")
        alice.wait_reply("echo", "general", lambda c: c == "before the nap")
        delivery_id = scope_id.replace("scope:", "delivery:", 1)
        wait_until(lambda: not {scope_id, delivery_id} & {a.id for a in
                                                         app.board.snapshot().actors},
                   what="the idle scope and delivery to stop")
        devguild.redeliver(devguild.channel_id("general"), first["seq"])
        alice.post("general", "after the nap")
        alice.wait_reply("echo", "general", lambda c: c == "after the nap")
        assert alice.messages_from("echo", "general") == ["before the nap", "after the nap"]
        # (the answer above came from a rebuilt scope and delivery; they may be idle again)
    finally:
        app.stop()


def test_commands_stop_and_live_status(tmp_path: Path, devguild: DevGuild,
                                       members: Callable[[str], Member]) -> None:
    config, _ = gated_config(tmp_path, devguild.center_url, "stop_grace_s = 0.5",
                                     debounce_s=0.05)
    app = start_bridge(config)
    try:
        alice = members("alice")
        alice.post("general", "/help")
        alice.wait_reply("echo", "general", lambda c: c.startswith("echo commands:"))
        alice.post("general", "/stop")
        alice.wait_reply("echo", "general", lambda c: c == "echo has no run to stop")
        alice.post("general", "/frob")
        alice.wait_reply("echo", "general", lambda c: c.startswith("unknown command /frob"))
        alice.post("general", "a long job")
        status = alice.wait_reply("echo", "general", lambda c: "working" in c, timeout_s=15)
        assert status.startswith("⏳ echo · working")
        echo_id = devguild.user_id("echo")
        wait_until(lambda: devguild.state.presence(echo_id) == "busy", what="presence busy")
        alice.post("general", "/status")
        alice.wait_reply("echo", "general", lambda c: "echo in #general: running" in c)
        alice.post("general", "/stop")
        alice.wait_reply("echo", "general", lambda c: c == "stopping the current run of echo")
        failed = alice.wait_reply("echo", "general", lambda c: "run failed" in c)
        assert failed.startswith("⚠ echo: run failed: stopped by alice")
        wait_until(lambda: any(c.startswith("⚠️ echo · failed: stopped by alice")
                               for c in alice.messages_from("echo", "general")),
                   what="the status message edited to its final state")
        edited = [m for m in devguild.state.messages(devguild.channel_id("general"))
                  if m["content"].startswith("⚠️ echo · failed")]
        assert len(edited) == 1 and edited[0]["editedAt"]
        assert not any("a long job" in c for c in alice.messages_from("echo", "general"))
        wait_until(lambda: devguild.state.presence(echo_id) == "idle", what="presence idle")
    finally:
        app.stop()


def test_admin_stops_a_run_in_another_channel(tmp_path: Path, devguild: DevGuild,
                                              members: Callable[[str], Member]) -> None:
    config, _ = gated_config(tmp_path, devguild.center_url,
                             'stop_grace_s = 0.5\nadmins = ["alice"]', debounce_s=0.05)
    app = start_bridge(config)
    try:
        alice, bob = members("alice"), members("bob")
        bob.post("general", "a long job")
        wait_until(lambda: app.board.snapshot().runs, what="the run")
        bob.post("work", "/stop general")
        bob.wait_reply("echo", "work", lambda c: "admins only" in c)
        assert app.board.snapshot().runs
        alice.post("dm-alice-echo", "/stop general")
        alice.wait_reply("echo", "dm-alice-echo", lambda c: c.startswith("asked echo's run"))
        failed = bob.wait_reply("echo", "general", lambda c: "run failed" in c)
        assert "stopped by alice from #dm-alice-echo" in failed
    finally:
        app.stop()


def test_identical_earlier_answer_is_not_mistaken_for_a_landed_post(
        bridge: BridgeApp, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    alice = members("alice")
    alice.post("general", "same again")
    alice.wait_reply("echo", "general", lambda c: c == "same again")
    # The next answer's post fails with a 500 and does not land: before posting it
    # again the bridge looks for it in the history, where an identical older
    # answer must not count.
    devguild.fail_next_posts(1, 500, user_id=devguild.user_id("echo"))
    alice.post("general", "same again")
    wait_until(lambda: alice.messages_from("echo", "general") == ["same again"] * 2,
               what="the second identical answer")


def test_an_agent_printing_100_mb_is_cut_with_a_note(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    agents = script_agent_table(tmp_path, "flood.py",
                                "import sys\nsys.stdin.read()\nline = 'y' * 999 + '\\n'\n"
                                "for _ in range(100_000):\n    sys.stdout.write(line)\n")
    app = start_bridge(write_config(tmp_path, devguild.center_url, agents=agents,
                                    debounce_s=0.05))
    try:
        alice = members("alice")
        alice.post("general", "flood me")
        last = alice.wait_reply("echo", "general", lambda c: "[answer cut:" in c, 60)
        assert last.rstrip().endswith("more characters not shown]")
        pieces = alice.messages_from("echo", "general")
        assert 1 < len(pieces) <= 5
        assert sum(len(p) for p in pieces) < 34_000
    finally:
        app.stop()


def test_made_up_seq_does_not_blind_the_channel(bridge: BridgeApp, devguild: DevGuild,
                                                members: Callable[[str], Member]) -> None:
    alice = members("alice")
    first = alice.post("general", "real one")
    alice.wait_reply("echo", "general", lambda c: c == "real one")
    devguild.emit_raw(devguild.channel_id("general"), "message.created", {
        **first, "messageId": "made-up", "seq": first["seq"] + 1000, "content": "fake",
        "wakeup": True})
    wait_until(lambda: any("ahead of the channel's history" in line
                           for line in bridge.board.snapshot().logs), what="the drop")
    alice.post("general", "still heard")
    alice.wait_reply("echo", "general", lambda c: c == "still heard")
    assert alice.messages_from("echo", "general") == ["real one", "still heard"]
