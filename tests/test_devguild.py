"""Tests of the dev guild: its state as plain logic, then the real servers over loopback."""

from __future__ import annotations

import configparser
import importlib.resources
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests
import socketio

from adapters.chat.fabric.devguild import (
    DevGuild,
    GuildError,
    GuildState,
    Seed,
    SeedChannel,
    SeedUser,
    load_seed,
)
from adapters.chat.fabric.devguild.seed import PACKAGED_SEED, derived_id

NS = "/realtime"
WAIT_S = 10.0


# -- state, no I/O ------------------------------------------------------------


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def triage_seed() -> Seed:
    base = load_seed()
    extra = SeedChannel(
        name="triage", x_type="triage", is_public=False, members=("alice", "echo"), wake=("echo",)
    )
    return attrs.evolve(base, channels=(*base.channels, extra))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> GuildState:
    return GuildState(triage_seed(), token_ttl_s=60.0, content_limit=100, clock=clock)


def status_of(call: Callable[[], object]) -> int:
    with pytest.raises(GuildError) as info:
        call()
    return info.value.status


def test_seed_ids_are_stable_and_match_the_file() -> None:
    seed = load_seed()
    assert seed.node_id == "dev" and seed.name == "Dev Guild"
    assert [u.name for u in seed.users] == ["alice", "bob", "echo"]
    echo = seed.users[2]
    assert (echo.kind, echo.api_key, echo.email) == ("agent", "fak_dev_echo", "echo@agents.local")
    assert echo.id == derived_id("user", "echo") == load_seed().users[2].id
    dm = next(c for c in seed.channels if c.name == "dm-alice-echo")
    assert (dm.x_type, dm.is_public, dm.members) == ("dm", False, ("alice", "echo"))
    assert SeedUser(name="x", kind="human", api_key="k").email == "x@humans.local"
    assert SeedUser(name="x", kind="human").api_key == "fak_dev_x"  # the dev default


def test_seed_explicit_ids_and_bad_data(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[users]]\nname = "z"\nkind = "agent"\napi_key = "k"\nid = "fixed"\n'
        '[[channels]]\nname = "c"\nx_type = "dm"\npublic = false\nmembers = ["z"]\n'
    )
    seed = load_seed(good)
    assert seed.users[0].id == "fixed" and seed.channels[0].members == ("z",)
    cases = {
        '[[users]]\nname = "z"\nkind = "robot"\napi_key = "k"\n': "users[0].kind",
        '[[users]]\nname = "z"\nkind = "human"\napi_key = 7\n': "users[0].api_key",
        '[[channels]]\nname = "c"\nx_type = "chat"\n': "channels[0].x_type",
        '[[channels]]\nname = "c"\nx_type = "dm"\nmembers = ["ghost"]\n': "channels[0].members",
        "not toml [": "not valid TOML",
    }
    for text, key in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(key)) as info:
            load_seed(bad)
        assert str(bad) in str(info.value)


def test_tokens_expire_by_ttl_kind_and_switch(state: GuildState, clock: FakeClock) -> None:
    session = state.login(state.api_key("echo"))
    guild_token = session["guildAccessTokens"][0]["token"]
    assert state.authenticate(guild_token) == state.user_id("echo")
    assert status_of(lambda: state.authenticate(session["accessToken"])) == 401
    assert status_of(lambda: state.authenticate(None)) == 401
    assert status_of(lambda: state.login("fak_wrong")) == 401
    clock.now += 61
    assert status_of(lambda: state.authenticate(guild_token)) == 401
    fresh = state.refresh(session["refreshToken"])["guildAccessTokens"][0]["token"]
    assert state.authenticate(fresh) == state.user_id("echo")
    state.expire_tokens()
    assert status_of(lambda: state.authenticate(fresh)) == 401
    assert status_of(lambda: state.refresh(session["refreshToken"])) == 401
    state.set_token_ttl(5)
    short = state.my_guilds(state.user_id("bob"))["guildAccessTokens"][0]["token"]
    clock.now += 5
    assert status_of(lambda: state.authenticate(short)) == 401


