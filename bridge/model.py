"""The platform-neutral model: conversation keys, post targets and the inbound message.

Keys are typed values, parsed and printed here and nowhere else. A key's
printed form (``platform:agent:space:channel[:thread]``) is what the state
store keeps; the parts are ids, which carry no ``:`` on any platform the
bridge speaks (each chat adapter under ``adapters/chat`` documents its ids),
and agent names are checked at config load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

#: Separator of a key's printed parts.
SEPARATOR = ":"


@attrs.frozen(order=True)
class Target:
    """Where a piece is posted: a channel, and a thread in it (empty: top level).

    Attributes:
        channel: The platform's channel id.
        thread: The id of the thread's first message (Slack ``thread_ts``,
            Feishu/Lark root message id); empty for the channel itself.
    """

    channel: str
    thread: str = ""


@attrs.frozen(order=True)
class ScopeKey:
    """One conversation of one agent: a channel, or a thread in a channel.

    Attributes:
        platform: The chat platform's name (e.g. ``slack``).
        agent: The agent's name from the config.
        space: The platform's space: a workspace, tenant or server id.
        channel: The channel id.
        thread: The thread id for a conversation per thread; empty for one per channel.
    """

    platform: str
    agent: str
    space: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        parts = [self.platform, self.agent, self.space, self.channel]
        if self.thread:
            parts.append(self.thread)
        return SEPARATOR.join(parts)

    @classmethod
    def parse(cls, text: str) -> ScopeKey:
        """Read a key printed by ``str()``.

        Args:
            text: ``platform:agent:space:channel`` or ``...:channel:thread``.

        Raises:
            ValueError: ``text`` has fewer than four parts or an empty one.
        """
        parts = text.split(SEPARATOR, 4)
        if len(parts) < 4 or not all(parts):
            raise ValueError(f"not a scope key: {text!r}")
        return cls(*parts)

    @property
    def target(self) -> Target:
        """Where this conversation's pieces are posted."""
        return Target(self.channel, self.thread)

    @property
    def connection(self) -> ConnectionKey:
        """The connection (agent identity in one space) this conversation belongs to."""
        return ConnectionKey(self.platform, self.agent, self.space)


@attrs.frozen(order=True)
class ConnectionKey:
    """One agent identity connected to one space of one platform.

    Attributes:
        platform: The chat platform's name.
        agent: The agent's name from the config.
        space: The platform's space id.
    """

    platform: str
    agent: str
    space: str

    def __str__(self) -> str:
        return SEPARATOR.join((self.platform, self.agent, self.space))

    def scope(self, channel: str, thread: str = "") -> ScopeKey:
        """The key of a conversation in ``channel`` (and ``thread``) on this connection."""
        return ScopeKey(self.platform, self.agent, self.space, channel, thread)


@attrs.frozen
class Attachment:
    """A file shared with a message (the platform keeps it; the bridge fetches it on demand).

    Attributes:
        name: The file's name as the member gave it.
        size_bytes: Its size in bytes, as the platform reports it (0: unknown).
        mime_type: Its media type, e.g. ``image/png`` (empty: unknown).
        ref: The platform's handle to fetch it (a file id or URL); opaque.
    """

    name: str
    size_bytes: int = 0
    mime_type: str = ""
    ref: str = ""


@attrs.frozen
class Control:
    """A button the bridge puts on a message it posts (e.g. a run's Stop button).

    A member's click on it comes back through the intake as an :class:`Action`
    with the same ``name`` and ``value``.

    Attributes:
        name: What the control does, e.g. ``stop`` (the Action's ``name``).
        label: The button's text, e.g. ``Stop``.
        value: What a click carries back, e.g. the run id (at most 200 characters).
        for_users: Member ids who may press it (empty: anyone the runtime lets); a
            platform that signs its buttons puts them in the signature.
        policy: The policy fingerprint the control was made under (signed with it).
    """

    name: str
    label: str
    value: str = ""
    for_users: tuple[str, ...] = ()
    policy: str = ""


