"""The whole bridge on Feishu/Lark: the actor tree, lark-oapi and the Lark double over loopback.

The config has only ``[platforms.lark]`` (no Fabric, no dev guild). The member
acts through the double as a person in Feishu would; every check is on what
the member sees in the chat.
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
from adapters.chat.lark.double import LarkApp, LarkDouble
from bridge.cli.compose import load_config, platforms
from bridge.config import Config
from tests.support import gated_agent, start_bridge, wait_until

ROOT = Path(__file__).resolve().parent.parent
#: Seconds within which an answer after a dropped socket must come (the issue's bound).
RECONNECT_ANSWER_S = 20.0
#: Seconds within which the long connection must open (the issue's bound).
CONNECT_S = 30.0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests would send loopback calls to a proxy named in the environment.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def double() -> Iterator[LarkDouble]:
    with LarkDouble() as made:
        yield made


@pytest.fixture
def app_(double: LarkDouble, monkeypatch: pytest.MonkeyPatch) -> LarkApp:
    # With im:message.group_msg the app gets every group message, as follow-ups in a
    # thread the agent answered in need (without it, only messages that @mention it).
    app = double.add_app("echo", group_messages=True)
    monkeypatch.setenv("TEST_LARK_APP_ID", app.app_id)
    monkeypatch.setenv("TEST_LARK_APP_SECRET", app.app_secret)
    return app


def lark_config(tmp_path: Path, double: LarkDouble, agent: str = "") -> Config:
    """A config with only Feishu/Lark: the echo agent (or ``agent``'s table) on every chat."""
    agent = agent or '[agents.echo]\nkind = "echo"\n'
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "var"
        debounce_s = 0.1
        log_level = "debug"

        [platforms.lark]
        domain = "{double.domain}"
    """) + agent + textwrap.dedent("""
        [agents.echo.lark]
        app_id = "env:TEST_LARK_APP_ID"
        app_secret = "env:TEST_LARK_APP_SECRET"

        [[bindings]]
        agent = "echo"
        platform = "lark"
        channels = ["*"]
        scope = "thread"
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
    """The member alice, her p2p chat with the echo app's bot, a group and a topic group."""

    def __init__(self, double: LarkDouble, app: LarkApp) -> None:
        self.double, self.app = double, app
        self.alice = double.add_user("alice")
        self.dm = double.add_p2p(self.alice, app)
        self.group = double.add_group("general", [self.alice, app])
        self.topics = double.add_group("topics", [self.alice, app], topic=True)

    def post(self, chat: str, text: str, *, mention: bool = False, reply_to: str = "") -> str:
        return self.double.post(self.alice, chat, text, mentions=[self.app] if mention else [],
                                reply_to=reply_to)

    def bot_messages(self, chat: str) -> list[dict[str, Any]]:
        return [m for m in self.double.history(chat) if m["app_id"] == self.app.app_id]

    def answers(self, chat: str, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The bot's messages that satisfy ``pred``."""
        return [m for m in self.bot_messages(chat) if pred(m)]

    def with_text(self, chat: str, text: str) -> list[dict[str, Any]]:
        """The bot's messages whose text ends with ``text`` (answers, not status cards)."""
        return self.answers(chat, lambda m: str(m["text"]).endswith(text))

    def wait_answer(self, chat: str, text: str, *, reply_to: str = "",
                    timeout_s: float = 10.0) -> dict[str, Any]:
        """The bot's message whose text ends with ``text`` (a reply to ``reply_to`` when given)."""
        found: dict[str, Any] = wait_until(
            lambda: next((m for m in self.with_text(chat, text)
                          if not reply_to or reply_to in (m["parent_id"], m["root_id"])), None),
            timeout_s, what=f"the answer {text!r}")
        return found


@pytest.fixture
def room(double: LarkDouble, app_: LarkApp) -> Room:
    return Room(double, app_)


def test_p2p_group_mention_topic_and_unaddressed(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(lark_config(tmp_path, double), apps=apps)
    room.post(room.dm, "hello there")
    room.wait_answer(room.dm, "hello there")

    asked = room.post(room.group, "in a reply please", mention=True)
    room.wait_answer(room.group, "in a reply please", reply_to=asked)
    room.post(room.group, "and a follow-up", reply_to=asked)
    room.wait_answer(room.group, "and a follow-up", reply_to=asked)

    topic = room.post(room.topics, "a topic for the bot", mention=True)
    room.wait_answer(room.topics, "a topic for the bot", reply_to=topic)

    room.post(room.group, "just talking among ourselves")
    room.post(room.dm, "last one")
    room.wait_answer(room.dm, "last one")
    assert len(room.with_text(room.dm, "hello there")) == 1
    assert len(room.with_text(room.group, "in a reply please")) == 1
    assert len(room.with_text(room.group, "and a follow-up")) == 1
    assert room.answers(room.group, lambda m: "among ourselves" in m["text"]) == []
    # Every answer in the topic group stays in the topic it answers.
    assert all(m["thread_id"] for m in room.bot_messages(room.topics))
    # Every send carried an idempotency uuid.
    assert all(m["uuid"] for m in room.bot_messages(room.group))


def test_a_redelivered_event_is_answered_once(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(lark_config(tmp_path, double), apps=apps)
    room.post(room.dm, "only once")
    room.wait_answer(room.dm, "only once")
    [event] = [d for d in double.events(room.app)
               if d.event_type == "im.message.receive_v1"]
    double.redeliver(room.app, event.event_id)
    wait_until(lambda: len([d for d in double.events(room.app)
                            if d.event_id == event.event_id and d.code == 200]) == 2,
               what="the redelivered event acked")
    room.post(room.dm, "next")
    room.wait_answer(room.dm, "next")
    assert len(room.with_text(room.dm, "only once")) == 1


def test_after_the_tenant_token_expires_the_next_message_is_answered(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(lark_config(tmp_path, double), apps=apps)
    room.post(room.dm, "before expiry")
    room.wait_answer(room.dm, "before expiry")
    assert double.expire_tokens(room.app) >= 1
    room.post(room.dm, "after expiry")
    room.wait_answer(room.dm, "after expiry")
    assert len(room.with_text(room.dm, "after expiry")) == 1


def test_after_the_socket_drops_the_next_message_is_answered(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(lark_config(tmp_path, double), apps=apps)
    room.post(room.dm, "before")
    room.wait_answer(room.dm, "before")
    assert double.drop_sockets(room.app) >= 1
    room.post(room.dm, "after")
    room.wait_answer(room.dm, "after", timeout_s=RECONNECT_ANSWER_S)
    assert len(room.with_text(room.dm, "after")) == 1
    assert len(room.with_text(room.dm, "before")) == 1


@pytest.mark.parametrize("pushed", [True, False], ids=["pushed-later", "never-pushed"])
def test_messages_posted_while_stopped_are_answered_once_after_start(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp],
        pushed: bool) -> None:
    # never-pushed: the platform drops events while the app is offline; the
    # catch-up from the stored cursors alone must find them (p2p chats too).
    double.drop_offline_events(not pushed)
    config = lark_config(tmp_path, double)
    first = start_bridge(config, apps=apps)
    room.post(room.dm, "while up")
    room.wait_answer(room.dm, "while up")
    first.stop()
    asked = room.post(room.group, "while down", mention=True)
    room.post(room.dm, "also while down")
    assert double.hub.dropped[room.app.app_id] == (0 if pushed else 2)
    start_bridge(config, apps=apps)
    room.wait_answer(room.group, "while down", reply_to=asked)
    room.wait_answer(room.dm, "also while down")
    room.post(room.dm, "live again")
    room.wait_answer(room.dm, "live again")
    assert len(room.with_text(room.dm, "while up")) == 1
    assert len(room.with_text(room.dm, "also while down")) == 1
    assert len(room.with_text(room.group, "while down")) == 1


def _stop_value(message: dict[str, Any]) -> dict[str, Any] | None:
    """The callback value of the Stop button on a card message; None when it has none."""
    card = message.get("card") or {}
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("tag") == "button" and node.get("name") == "stop":
                found.extend(b["value"] for b in node.get("behaviors") or []
                             if b.get("type") == "callback")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found[0] if found else None


def test_the_stop_button_stops_the_run_for_its_requester_only(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    start_bridge(lark_config(tmp_path, double, gated_agent(tmp_path)), apps=apps)
    bob = double.add_user("bob")
    group = double.add_group("work", [room.alice, bob, room.app])
    asked = room.post(group, "a long job", mention=True)
    card = wait_until(lambda: next((m for m in room.bot_messages(group)
                                    if _stop_value(m) is not None), None),
                      what="the run's live card with its Stop button")
    assert asked in (card["parent_id"], card["root_id"]) and card["streaming"]
    refused = double.click(bob, card["message_id"], name="stop")  # neither requester nor admin
    assert "toast" in refused
    double.click(room.alice, card["message_id"], name="stop")
    final = wait_until(lambda: (m := double.message(card["message_id"]))
                       and "stopped by alice" in m["text"] and m, what="the card saying alice "
                                                                       "stopped the run")
    assert _stop_value(final) is None and not final["streaming"]
    assert not room.answers(group, lambda m: str(m["text"]).startswith("answer to:"))


def test_bin_bridge_start_and_doctor_with_only_lark(
        tmp_path: Path, double: LarkDouble, room: Room) -> None:
    """``bin/bridge start`` as an operator runs it, from a config with only Feishu/Lark."""
    config = lark_config(tmp_path, double)
    assert config.path is not None
    bridge = [sys.executable, str(ROOT / "bin" / "bridge")]
    doctor = subprocess.run([*bridge, "doctor", "-c", str(config.path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "tenant token issued" in doctor.stdout
    assert room.app.app_secret not in doctor.stdout + doctor.stderr

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

        wait_until(connected, CONNECT_S, what="the Feishu/Lark long connection up")
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
    assert room.app.app_secret not in output


def test_a_missing_upload_permission_names_the_grant_url_and_the_answer_still_lands(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp]) -> None:
    code = textwrap.dedent("""
        import os, re, sys
        prompt = sys.stdin.read()
        folder = re.search(r"\\.bridge/outbox/[0-9a-f]+", prompt).group(0)
        with open(os.path.join(folder, "report.txt"), "w") as out:
            out.write("the report")
        print("here is the report")
    """)
    start_bridge(lark_config(tmp_path, double, gated_agent(tmp_path, code)), apps=apps)
    double.deny_scope(room.app, "im:resource")
    room.post(room.dm, "make a report")
    room.wait_answer(room.dm, "here is the report")
    note = wait_until(lambda: next((m for m in room.bot_messages(room.dm)
                                    if "report.txt" in m["text"]), None),
                      what="the message naming the file that could not go up")
    assert f"/app/{room.app.app_id}/auth" in note["text"]
    assert len(room.with_text(room.dm, "here is the report")) == 1


def test_malformed_frames_unknown_events_and_types_are_harmless(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp],
        caplog: pytest.LogCaptureFixture) -> None:
    start_bridge(lark_config(tmp_path, double), apps=apps)
    room.post(room.dm, "first")
    room.wait_answer(room.dm, "first")
    sender = {"sender_id": {"open_id": room.alice}, "sender_type": "user"}
    assert double.send_raw(room.app, b"\x00\xffnot a protobuf frame") >= 1
    events: list[tuple[str, dict[str, Any]]] = [
            ("im.message.receive_v1", {}),                                   # no message
            ("im.message.receive_v1", {"sender": sender, "message": "not an object"}),
            ("im.message.receive_v1", {"sender": sender, "message": {"chat_id": room.dm}}),
            ("im.message.receive_v1", {"sender": sender, "message": {         # a sticker
                "message_id": "om_sticker", "chat_id": room.dm, "chat_type": "p2p",
                "message_type": "sticker", "content": '{"file_key": "v2_sticker"}',
                "create_time": "1700000000000"}}),
            ("im.message.receive_v1", {"sender": sender, "message": {         # bad JSON content
                "message_id": "om_badjson", "chat_id": room.dm, "chat_type": "p2p",
                "message_type": "text", "content": "{not json", "create_time": "x"}}),
            ("a.type.from.the_future_v9", {"anything": True})]
    for event_type, event in events:
        double.send_event(room.app, event_type, event)
    room.post(room.dm, "still here")
    room.wait_answer(room.dm, "still here")
    # The sticker and the unreadable text are context for the next run, never runs.
    assert room.answers(room.dm, lambda m: str(m["text"]).endswith("[sticker]")) == []
    assert room.answers(room.dm, lambda m: str(m["text"]).endswith("unreadable content]")) == []
    assert len(room.with_text(room.dm, "first")) == 1
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "dropped" in said


def test_a_rotated_secret_stops_its_app_and_the_others_keep_answering(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    other = double.add_app("helper", group_messages=True)
    monkeypatch.setenv("TEST_LARK_APP_ID2", other.app_id)
    monkeypatch.setenv("TEST_LARK_APP_SECRET2", other.app_secret)
    config = lark_config(tmp_path, double)
    assert config.path is not None
    config.path.write_text(config.path.read_text(encoding="utf-8") + textwrap.dedent("""
        [agents.helper]
        kind = "echo"
        [agents.helper.lark]
        app_id = "env:TEST_LARK_APP_ID2"
        app_secret = "env:TEST_LARK_APP_SECRET2"
        [[bindings]]
        agent = "helper"
        platform = "lark"
        channels = ["*"]
    """), encoding="utf-8")
    app = start_bridge(load_config(config.path), apps=apps)
    helper_dm = double.add_p2p(room.alice, other)

    old_secret = room.app.app_secret
    double.rotate_secret(room.app)
    double.expire_tokens(room.app)
    double.drop_sockets(room.app)
    room.post(room.dm, "to a rotated app")
    wait_until(lambda: (row := app.board.connection("echo", "tenant")) is not None
               and row.state == "failed", 30.0, what="echo's connection marked failed")
    assert any("refused" in r.getMessage() and "echo" in r.getMessage()
               for r in caplog.records if r.levelname in ("ERROR", "WARNING"))
    double.post(room.alice, helper_dm, "to the other app")
    wait_until(lambda: any(str(m["text"]).endswith("to the other app")
                           for m in double.history(helper_dm) if m["app_id"] == other.app_id),
               what="the other app's answer")
    for record in caplog.records:
        assert old_secret not in record.getMessage()
        assert other.app_secret not in record.getMessage()


def test_a_chat_the_bot_was_removed_from_gives_up_once_and_the_rest_go_on(
        tmp_path: Path, double: LarkDouble, room: Room, apps: list[BridgeApp],
        caplog: pytest.LogCaptureFixture) -> None:
    workspace = tmp_path / "ws"
    start_bridge(lark_config(tmp_path, double, gated_agent(tmp_path)), apps=apps)
    room.post(room.group, "answer me later", mention=True)
    wait_until(lambda: any(_stop_value(m) is not None for m in room.bot_messages(room.group)),
               what="the run's card")
    double.remove(room.group, room.app)
    (workspace / "gate").touch()
    wait_until(lambda: any("given up" in r.getMessage() for r in caplog.records),
               what="the answer given up with its reason")
    room.post(room.dm, "answer this one")
    (workspace / "gate").touch()
    room.wait_answer(room.dm, "answer to: answer this one")


def test_doctor_names_a_missing_permission_with_its_grant_url(
        tmp_path: Path, double: LarkDouble, room: Room) -> None:
    config = lark_config(tmp_path, double)
    platform = platforms(config)["lark"]
    double.deny_scope(room.app, "im:chat:readonly")
    agent = config.agents["echo"]
    found = platform.checks(agent, list(config.bindings), timeout_s=5.0)
    assert [c.level for c in found] == ["ok", "fail"]
    assert f"https://open.feishu.cn/app/{room.app.app_id}/auth?q=" in found[1].message
    assert "im:chat:readonly" in found[1].message
    assert room.app.app_secret not in " ".join(c.message for c in found)