def test_seq_and_history_paging(state: GuildState) -> None:
    alice, general = state.user_id("alice"), state.channel_id("general")
    seqs = [state.post(alice, general, f"m{i}").message["seq"] for i in range(1, 8)]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert state.channel(general)["lastSeq"] == 7

    def seqs_of(**kw: Any) -> list[int]:
        return [m["seq"] for m in state.history(alice, general, **kw)["items"]]

    assert seqs_of() == [1, 2, 3, 4, 5, 6, 7]
    assert seqs_of(limit=3) == [5, 6, 7]
    assert seqs_of(seq_from=3, limit=2) == [3, 4]
    assert seqs_of(seq_from=3, seq_to=5) == [3, 4, 5]
    assert seqs_of(seq_to=4, limit=2) == [3, 4]
    assert seqs_of(seq_from=8) == []
    page = state.history(alice, general, seq_from=2, limit=999)["page"]
    assert page == {"seqFrom": 2, "seqTo": None, "limit": 200}
    assert status_of(lambda: state.history(alice, general, limit=0)) == 400


def test_post_refusals(state: GuildState) -> None:
    alice, bob = state.user_id("alice"), state.user_id("bob")
    dm, general = state.channel_id("dm-alice-echo"), state.channel_id("general")
    assert status_of(lambda: state.post(bob, dm, "hi")) == 404  # private: not revealed
    assert status_of(lambda: state.post(alice, "nope", "hi")) == 404
    assert status_of(lambda: state.post(alice, general, "x" * 101)) == 413
    assert state.post(alice, general, "x" * 100).message["seq"] == 1
    assert status_of(lambda: state.post(alice, general, "")) == 400
    state.remove_member(alice, general, bob)
    assert status_of(lambda: state.post(bob, general, "hi")) == 403
    state.close(alice, general)
    assert status_of(lambda: state.post(alice, general, "hi")) == 409
    assert [m["seq"] for m in state.history(alice, general)["items"]] == [1]


def test_edit_delete_author_only(state: GuildState) -> None:
    alice, bob, general = state.user_id("alice"), state.user_id("bob"), state.channel_id("general")
    mid = state.post(alice, general, "first").message["messageId"]
    assert status_of(lambda: state.edit(bob, general, mid, "mine")) == 403
    edited = state.edit(alice, general, mid, "second <@user.name:bob>")
    assert edited["content"] == f"second <@{bob}>" and edited["editedAt"]
    assert status_of(lambda: state.delete(bob, general, mid)) == 403
    deleted = state.delete(alice, general, mid)
    assert deleted["isDeleted"] and deleted["seq"] == 1
    assert status_of(lambda: state.edit(alice, general, mid, "again")) == 409
    assert status_of(lambda: state.delete(alice, general, "other")) == 404


def test_wakeups_per_recipient_from_state(state: GuildState) -> None:
    alice, bob, echo = (state.user_id(n) for n in ("alice", "bob", "echo"))
    triage = state.channel_id("triage")
    posted = state.post(alice, triage, "look")
    assert [posted.event_for(u)["wakeup"] for u in (alice, bob, echo)] == [False, False, True]
    work = state.channel_id("work")
    posted = state.post(alice, work, "<@user.name:bob> see")
    assert posted.event_for(bob)["wakeup"] and not posted.event_for(echo)["wakeup"]
    assert posted.event_for(bob)["xType"] == "work"
    posted = state.post(alice, work, "ping", wakeup_user_id=echo)
    assert posted.event_for(echo)["wakeup"] and not posted.event_for(bob)["wakeup"]


def test_join_presence_and_channels(state: GuildState) -> None:
    alice, bob = state.user_id("alice"), state.user_id("bob")
    dm, general = state.channel_id("dm-alice-echo"), state.channel_id("general")
    assert state.join(bob, dm) == (False, False)
    assert state.join(bob, "nope") == (False, False)
    state.remove_member(alice, general, bob)
    assert state.join(bob, general) == (True, True)
    assert state.join(bob, general) == (True, False)
    assert {c["name"] for c in state.list_channels(bob, "dev")} == {"general", "work", "report"}
    assert status_of(lambda: state.list_channels(bob, "other")) == 404
    assert status_of(lambda: state.set_presence(bob, bob, "asleep")) == 400
    assert status_of(lambda: state.set_presence(bob, alice, "busy")) == 403
    state.set_presence(bob, bob, "busy")
    assert state.presence(bob) == "busy" and state.presence(alice) is None


