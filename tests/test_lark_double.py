"""The Lark double, driven by the real lark-oapi (REST client and long-connection client)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lark_oapi as lark
import lark_oapi.ws.client as ws_client
import pytest
from lark_oapi.api.cardkit.v1 import (
    ContentCardElementRequest,
    ContentCardElementRequestBody,
    CreateCardRequest,
    CreateCardRequestBody,
    SettingsCardRequest,
    SettingsCardRequestBody,
)
from lark_oapi.api.im.v1 import (
    CreateFileRequest,
    CreateFileRequestBody,
    CreateMessageReactionRequest,
    CreateMessageReactionRequestBody,
    CreateMessageRequest,
    CreateMessageRequestBody,
    Emoji,
    GetChatRequest,
    GetMessageResourceRequest,
    ListMessageRequest,
    P2ImMessageReceiveV1,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.event.callback.model.p2_card_action_trigger import (
    P2CardActionTrigger,
    P2CardActionTriggerResponse,
)

from adapters.chat.lark.double import LarkApp, LarkDouble
from tests.support import wait_until

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                   "all_proxy")
SEND = "POST /open-apis/im/v1/messages"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """lark-oapi uses requests, which reads proxy variables: loopback must go direct."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def double() -> Iterator[LarkDouble]:
    """A started double (each test makes its own apps, so lark-oapi's
    process-wide token cache never mixes tests)."""
    with LarkDouble() as started:
        yield started


def rest(double: LarkDouble, app: LarkApp) -> lark.Client:
    """The real REST client for an app."""
    return lark.Client.builder().app_id(app.app_id).app_secret(app.app_secret) \
        .domain(double.domain).log_level(lark.LogLevel.ERROR).build()


def send_text(client: lark.Client, chat_id: str, text: str, uuid: str = "") -> Any:
    body = CreateMessageRequestBody.builder().receive_id(chat_id).msg_type("text") \
        .content(json.dumps({"text": text}))
    if uuid:
        body = body.uuid(uuid)
    return client.im.v1.message.create(CreateMessageRequest.builder().receive_id_type("chat_id")
                                       .request_body(body.build()).build())


