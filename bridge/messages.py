"""The normalized inbound chat message and scope keys."""

from __future__ import annotations

import attrs


def scope_key(platform: str, agent: str, guild: str, channel_id: str) -> str:
    """Return the scope key of one conversation: one scope per agent per channel.

    Args:
        platform: ``fabric`` (later ``slack``, ``lark``).
        agent: Agent name from the config.
        guild: Guild node id.
        channel_id: Channel id.

    Returns:
        ``"<platform>:<agent>:<guild>:<channel_id>"``.
    """
    return f"{platform}:{agent}:{guild}:{channel_id}"


@attrs.frozen
class Inbound:
    """One accepted chat message, as the bridge sees it (platform-neutral).

    Attributes:
        platform: ``fabric``.
        agent: The agent whose connection received it.
        guild: Guild node id.
        channel_id: Channel id.
        channel_name: Channel name for prompts and display.
        x_type: Channel type (``general``, ``dm``, ``work``, ...).
        message_id: Platform message id (the dedup key).
        seq: Position in the channel, from 1.
        author_id: Author's user id.
        author_name: Author's display name (id when unknown).
        content: Message text (at most the platform's content limit).
        created_at: Platform timestamp text (ISO 8601).
        wakeup: True when the platform says this message wakes the agent.
        mentioned: True when the content mentions the agent.
        catch_up: True when fetched from history after a gap or reconnect.
        stale: True for a catch-up message older than the catch-up window: it
            is kept as context only, so a long outage does not start a flood of runs.
        author_is_bot: True when the platform says the author is a bot or an agent.
        author_known: False when the author's kind could not be learned (the
            lookup failed): such a message never engages an agent (fail closed)
            and is kept as context. True in rows journaled before this field.
    """

    platform: str
    agent: str
    guild: str
    channel_id: str
    channel_name: str
    x_type: str
    message_id: str
    seq: int
    author_id: str
    author_name: str
    content: str
    created_at: str = ""
    wakeup: bool = False
    mentioned: bool = False
    catch_up: bool = False
    stale: bool = False
    author_is_bot: bool = False
    author_known: bool = True

    @property
    def scope_key(self) -> str:
        """The key of the scope this message belongs to."""
        return scope_key(self.platform, self.agent, self.guild, self.channel_id)
