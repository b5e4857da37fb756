"""Attacks on the bot guard and the intake path through author lookups.

- A failing author lookup made an unknown author count as a human, so two
  agents answered each other until the hourly budget ran out (fail open).
- Author lookups ran on the gateway's intake path: a slow lookup of one
  author held up every other member's messages.
- Agents allowed to talk to each other (``allow_bots``) ping-ponged forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.chat.fabric.devguild import DevGuild
from bridge.model import Inbound
from bridge.scope_logic import BOT_STREAK_LIMIT, ArmDebounce, ScopeLogic
from tests.support import Member, start_bridge, wait_until, write_config


def test_unknown_author_kind_fails_closed_and_is_retried(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url))
    try:
        alice = members("alice")
        devguild.fail_user_lookups(503)
        alice.post("general", "who am I?")
        assert app.store is not None
        key = f"fabric:echo:dev:{devguild.channel_id('general')}"
        # The lookups fail (with retries), then the message goes on as context only.
        wait_until(lambda: app.store.count_inbound(key), timeout_s=30,  # type: ignore[union-attr]
                   what="the message journaled after the failed lookups")
        devguild.fail_user_lookups(None)
        alice.post("general", "now you know me")
        alice.wait_reply("echo", "general", lambda c: "now you know me" in c)
        # The first message never engaged: the only answer is to the second one.
        assert alice.messages_from("echo", "general") == ["now you know me"]
    finally:
        devguild.fail_user_lookups(None)
        app.stop()


def test_slow_author_lookup_does_not_hold_up_other_members(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url))
    try:
        alice, bob = members("alice"), members("bob")
        devguild.hold_user_lookups(devguild.user_id("alice"))
        alice.post("general", "from alice")
        bob.post("general", "from bob")
        # Bob is answered while Alice's lookup still hangs.
        bob.wait_reply("echo", "general", lambda c: c == "from bob")
        assert alice.messages_from("echo", "general") == ["from bob"]
        devguild.hold_user_lookups(devguild.user_id("alice"), held=False)
        alice.wait_reply("echo", "general", lambda c: c == "from alice")
    finally:
        devguild.hold_user_lookups(devguild.user_id("alice"), held=False)
        app.stop()


def _message(n: int, *, bot: bool) -> Inbound:
    author = "agent-b" if bot else "alice"
    return Inbound(platform="fabric", agent="echo", space="dev", channel_id="c1",
                   channel_name="general", message_id=f"m{n}", seq=n,
                   author_id=author, author_name=author, content=f"hi {n}", addressed=True,
                   author_is_bot=bot)


def test_agent_ping_pong_is_broken_without_blocking_humans() -> None:
    from bridge.policy import AccessPolicy

    logic = ScopeLogic("echo", "dev", "general", 0.1,
                       access=AccessPolicy(allow_bots=True, max_runs_per_hour=0))
    verdicts = []
    for n in range(1, BOT_STREAK_LIMIT + 4):
        logic.accept(_message(n, bot=True))
        verdicts.append(logic.verdict)
    assert verdicts[:BOT_STREAK_LIMIT] == ["engaged"] * BOT_STREAK_LIMIT
    assert verdicts[BOT_STREAK_LIMIT:] == ["context"] * 3
    assert "loop breaker" in logic.reason
    # A human is never held by the breaker, and speaking resets it.
    actions = logic.accept(_message(100, bot=False))
    assert logic.verdict == "engaged"
    assert actions == [] or isinstance(actions[0], ArmDebounce)
    logic.accept(_message(101, bot=True))
    assert logic.verdict == "engaged"


def test_author_lookup_renews_a_token_the_guild_refuses(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    app = start_bridge(write_config(tmp_path, devguild.center_url))
    try:
        bob = members("bob")
        # The sockets stay connected, but every token issued so far is refused (401).
        devguild.expire_tokens()
        bob.post("general", "first words from bob")
        bob.wait_reply("echo", "general", lambda c: c == "first words from bob", timeout_s=20)
    finally:
        app.stop()
