"""Parsing chat commands."""

from __future__ import annotations

import pytest

from bridge.commands import (
    COMMANDS,
    Command,
    addressed_to,
    help_text,
    leading_mentions,
    parse_command,
    parse_timeout,
    unknown_hint,
)


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


@pytest.mark.parametrize(("text", "mentioned", "listening", "expected"), [
    ("/status", False, True, True),          # no mention: every listening agent
    ("/status", False, False, False),        # mention-mode agent, not mentioned
    ("/status", True, False, True),
    ("<@me> /status", True, False, True),
    ("<@me> /status", True, True, True),
    ("<@other> /status", False, True, False),  # for another agent only
    ("<@other> <@me> /stop", True, True, True),
])
def test_addressed_to(text: str, mentioned: bool, listening: bool, expected: bool) -> None:
    assert addressed_to(text, mentioned, listening) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("/stop", ()), ("<@a> /stop", ("a",)), (" <@a><@b> /new", ("a", "b")), ("hi <@a>", ()),
])
def test_leading_mentions(text: str, expected: tuple[str, ...]) -> None:
    assert leading_mentions(text) == expected


@pytest.mark.parametrize(("args", "seconds", "error"), [
    ("30", 1800.0, None),
    ("0.5", 30.0, None),
    ("1440", 86400.0, None),
    ("0", None, "more than 0"),
    ("-3", None, "more than 0"),
    ("1441", None, "at most 1440"),
    ("nan", None, "more than 0"),
    ("ten", None, "usage: /timeout MINUTES"),
    ("", None, "usage: /timeout MINUTES"),
])
def test_parse_timeout(args: str, seconds: float | None, error: str | None) -> None:
    if error is None:
        assert parse_timeout(args) == seconds
    else:
        with pytest.raises(ValueError, match=error):
            parse_timeout(args)


@pytest.mark.parametrize(("name", "admin_only"), [
    ("cd", True), ("timeout", True), ("help", False), ("status", False), ("new", False),
    ("stop", False), ("ws", False), ("release", False),
])
def test_admin_only_commands(name: str, admin_only: bool) -> None:
    assert Command(name).admin_only is admin_only
    assert Command(name).known
