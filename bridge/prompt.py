"""Prompts built from structured parts: context block, merged messages, context."""

from __future__ import annotations

import attrs

from bridge.messages import Inbound


@attrs.frozen
class PromptLine:
    """One chat message inside a prompt.

    Attributes:
        author: Author's display name (never a secret id).
        text: Message text.
        seq: Position in the channel.
    """

    author: str
    text: str
    seq: int

    @classmethod
    def of(cls, message: Inbound) -> PromptLine:
        """Build a line from an accepted message."""
        return cls(message.author_name, message.content, message.seq)


@attrs.frozen
class Prompt:
    """What one run is asked.

    Attributes:
        agent: Agent name.
        guild: Guild node id.
        channel: Channel name.
        messages: The engaged messages merged by the debounce window, by seq.
        context: Earlier messages that did not engage, by seq.
    """

    agent: str
    guild: str
    channel: str
    messages: tuple[PromptLine, ...]
    context: tuple[PromptLine, ...] = ()

    def user_text(self) -> str:
        """The merged user text: each engaged message on its own line(s)."""
        return "\n".join(line.text for line in self.messages)

    def render(self) -> str:
        """The full prompt text for an agent process.

        A bridge context block first (marked as not written by the user), then
        the channel messages that did not engage, then the engaged messages
        with their authors.
        """
        senders = ", ".join(dict.fromkeys(line.author for line in self.messages))
        parts = [
            "<bridge-context>",
            "This block comes from the chat bridge, not from the user.",
            f"guild: {self.guild}",
            f"channel: {self.channel}",
            f"senders: {senders}",
            "</bridge-context>",
        ]
        if self.context:
            parts.append("Earlier messages in the channel (context only):")
            parts.extend(f"{line.author}: {line.text}" for line in self.context)
        parts.append("Messages to answer:")
        parts.extend(f"{line.author}: {line.text}" for line in self.messages)
        return "\n".join(parts)