# -- the real servers -----------------------------------------------------------


@pytest.fixture
def guild() -> Iterator[DevGuild]:
    with DevGuild(triage_seed(), content_limit=500) as running:
        yield running


class Api:
    """A logged-in REST caller."""

    def __init__(self, guild: DevGuild, name: str) -> None:
        self.guild = guild
        session = requests.post(
            f"{guild.center_url}/auth/agent/login", json={"apiKey": guild.api_key(name)}, timeout=5
        )
        assert session.status_code == 200
        self.session = session.json()
        self.token: str = self.session["guildAccessTokens"][0]["token"]

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(
            method, f"{self.guild.guild_url}/api{path}", headers=headers, timeout=5, **kw
        )

    def post(self, channel: str, content: str, **extra: Any) -> requests.Response:
        cid = self.guild.channel_id(channel)
        return self.call("POST", f"/channels/{cid}/messages", json={"content": content, **extra})


class Events:
    """A real python-socketio client that records events and waits on them."""

    def __init__(self, guild: DevGuild, token: str, *, reconnection: bool = False) -> None:
        self.cond = threading.Condition()
        self.seen: list[tuple[str, Any]] = []
        self.client = socketio.Client(reconnection=reconnection, reconnection_delay=0.1)
        for name in ("message.created", "message.updated", "message.deleted"):
            self._record(name)
        for name in ("channel.joined", "channel.left", "connect", "connect_error", "disconnect"):
            self._record(name)
        self.client.connect(
            guild.guild_url,
            auth={"token": token},
            namespaces=[NS],
            transports=["websocket"],
            wait_timeout=5,
        )

    def _record(self, name: str) -> None:
        def handler(*args: Any) -> None:
            with self.cond:
                self.seen.append((name, args[0] if args else None))
                self.cond.notify_all()

        self.client.on(name, handler, namespace=NS)

    def join(self, channel_id: str) -> Any:
        return self.client.call("join_channel", {"channelId": channel_id}, namespace=NS, timeout=5)

    def wait(self, name: str, pred: Callable[[Any], bool] = lambda _: True) -> Any:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while True:
                for event, data in self.seen:
                    if event == name and pred(data):
                        return data
                left = deadline - time.monotonic()
                assert left > 0, f"no {name} event; saw {[e for e, _ in self.seen]}"
                self.cond.wait(left)

    def names(self, name: str) -> list[Any]:
        with self.cond:
            return [data for event, data in self.seen if event == name]


