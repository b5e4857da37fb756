"""The whole bridge on Slack: the actor tree, slack-sdk and the Slack double over loopback.

The config has only ``[platforms.slack]`` (no Fabric, no dev guild). The member
acts through the double as a person in Slack would; every check is on what the
member sees in the channel.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.app import BridgeApp
from adapters.chat.slack.checks import BOT_SCOPES
from adapters.chat.slack.double import SlackApp, SlackDouble
from bridge.cli.compose import load_config
from bridge.config import Config
from tests.support import gated_agent, start_bridge, wait_until

ROOT = Path(__file__).resolve().parent.parent
#: Seconds within which an answer after a dropped socket must come (the issue's bound).
RECONNECT_ANSWER_S = 20.0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack-sdk reads HTTP(S)_PROXY and ignores NO_PROXY: loopback must not go to a proxy.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble() as made:
        yield made


@pytest.fixture
def app_(double: SlackDouble, monkeypatch: pytest.MonkeyPatch) -> SlackApp:
    app = double.add_app("echo", scopes=BOT_SCOPES)
    monkeypatch.setenv("TEST_SLACK_BOT", app.bot_token)
    monkeypatch.setenv("TEST_SLACK_APP", app.app_token)
    return app


def slack_config(tmp_path: Path, double: SlackDouble, agent: str = "", *,
                 scope: str = "thread", live_status: str = "stream") -> Config:
    """A config with only Slack: the echo agent (or ``agent``'s table) on every channel."""
    agent = agent or '[agents.echo]\nkind = "echo"\n'
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        debounce_s = 0.1
        log_level = "debug"

        [platforms.slack]
        api_url = "{double.api_url}"
        live_status = "{live_status}"
    """) + agent + textwrap.dedent(f"""
        [agents.echo.slack]
        bot_token = "env:TEST_SLACK_BOT"
        app_token = "env:TEST_SLACK_APP"

        [[bindings]]
        agent = "echo"
        platform = "slack"
        channels = ["*"]
        scope = "{scope}"
    """)
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def apps() -> Iterator[list[BridgeApp]]:
    made: list[BridgeApp] = []
    yield made
    for app in made:
        app.stop()


class Room:
    """The member alice and the channels she shares with the echo app."""

    def __init__(self, double: SlackDouble, app: SlackApp) -> None:
        self.double, self.app = double, app
        self.alice = double.add_user("alice")
        self.general = double.add_channel("general", [self.alice, app.bot_user_id])
        self.dm = double.open_dm(self.alice, app.bot_user_id)

    def post(self, channel: str, text: str, thread_ts: str = "") -> str:
        return self.double.post(self.alice, channel, text, thread_ts=thread_ts)

    def mention(self, text: str) -> str:
        return f"<@{self.app.bot_user_id}> {text}"

    def bot_messages(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.double.history(channel) if m.get("bot_id") == self.app.bot_id]

    def answers(self, channel: str, pred: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [m.get("text", "") for m in self.bot_messages(channel) if pred(m)]

    def wait_answer(self, channel: str, text: str, thread_ts: str = "",
                    timeout_s: float = 10.0) -> dict[str, Any]:
        """The bot's message whose text is ``text`` (in ``thread_ts`` when given)."""
        found: dict[str, Any] = wait_until(lambda: next((m for m in self.bot_messages(channel)
                                        if m.get("text") == text
                                        and m.get("thread_ts", "") == thread_ts), None),
                          timeout_s, what=f"the answer {text!r}")
        return found

    def count(self, channel: str, text: str) -> int:
        return len(self.answers(channel, lambda m: m.get("text") == text))


@pytest.fixture
def room(double: SlackDouble, app_: SlackApp) -> Room:
    return Room(double, app_)


def test_dm_channel_mention_thread_follow_up_and_context(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    room.post(room.dm, "hello there")
    room.wait_answer(room.dm, "hello there")

    asked = room.post(room.general, room.mention("in a thread please"))
    room.wait_answer(room.general, room.mention("in a thread please"), thread_ts=asked)
    room.post(room.general, "and a follow-up", thread_ts=asked)
    room.wait_answer(room.general, "and a follow-up", thread_ts=asked)

    room.post(room.general, "just talking among ourselves")
    room.post(room.dm, "last one")
    room.wait_answer(room.dm, "last one")
    assert room.count(room.dm, "hello there") == 1
    assert room.count(room.general, room.mention("in a thread please")) == 1
    assert room.count(room.general, "and a follow-up") == 1
    assert room.answers(room.general, lambda m: "among ourselves" in m.get("text", "")) == []
    wait_until(lambda: not double.unacked(room.app), what="every envelope acked")
    # Every answer carries its idempotency key in the message metadata.
    assert all(m.get("metadata", {}).get("event_type") == "bridge_piece"
               for m in room.bot_messages(room.general))


def test_rate_limited_posts_are_delayed_not_lost_or_doubled(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    double.ratelimit("chat.postMessage", count=2, retry_after_s=1)
    room.post(room.dm, "slow down")
    room.wait_answer(room.dm, "slow down", timeout_s=20.0)
    room.post(room.dm, "after the limit")
    room.wait_answer(room.dm, "after the limit")
    assert room.count(room.dm, "slow down") == 1


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_after_a_disconnect_or_a_dropped_socket_the_next_message_is_answered(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp],
        how: str) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    room.post(room.dm, "before")
    room.wait_answer(room.dm, "before")
    if how == "disconnect":
        assert double.disconnect(room.app) >= 1
    else:
        assert double.drop_sockets(room.app) >= 1
    room.post(room.dm, "after")
    room.wait_answer(room.dm, "after", timeout_s=RECONNECT_ANSWER_S)
    assert room.count(room.dm, "after") == 1 and room.count(room.dm, "before") == 1


def test_messages_posted_while_stopped_are_answered_once_after_start(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    config = slack_config(tmp_path, double)
    first = start_bridge(config, apps=apps)
    room.post(room.dm, "while up")
    room.wait_answer(room.dm, "while up")
    first.stop()
    asked = room.post(room.general, room.mention("while down"))
    room.post(room.dm, "also while down")
    start_bridge(config, apps=apps)
    room.wait_answer(room.general, room.mention("while down"), thread_ts=asked)
    room.wait_answer(room.dm, "also while down")
    room.post(room.dm, "live again")
    room.wait_answer(room.dm, "live again")
    assert room.count(room.dm, "while up") == 1
    assert room.count(room.dm, "also while down") == 1
    assert room.count(room.general, room.mention("while down")) == 1


def test_the_stop_button_stops_the_run_for_its_requester_only(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double, gated_agent(tmp_path), live_status="message"),
                 apps=apps)
    bob = double.add_user("bob")
    double.join(room.general, bob)
    asked = room.post(room.general, room.mention("a long job"))

    def status() -> dict[str, Any] | None:
        return next((m for m in room.bot_messages(room.general)
                     if m.get("thread_ts") == asked and _stop_value(m)), None)

    shown = wait_until(status, what="the run's status with its Stop button")
    run_id = _stop_value(shown)
    double.click(bob, room.general, shown["ts"], "stop", run_id)  # neither requester nor admin
    double.click(room.alice, room.general, shown["ts"], "stop", run_id)
    final = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                     if m["ts"] == shown["ts"] and "stopped by alice"
                                     in m.get("text", "")), None),
                       what="the status saying alice stopped the run")
    assert _stop_value(final) == ""  # the button is gone
    [note] = double.ephemerals(bob)  # bob alone is told why his click did nothing
    assert "can stop it" in note.get("text", "") and double.ephemerals(room.alice) == []
    assert not any(t.startswith("answer to:") for t in room.answers(room.general,
                                                                     lambda m: True))


