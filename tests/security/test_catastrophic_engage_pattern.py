"""Catastrophic engage pattern: a member's message freezes the scope through a config regex.

``engage_pattern`` is written by an operator but runs on member text. A nested
quantifier such as ``(a+)+$`` backtracks exponentially on ``aaaa…b`` with the
standard ``re`` engine: one such message held its scope (0.3 s -> 11.9 s per
message, and far longer for a longer message). Without the fix these tests hang
until the pytest timeout; with it the search gives up and the message does not
engage, with the reason in the decision (which the scope logs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.chat.fabric.devguild import DevGuild
from bridge.cli.compose import load_config
from bridge.config import ConfigError
from bridge.engage import Decision, EngageGate, EngageRule
from bridge.model import Inbound
from bridge.scope_logic import ScopeLogic
from tests.support import Member, wait_until, write_config

#: The attack: many a's and a final character that makes ``$`` fail.
ATTACK = "a" * 5000 + "b"


def message(content: str, seq: int = 1) -> Inbound:
    return Inbound(platform="fabric", agent="echo", space="dev", channel_id="c-1",
                   channel_name="general", message_id=f"m-{seq}", seq=seq,
                   author_id="u-ann", author_name="Ann", content=content)


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|a)+$", r"(a|aa)+$"])
def test_catastrophic_engage_pattern_does_not_engage(pattern: str) -> None:
    decision = EngageGate(EngageRule("pattern", pattern)).decide(message(ATTACK), now=0.0)
    assert not decision.engage
    assert "engage_pattern search gave up" in decision.reason
    assert "treated as no match" in decision.reason


def test_catastrophic_engage_pattern_keeps_the_message_as_context_and_the_scope_usable() -> None:
    scope = ScopeLogic("echo", "dev", "general", 0.3,
                       rule=EngageRule("pattern", r"(a+)+$|^deploy\b"))
    assert scope.accept(message(ATTACK)) == []
    assert scope.verdict == "context" and "gave up" in scope.reason
    scope.accept(message("deploy now", seq=2))
    assert scope.verdict == "engaged" and scope.reason.startswith("matches engage_pattern")


def test_catastrophic_engage_pattern_is_refused_at_load(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[fabric]\ncenter_url = "http://127.0.0.1:7001/api"\n'
        '[agents.echo]\nkind = "echo"\napi_key = "fak_dev_echo"\n'
        '[[bindings]]\nagent = "echo"\nguild = "dev"\nengage = "pattern"\n'
        'engage_pattern = "(a|a)+$"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert text.startswith(f"{config}:10: bindings.engage_pattern: ")
    assert "simplify the pattern" in text


@pytest.mark.parametrize("pattern", [r"^deploy\b", ".", r"(?i)\b(help|urgent)\b", r"^!\w+"])
def test_ordinary_engage_patterns_still_load(tmp_path: Path, pattern: str) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[fabric]\ncenter_url = "http://127.0.0.1:7001/api"\n'
        '[agents.echo]\nkind = "echo"\napi_key = "fak_dev_echo"\n'
        '[[bindings]]\nagent = "echo"\nguild = "dev"\nengage = "pattern"\n'
        f"engage_pattern = '{pattern}'\n", encoding="utf-8")
    assert load_config(config).bindings[0].engage.pattern == pattern


def test_engage_pattern_never_runs_on_the_supervisor(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern search is bounded, but on the root actor even a bounded search
    holds up routing for every agent: only the conversation's own scope runs it."""
    from actors.pool import current_actor
    from actors.supervisor import Supervisor
    from bridge.board import Board
    from bridge.cli.compose import bridge_app

    searched_on: list[str] = []
    decide = EngageGate.decide

    def recording(self: EngageGate, message: Inbound, now: float) -> Decision:
        # A pooled actor (a scope) is the one whose turn runs on this worker; pykka
        # names a threaded actor's thread "<actor class>-<n>" (the supervisor).
        pooled = current_actor()
        searched_on.append(type(pooled).__name__ if pooled is not None
                           else threading.current_thread().name.rsplit("-", 1)[0])
        return decide(self, message, now)

    monkeypatch.setattr(EngageGate, "decide", recording)
    bindings = ('[[bindings]]\nagent = "echo"\nguild = "dev"\nchannels = ["*"]\n'
                'engage = "pattern"\nengage_pattern = "^deploy"\n')
    app = bridge_app(write_config(tmp_path, devguild.center_url, bindings=bindings), Board())
    app.start()
    try:
        alice = members("alice")
        wait_until(lambda: (row := app.board.connection("echo", "dev")) and
                   row.state == "connected", what="echo connected")
        alice.post("general", "deploy the thing")
        alice.wait_reply("echo", "general", lambda c: c == "deploy the thing")
    finally:
        app.stop()
    assert "Scope" in searched_on and Supervisor.__name__ not in searched_on