class LongConnection:
    """The real ``lark_oapi.ws.Client`` on its own loop in a thread.

    The SDK's module keeps one event loop in a global (``ws/client.py``): this
    swaps in a fresh one and drives the client's coroutines on it, so only one
    runs at a time.
    """

    def __init__(self, double: LarkDouble, app: LarkApp, *,
                 on_message: Callable[[P2ImMessageReceiveV1], None] = lambda _: None,
                 on_click: Callable[[P2CardActionTrigger], Any] = lambda _: None) -> None:
        self.loop = asyncio.new_event_loop()
        ws_client.loop = self.loop
        handler = lark.EventDispatcherHandler.builder("", "") \
            .register_p2_im_message_receive_v1(on_message) \
            .register_p2_card_action_trigger(on_click).build()
        self.client = lark.ws.Client(app.app_id, app.app_secret, event_handler=handler,
                                     domain=double.domain, auto_reconnect=False,
                                     log_level=lark.LogLevel.ERROR)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: double.sockets(app) == 1, what="the long connection")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.client._connect())
        self.loop.create_task(self.client._ping_loop())
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client._disconnect(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def connect() -> Iterator[Callable[..., LongConnection]]:
    """Factory of long connections, closed at the end."""
    made: list[LongConnection] = []

    def make(*args: Any, **kwargs: Any) -> LongConnection:
        made.append(LongConnection(*args, **kwargs))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


# -- REST ------------------------------------------------------------------------


def test_send_reply_uuid_dedupe_and_list(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    group = double.add_group("g", [alice, app], topic=True)
    client = rest(double, app)
    first = send_text(client, group, "hello", uuid="run-1")
    again = send_text(client, group, "hello", uuid="run-1")
    assert first.code == 0 and again.code == 0
    assert again.data.message_id == first.data.message_id
    assert first.data.thread_id.startswith("omt_")
    reply = client.im.v1.message.reply(
        ReplyMessageRequest.builder().message_id(first.data.message_id).request_body(
            ReplyMessageRequestBody.builder().msg_type("text")
            .content(json.dumps({"text": "more"})).uuid("run-2").build()).build())
    assert reply.code == 0
    assert (reply.data.root_id, reply.data.thread_id) == (first.data.message_id,
                                                          first.data.thread_id)
    history = double.history(group)
    assert [m["text"] for m in history] == ["hello", "more"]
    assert history[0]["sender_type"] == "app" and history[0]["sender_id"] == app.bot_open_id
    listed = client.im.v1.message.list(ListMessageRequest.builder().container_id_type("chat")
                                       .container_id(group).build())
    assert [i.message_id for i in listed.data.items] == [first.data.message_id]
    in_thread = client.im.v1.message.list(
        ListMessageRequest.builder().container_id_type("thread")
        .container_id(first.data.thread_id).sort_type("ByCreateTimeDesc").build())
    assert [i.message_id for i in in_thread.data.items] == [reply.data.message_id,
                                                            first.data.message_id]
    assert in_thread.data.items[0].sender.id == app.app_id
    chat = client.im.v1.chat.get(GetChatRequest.builder().chat_id(group).build())
    assert (chat.data.chat_mode, chat.data.group_message_type) == ("topic", "thread")


def test_patch_reactions_and_removed_bot(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    group = double.add_group("g", [alice, app])
    client = rest(double, app)
    card = {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "one"}]}}
    sent = client.im.v1.message.create(CreateMessageRequest.builder().receive_id_type("chat_id")
                                       .request_body(CreateMessageRequestBody.builder()
                                                     .receive_id(group).msg_type("interactive")
                                                     .content(json.dumps(card)).build()).build())
    card["body"]["elements"][0]["content"] = "two"  # type: ignore[index]
    patched = client.im.v1.message.patch(
        PatchMessageRequest.builder().message_id(sent.data.message_id).request_body(
            PatchMessageRequestBody.builder().content(json.dumps(card)).build()).build())
    assert patched.code == 0
    assert double.message(sent.data.message_id)["text"] == "two"
    text = send_text(client, group, "plain")
    not_card = client.im.v1.message.patch(
        PatchMessageRequest.builder().message_id(text.data.message_id).request_body(
            PatchMessageRequestBody.builder().content(json.dumps(card)).build()).build())
    assert not_card.code == 230001
    reacted = client.im.v1.message_reaction.create(
        CreateMessageReactionRequest.builder().message_id(text.data.message_id).request_body(
            CreateMessageReactionRequestBody.builder()
            .reaction_type(Emoji.builder().emoji_type("THUMBSUP").build()).build()).build())
    assert reacted.code == 0
    assert double.reactions(text.data.message_id) == {"THUMBSUP": {app.bot_open_id}}
    double.remove(group, app)
    assert send_text(client, group, "gone").code == 230002