def wait_until(pred: Callable[[], bool]) -> None:
    """Poll ``pred`` until true, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def sockets() -> Iterator[list[Events]]:
    """Clients opened by a test; shut down at the end, reconnect loops included.

    ``disconnect()`` does not stop a client that is reconnecting: its thread would
    retry for the rest of the session against the stopped guild, calling the global
    ``random`` (python-socketio's jitter) while later tests run, hypothesis'
    strategies among them ("Do not use the `random` module inside strategies").
    """
    opened: list[Events] = []
    yield opened
    for events in opened:
        events.client.shutdown()  # disconnects, or aborts and joins a reconnect loop
    assert not [e for e in opened if e.client in socketio.base_client.reconnecting_clients]


def connect(guild: DevGuild, token: str, sockets: list[Events], **kw: Any) -> Events:
    events = Events(guild, token, **kw)
    sockets.append(events)
    return events


def test_login_refresh_and_401s(guild: DevGuild) -> None:
    echo = Api(guild, "echo")
    session = echo.session
    assert session["user"] == {
        "id": guild.user_id("echo"),
        "email": "echo@agents.local",
        "name": "echo",
    }
    assert session["guilds"][0]["endpoint"] == guild.guild_url
    assert session["guilds"][0]["nodeId"] == session["guildAccessTokens"][0]["guildNodeId"]
    alice = Api(guild, "alice")  # humans log in with their key too
    assert alice.session["user"]["name"] == "alice"
    center = guild.center_url
    bad = requests.post(f"{center}/auth/agent/login", json={"apiKey": "fak_no"}, timeout=5)
    assert bad.status_code == 401 and "error" in bad.json()
    auth = {"Authorization": f"Bearer {session['accessToken']}"}
    mine = requests.get(f"{center}/auth/me/guilds", headers=auth, timeout=5)
    assert mine.status_code == 200 and mine.json()["guildAccessTokens"][0]["token"]
    refreshed = requests.post(
        f"{center}/auth/refresh", json={"refreshToken": session["refreshToken"]}, timeout=5
    )
    assert refreshed.status_code == 200 and refreshed.json()["accessToken"]
    channels = f"/channels?guildId={session['guilds'][0]['nodeId']}"
    assert echo.call("GET", channels).status_code == 200
    echo.token = session["accessToken"]  # a Center token is foreign to the guild
    assert echo.call("GET", channels).status_code == 401
    echo.token = ""
    missing = echo.call("GET", channels)
    assert missing.status_code == 401 and "error" in missing.json()
    guild.expire_tokens()
    assert alice.call("GET", channels).status_code == 401
    assert requests.get(f"{center}/auth/me/guilds", headers=auth, timeout=5).status_code == 401


def test_seq_growth_and_history_over_http(guild: DevGuild) -> None:
    alice = Api(guild, "alice")
    seqs = [alice.post("general", f"m{i}").json()["seq"] for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    cid = guild.channel_id("general")
    page = alice.call("GET", f"/channels/{cid}/messages", params={"seqFrom": 2, "limit": 2})
    assert [m["seq"] for m in page.json()["items"]] == [2, 3]
    assert page.json()["page"] == {"seqFrom": 2, "seqTo": None, "limit": 2}
    last = alice.call("GET", f"/channels/{cid}/messages", params={"limit": 2}).json()
    assert [m["seq"] for m in last["items"]] == [4, 5]
    bad = alice.call("GET", f"/channels/{cid}/messages", params={"limit": "many"})
    assert bad.status_code == 400
    assert [m["content"] for m in guild.state.messages(cid)] == [f"m{i}" for i in range(5)]


def test_post_errors_over_http(guild: DevGuild) -> None:
    alice, bob = Api(guild, "alice"), Api(guild, "bob")
    assert alice.post("general", "x" * 501).status_code == 413
    assert bob.post("dm-alice-echo", "hi").status_code == 404
    cid = guild.channel_id("general")
    path = f"/channels/{cid}/messages"
    assert alice.call("POST", path, data="not json").status_code == 400
    assert alice.call("POST", path, json={"text": "hi"}).status_code == 400
    assert alice.call("POST", path, json={"content": 5}).status_code == 400
    assert alice.call("POST", path, json=["hi"]).status_code == 400
    removed = alice.call("DELETE", f"/channels/{cid}/members/{guild.user_id('bob')}")
    assert removed.status_code == 204
    forbidden = bob.post("general", "hi")
    assert forbidden.status_code == 403 and forbidden.json()["error"]
    assert alice.call("POST", f"/channels/{cid}/close").json()["closed"] is True
    assert alice.post("general", "late").status_code == 409
    assert guild.state.messages(cid) == []
    assert alice.call("GET", "/nowhere").json() == {"error": "Not Found"}


def test_mention_rewrite_users_and_presence(guild: DevGuild) -> None:
    alice, echo = Api(guild, "alice"), Api(guild, "echo")
    posted = alice.post("work", "hi <@user.name:echo>, not `<@user.name:bob>`").json()
    assert posted["content"] == f"hi <@{guild.user_id('echo')}>, not `<@user.name:bob>`"
    users = alice.call("GET", "/users").json()
    assert {"id": guild.user_id("echo"), "name": "echo", "kind": "agent"} in users
    assert alice.call("GET", f"/users/{guild.user_id('bob')}").json()["name"] == "bob"
    assert alice.call("GET", "/users/nobody").status_code == 404
    path = f"/agents/{guild.user_id('echo')}/presence"
    assert echo.call("PUT", path, json={"status": "busy"}).status_code == 204
    assert echo.call("PUT", path, json={"status": "napping"}).status_code == 400
    assert guild.state.presence(guild.user_id("echo")) == "busy"


def test_wakeup_per_recipient_over_sockets(guild: DevGuild, sockets: list[Events]) -> None:
    alice, echo = Api(guild, "alice"), Api(guild, "echo")
    alice_ev = connect(guild, alice.token, sockets)
    echo_ev = connect(guild, echo.token, sockets)
    for name in ("general", "work", "report", "dm-alice-echo", "triage"):
        assert alice_ev.join(guild.channel_id(name)) == {"ok": True}
        assert echo_ev.join(guild.channel_id(name)) == {"ok": True}

    def both(seq_channel: str, content: str) -> tuple[Any, Any]:
        mid = alice.post(seq_channel, content).json()["messageId"]
        return tuple(
            ev.wait("message.created", lambda d: d["messageId"] == mid)
            for ev in (alice_ev, echo_ev)
        )

    mine, theirs = both("general", "hello")
    assert (mine["wakeup"], theirs["wakeup"]) == (False, True)
    assert theirs["xType"] == "general" and theirs["content"] == "hello"
    assert both("work", "just chatting")[1]["wakeup"] is False
    assert both("work", "<@user.name:echo> look")[1]["wakeup"] is True
    assert both("report", "<@user.name:echo> done")[1]["wakeup"] is False
    assert both("dm-alice-echo", "psst")[1]["wakeup"] is True
    assert both("triage", "incoming")[1]["wakeup"] is True
    general = guild.channel_id("general")
    mid = alice.post("general", "direct", wakeupUserId=guild.user_id("bob")).json()["messageId"]
    assert echo_ev.wait("message.created", lambda d: d["messageId"] == mid)["wakeup"] is False
    assert alice_ev.client.call("leave_channel", {"channelId": general}, namespace=NS) == {
        "ok": True
    }


def test_edit_and_delete_emit_events(guild: DevGuild, sockets: list[Events]) -> None:
    alice, echo = Api(guild, "alice"), Api(guild, "echo")
    echo_ev = connect(guild, echo.token, sockets)
    cid = guild.channel_id("general")
    echo_ev.join(cid)
    mid = alice.post("general", "draft").json()["messageId"]
    path = f"/channels/{cid}/messages/{mid}"
    assert echo.call("PATCH", path, json={"content": "hijack"}).status_code == 403
    edited = alice.call("PATCH", path, json={"content": "final"})
    assert edited.status_code == 200 and edited.json()["content"] == "final"
    update = echo_ev.wait("message.updated")
    assert (update["messageId"], update["channelId"], update["seq"]) == (mid, cid, 1)
    assert update["content"] == "final"
    assert echo.call("DELETE", path).status_code == 403
    assert alice.call("DELETE", path).status_code == 204
    deleted = echo_ev.wait("message.deleted")
    assert (deleted["messageId"], deleted["seq"], deleted["isDeleted"]) == (mid, 1, True)


def test_channel_membership_events(guild: DevGuild, sockets: list[Events]) -> None:
    alice, bob = Api(guild, "alice"), Api(guild, "bob")
    bob_ev = connect(guild, bob.token, sockets)
    body = {
        "guildId": "dev",
        "name": "side",
        "xType": "discuss",
        "isPublic": False,
        "memberUserIds": [guild.user_id("bob")],
    }
    created = alice.call("POST", "/channels", json=body)
    assert created.status_code == 201
    channel = created.json()
    assert (channel["xType"], channel["lastSeq"], channel["closed"]) == ("discuss", 0, False)
    joined = bob_ev.wait("channel.joined", lambda d: d["channelId"] == channel["id"])
    assert joined["userId"] == guild.user_id("bob") and joined["xType"] == "discuss"
    members = alice.call("GET", f"/channels/{channel['id']}/members").json()
    assert {m["userId"] for m in members} == {guild.user_id("alice"), guild.user_id("bob")}
    assert bob_ev.join(channel["id"]) == {"ok": True}
    path = f"/channels/{channel['id']}/members/{guild.user_id('bob')}"
    assert alice.call("DELETE", path).status_code == 204
    left = bob_ev.wait("channel.left")
    assert (left["channelId"], left["userId"]) == (channel["id"], guild.user_id("bob"))
    assert bob_ev.join(channel["id"]) == {"ok": False}
    bad = alice.call("POST", "/channels", json={**body, "xType": "chat"})
    assert bad.status_code == 400


def test_private_join_refused_and_bad_input_ignored(guild: DevGuild, sockets: list[Events]) -> None:
    bob = Api(guild, "bob")
    bob_ev = connect(guild, bob.token, sockets)
    assert bob_ev.join(guild.channel_id("dm-alice-echo")) == {"ok": False}
    assert bob_ev.join("no-such-channel") == {"ok": False}
    for junk in ("garbage", None, {"channelId": 5}, [1, 2]):
        assert bob_ev.client.call("join_channel", junk, namespace=NS, timeout=5) == {"ok": False}
    assert bob_ev.join(guild.channel_id("general")) == {"ok": True}
    Api(guild, "alice").post("dm-alice-echo", "secret")
    mid = Api(guild, "alice").post("general", "public").json()["messageId"]
    assert bob_ev.wait("message.created")["messageId"] == mid
    assert [d["content"] for d in bob_ev.names("message.created")] == ["public"]


def test_expired_token_refused_at_socket_connect(guild: DevGuild) -> None:
    echo = Api(guild, "echo")
    guild.expire_tokens()
    with pytest.raises(socketio.exceptions.ConnectionError):
        Events(guild, echo.token)
    with pytest.raises(socketio.exceptions.ConnectionError):
        Events(guild, "made-up")


def test_drop_sockets_is_seen_as_a_transport_error(guild: DevGuild, sockets: list[Events]) -> None:
    echo = Api(guild, "echo")
    plain = connect(guild, echo.token, sockets)
    again = connect(guild, echo.token, sockets, reconnection=True)
    assert guild.drop_sockets() == 2
    assert plain.wait("disconnect") == "transport error"
    assert again.wait("disconnect") == "transport error"
    again.wait("connect", lambda _: len(again.names("connect")) >= 2)  # built-in reconnect
    wait_until(lambda: again.client.connected)  # set just after the connect event
    assert not plain.client.connected
    dropped = requests.post(f"{guild.guild_url}/api/_dev/drop-sockets", timeout=5).json()
    assert dropped == {"dropped": 1}
    again.wait("connect", lambda _: len(again.names("connect")) >= 3)  # reconnected again
    wait_until(lambda: again.client.connected)


def test_fail_next_posts_and_dev_switches(guild: DevGuild) -> None:
    alice = Api(guild, "alice")
    cid = guild.channel_id("general")
    guild.fail_next_posts(1, status=429, retry_after_s=1.2)
    limited = alice.post("general", "one")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert guild.state.messages(cid) == []
    assert alice.post("general", "two").json()["seq"] == 1
    dev = f"{guild.guild_url}/api/_dev"
    assert requests.post(f"{dev}/fail-posts", json={"count": 2}, timeout=5).status_code == 200
    assert [alice.post("general", "x").status_code for _ in range(3)] == [500, 500, 201]
    assert requests.post(f"{dev}/fail-posts", json={"count": "x"}, timeout=5).status_code == 400
    assert requests.post(f"{dev}/delay", json={"seconds": 0.05}, timeout=5).status_code == 200
    assert alice.post("general", "slow").status_code == 201
    guild.set_delay(0)
    assert requests.post(f"{dev}/token-ttl", json={"seconds": 0}, timeout=5).status_code == 200
    assert Api(guild, "bob").post("general", "hi").status_code == 401
    guild.set_token_ttl(900)
    assert requests.post(f"{dev}/expire-tokens", timeout=5).status_code == 200
    assert alice.post("general", "after").status_code == 401


def test_port_taken_raises_and_stop_leaves_no_thread() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        blocked = DevGuild(load_seed(), guild_port=port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            blocked.start()
    guild = DevGuild(load_seed())
    guild.start()
    events = Events(guild, Api(guild, "echo").token)
    guild.stop()
    guild.stop()
    events.wait("disconnect")
    assert not [t for t in threading.enumerate() if t.name == "devguild"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{guild.guild_url}/api/users", timeout=2)


def test_the_default_seed_is_package_data() -> None:
    resource = importlib.resources.files("adapters.chat.fabric.devguild") / PACKAGED_SEED
    assert resource.is_file()  # inside the package, not beside a config file
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg", encoding="utf-8")
    assert PACKAGED_SEED in setup["options.package_data"]["adapters.chat.fabric.devguild"].split()
    seed = load_seed()
    assert {u.name for u in seed.users} >= {"alice", "bob", "echo"}
