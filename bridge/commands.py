"""Chat commands: ``/help``, ``/status``, ``/new``, ``/stop`` and friends.

Commands are decided in the scope before the queue and never reach the agent.
A command is a message whose text, after leading mentions, starts with ``/``
followed by a known or unknown word.
"""

from __future__ import annotations

import re

import attrs

#: Command names and one line of help each.
COMMANDS: dict[str, str] = {
    "help": "list the commands",
    "status": "this conversation: session, workspace, queue, current run",
    "new": "start a fresh agent session with the next message",
    "stop": "stop the current run (the session stays resumable)",
    "ws": "list the workspace aliases",
    "cd": "switch this conversation to a workspace alias (admins)",
    "timeout": "set this conversation's run timeout in minutes (admins)",
    "release": "stop listening without a mention (mention-sticky)",
}

_LEADING_MENTIONS = re.compile(r"^(\s*<@[^>\s]+>\s*)+")
_COMMAND = re.compile(r"^/([A-Za-z][\w-]*)(?:\s+(.*))?$", re.DOTALL)


@attrs.frozen
class Command:
    """A parsed chat command.

    Attributes:
        name: Lower-case command word (``stop``); may be unknown.
        args: The rest of the line, stripped.
    """

    name: str
    args: str = ""

    @property
    def known(self) -> bool:
        """True for a command listed in :data:`COMMANDS`."""
        return self.name in COMMANDS


def parse_command(text: str) -> Command | None:
    """Parse ``text`` as a command; None when it is an ordinary message.

    Leading mentions are skipped, so ``<@agent> /stop`` is the command ``stop``.
    Paths like ``/usr/bin is full`` are commands only by shape; the caller
    answers unknown ones with a hint.
    """
    stripped = _LEADING_MENTIONS.sub("", text).strip()
    match = _COMMAND.match(stripped)
    if match is None or "\n" in stripped.split(" ", 1)[0]:
        return None
    return Command(match.group(1).lower(), (match.group(2) or "").strip())


def help_text(agent: str) -> str:
    """The ``/help`` answer."""
    lines = [f"{agent} commands:"]
    lines += [f"/{name} — {what}" for name, what in COMMANDS.items()]
    return "\n".join(lines)


def unknown_hint(command: Command) -> str:
    """The one-line answer to an unknown command."""
    return f"unknown command /{command.name}; /help lists the commands"
