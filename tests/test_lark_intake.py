"""The Feishu/Lark intake on the Lark double: how messages map to conversations, and the
signed Stop button's clicks.

The real lark-oapi (REST and long connection) talks to the double on loopback; a
:class:`~tests.contract.host.TestHost` drives the intake as the runtime does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.chat.lark.buttons import CHAT_ITSELF
from bridge.model import Action, Control, Inbound, ScopeKey, Target
from bridge.signed_controls import claims_for, sign
from tests.contract.host import TestHost
from tests.lark_support import LarkWorld, button_value, no_proxy

REFUSED = {"toast": {"type": "error", "content": "This button is not available."}}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LarkWorld]:
    no_proxy(monkeypatch)
    made = LarkWorld(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _scope(world: LarkWorld, chat_id: str, thread: str = "") -> ScopeKey:
    return world.connection.scope(chat_id, thread)


def _one(host: TestHost, content: str) -> Inbound:
    inbound = host.wait_accepted(content)
    assert len(host.calls_with(content)) == 1
    return inbound


# -- which conversation a message belongs to ---------------------------------------------


def test_p2p_message_is_direct_and_in_the_chat_s_conversation(world: LarkWorld) -> None:
    dm = world.double.add_p2p(world.alice, world.app)
    host = world.host()
    posted = world.double.post(world.alice, dm, "hello there")
    inbound = _one(host, "hello there")
    assert (inbound.message_id, inbound.channel_id, inbound.author_id) == (posted, dm,
                                                                            world.alice)
    assert inbound.addressed and inbound.is_direct and not inbound.mentioned
    assert inbound.thread == "" and inbound.per_thread
    assert inbound.scope == _scope(world, dm)
    assert not inbound.author_is_bot and not inbound.catch_up


def test_group_mention_starts_a_conversation_of_its_own(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.bob, world.app])
    host = world.host()
    posted = world.double.post(world.alice, group, "look at this", mentions=[world.app])
    inbound = _one(host, "@echo look at this")
    assert inbound.addressed and inbound.mentioned and not inbound.is_direct
    assert inbound.thread == posted
    assert inbound.scope == _scope(world, group, posted)


def test_plain_group_message_is_not_addressed(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.app])
    host = world.host()
    world.double.post(world.alice, group, "just chatting")
    inbound = _one(host, "just chatting")
    assert not inbound.addressed and not inbound.mentioned and not inbound.is_direct
    assert inbound.thread == ""
    assert inbound.scope == _scope(world, group)


def test_replies_where_the_bot_answered_belong_to_its_conversation(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.bob, world.app])
    host = world.host()
    asked = world.double.post(world.alice, group, "question", mentions=[world.app])
    _one(host, "@echo question")
    answer = world.client().post(Target(group, asked), "an answer", idempotency_key="a-1")
    assert world.double.message(answer)["root_id"] == asked
    # Her own question first: its parent is not the bot's, the chain has the bot's answer.
    world.double.post(world.alice, group, "to the question", reply_to=asked)
    _one(host, "to the question")
    world.double.post(world.bob, group, "to the answer", reply_to=answer)
    other = world.double.post(world.bob, group, "unrelated")
    world.double.post(world.alice, group, "reply elsewhere", reply_to=other)
    for content in ("to the question", "to the answer"):
        inbound = _one(host, content)
        assert inbound.addressed and not inbound.mentioned, content
        assert inbound.thread == asked, content
        assert inbound.scope == _scope(world, group, asked), content
    elsewhere = _one(host, "reply elsewhere")
    assert not elsewhere.addressed
    assert elsewhere.scope == _scope(world, group, other)


def test_topic_group_messages_belong_to_their_topic(world: LarkWorld) -> None:
    topics = world.double.add_group("topics", [world.alice, world.app], topic=True)
    host = world.host()
    first = world.double.post(world.alice, topics, "first topic", mentions=[world.app])
    _one(host, "@echo first topic")
    answer = world.client().post(Target(topics, first), "on it", idempotency_key="t-1")
    shown = world.double.message(answer)
    assert shown["root_id"] == first
    assert shown["thread_id"] == world.double.message(first)["thread_id"] != ""
    world.double.post(world.alice, topics, "more on the first", reply_to=first)
    second = world.double.post(world.alice, topics, "second topic")
    world.double.post(world.alice, topics, "on the second", mentions=[world.app],
                      reply_to=second)
    expect = {"@echo first topic": (first, True), "more on the first": (first, True),
              "second topic": (second, False), "@echo on the second": (second, True)}
    for content, (root, addressed) in expect.items():
        inbound = _one(host, content)
        assert inbound.thread == root, content
        assert inbound.scope == _scope(world, topics, root), content
        assert inbound.addressed is addressed, content


# -- the signed Stop button ------------------------------------------------------------------


def _stop_card(world: LarkWorld, target: Target, run_id: str, *who: str) -> str:
    return world.client().post(target, f"run {run_id} is working", idempotency_key=run_id,
                               controls=(Control("stop", "Stop", run_id, for_users=who),))


def _settled(world: LarkWorld, host: TestHost, chat_id: str, mark: str) -> list[Action]:
    """The actions so far, once everything queued before ``mark`` was handled."""
    world.double.post(world.alice, chat_id, mark)
    host.wait_accepted(mark)
    return list(host.actions)


def _expired(world: LarkWorld, value: dict[str, Any]) -> dict[str, str]:
    """``value``'s claims signed with the platform's key, but expired an hour ago."""
    ring = world.platform.signer.ring()
    claims = claims_for(value["a"], value["r"], value["s"], value["c"], value["o"].split(","),
                        value["p"], now=time.time() - 3600, ttl_s=60,
                        key_version=ring.current, nonce=secrets.token_urlsafe(16))
    return sign(claims, ring)


def test_stop_click_is_honoured_once_for_who_may_press_it(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.bob, world.app])
    elsewhere = world.double.add_group("other", [world.alice, world.app])
    host = world.host()
    card = _stop_card(world, Target(group), "run-1", world.alice)
    value = button_value(world.double, card)
    assert (value["a"], value["r"], value["c"], value["o"], value["s"]) == (
        "stop", "run-1", group, world.alice, CHAT_ITSELF)
    other_card = _stop_card(world, Target(elsewhere), "run-9", world.alice)

    refused = {
        "another member": world.double.click(world.bob, card),
        "a tampered run id": world.double.click(world.alice, card,
                                                value={**value, "r": "run-2"}),
        "a tampered operator list": world.double.click(world.bob, card,
                                                       value={**value, "o": world.bob}),
        "an expired value": world.double.click(world.alice, card,
                                               value=_expired(world, value)),
        "another chat's value": world.double.click(
            world.alice, card, value=button_value(world.double, other_card)),
        "not a signed value": world.double.click(world.alice, card, value={"run": "run-1"}),
    }
    for why, answer in refused.items():
        assert answer == REFUSED, why
    assert _settled(world, host, group, "after the refusals") == []

    honoured = world.double.click(world.alice, card)
    assert honoured["toast"]["type"] == "info"
    [action] = host.wait(lambda: list(host.actions), "the click handed to act()")
    assert action == Action(_scope(world, group), world.alice, "stop", "run-1",
                            action.user_name)

    assert world.double.click(world.alice, card, value=value) == REFUSED  # a replay
    assert _settled(world, host, group, "after the replay") == [action]


def test_stop_click_in_a_thread_names_the_thread_s_conversation(world: LarkWorld) -> None:
    group = world.double.add_group("team", [world.alice, world.bob, world.app])
    host = world.host()
    asked = world.double.post(world.alice, group, "do it", mentions=[world.app])
    _one(host, "@echo do it")
    card = _stop_card(world, Target(group, asked), "run-7", world.alice, world.bob)
    assert button_value(world.double, card)["s"] == asked
    assert world.double.click(world.bob, card)["toast"]["type"] == "info"
    [action] = host.wait(lambda: list(host.actions), "the click handed to act()")
    assert (action.scope, action.user_id, action.value) == (_scope(world, group, asked),
                                                            world.bob, "run-7")
