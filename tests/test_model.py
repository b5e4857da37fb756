"""Typed keys: printed and parsed in one place, and what an Inbound's scope is."""

from __future__ import annotations

import pytest

from bridge.board import Board
from bridge.model import ConnectionKey, Inbound, ScopeKey, Target


def test_scope_key_prints_and_parses_back() -> None:
    channel = ScopeKey("fabric", "echo", "dev", "c-1")
    thread = ScopeKey("slack", "coder", "T1", "C9", "1712345678.000100")
    assert str(channel) == "fabric:echo:dev:c-1"
    assert str(thread) == "slack:coder:T1:C9:1712345678.000100"
    assert ScopeKey.parse(str(channel)) == channel
    assert ScopeKey.parse(str(thread)) == thread
    assert thread.target == Target("C9", "1712345678.000100")
    assert thread.connection == ConnectionKey("slack", "coder", "T1")
    assert thread.connection.scope("C9", "1712345678.000100") == thread


@pytest.mark.parametrize("text", ["", "fabric:echo:dev", "fabric::dev:c-1", "a:b:c:d:"])
def test_a_malformed_scope_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a scope key"):
        ScopeKey.parse(text)


def test_the_binding_grain_decides_whether_the_thread_is_in_the_scope() -> None:
    message = Inbound("slack", "coder", "T1", "C9", "general", "m-1", 1, "U1", "ann", "hi",
                      thread="1712345678.000100")
    assert message.scope == ScopeKey("slack", "coder", "T1", "C9")
    per_thread = Inbound("slack", "coder", "T1", "C9", "general", "m-1", 1, "U1", "ann", "hi",
                         thread="1712345678.000100", per_thread=True)
    assert per_thread.scope == ScopeKey("slack", "coder", "T1", "C9", "1712345678.000100")
    assert per_thread.scope_key == "slack:coder:T1:C9:1712345678.000100"


def test_the_board_reads_agent_and_channel_from_a_scope_key() -> None:
    board = Board()
    board.update_scope("slack:coder:T1:C9:1712345678.000100", queued=1)
    board.update_scope("not a key", queued=2)
    rows = {row.key: row for row in board.snapshot().scopes}
    assert (rows["slack:coder:T1:C9:1712345678.000100"].agent,
            rows["slack:coder:T1:C9:1712345678.000100"].channel) == ("coder", "C9")
    assert (rows["not a key"].agent, rows["not a key"].channel) == ("", "not a key")
