"""The Feishu/Lark client on the Lark double (the real lark-oapi on loopback): the card,
post, text fallback chain, token evict-and-retry, ``uuid`` idempotency, rate limits and
missing permissions.

The intake's side is in ``test_lark_intake.py``; the pure readers and renderers in
``test_lark_events.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.chat.lark.api import grant_url
from adapters.chat.lark.client import uuid_of
from bridge.errors import BadRequest, ChatError, Forbidden, RetryLater, TooLarge, Unauthorized
from bridge.model import Control, Target
from tests.lark_support import REPLY, SEND, TOKEN, LarkWorld, button_value, no_proxy

#: An answer with what a rendering could lose: Markdown, CJK, quotes, a backslash.
ANSWER = '**Done** — 完成了 "all" of it\n\n- one\n- two `C:\\tmp`\n\n```py\nprint(1)\n```'


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LarkWorld]:
    no_proxy(monkeypatch)
    made = LarkWorld(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def dm(world: LarkWorld) -> str:
    """Alice's p2p chat with the app."""
    return world.double.add_p2p(world.alice, world.app)


def _grant(app_id: str, *scopes: str) -> str:
    return (f"https://open.feishu.cn/app/{app_id}/auth?q={','.join(scopes)}"
            "&op_from=openapi&token_type=tenant")


# -- the fallback chain ------------------------------------------------------------------


def test_an_answer_is_a_card_with_its_markdown(world: LarkWorld, dm: str) -> None:
    client = world.client()
    sent = client.post(Target(dm), ANSWER, idempotency_key="k-1",
                       controls=(Control("stop", "Stop", "run-1", for_users=(world.alice,)),))
    shown = world.double.message(sent)
    assert shown["msg_type"] == "interactive"
    assert shown["card"]["body"]["elements"][0]["content"] == ANSWER
    assert shown["uuid"] == uuid_of("k-1")
    assert button_value(world.double, sent)["r"] == "run-1"


@pytest.mark.parametrize("code", [230099, 230001, 230025])
def test_a_refused_card_lands_as_a_post_then_as_text(world: LarkWorld, dm: str,
                                                     code: int) -> None:
    client = world.client()
    world.double.fail(SEND, code=code, status=400)
    as_post = client.post(Target(dm), ANSWER, idempotency_key="k-1")
    world.double.fail(SEND, code=code, status=400, count=2)
    as_text = client.post(Target(dm), ANSWER, idempotency_key="k-2")
    assert world.texts(dm) == [("post", ANSWER), ("text", ANSWER)]
    assert [m["message_id"] for m in world.double.history(dm)] == [as_post, as_text]
    assert world.double.calls(SEND) == 5
    world.double.fail(SEND, code=code, status=400, count=3)
    with pytest.raises((BadRequest, TooLarge)):
        client.post(Target(dm), ANSWER, idempotency_key="k-3")
    assert len(world.double.history(dm)) == 2


def test_a_refused_card_reply_stays_in_its_thread(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.app])
    asked = world.double.post(world.alice, group, "question", mentions=[world.app])
    world.double.fail(REPLY, code=230099)
    sent = world.client().post(Target(group, asked), ANSWER, idempotency_key="k-1")
    shown = world.double.message(sent)
    assert (shown["msg_type"], shown["text"], shown["root_id"]) == ("post", ANSWER, asked)


def test_a_server_error_or_a_missing_chat_is_not_a_rendering_failure(world: LarkWorld,
                                                                      dm: str) -> None:
    client = world.client()
    world.double.fail(SEND, code=1, status=500)
    with pytest.raises(RetryLater) as failed:
        client.post(Target(dm), ANSWER, idempotency_key="k-1")
    assert failed.value.ambiguous
    world.double.fail(SEND, code=230002, status=400)
    with pytest.raises(ChatError) as gone:
        client.post(Target(dm), ANSWER, idempotency_key="k-1")
    assert not isinstance(gone.value, BadRequest | TooLarge)
    assert world.double.calls(SEND) == 2 and world.double.history(dm) == []


# -- tokens --------------------------------------------------------------------------------


