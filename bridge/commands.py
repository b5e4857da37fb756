"""Chat commands: ``/help``, ``/status``, ``/new``, ``/stop`` and friends.

Commands are decided in the scope before the queue and never reach the agent.
A command is a message whose text, after leading mentions, starts with ``/``
followed by a known or unknown word. A command that starts with mentions is
for the mentioned agents only; one without is for every agent that listens
in the channel without a mention (see :func:`addressed_to`).
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

#: Commands only admins may use.
ADMIN_COMMANDS = frozenset({"cd", "timeout"})
#: Longest ``/timeout``, in minutes (one day).
MAX_TIMEOUT_MINUTES = 24 * 60

_LEADING_MENTIONS = re.compile(r"^(\s*<@[^>\s]+>\s*)+")
_MENTION_ID = re.compile(r"<@([^>\s]+)>")
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

    @property
    def admin_only(self) -> bool:
        """True for a command only admins may use (:data:`ADMIN_COMMANDS`)."""
        return self.name in ADMIN_COMMANDS


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


def leading_mentions(text: str) -> tuple[str, ...]:
    """The ids mentioned (``<@id>``) before a command, in order; empty when none."""
    match = _LEADING_MENTIONS.match(text)
    return tuple(_MENTION_ID.findall(match.group(0))) if match else ()


def addressed_to(text: str, mentioned: bool, listening: bool) -> bool:
    """Whether a command is for this agent.

    Args:
        text: The message text.
        mentioned: The agent is mentioned in it.
        listening: The agent listens in this channel without a mention (its
            engage mode is ``addressed`` or ``pattern``, or a mention-sticky
            conversation is going on).

    Returns:
        True when the command mentions the agent, or mentions nobody and the
        agent is listening.
    """
    if leading_mentions(text):
        return mentioned
    return listening or mentioned


def parse_timeout(args: str) -> float:
    """Parse ``/timeout MINUTES`` into seconds.

    Raises:
        ValueError: with a one-line explanation for the chat.
    """
    try:
        minutes = float(args)
    except ValueError:
        raise ValueError("usage: /timeout MINUTES (e.g. /timeout 30)") from None
    if not 0 < minutes <= MAX_TIMEOUT_MINUTES:
        raise ValueError(f"the timeout must be more than 0 and at most {MAX_TIMEOUT_MINUTES} "
                         "minutes")
    return minutes * 60.0


def help_text(agent: str) -> str:
    """The ``/help`` answer."""
    lines = [f"{agent} commands:"]
    lines += [f"/{name} — {what}" for name, what in COMMANDS.items()]
    return "\n".join(lines)


def unknown_hint(command: Command) -> str:
    """The one-line answer to an unknown command."""
    return f"unknown command /{command.name}; /help lists the commands"