@attrs.frozen
class Action:
    """A member's click on a control the bridge posted (e.g. a run's Stop button).

    The platform's adapter checks what the platform lets it check (Slack's
    envelope, Feishu/Lark's signature) before it hands one over; the runtime
    checks the rest (the run is still the live one, the member may stop it).

    Attributes:
        scope: The conversation the control was posted in.
        user_id: Who clicked.
        name: The control, e.g. ``stop``.
        value: What the control carries, e.g. the run id.
        user_name: The clicker's display name when the platform gives it (empty:
            unknown; the runtime then names the member by id).
    """

    scope: ScopeKey
    user_id: str
    name: str
    value: str = ""
    user_name: str = ""


def _attachments(items: Iterable[Attachment | Mapping[str, Any]]) -> tuple[Attachment, ...]:
    """Attachments as a tuple (the journal stores them as objects)."""
    return tuple(item if isinstance(item, Attachment) else Attachment(**item) for item in items)


@attrs.frozen
class Inbound:
    """One accepted chat message, as the bridge sees it (platform-neutral).

    The platform's adapter builds it; everything platform-specific is decided
    there (``addressed``, ``is_direct``, ``mentioned``, the author's kind).

    Attributes:
        platform: The chat platform's name.
        agent: The agent whose connection received it.
        space: The platform's space id.
        channel_id: Channel id.
        channel_name: Channel name for prompts and display.
        message_id: Platform message id (the dedup key).
        seq: The message's place in its channel, increasing (the platform's
            sequence number or timestamp, as an integer); orders a prompt.
        cursor: The platform's opaque position of the message, stored as the
            channel's intake cursor (catch-up starts after it).
        author_id: Author's user id.
        author_name: Author's display name (id when unknown).
        content: Message text (at most the platform's content limit).
        created_at: Platform timestamp text (ISO 8601).
        thread: The thread the message is in (its first message's id). On a
            platform with threads a top-level message starts its own thread
            (its own id), so the replies to it are its conversation; empty on a
            platform without threads.
        per_thread: True when the binding keeps one conversation per thread.
        addressed: True when the platform says this message is for the agent
            (a direct address, a mention or DM, an @bot), by the platform's own rules.
        is_direct: True in a direct conversation with the agent (a DM).
        mentioned: True when the content mentions the agent.
        catch_up: True when fetched from history after a gap or reconnect.
        stale: True for a catch-up message older than the catch-up window: it
            is kept as context only, so a long outage does not start a flood of runs.
        author_is_bot: True when the platform says the author is a bot or an agent.
        author_known: False when the author's kind could not be learned (the
            lookup failed): such a message never engages an agent (fail closed)
            and is kept as context.
        attachments: Files shared with the message.
    """

    platform: str
    agent: str
    space: str
    channel_id: str
    channel_name: str
    message_id: str
    seq: int
    author_id: str
    author_name: str
    content: str
    created_at: str = ""
    cursor: str = ""
    thread: str = ""
    per_thread: bool = False
    addressed: bool = False
    is_direct: bool = False
    mentioned: bool = False
    catch_up: bool = False
    stale: bool = False
    author_is_bot: bool = False
    author_known: bool = True
    attachments: tuple[Attachment, ...] = attrs.field(default=(), converter=_attachments)

    @property
    def scope(self) -> ScopeKey:
        """The conversation this message belongs to."""
        return ScopeKey(self.platform, self.agent, self.space, self.channel_id,
                        self.thread if self.per_thread else "")

    @property
    def scope_key(self) -> str:
        """The printed key of :attr:`scope` (the state store's form)."""
        return str(self.scope)

    @property
    def connection(self) -> ConnectionKey:
        """The connection that received this message."""
        return ConnectionKey(self.platform, self.agent, self.space)