def _stop_value(message: dict[str, Any]) -> str:
    """The value of the Stop button on a message; empty when it has none."""
    return next((e.get("value", "") for b in message.get("blocks") or []
                 if b.get("type") == "actions" for e in b.get("elements") or []
                 if e.get("action_id") == "stop"), "")


def test_bin_bridge_start_and_doctor_with_only_slack(
        tmp_path: Path, double: SlackDouble, room: Room) -> None:
    """``bin/bridge start`` as an operator runs it, from a config with only Slack."""
    config = slack_config(tmp_path, double)
    assert config.path is not None
    bridge = [sys.executable, str(ROOT / "bin" / "bridge")]
    doctor = subprocess.run([*bridge, "doctor", "-c", str(config.path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Socket Mode can connect" in doctor.stdout
    for secret in (room.app.bot_token, room.app.app_token):
        assert secret not in doctor.stdout + doctor.stderr

    process = subprocess.Popen([*bridge, "start", "--no-tui", "-c", str(config.path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def connected() -> bool:
            status = subprocess.run([*bridge, "status", "--json", "-c", str(config.path)],
                                    capture_output=True, text=True, timeout=30, check=False)
            if status.returncode != 0:
                return False
            rows = json.loads(status.stdout)["connections"]
            return bool(rows) and rows[0]["state"] == "connected"

        wait_until(connected, 30.0, what="the Slack connection up")
        room.post(room.dm, "from a real process")
        room.wait_answer(room.dm, "from a real process")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output[-2000:]
    for secret in (room.app.bot_token, room.app.app_token):
        assert secret not in output


def test_the_slash_command_and_a_mention_command_stop_a_run(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double, gated_agent(tmp_path), live_status="message"),
                 apps=apps)
    room.post(room.dm, "a long job")
    wait_until(lambda: any(_stop_value(m) for m in room.bot_messages(room.dm)),
               what="the run's status with its Stop button")
    double.slash(room.alice, room.dm, "/agent", "stop")
    wait_until(lambda: room.answers(room.dm, lambda m: "stopped by alice" in m.get("text", "")),
               what="the run stopped by the slash command")

    asked = room.post(room.general, room.mention("another long job"))
    wait_until(lambda: any(_stop_value(m) and m.get("thread_ts") == asked
                           for m in room.bot_messages(room.general)),
               what="the thread's run working")
    room.post(room.general, room.mention("/stop"), thread_ts=asked)
    wait_until(lambda: room.answers(room.general, lambda m: m.get("thread_ts") == asked and
                                    "stopped by alice" in m.get("text", "")),
               what="the run stopped by @echo /stop in its thread")
    assert not room.answers(room.dm, lambda m: m.get("text", "").startswith("answer to:"))


def test_edits_and_deletes_never_start_runs(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    asked = room.post(room.dm, "first words")
    room.wait_answer(room.dm, "first words")
    double.edit(room.alice, room.dm, asked, "edited words")
    double.delete(room.alice, room.dm, asked)
    room.post(room.dm, "a new message")
    room.wait_answer(room.dm, "a new message")
    assert room.answers(room.dm, lambda m: "edited" in m.get("text", "")) == []
    assert room.count(room.dm, "first words") == 1


def test_the_manifest_grants_exactly_the_scopes_doctor_checks() -> None:
    lines = (ROOT / "conf" / "slack-app-manifest.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("    bot:") + 1
    granted = []
    for line in lines[start:]:
        if not line.startswith("      - "):
            break
        granted.append(line.removeprefix("      - ").strip())
    assert tuple(granted) == BOT_SCOPES
    assert "  socket_mode_enabled: true" in lines and "    is_enabled: true" in lines
    assert "    - command: /agent" in lines  # the config's default slash_command


def test_a_thread_run_streams_its_status_and_its_stop_button_stops_it(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double, gated_agent(tmp_path)), apps=apps)
    asked = room.post(room.general, room.mention("a streamed job"))
    stop = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                    if m.get("thread_ts") == asked and _stop_value(m)), None),
                      what="the Stop button under the stream")
    stream = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                      if m.get("thread_ts") == asked and "chunks" in m), None),
                        what="the streamed status message")
    assert stream["streaming"] and stream["ts"] != stop["ts"]
    titles = [c["title"] for c in stream["chunks"] if c.get("type") == "plan_update"]
    assert titles and "echo" in titles[0]
    double.click(room.alice, room.general, stop["ts"], "stop", _stop_value(stop))
    ended = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                     if m["ts"] == stream["ts"] and not m["streaming"]), None),
                       what="the stream stopped")
    summary = [c["title"] for c in ended["chunks"] if c.get("type") == "plan_update"][-1]
    assert "stopped by alice" in summary
    wait_until(lambda: all(m["ts"] != stop["ts"] for m in room.bot_messages(room.general)),
               what="the Stop message deleted")
    assert not room.answers(room.general, lambda m: m.get("text", "").startswith("answer to:"))