def test_an_expired_token_is_evicted_and_the_call_made_again(world: LarkWorld,
                                                             dm: str) -> None:
    client = world.client()
    client.post(Target(dm), "one", idempotency_key="k-1")
    tokens = world.double.calls(TOKEN)
    assert world.double.expire_tokens(world.app) >= 1
    second = client.post(Target(dm), "two", idempotency_key="k-2")
    assert world.texts(dm) == [("interactive", "one"), ("interactive", "two")]
    assert world.double.history(dm)[1]["message_id"] == second
    assert world.double.calls(TOKEN) == tokens + 1
    assert world.double.calls(SEND) == 3  # one refused with the old token, sent again


def test_a_token_refused_twice_is_unauthorized(world: LarkWorld, dm: str) -> None:
    client = world.client()
    world.double.fail(SEND, code=99991663, status=400, count=2)
    with pytest.raises(Unauthorized):
        client.post(Target(dm), "one", idempotency_key="k-1")
    assert world.double.calls(SEND) == 2 and world.double.history(dm) == []


# -- exactly once ------------------------------------------------------------------------------


def test_the_same_key_is_the_same_message(world: LarkWorld, dm: str) -> None:
    client = world.client()
    first = client.post(Target(dm), "hello", idempotency_key="piece-1")
    again = client.post(Target(dm), "hello", idempotency_key="piece-1")
    other = client.post(Target(dm), "hello", idempotency_key="piece-2")
    assert first == again != other
    assert [m["message_id"] for m in world.double.history(dm)] == [first, other]
    assert client.find_posted(Target(dm), "piece-1") is None  # "send it again" instead


def test_a_send_that_landed_but_failed_is_not_doubled_by_the_retry(world: LarkWorld,
                                                                   dm: str) -> None:
    client = world.client()
    world.double.fail_after_store(SEND)
    with pytest.raises(RetryLater) as failed:
        client.post(Target(dm), "hello", idempotency_key="piece-1")
    assert failed.value.ambiguous
    [landed] = world.double.history(dm)
    again = client.post(Target(dm), "hello", idempotency_key="piece-1")
    assert again == landed["message_id"]
    assert len(world.double.history(dm)) == 1


def test_a_fallback_post_that_landed_is_not_doubled_by_the_retry(world: LarkWorld,
                                                                 dm: str) -> None:
    client = world.client()
    world.double.fail(SEND, code=230099)
    world.double.fail_after_store(SEND)  # the post lands, its answer is lost
    with pytest.raises(RetryLater):
        client.post(Target(dm), "hello", idempotency_key="piece-1")
    world.double.fail(SEND, code=230099)  # the card is refused again
    again = client.post(Target(dm), "hello", idempotency_key="piece-1")
    assert world.texts(dm) == [("post", "hello")]
    assert again == world.double.history(dm)[0]["message_id"]


# -- limits and permissions ------------------------------------------------------------------


def test_a_rate_limit_is_retry_later_with_the_platform_s_delay(world: LarkWorld,
                                                               dm: str) -> None:
    client = world.client()
    world.double.ratelimit(SEND, reset_s=2)
    with pytest.raises(RetryLater) as limited:
        client.post(Target(dm), "hello", idempotency_key="k-1")
    assert limited.value.retry_after_s == 2.0
    assert world.double.history(dm) == []
    client.post(Target(dm), "hello", idempotency_key="k-1")
    assert world.texts(dm) == [("interactive", "hello")]


@pytest.mark.parametrize("call, scopes", [
    ("upload", ("im:resource",)),
    ("post", ("im:message", "im:message:send_as_bot")),
    ("react", ("im:message.reactions:write_only", "im:message.reactions:read")),
])
def test_a_missing_permission_names_the_whole_console_url(
        world: LarkWorld, dm: str, tmp_path: Path, call: str, scopes: tuple[str, ...]) -> None:
    client = world.client()
    asked = world.double.post(world.alice, dm, "a message to react to")
    report = tmp_path / "report.txt"
    report.write_text("numbers", encoding="utf-8")
    for scope in scopes:
        world.double.deny_scope(world.app, scope)
    with pytest.raises(Forbidden) as denied:  # not a rendering failure: no fallback
        if call == "upload":
            client.upload(Target(dm), report, title="the report", idempotency_key="f-1")
        elif call == "post":
            client.post(Target(dm), "hello", idempotency_key="k-1")
        else:
            client.react(Target(dm), asked, "eyes")
    assert grant_url(denied.value) == _grant(world.app.app_id, *scopes)
    assert [m["message_id"] for m in world.double.history(dm)] == [asked]
    assert world.double.calls(SEND) == (call == "post")
