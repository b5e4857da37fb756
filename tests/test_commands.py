"""Parsing chat commands."""

from __future__ import annotations

import pytest

from bridge.commands import COMMANDS, Command, help_text, parse_command, unknown_hint


@pytest.mark.parametrize(("text", "expected"), [
    ("/stop", Command("stop")),
    ("  /STOP  ", Command("stop")),
    ("<@u-1> /new", Command("new")),
    ("<@u-1> <@u-2>/status", Command("status")),
    ("/cd backend", Command("cd", "backend")),
    ("/timeout 15", Command("timeout", "15")),
    ("/frobnicate now", Command("frobnicate", "now")),
    ("hello /stop", None),
    ("", None),
    ("/", None),
    ("/ stop", None),
    ("//stop", None),
])
def test_parse(text: str, expected: Command | None) -> None:
    assert parse_command(text) == expected


def test_known_help_and_hint() -> None:
    assert Command("stop").known and not Command("frobnicate").known
    text = help_text("coder")
    assert all(f"/{name}" in text for name in COMMANDS)
    assert unknown_hint(Command("frob")) == "unknown command /frob; /help lists the commands"
