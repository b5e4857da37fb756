"""Tests of adapters.chat.fabric.inbound: strict normalization of Fabric payloads."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.chat.fabric.inbound import ChannelInfo, channel_info, normalize_message
from adapters.chat.fabric.rules import wakes
from bridge.errors import BadEvent

SELF = "u-agent"
GENERAL = ChannelInfo("c-1", "general", "general", 7)
WORK = ChannelInfo("c-2", "build", "work", 0)
LIMIT = 100
NAMES = {"u-ann": "Ann"}
#: Marks a field to leave out of the payload.
DROP = object()


def author_name(user_id: str) -> str:
    return NAMES.get(user_id, user_id)


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "messageId": "m-1", "channelId": "c-1", "seq": 8, "content": "hello",
        "authorUserId": "u-ann", "createdAt": "2024-01-01T00:00:00Z", "wakeup": True,
        "isDeleted": False,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}



def normalize(data: Any, channel: ChannelInfo = GENERAL, *, catch_up: bool = False) -> Any:
    return normalize_message(
        data, agent="echo", guild="dev", self_id=SELF, channel=channel,
        author_name=author_name, content_limit=LIMIT, catch_up=catch_up,
    )


def test_well_formed_payload_maps_fields() -> None:
    inbound = normalize(payload())
    assert inbound.platform == "fabric"
    assert (inbound.agent, inbound.space) == ("echo", "dev")
    assert (inbound.channel_id, inbound.channel_name, inbound.is_direct) == (
        "c-1", "general", False)
    assert inbound.cursor == "8"
    assert (inbound.message_id, inbound.seq, inbound.content) == ("m-1", 8, "hello")
    assert (inbound.author_id, inbound.author_name) == ("u-ann", "Ann")
    assert inbound.created_at == "2024-01-01T00:00:00Z"
    assert inbound.addressed is True
    assert inbound.mentioned is False
    assert inbound.catch_up is False
    assert inbound.scope_key == "fabric:echo:dev:c-1"


def test_unknown_author_name_falls_back_via_callable() -> None:
    inbound = normalize(payload(authorUserId="u-zed"))
    assert inbound.author_name == "u-zed"


def test_created_at_not_string_becomes_empty() -> None:
    assert normalize(payload(createdAt=123)).created_at == ""
    assert normalize(payload(createdAt=DROP)).created_at == ""


def test_live_wakeup_taken_from_payload() -> None:
    # In a general channel wakes() would say True; the payload's False wins for live events.
    assert wakes(x_type="general", author_id="u-ann", recipient_id=SELF, content="hello")
    assert normalize(payload(wakeup=False)).addressed is False
    # In a work channel without mention wakes() says False; the payload's True wins.
    assert normalize(payload(channelId="c-2", wakeup=True), WORK).addressed is True


def test_catch_up_infers_wakeup() -> None:
    assert normalize(payload(wakeup=False), catch_up=True).addressed is True
    work = normalize(payload(channelId="c-2", wakeup=True), WORK, catch_up=True)
    assert work.addressed is False
    assert work.catch_up is True
    mention = normalize(payload(channelId="c-2", content=f"hi <@{SELF}>", wakeup=DROP), WORK,
                        catch_up=True)
    assert mention.addressed is True


def test_missing_wakeup_on_live_event_is_inferred() -> None:
    assert normalize(payload(channelId="c-2", wakeup=DROP), WORK).addressed is False
    assert normalize(payload(wakeup="yes")).addressed is True  # non-bool: inferred (general)


def test_mentioned() -> None:
    assert normalize(payload(content=f"hey <@{SELF}> look")).mentioned is True
    assert normalize(payload(content="hey <@u-other>")).mentioned is False
    assert normalize(payload(content=f"code `<@{SELF}>`")).mentioned is False


def test_content_at_limit_accepted_and_empty_content_accepted() -> None:
    assert normalize(payload(content="x" * LIMIT)).content == "x" * LIMIT
    assert normalize(payload(content="")).content == ""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param([payload()], id="list"),
        pytest.param("message", id="str"),
        pytest.param(payload(messageId=DROP), id="no-messageId"),
        pytest.param(payload(messageId=""), id="empty-messageId"),
        pytest.param(payload(messageId=5), id="int-messageId"),
        pytest.param(payload(messageId="m" * 201), id="long-messageId"),
        pytest.param(payload(channelId="c-other"), id="channel-mismatch"),
        pytest.param(payload(channelId=DROP), id="channel-missing"),
        pytest.param(payload(seq=DROP), id="seq-missing"),
        pytest.param(payload(seq=True), id="seq-bool"),
        pytest.param(payload(seq=0), id="seq-zero"),
        pytest.param(payload(seq=-3), id="seq-negative"),
        pytest.param(payload(seq="8"), id="seq-str"),
        pytest.param(payload(seq=8.0), id="seq-float"),
        pytest.param(payload(content=DROP), id="content-missing"),
        pytest.param(payload(content=None), id="content-none"),
        pytest.param(payload(content=["hello"]), id="content-list"),
        pytest.param(payload(content="x" * (LIMIT + 1)), id="content-over-limit"),
        pytest.param(payload(isDeleted=True), id="deleted"),
        pytest.param(payload(authorUserId=DROP), id="author-missing"),
        pytest.param(payload(authorUserId=""), id="author-empty"),
        pytest.param(payload(authorUserId={"id": "u"}), id="author-dict"),
    ],
)
def test_bad_payloads_raise_bad_event(data: Any) -> None:
    with pytest.raises(BadEvent):
        normalize(data)


def test_channel_info_valid() -> None:
    info = channel_info({"id": "c-1", "name": "general", "xType": "general", "lastSeq": 4})
    assert info == ChannelInfo("c-1", "general", "general", 4)
    assert channel_info({"id": "c", "name": "n", "xType": "dm"}).last_seq == 0


@pytest.mark.parametrize("last", [True, "4", 4.5, None, [1]])
def test_channel_info_bad_last_seq_becomes_zero(last: Any) -> None:
    assert channel_info({"id": "c", "name": "n", "xType": "dm", "lastSeq": last}).last_seq == 0


@pytest.mark.parametrize(
    "data",
    [
        None, [], "c-1", 3,
        {"name": "n", "xType": "dm"},
        {"id": "", "name": "n", "xType": "dm"},
        {"id": 1, "name": "n", "xType": "dm"},
        {"id": "c", "xType": "dm"},
        {"id": "c", "name": "n"},
        {"id": "c", "name": "n", "xType": "x" * 41},
        {"id": "c" * 201, "name": "n", "xType": "dm"},
    ],
)
def test_channel_info_bad(data: Any) -> None:
    with pytest.raises(BadEvent):
        channel_info(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
KEYS = ["messageId", "channelId", "seq", "content", "authorUserId", "createdAt", "wakeup",
        "isDeleted"]


@settings(max_examples=300, deadline=None)
@given(data=json_values)
def test_fuzz_arbitrary_payload_only_bad_event(data: Any) -> None:
    with contextlib.suppress(BadEvent):
        normalize(data)
    with contextlib.suppress(BadEvent):
        channel_info(data)


@settings(max_examples=500, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(KEYS), json_values | st.just(DROP), max_size=5),
    catch_up=st.booleans(),
)
def test_fuzz_near_valid_payload_only_bad_event(changes: dict[str, Any], catch_up: bool) -> None:
    try:
        inbound = normalize(payload(**changes), catch_up=catch_up)
    except BadEvent:
        return
    assert isinstance(inbound.seq, int) and inbound.seq >= 1
    assert isinstance(inbound.content, str) and len(inbound.content) <= LIMIT
    assert isinstance(inbound.addressed, bool)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(["id", "name", "xType", "lastSeq"]),
                               json_values, max_size=4))
def test_fuzz_channel_info_only_bad_event(changes: dict[str, Any]) -> None:
    data: dict[str, Any] = {"id": "c", "name": "n", "xType": "dm", **changes}
    try:
        info = channel_info(data)
    except BadEvent:
        return
    assert isinstance(info.last_seq, int)