def test_file_upload_and_user_file_download(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    client = rest(double, app)
    import io
    uploaded = client.im.v1.file.create(CreateFileRequest.builder().request_body(
        CreateFileRequestBody.builder().file_type("stream").file_name("notes.txt")
        .file(io.BytesIO(b"some notes")).build()).build())
    assert uploaded.code == 0
    assert double.file_content(uploaded.data.file_key) == b"some notes"
    posted = double.post(alice, dm, "look", files={"shot.png": b"\x89PNG..", "a.pdf": b"%PDF"})
    content = double.message(posted)["content"]
    image_key = content["content"][1][0]["image_key"]
    assert content["content"][2][0]["tag"] == "media"
    got = client.im.v1.message_resource.get(
        GetMessageResourceRequest.builder().message_id(posted).file_key(image_key)
        .type("image").build())
    assert got.code == 0 and got.file.read() == b"\x89PNG.."
    wrong = client.im.v1.message_resource.get(
        GetMessageResourceRequest.builder().message_id(posted)
        .file_key(uploaded.data.file_key).type("file").build())
    assert wrong.code != 0


def test_cardkit_sequence_and_streaming_close(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    client = rest(double, app)
    card = {"schema": "2.0", "config": {"streaming_mode": True},
            "body": {"elements": [{"tag": "markdown", "element_id": "md", "content": ""}]}}
    made = client.cardkit.v1.card.create(CreateCardRequest.builder().request_body(
        CreateCardRequestBody.builder().type("card_json").data(json.dumps(card)).build())
        .build())
    card_id = made.data.card_id
    ref = json.dumps({"type": "card", "data": {"card_id": card_id}})
    body = CreateMessageRequestBody.builder().receive_id(dm).msg_type("interactive") \
        .content(ref).build()
    sent = client.im.v1.message.create(CreateMessageRequest.builder()
                                       .receive_id_type("chat_id").request_body(body).build())
    assert sent.code == 0
    twice = client.im.v1.message.create(CreateMessageRequest.builder()
                                        .receive_id_type("chat_id").request_body(body).build())
    assert twice.code != 0

    def content(text: str, sequence: int) -> int:
        answer = client.cardkit.v1.card_element.content(
            ContentCardElementRequest.builder().card_id(card_id).element_id("md").request_body(
                ContentCardElementRequestBody.builder().content(text).sequence(sequence)
                .build()).build())
        return int(answer.code)

    assert content("Hel", 1) == 0
    assert content("Hello", 2) == 0
    assert content("Hello!", 2) == 300317
    view = double.message(sent.data.message_id)
    assert view["text"] == "Hello" and view["streaming"] is True
    closed = client.cardkit.v1.card.settings(SettingsCardRequest.builder().card_id(card_id)
                                             .request_body(SettingsCardRequestBody.builder()
                                                           .settings(json.dumps({"config": {
                                                               "streaming_mode": False}}))
                                                           .sequence(3).build()).build())
    assert closed.code == 0
    assert double.card(card_id)["streaming"] is False
    assert content("Hello again", 4) == 300309


# -- faults ------------------------------------------------------------------------


def test_expired_tokens_answer_99991663(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    client = rest(double, app)
    assert send_text(client, dm, "one").code == 0
    assert double.expire_tokens(app) == 1
    refused = send_text(client, dm, "two")  # lark-oapi still holds the old token
    assert refused.code == 99991663 and refused.raw.status_code == 400
    lark.core.token.manager.TokenManager.cache.set(f"self_tenant_token:{app.app_id}", "", 0)
    assert send_text(client, dm, "three").code == 0


def test_deny_scope_and_ratelimit(double: LarkDouble) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    client = rest(double, app)
    double.deny_scope(app, "im:resource")
    import io
    denied = client.im.v1.file.create(CreateFileRequest.builder().request_body(
        CreateFileRequestBody.builder().file_type("stream").file_name("x.txt")
        .file(io.BytesIO(b"x")).build()).build())
    assert denied.code == 99991672
    assert (f"https://open.feishu.cn/app/{app.app_id}/auth?q=im:resource"
            "&op_from=openapi&token_type=tenant") in denied.msg
    double.ratelimit(SEND, count=1, reset_s=2)
    limited = send_text(client, dm, "x")
    assert limited.code == 99991400 and limited.raw.status_code == 429
    assert limited.raw.headers["x-ogw-ratelimit-reset"] == "2"
    assert send_text(client, dm, "y").code == 0
    assert [m["text"] for m in double.history(dm)] == ["y"]
    double.fail_after_store(SEND)
    ambiguous = send_text(client, dm, "z")
    assert ambiguous.raw.status_code == 500
    assert [m["text"] for m in double.history(dm)] == ["y", "z"]
    assert double.calls(SEND) == 3


# -- long connection ---------------------------------------------------------------


def test_message_delivered_and_acked(double: LarkDouble,
                                     connect: Callable[..., LongConnection]) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    group = double.add_group("g", [alice, app])
    heard: list[P2ImMessageReceiveV1] = []
    connect(double, app, on_message=heard.append)
    double.post(alice, group, "not for you")
    mentioned = double.post(alice, group, "hi bot", mentions=[app])
    direct = double.post(alice, dm, "direct")
    wait_until(lambda: len(heard) == 2, what="two messages")
    ids = [h.event.message.message_id for h in heard]
    assert sorted(ids) == sorted([mentioned, direct])
    by_id = {h.event.message.message_id: h.event for h in heard}
    assert json.loads(by_id[mentioned].message.content) == {"text": "@_user_1 hi bot"}
    assert by_id[mentioned].message.mentions[0].id.open_id == app.bot_open_id
    assert by_id[direct].sender.sender_id.open_id == alice
    assert by_id[direct].message.chat_type == "p2p"
    wait_until(lambda: all(d.acked for d in double.events(app)) and len(double.events(app)) == 2,
               what="acks")


def test_group_messages_app_gets_every_group_message(
        double: LarkDouble, connect: Callable[..., LongConnection]) -> None:
    app = double.add_app("listener", group_messages=True)
    alice = double.add_user("alice")
    group = double.add_group("g", [alice, app])
    heard: list[P2ImMessageReceiveV1] = []
    connect(double, app, on_message=heard.append)
    posted = double.post(alice, group, "anyone")
    wait_until(lambda: heard, what="the group message")
    assert heard[0].event.message.message_id == posted


def test_unacked_event_is_redelivered_with_the_same_event_id(
        double: LarkDouble, connect: Callable[..., LongConnection]) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    double.set_redelivery(0.2)
    calls: list[str] = []

    def flaky(event: P2ImMessageReceiveV1) -> None:
        calls.append(event.header.event_id)
        if len(calls) == 1:
            raise RuntimeError("not now")

    connect(double, app, on_message=flaky)
    double.post(alice, dm, "again")
    wait_until(lambda: len(calls) == 2, what="the redelivery")
    assert calls[0] == calls[1]
    # The ack follows the handler's return: wait for it, not only for the call.
    wait_until(lambda: all(d.code is not None for d in double.events(app)),
               what="both deliveries acked")
    deliveries = double.events(app)
    assert [d.code for d in deliveries] == [500, 200]
    assert deliveries[0].frame_id != deliveries[1].frame_id


def test_ack_observers_see_every_ack_with_its_app(
        double: LarkDouble, connect: Callable[..., LongConnection]) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    double.set_redelivery(0.2)
    seen: list[tuple[str, str, int | None, bool]] = []
    double.observe_acks(lambda app_id, d: seen.append((app_id, d.event_type, d.code, d.acked)))
    calls: list[str] = []

    def flaky(event: P2ImMessageReceiveV1) -> None:
        calls.append(event.header.event_id)
        if len(calls) == 1:
            raise RuntimeError("not now")

    connect(double, app, on_message=flaky)
    double.post(alice, dm, "again")
    wait_until(lambda: len(seen) == 2, what="two acks")
    assert seen == [(app.app_id, "im.message.receive_v1", 500, False),
                    (app.app_id, "im.message.receive_v1", 200, True)]


def test_click_reaches_the_handler_and_returns_its_toast(
        double: LarkDouble, connect: Callable[..., LongConnection]) -> None:
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    clicks: list[P2CardActionTrigger] = []

    def on_click(event: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        clicks.append(event)
        return P2CardActionTriggerResponse({"toast": {"type": "info", "content": "stopping"}})

    connect(double, app, on_click=on_click)
    card = {"schema": "2.0", "body": {"elements": [
        {"tag": "button", "name": "stop", "text": {"tag": "plain_text", "content": "Stop"},
         "behaviors": [{"type": "callback", "value": {"action": "stop", "run": "r1"}}]}]}}
    sent = rest(double, app).im.v1.message.create(
        CreateMessageRequest.builder().receive_id_type("chat_id").request_body(
            CreateMessageRequestBody.builder().receive_id(dm).msg_type("interactive")
            .content(json.dumps(card)).build()).build())
    answer = double.click(alice, sent.data.message_id)
    assert answer == {"toast": {"type": "info", "content": "stopping"}}
    assert clicks[0].event.action.value == {"action": "stop", "run": "r1"}
    assert clicks[0].event.operator.open_id == alice
    assert clicks[0].event.context.open_message_id == sent.data.message_id
    forged = double.click(alice, sent.data.message_id, value={"action": "other"})
    assert forged["toast"]["content"] == "stopping"
    assert clicks[1].event.action.value == {"action": "other"}
    with pytest.raises(LookupError):
        double.click(alice, sent.data.message_id, name="missing")