def test_a_refused_stream_falls_back_to_a_status_message(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(slack_config(tmp_path, double, gated_agent(tmp_path)), apps=apps)
    double.fail("chat.startStream", "not_allowed")
    asked = room.post(room.general, room.mention("no streams here"))
    status = wait_until(lambda: next((m for m in room.bot_messages(room.general)
                                      if m.get("thread_ts") == asked and _stop_value(m)), None),
                        what="a posted status message with its Stop button")
    assert "chunks" not in status and "echo" in status.get("text", "")
    (tmp_path / "ws" / "gate").touch()
    wait_until(lambda: room.answers(room.general, lambda m: m.get("thread_ts") == asked and
                                    m.get("text", "").startswith("answer to:")),
               what="the answer in the thread")
    final = wait_until(lambda: (m := double.message(room.general, status["ts"])) and
                       not _stop_value(m) and m, what="the status's last state")
    assert "done" in final.get("text", "")


def test_a_revoked_bot_token_stops_its_connection_and_the_others_keep_answering(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    other = double.add_app("helper", scopes=BOT_SCOPES)
    monkeypatch.setenv("TEST_SLACK_BOT2", other.bot_token)
    monkeypatch.setenv("TEST_SLACK_APP2", other.app_token)
    second = textwrap.dedent("""
        [agents.helper]
        kind = "echo"
        [agents.helper.slack]
        bot_token = "env:TEST_SLACK_BOT2"
        app_token = "env:TEST_SLACK_APP2"
        [[bindings]]
        agent = "helper"
        platform = "slack"
        channels = ["*"]
    """)
    config = slack_config(tmp_path, double)
    assert config.path is not None
    config.path.write_text(config.path.read_text(encoding="utf-8") + second, encoding="utf-8")
    app = start_bridge(load_config(config.path), apps=apps)
    helper_dm = double.open_dm(room.alice, other.bot_user_id)

    double.revoke(room.app.bot_token)
    room.post(room.dm, "to a revoked app")
    wait_until(lambda: (row := app.board.connection("echo", "workspace")) is not None
               and row.state == "failed", 20.0, what="echo's connection marked failed")
    assert any("refused" in r.getMessage() and "echo" in r.getMessage()
               for r in caplog.records if r.levelname in ("ERROR", "WARNING"))
    double.post(room.alice, helper_dm, "to the other app")
    wait_until(lambda: any(m.get("text") == "to the other app" and m.get("bot_id") == other.bot_id
                           for m in double.history(helper_dm)), what="the other app's answer")
    assert room.count(room.dm, "to a revoked app") == 0
    for record in caplog.records:
        assert room.app.bot_token not in record.getMessage()


def test_a_channel_the_bot_cannot_post_in_gives_up_once_and_the_rest_go_on(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp],
        caplog: pytest.LogCaptureFixture) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    double.fail("chat.postMessage", "not_in_channel")
    room.post(room.dm, "nowhere to answer")
    wait_until(lambda: any("given up" in r.getMessage() and "not_in_channel" in r.getMessage()
                           for r in caplog.records), what="the piece given up with its reason")
    room.post(room.dm, "answer this one")
    room.wait_answer(room.dm, "answer this one")
    assert room.count(room.dm, "nowhere to answer") == 0
    assert double.calls("chat.postMessage") >= 2


def test_malformed_and_unknown_envelopes_are_acked_logged_and_harmless(
        tmp_path: Path, double: SlackDouble, room: Room, apps: list[BridgeApp],
        caplog: pytest.LogCaptureFixture) -> None:
    start_bridge(slack_config(tmp_path, double), apps=apps)
    envelopes: list[tuple[str, dict[str, Any]]] = [
            ("events_api", {"type": "event_callback"}),                  # no event
            ("events_api", {"event": {"type": "message"}, "event_id": "Ev1"}),  # no channel, ts
            ("events_api", {"event": {"type": "reaction_added"}, "event_id": "Ev2"}),
            ("events_api", {"event": {"type": "message", "channel": room.dm, "ts": "x.y",
                                      "text": "bad ts"}, "event_id": "Ev3"}),
            ("interactive", {"type": "block_actions", "actions": "not a list"}),
            ("interactive", {"type": "view_submission"}),
            ("slash_commands", {"command": "/someone-else", "channel_id": room.dm}),
            ("a_type_from_the_future", {"anything": True})]
    for kind, payload in envelopes:
        double.send_envelope(room.app, kind, payload)
    room.post(room.dm, "still here")
    room.wait_answer(room.dm, "still here")
    wait_until(lambda: not double.unacked(room.app), what="every envelope acked")
    assert [m.get("text") for m in room.bot_messages(room.dm)] == ["still here"]
    said = " | ".join(r.getMessage() for r in caplog.records)
    for line in ("without an event dropped", "a_type_from_the_future envelope ignored",
                 "slash command /someone-else ignored", "view_submission payload ignored"):
        assert line in said
