"""The Slack double, driven by the real slack-sdk (WebClient and both SocketModeClients)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.socket_mode.builtin import SocketModeClient as BuiltinSocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.socket_mode.websocket_client import SocketModeClient

from adapters.chat.slack.double import SlackApp, SlackDouble, SlackError
from tests.support import wait_until

#: Ack wait in these tests, in seconds (Slack's is 3 s).
ACK_S = 0.3
#: Deadline for a Socket Mode client to reconnect, in seconds. slack-sdk 3.48's
#: websocket_client variant sometimes stalls ~10 s after a reconnect: its session
#: runner sits in a select() (10 s timeout) on a socket that close() already shut
#: from another thread, and the new session waits for that runner.
RECONNECT_S = 30.0
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                   "all_proxy")


class World:
    """A started double with one app (``bridge``), two people and a channel."""

    def __init__(self, slack: SlackDouble) -> None:
        self.slack = slack
        self.app = slack.add_app("bridge", commands=["/bridge"])
        self.alice = slack.add_user("alice")
        self.bob = slack.add_user("bob")
        self.general = slack.add_channel("general", [self.alice, self.bob, self.app])
        self.web = WebClient(token=self.app.bot_token, base_url=slack.api_url)


class Listener:
    """Collects what a SocketModeClient hears; acks what ``ack`` says to ack."""

    def __init__(self, ack: Callable[[SocketModeRequest], bool] = lambda _: True) -> None:
        self._ack = ack
        self._lock = threading.Lock()
        self.requests: list[SocketModeRequest] = []

    def __call__(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        with self._lock:
            self.requests.append(request)
        if self._ack(request):
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    def events(self, kind: str = "") -> list[dict[str, Any]]:
        """The ``event`` of each ``events_api`` payload heard (of one type if given), once
        per ``event_id`` (a retry after an ack lost in a reconnect is a duplicate)."""
        with self._lock:
            payloads = [r.payload for r in self.requests if r.type == "events_api"]
        unique: dict[str, dict[str, Any]] = {}
        for payload in payloads:
            unique.setdefault(payload["event_id"], payload["event"])
        return [e for e in unique.values() if not kind or e["type"] == kind]

    def of_type(self, kind: str) -> list[SocketModeRequest]:
        with self._lock:
            return [r for r in self.requests if r.type == kind]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack-sdk reads proxy variables and ignores NO_PROXY: loopback must go direct."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble(ack_timeout_s=ACK_S)
    double.start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def world(slack: SlackDouble) -> World:
    return World(slack)


@pytest.fixture
def sockets(slack: SlackDouble) -> Iterator[Callable[..., tuple[BaseSocketModeClient, Listener]]]:
    """Factory of connected Socket Mode clients (``builtin=True`` for the builtin one)."""
    made: list[tuple[SocketModeClient | BuiltinSocketModeClient, SlackApp]] = []

    def connect(app: SlackApp, listener: Listener | None = None, *,
                builtin: bool = False) -> tuple[BaseSocketModeClient, Listener]:
        listener = listener or Listener()
        web = WebClient(base_url=slack.api_url)
        client: SocketModeClient | BuiltinSocketModeClient
        if builtin:
            client = BuiltinSocketModeClient(app_token=app.app_token, web_client=web)
        else:
            client = SocketModeClient(app_token=app.app_token, web_client=web)
        client.socket_mode_request_listeners.append(listener)
        made.append((client, app))
        client.connect()
        # The websocket_client variant's monitor usually replaces the first session
        # at once (its first check runs before the session does): wait until the
        # current session runs, no reconnect is under way and one socket is left.
        wait_until(lambda: client.is_connected() and not client.connect_operation_lock.locked()
                   and slack.sockets(app) == 1, what="one settled socket")
        return client, listener

    yield connect
    # close() alone often waits for the websocket_client variant's read loop to time
    # out (10 s): a close from another thread does not wake its select(). So stop
    # the session runner's loop (it would run the session again), abort the server
    # side, let the client's reader notice, then close.
    for client, app in made:
        client.auto_reconnect_enabled = False
        client.current_session_runner.event.set()
        slack.drop_sockets(app)
        deadline = time.monotonic() + 2.0
        while (isinstance(client, SocketModeClient) and client.is_connected()
               and time.monotonic() < deadline):
            time.sleep(0.01)
        client.close()


def _error(call: Callable[[], Any]) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()
    return str(caught.value.response["error"])


# -- Web API ---------------------------------------------------------------------


def test_auth_test_scopes_header_and_token_errors(slack: SlackDouble) -> None:
    app = slack.add_app("bridge", scopes=["chat:write", "channels:history"])
    web = WebClient(token=app.bot_token, base_url=slack.api_url)
    answer = web.auth_test()
    assert (answer["user_id"], answer["bot_id"], answer["team_id"], answer["user"]) == (
        app.bot_user_id, app.bot_id, slack.team_id, "bridge")
    assert answer["url"] == slack.url
    assert answer.headers["x-oauth-scopes"] == "chat:write,channels:history"
    assert _error(WebClient(token="xoxb-nope", base_url=slack.api_url).auth_test) == (
        "invalid_auth")
    assert _error(WebClient(token=app.app_token, base_url=slack.api_url).auth_test) == (
        "not_allowed_token_type")
    assert _error(lambda: web.users_info(user=app.bot_user_id)) == "missing_scope"
    slack.revoke(app.bot_token)
    assert _error(web.auth_test) == "token_revoked"
    assert slack.calls("auth.test") == 4


def test_post_history_and_replies_page_newest_first_with_metadata(world: World) -> None:
    slack, web = world.slack, world.web
    tops = [slack.post(world.alice, world.general, f"top {i}") for i in range(5)]
    meta = {"event_type": "bridge_answer", "event_payload": {"run": "r1", "part": 0}}
    replies = [web.chat_postMessage(channel=world.general, text=f"reply {i}",
                                    thread_ts=tops[1], metadata=meta)["ts"] for i in range(3)]
    broadcast = slack.post(world.bob, world.general, "also here", thread_ts=tops[1],
                           broadcast=True)
    posted = [Decimal(ts) for ts in [*tops, *replies, broadcast]]
    assert all(a < b for a, b in itertools.pairwise(posted))  # unique, strictly increasing

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = web.conversations_history(channel=world.general, limit=2, cursor=cursor)
        seen.extend(page["messages"])
        if not page["has_more"]:
            assert page["response_metadata"]["next_cursor"] == ""
            break
        cursor = page["response_metadata"]["next_cursor"]
    assert [m["ts"] for m in seen] == [broadcast, *reversed(tops)]
    parent = next(m for m in seen if m["ts"] == tops[1])
    assert parent["reply_count"] == 4 and parent["latest_reply"] == broadcast
    assert parent["thread_ts"] == tops[1]
    assert seen[0]["subtype"] == "thread_broadcast"

    newer = web.conversations_history(channel=world.general, oldest=tops[2], inclusive=False)
    assert [m["ts"] for m in newer["messages"]] == [broadcast, tops[4], tops[3]]

    plain = web.conversations_replies(channel=world.general, ts=tops[1])["messages"]
    assert [m["ts"] for m in plain] == [tops[1], *replies, broadcast]
    assert "metadata" not in plain[1]
    assert plain[1]["bot_id"] == world.app.bot_id and plain[1]["user"] == world.app.bot_user_id
    assert plain[1]["app_id"] == world.app.app_id and plain[1]["parent_user_id"] == world.alice
    paged = web.conversations_replies(channel=world.general, ts=tops[1], limit=2,
                                      include_all_metadata=True)
    assert [m["ts"] for m in paged["messages"]] == [tops[1], *replies[:2]]
    assert paged["messages"][1]["metadata"] == meta and paged["has_more"]
    rest = web.conversations_replies(channel=world.general, ts=tops[1], limit=2,
                                     cursor=paged["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in rest["messages"]] == [tops[1], replies[2], broadcast]

    assert _error(lambda: web.conversations_replies(channel=world.general,
                                                    ts="1.000001")) == "thread_not_found"
    orphan = web.chat_postMessage(channel=world.general, text="x", thread_ts="1.000001")
    assert orphan["ts"] not in [m["ts"] for m in web.conversations_history(
        channel=world.general)["messages"]]
    assert slack.message(world.general, orphan["ts"])["thread_ts"] == "1.000001"


def test_posting_needs_membership_and_valid_content(world: World) -> None:
    slack, web = world.slack, world.web
    outside = slack.add_channel("outside", [world.alice])
    secret = slack.add_channel("secret", [world.alice], private=True)
    assert _error(lambda: web.chat_postMessage(channel=outside, text="x")) == "not_in_channel"
    assert _error(lambda: web.chat_postMessage(channel=secret, text="x")) == "channel_not_found"
    assert _error(lambda: web.chat_postMessage(channel="C404", text="x")) == "channel_not_found"
    assert _error(lambda: web.chat_postMessage(channel=world.general, text="x",
                                               markdown_text="y")) == "markdown_text_conflict"
    assert _error(lambda: web.chat_postMessage(channel=world.general, text="x",
                                               metadata={"event_type": "e"})) == (
        "invalid_metadata_format")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    posted = web.api_call("chat.postMessage", params={  # form-encoded, JSON strings inside
        "channel": world.general, "text": "hi", "blocks": json.dumps(blocks),
        "metadata": '{"event_type": "e", "event_payload": {"k": 1}}'})
    stored = slack.message(world.general, posted["ts"])
    assert stored["blocks"][0]["text"]["text"] == "*hi*" and stored["blocks"][0]["block_id"]
    assert stored["metadata"] == {"event_type": "e", "event_payload": {"k": 1}}
    names = {c["name"] for c in web.conversations_list()["channels"]}
    assert names == {"general", "outside"}  # the private one it is not in stays hidden


def test_conversations_list_types_paging_and_dm_user(world: World) -> None:
    slack, web = world.slack, world.web
    for i in range(3):
        slack.add_channel(f"c{i}", [world.app])
    private = slack.add_channel("ops", [world.app], private=True)
    dm = slack.open_dm(world.alice, world.app)
    assert slack.open_dm(world.app, world.alice) == dm
    found: list[dict[str, Any]] = []
    cursor = ""
    for page in web.conversations_list(types="public_channel,private_channel,im", limit=2):
        found.extend(page["channels"])
        cursor = page["response_metadata"]["next_cursor"]
    assert cursor == ""
    assert [c["id"] for c in found][-2:] == [private, dm]
    assert len(found) == 6 and all(c.get("is_member", True) for c in found)
    by_id = {c["id"]: c for c in found}
    assert by_id[private]["is_private"] and by_id[dm]["is_im"]
    assert by_id[dm]["user"] == world.alice
    info = web.conversations_info(channel=world.general)["channel"]
    assert info["name"] == "general" and info["is_member"] and not info["is_private"]
    assert web.conversations_members(channel=world.general)["members"] == [
        world.alice, world.bob, world.app.bot_user_id]
    user = web.users_info(user=world.alice)["user"]
    assert (user["name"], user["real_name"], user["is_bot"]) == ("alice", "alice", False)
    assert user["profile"]["display_name"] == "alice"
    assert web.users_info(user=world.app.bot_user_id)["user"]["is_bot"]


def test_reactions_update_delete_and_ephemerals(world: World) -> None:
    slack, web = world.slack, world.web
    ts = slack.post(world.alice, world.general, "hello")
    web.reactions_add(channel=world.general, timestamp=ts, name="eyes")
    assert _error(lambda: web.reactions_add(channel=world.general, timestamp=ts,
                                            name="eyes")) == "already_reacted"
    slack.react(world.bob, world.general, ts, "eyes")
    assert slack.reactions(world.general, ts) == {"eyes": {world.app.bot_user_id, world.bob}}
    got = web.reactions_get(channel=world.general, timestamp=ts)["message"]["reactions"]
    assert got == [{"name": "eyes", "users": [world.app.bot_user_id, world.bob], "count": 2}]
    web.reactions_remove(channel=world.general, timestamp=ts, name="eyes")
    assert _error(lambda: web.reactions_remove(channel=world.general, timestamp=ts,
                                               name="eyes")) == "no_reaction"

    mine = web.chat_postMessage(channel=world.general, text="draft")["ts"]
    assert _error(lambda: web.chat_update(channel=world.general, ts=ts, text="x")) == (
        "cant_update_message")
    web.chat_update(channel=world.general, ts=mine, text="final")
    assert slack.message(world.general, mine)["text"] == "final"
    assert slack.message(world.general, mine)["edited"]["user"] == world.app.bot_user_id
    web.chat_delete(channel=world.general, ts=mine)
    with pytest.raises(KeyError):
        slack.message(world.general, mine)

    web.chat_postEphemeral(channel=world.general, user=world.bob, text="only you")
    assert [e["text"] for e in slack.ephemerals(world.bob)] == ["only you"]
    assert slack.ephemerals(world.alice) == []


def test_fail_and_fail_after_store(world: World) -> None:
    slack, web = world.slack, world.web
    slack.fail("chat.postMessage", "msg_too_long")
    assert _error(lambda: web.chat_postMessage(channel=world.general, text="a")) == (
        "msg_too_long")
    assert slack.history(world.general) == []
    slack.fail_after_store()
    with pytest.raises(SlackApiError) as caught:
        web.chat_postMessage(channel=world.general, text="maybe")
    assert caught.value.response.status_code == 500
    assert [m["text"] for m in slack.history(world.general)] == ["maybe"]
    web.chat_postMessage(channel=world.general, text="surely")
    assert slack.calls("chat.postMessage") == 3


def test_ratelimit_is_retried_by_the_sdk_retry_handler(world: World) -> None:
    slack = world.slack
    slack.ratelimit("chat.postMessage", count=1, retry_after_s=0)
    with pytest.raises(SlackApiError) as caught:
        world.web.chat_postMessage(channel=world.general, text="no handler")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "0"
    assert caught.value.response["error"] == "ratelimited"

    web = WebClient(token=world.app.bot_token, base_url=slack.api_url,
                    retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    slack.ratelimit("chat.postMessage", count=2, retry_after_s=0)
    web.chat_postMessage(channel=world.general, text="after two 429s")
    assert slack.calls("chat.postMessage") == 4
    assert [m["text"] for m in slack.history(world.general)] == ["after two 429s"]


def test_files_upload_v2_round_trip_and_private_url(world: World) -> None:
    slack, web = world.slack, world.web
    parent = slack.post(world.alice, world.general, "send me the log")
    done = web.files_upload_v2(channel=world.general, thread_ts=parent, content=b"line 1\n",
                               filename="run.log", title="Run log", initial_comment="here")
    file_id = done["file"]["id"]
    assert slack.file_content(file_id) == b"line 1\n"
    reply = slack.history(world.general)[-1]
    assert reply["text"] == "here" and reply["thread_ts"] == parent
    assert [f["id"] for f in reply["files"]] == [file_id]
    info = web.files_info(file=file_id)["file"]
    assert (info["name"], info["title"], info["size"]) == ("run.log", "Run log", 7)

    def fetch(headers: dict[str, str]) -> tuple[int, str, bytes]:
        request = urllib.request.Request(info["url_private"], headers=headers)
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.headers.get_content_type(), answer.read()

    status, kind, body = fetch({})
    assert (status, kind) == (200, "text/html") and b"line 1" not in body
    assert fetch({"Authorization": f"Bearer {world.app.bot_token}"})[2] == b"line 1\n"
    assert fetch({"Authorization": "Bearer xoxb-wrong"})[1] == "text/html"


def test_streaming_start_append_stop_and_expiry(world: World) -> None:
    slack, web = world.slack, world.web
    parent = slack.post(world.alice, world.general, f"<@{world.app.bot_user_id}> go")
    assert _error(lambda: web.chat_startStream(channel=world.general, thread_ts=parent)) == (
        "missing_recipient_user_id")
    ts = web.chat_startStream(channel=world.general, thread_ts=parent, markdown_text="Hel",
                              recipient_user_id=world.alice,
                              recipient_team_id=slack.team_id)["ts"]
    web.chat_appendStream(channel=world.general, ts=ts, markdown_text="lo")
    task = {"type": "task_update", "id": "t1", "title": "Read", "status": "in_progress"}
    web.chat_appendStream(channel=world.general, ts=ts,
                          chunks=[task, {"type": "plan_update", "title": "Plan"}])
    assert _error(lambda: web.chat_appendStream(
        channel=world.general, ts=ts, markdown_text="x", chunks=[task])) == (
        "cannot_provide_both_markdown_text_and_chunks")
    assert slack.message(world.general, ts)["streaming"] is True
    button = {"type": "actions", "elements": [
        {"type": "button", "action_id": "stop:r1", "text": {"type": "plain_text",
                                                            "text": "Stop"}}]}
    web.chat_stopStream(channel=world.general, ts=ts, markdown_text="!", blocks=[button],
                        metadata={"event_type": "bridge_answer", "event_payload": {"run": 1}})
    done = slack.message(world.general, ts)
    assert done["text"] == "Hello!" and done["streaming"] is False
    assert [c["type"] for c in done["chunks"]] == [
        "markdown_text", "markdown_text", "task_update", "plan_update", "markdown_text"]
    assert done["chunks"][2] == task and done["thread_ts"] == parent
    assert done["blocks"][0]["elements"][0]["action_id"] == "stop:r1"
    assert done["metadata"]["event_payload"] == {"run": 1}
    assert _error(lambda: web.chat_appendStream(channel=world.general, ts=ts,
                                                markdown_text="late")) == (
        "message_not_in_streaming_state")

    stream = web.chat_stream(channel=world.general, thread_ts=parent,
                             recipient_user_id=world.alice, recipient_team_id=slack.team_id)
    stream.append(markdown_text="short", chunks=[task])
    slack.set_stream_expiry(0)
    assert _error(lambda: stream.append(markdown_text="more", chunks=[])) == (
        "message_not_in_streaming_state")
    assert _error(lambda: web.chat_stopStream(channel=world.general, ts=ts)) == (
        "message_not_in_streaming_state")


# -- Socket Mode -----------------------------------------------------------------


def test_mention_brings_message_and_app_mention(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app)
    ts = slack.post(world.alice, world.general, f"hi <@{world.app.bot_user_id}>")
    wait_until(lambda: heard.events("app_mention"), what="app_mention")
    message = next(e for e in heard.events("message") if e["ts"] == ts)
    mention = heard.events("app_mention")[0]
    assert (message["channel"], message["user"], message["channel_type"]) == (
        world.general, world.alice, "channel")
    assert mention["ts"] == ts and mention["text"] == message["text"]
    assert len(heard.events()) == 2  # two event_ids
    first = heard.of_type("events_api")[0].payload
    assert first["api_app_id"] == world.app.app_id and first["type"] == "event_callback"
    assert first["authorizations"][0]["user_id"] == world.app.bot_user_id

    own = world.web.chat_postMessage(channel=world.general, text="mine", thread_ts=ts)["ts"]
    dm = slack.open_dm(world.bob, world.app)
    in_dm = slack.post(world.bob, dm, f"<@{world.app.bot_user_id}> in a DM")
    wait_until(lambda: {own, in_dm} <= {e["ts"] for e in heard.events("message")},
               what="own post and DM")
    echoed = next(e for e in heard.events("message") if e["ts"] == own)
    assert echoed["bot_id"] == world.app.bot_id and echoed["thread_ts"] == ts
    assert echoed["parent_user_id"] == world.alice
    assert next(e for e in heard.events("message") if e["ts"] == in_dm)["channel_type"] == "im"
    assert len(heard.events("app_mention")) == 1  # none in a DM

    slack.edit(world.alice, world.general, ts, "edited")
    slack.delete(world.alice, world.general, ts)
    def subtype(name: str) -> list[dict[str, Any]]:
        return [e for e in heard.events("message") if e.get("subtype") == name]

    wait_until(lambda: subtype("message_changed") and subtype("message_deleted"),
               what="edit and delete events")
    changed, deleted = subtype("message_changed")[0], subtype("message_deleted")[0]
    assert changed["message"]["text"] == "edited" and changed["previous_message"]["text"] == (
        f"hi <@{world.app.bot_user_id}>")
    assert deleted["deleted_ts"] == ts
    slack.post(world.alice, world.general, "a file", files={"a.txt": b"abc"})
    shared = wait_until(lambda: [e for e in heard.events("message") if e.get("files")])[0]
    assert shared["subtype"] == "file_share"
    assert (shared["files"][0]["name"], shared["files"][0]["size"]) == ("a.txt", 3)
    assert shared["files"][0]["url_private"].startswith(slack.url)


def test_ack_stops_redelivery_and_unacked_events_are_retried(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack

    def ack(request: SocketModeRequest) -> bool:
        return bool(request.payload.get("event", {}).get("text") == "ack me")

    sockets(world.app, Listener(ack))
    slack.post(world.alice, world.general, "ack me")
    slack.post(world.alice, world.general, "ignore me")
    wait_until(lambda: any(d.retry_attempt == 3 for d in slack.envelopes(world.app)),
               what="the third retry")
    wait_until(lambda: slack.unacked(world.app)
               and slack.unacked(world.app)[0].retry_attempt == 3, what="the last try")
    deliveries = slack.envelopes(world.app)
    acked = [d for d in deliveries if d.payload["event"]["text"] == "ack me"]
    ignored = [d for d in deliveries if d.payload["event"]["text"] == "ignore me"]
    assert len(acked) == 1 and acked[0].acked
    assert [d.retry_attempt for d in ignored] == [0, 1, 2, 3]
    assert [d.envelope["retry_reason"] for d in ignored] == ["", "timeout", "timeout",
                                                             "timeout"]
    assert len({d.payload["event_id"] for d in ignored}) == 1
    assert len({d.envelope_id for d in ignored}) == 4
    assert not any(d.acked for d in ignored)
    assert [d.envelope_id for d in slack.unacked(world.app)] == [ignored[-1].envelope_id]


def test_events_wait_for_a_socket(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    ts = slack.post(world.alice, world.general, "while you were away")
    assert slack.waiting(world.app) == 1
    _, heard = sockets(world.app)
    wait_until(lambda: [e["ts"] for e in heard.events()] == [ts], what="the queued event")
    assert slack.waiting(world.app) == 0


def test_disconnect_envelope_makes_the_sdk_reconnect(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app)
    opened = slack.calls("apps.connections.open")
    assert slack.disconnect(world.app) == 1
    wait_until(lambda: slack.calls("apps.connections.open") > opened, what="a new URL")
    ts = slack.post(world.alice, world.general, "after the refresh")
    wait_until(lambda: ts in [e["ts"] for e in heard.events()], RECONNECT_S, "the event")
    wait_until(lambda: not slack.unacked(world.app), what="its ack")


def test_dropped_sockets_make_the_sdk_reconnect(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app)
    opened = slack.calls("apps.connections.open")
    assert slack.drop_sockets(world.app) == 1
    wait_until(lambda: slack.calls("apps.connections.open") > opened, what="a new URL")
    ts = slack.post(world.alice, world.general, "after the drop")
    wait_until(lambda: ts in [e["ts"] for e in heard.events()], RECONNECT_S, "the event")
    assert slack.sockets(world.app) >= 1


def test_silenced_socket_swallows_until_a_new_socket(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app)
    assert slack.silence(world.app) == 1
    ts = slack.post(world.alice, world.general, "into the void")
    wait_until(lambda: slack.envelopes(world.app), what="a delivery")
    assert slack.envelopes(world.app)[0].swallowed
    assert slack.drop_sockets(world.app) == 1  # the client reconnects; the retry reaches it
    wait_until(lambda: ts in [e["ts"] for e in heard.events()], RECONNECT_S,
               "the retried event")
    assert any(r.retry_attempt for r in heard.of_type("events_api"))


def test_click_sends_block_actions_and_response_url_replaces(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app)
    parent = slack.post(world.alice, world.general, "work")
    blocks = [{"type": "actions", "block_id": "controls", "elements": [
        {"type": "button", "action_id": "stop:r1", "value": "r1",
         "text": {"type": "plain_text", "text": "Stop"}}]}]
    ts = world.web.chat_postMessage(channel=world.general, text="running", blocks=blocks,
                                    thread_ts=parent)["ts"]
    with pytest.raises(SlackError):
        slack.click(world.alice, world.general, ts, "nope")
    slack.click(world.alice, world.general, ts, "stop:r1")
    request = wait_until(lambda: heard.of_type("interactive"), what="the click")[0]
    payload = request.payload
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == world.alice and payload["user"]["username"] == "alice"
    assert payload["channel"] == {"id": world.general, "name": "general"}
    assert payload["container"] == {"type": "message", "message_ts": ts,
                                    "channel_id": world.general, "is_ephemeral": False,
                                    "thread_ts": parent}
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "stop:r1", "controls", "r1", "button")
    assert payload["message"]["ts"] == ts and payload["trigger_id"]
    wait_until(lambda: slack.envelopes(world.app)[-1].acked, what="the ack")

    body = b'{"replace_original": true, "text": "stopped"}'
    post = urllib.request.Request(payload["response_url"], data=body, method="POST",
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=5) as answer:
        assert answer.status == 200
    assert slack.message(world.general, ts)["text"] == "stopped"

    slash = slack.slash(world.bob, world.general, "/bridge", "status")
    got = wait_until(lambda: heard.of_type("slash_commands"), what="the command")[0].payload
    assert (got["command"], got["text"], got["user_id"], got["channel_id"]) == (
        "/bridge", "status", world.bob, world.general)
    assert got["response_url"] == slash["response_url"]


def test_builtin_socket_mode_client(
        world: World, sockets: Callable[..., tuple[BaseSocketModeClient, Listener]]) -> None:
    slack = world.slack
    _, heard = sockets(world.app, builtin=True)
    ts = slack.post(world.alice, world.general, f"<@{world.app.bot_user_id}> builtin")
    wait_until(lambda: len(heard.events()) == 2, what="message and app_mention")
    assert {e["type"] for e in heard.events()} == {"message", "app_mention"}
    assert all(e["ts"] == ts for e in heard.events())
    wait_until(lambda: all(d.acked for d in slack.envelopes(world.app)), what="acks")
    opened = slack.calls("apps.connections.open")
    slack.disconnect(world.app, reason="warning")
    wait_until(lambda: slack.calls("apps.connections.open") > opened, what="a new URL")
    again = slack.post(world.alice, world.general, "after the refresh")
    wait_until(lambda: again in [e["ts"] for e in heard.events()], RECONNECT_S, "the event")
