"""Tests of adapters.chat.fabric.rules: mentions, the name-mention rewrite, wakeups."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.chat.fabric import rules

A, B, C = "user-a", "user-b", "user-c"


def test_constants_match_the_protocol() -> None:
    assert rules.CONTENT_LIMIT == 8000
    assert rules.GUILD_TOKEN_TTL_S == 900.0
    assert rules.SESSION_CACHE_TTL_S == 480.0
    assert (rules.HISTORY_LIMIT_DEFAULT, rules.HISTORY_LIMIT_MAX) == (50, 200)
    assert set(rules.X_TYPES) == {
        "general", "work", "report", "discuss", "triage", "custom", "announce", "dm",
    }  # fmt: skip
    assert "on_call" in rules.PRESENCE_STATES and len(rules.PRESENCE_STATES) == 6
    assert rules.REALTIME_NAMESPACE == "/realtime"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hi <@u1> and <@u2>", {"u1", "u2"}),
        ("no mentions", set()),
        ("code `<@u1>` but <@u2>", {"u2"}),
        ("```\n<@u1>\n``` after <@u3>", {"u3"}),
        ("``a ` <@u1> ``", set()),
        ("unclosed ` <@u1>", {"u1"}),
        ("``` open fence <@u1>", {"u1"}),
        ("<@u1><@u1>", {"u1"}),
        ("<@ spaced>", set()),
    ],
)
def test_mentioned_user_ids(content: str, expected: set[str]) -> None:
    assert rules.mentioned_user_ids(content) == frozenset(expected)


def test_rewrite_name_mentions_outside_code_only() -> None:
    ids = {"echo": "id-echo", "bob": "id-bob"}.get
    assert rules.rewrite_name_mentions("hey <@user.name:echo>!", ids) == "hey <@id-echo>!"
    assert rules.rewrite_name_mentions("`<@user.name:echo>` <@user.name:bob>", ids) == (
        "`<@user.name:echo>` <@id-bob>"
    )
    assert rules.rewrite_name_mentions("<@user.name:nobody>", ids) == "<@user.name:nobody>"
    assert rules.rewrite_name_mentions("", ids) == ""


@pytest.mark.parametrize("x_type", ["dm", "general"])
def test_dm_and_general_wake_every_other_member(x_type: str) -> None:
    assert rules.wakes(x_type=x_type, author_id=A, recipient_id=B, content="hi")
    assert not rules.wakes(x_type=x_type, author_id=A, recipient_id=A, content="hi")


@pytest.mark.parametrize("x_type", ["report", "announce"])
def test_report_and_announce_wake_nobody(x_type: str) -> None:
    assert not rules.wakes(x_type=x_type, author_id=A, recipient_id=B, content=f"<@{B}>")


@pytest.mark.parametrize("x_type", ["triage", "custom"])
def test_triage_and_custom_wake_the_wake_list(x_type: str) -> None:
    wake = frozenset({B})
    assert rules.wakes(x_type=x_type, author_id=A, recipient_id=B, content="", wake_list=wake)
    assert not rules.wakes(
        x_type=x_type, author_id=A, recipient_id=C, content=f"<@{C}>", wake_list=wake
    )


@pytest.mark.parametrize("x_type", ["work", "discuss"])
def test_work_and_discuss_wake_the_mentioned(x_type: str) -> None:
    content = f"<@{B}> please, not `<@{C}>`"
    assert rules.wakes(x_type=x_type, author_id=A, recipient_id=B, content=content)
    assert not rules.wakes(x_type=x_type, author_id=A, recipient_id=C, content=content)


def test_wakeup_user_id_wakes_that_user_only() -> None:
    for x_type in rules.X_TYPES:
        for recipient, woken in ((B, True), (C, False)):
            assert woken == rules.wakes(
                x_type=x_type,
                author_id=A,
                recipient_id=recipient,
                content=f"<@{C}>",
                wake_list=frozenset({C}),
                wakeup_user_id=B,
            )


def test_unknown_x_type_wakes_nobody() -> None:
    assert not rules.wakes(x_type="bogus", author_id=A, recipient_id=B, content=f"<@{B}>")


def test_channel_kind() -> None:
    assert rules.channel_kind("dm") == "dm"
    assert rules.channel_kind("work") == "channel"


@given(
    x_type=st.sampled_from(rules.X_TYPES),
    content=st.text(max_size=200),
    wakeup=st.one_of(st.none(), st.just(A)),
)
def test_author_is_never_woken(x_type: str, content: str, wakeup: str | None) -> None:
    assert not rules.wakes(
        x_type=x_type,
        author_id=A,
        recipient_id=A,
        content=content + f"<@{A}>",
        wake_list=frozenset({A}),
        wakeup_user_id=wakeup,
    )


@given(st.text(alphabet="`<@>ab: \n", max_size=80))
def test_mention_parsing_never_fails(content: str) -> None:
    found = rules.mentioned_user_ids(content)
    assert all(f"<@{user_id}>" in content for user_id in found)
