"""The chat port: what every chat platform provides to the runtime.

A platform (one package under ``adapters/chat/``) logs an agent identity in,
runs its intake for one (identity, space) connection, posts and edits as the
identity, answers "did it land?" by a piece's idempotency key, and renders
runs and answers under its own limits. The runtime (``actors/``) knows only
this module; it is handed a registry of platforms by name.

The intake is driven by its host, the connection's gateway actor: the host
calls :meth:`Intake.start` and :meth:`Intake.handle` on one thread, one call
at a time, and the intake talks back only through :class:`IntakeHost` (its
own library threads may call :meth:`IntakeHost.tell`, nothing else). So a
platform's connection logic (ordering, gap fill, catch-up, reconnects) is
plain sequential code without locks, and the runtime keeps supervision,
journaling and routing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError
from bridge.model import Action, Attachment, ConnectionKey, Control, Inbound, Target
from bridge.names import ResolvedNames
from bridge.run_view import Renderer, RunView

__all__ = [
    "Access",
    "ChatClient",
    "ChatPlatform",
    "Intake",
    "IntakeHost",
    "IntakeStatus",
    "LiveStatus",
    "PlatformCheck",
    "PlatformLimits",
    "Renderer",
    "RunView",
    "Session",
    "Unsupported",
]


class Unsupported(ChatError):
    """The platform has no such thing (reactions, files, buttons): its limits say so.

    The runtime checks :class:`PlatformLimits` before it asks; an adapter raises
    this rather than pretending to have done it.
    """


@attrs.frozen
class PlatformCheck:
    """One finding of a platform's checks for ``bridge doctor``.

    Attributes:
        name: What was checked, e.g. ``agent coder: slack tokens``.
        level: ``ok``, ``warn`` (works, but look at it) or ``fail`` (cannot work).
        message: One line: what is wrong and how to fix it, or what is fine.
    """

    name: str
    level: str
    message: str


@attrs.frozen
class PlatformLimits:
    """What a platform allows, declared by its adapter (never hard-coded in the core).

    Attributes:
        text_chars: The longest text of one posted piece, in the platform's own
            measure (characters, or UTF-16 code units where the platform counts so).
        edit_interval_s: Seconds between two edits of one status message.
        threads: True when conversations can live in threads.
        native_status: True when the platform shows a run's live state natively.
        buttons: True when posted messages can carry buttons (a Stop control);
            clicks come back through the intake as :class:`bridge.model.Action`.
        reactions: True when messages can get reactions (receipts).
        files: True when files can be fetched from messages and uploaded.
        session_ttl_s: Seconds a login is reused before the next one (tokens
            are refreshed well before the platform expires them).
        send_per_s: Sends a second one identity may make, sustained, over all its
            conversations (its outbound budget, :mod:`bridge.outbound`); 0: no budget.
        send_burst: Most sends at once after a quiet spell (the budget's size).
        idempotent_sends: True when the platform itself dedupes sends by the
            idempotency key (a repeated key returns the first message instead of
            a new one), so "did it land?" is answered by sending again:
            :meth:`ChatClient.find_posted` may then always say "not found" and
            the runtime's retry with the same key is the same message.
    """

    text_chars: int
    edit_interval_s: float = 1.0
    threads: bool = False
    native_status: bool = False
    buttons: bool = False
    reactions: bool = False
    files: bool = False
    session_ttl_s: float = 480.0
    idempotent_sends: bool = False
    send_per_s: float = 0.0
    send_burst: int = 1


class Access(Protocol):
    """What an identity needs to act in one space: a token and who it is there."""

    @property
    def token(self) -> str:
        """The bearer token (never logged)."""

    @property
    def user_id(self) -> str:
        """The identity's user id in the space (its own messages carry it)."""

    @property
    def issued_at(self) -> float:
        """Epoch seconds when the token was obtained."""


class Session(Protocol):
    """One login of an identity: its access to each space it may use."""

    @property
    def user_name(self) -> str:
        """The identity's display name."""

    @property
    def issued_at(self) -> float:
        """Epoch seconds of the login."""

    def access(self, space: str) -> Access | None:
        """The access to ``space``, or None when the identity may not use it."""

    def holds(self, token: str) -> bool:
        """Whether ``token`` belongs to this session (a refused token ends it)."""


class ChatClient(Protocol):
    """Outbound calls of one identity in one space.

    Every call raises :class:`bridge.errors.ChatError` subclasses on failure:
    ``RetryLater`` (transient; ``ambiguous`` when a post may have landed),
    ``Unauthorized`` (log in again), others (give up).
    """

    def post(self, target: Target, text: str, *, idempotency_key: str,
             controls: Sequence[Control] = ()) -> str:
        """Post ``text`` to ``target``; return the new message's id.

        Args:
            target: Channel and thread.
            text: Already rendered and under :attr:`PlatformLimits.text_chars`.
            idempotency_key: The piece's identity, carried by the message so that
                :meth:`find_posted` can find it (at most 200 characters).
            controls: Buttons on the message (only where ``limits.buttons``).

        Raises:
            Unsupported: ``controls`` given on a platform without buttons.
        """

    def update(self, target: Target, message_id: str, text: str, *,
               controls: Sequence[Control] = ()) -> None:
        """Replace the text (and the buttons: ``controls``, none by default) of a
        message the identity posted.

        Raises:
            Unsupported: ``controls`` given on a platform without buttons.
        """

    def delete(self, target: Target, message_id: str) -> None:
        """Delete a message the identity posted."""

    def react(self, target: Target, message_id: str, reaction: str, *,
              on: bool = True) -> None:
        """Add (``on``) or remove a reaction (a receipt) on a message.

        Args:
            target: Where the message is.
            message_id: The message.
            reaction: The platform's reaction name, e.g. ``eyes``.
            on: False removes it; removing one that is not there is no error.

        Raises:
            Unsupported: the platform has no reactions (``limits.reactions``).
        """

    def upload(self, target: Target, path: Path, *, title: str,
               idempotency_key: str) -> str:
        """Upload the file at ``path`` into ``target``; return the message (or file) id.

        Raises:
            Unsupported: the platform takes no files (``limits.files``).
        """

    def fetch(self, attachment: Attachment, dest: Path, *, max_bytes: int) -> Path:
        """Download a member's file to ``dest`` (a file path); return it.

        Args:
            attachment: From :attr:`bridge.model.Inbound.attachments`.
            dest: Where to write it (its folder exists).
            max_bytes: Refuse a larger file (bytes).

        Raises:
            Unsupported: the platform takes no files.
            bridge.errors.TooLarge: the file is over ``max_bytes``.
        """

    def find_posted(self, target: Target, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None) -> str | None:
        """Whether a post with ``idempotency_key`` landed in ``target``: its message id.

        Args:
            target: Where it was posted.
            idempotency_key: The key the post carried.
            after_seq: The position of the message it answers: the search stops there.
            not_before: Epoch seconds before which it cannot have been posted.

        Returns:
            The landed message's id, or None when it did not land.
        """

    def notify(self, target: Target, user_id: str, text: str) -> None:
        """Show ``text`` to one member only (Slack: an ephemeral message), e.g. why their
        click did nothing.

        Raises:
            Unsupported: the platform cannot show a message to one member only.
        """

    def set_busy(self, busy: bool) -> None:
        """Show the identity as busy (a run works) or idle, where the platform has presence."""


class LiveStatus(Protocol):
    """One run's native live status (Slack: a streamed message), where the platform has
    one (``limits.native_status``). The delivery actor that owns the run's target
    makes it, shows each snapshot and finishes it; any :class:`ChatError` it
    raises makes the runtime fall back to a posted status message edited in place.
    """

    def show(self, view: RunView) -> None:
        """Bring the live status up to ``view`` (the first call starts it).

        Raises:
            bridge.errors.ChatError: the platform refused; nothing more is shown here.
        """

    def finish(self, view: RunView) -> None:
        """Show the run's last snapshot and end the live status (its Stop button goes).

        Raises:
            bridge.errors.ChatError: the platform refused.
        """


@attrs.frozen
class IntakeStatus:
    """A connection's state as its intake reports it (shown by the TUI and ``status``).

    Attributes:
        state: ``connecting``, ``connected``, ``reconnecting``, ``failed`` or ``stopped``.
        reason: Why it is not connected (one line; empty when connected).
        reconnects: Reconnects since start.
        channels: Channels the intake reads.
        token_at: When the token in use was obtained (epoch seconds), if any.
        token_refreshes: Times a fresh token replaced the one in use.
        last_event_at: When the live intake last delivered an event (epoch seconds).
        silences: Times the intake was found silent while it looked connected.
    """

    state: str
    reason: str = ""
    reconnects: int = 0
    channels: int = 0
    token_at: float | None = None
    token_refreshes: int = 0
    last_event_at: float | None = None
    silences: int = 0


class IntakeHost(Protocol):
    """What the runtime gives a platform's intake (the connection's gateway actor)."""

    @property
    def connection(self) -> ConnectionKey:
        """The (platform, agent, space) this intake serves."""

    @property
    def stopping(self) -> bool:
        """True once the bridge stops: no new work is taken."""

    def tell(self, message: object) -> None:
        """Queue ``message`` for :meth:`Intake.handle`; safe from any thread."""

    def schedule(self, delay_s: float, message: object) -> None:
        """Queue ``message`` for :meth:`Intake.handle` after ``delay_s`` seconds."""

    def accept(self, inbound: Inbound, *, advance_cursor: bool = True) -> None:
        """Journal an accepted message and route it to its conversation.

        The host may hold the write until the intake's current :meth:`Intake.handle`
        returns (or until it next stores a cursor or hands on a click), so that
        the messages of one burst are journaled in one write, in the order
        accepted. A message already journaled is a duplicate: the host drops it.

        Args:
            inbound: The normalized message (the identity's own messages never come here).
            advance_cursor: Also store ``inbound.cursor`` as its channel's cursor.
        """

    def cursors(self) -> Mapping[str, str]:
        """The stored cursor per channel id (catch-up starts after it)."""

    def save_cursor(self, channel_id: str, cursor: str, position: int) -> None:
        """Store a channel's cursor (it never moves back: ``position`` orders it)."""

    def access(self) -> Access:
        """The identity's access to this space (cached; a login when needed).

        Raises:
            bridge.errors.LoginRefused: the credentials are refused.
            bridge.errors.RetryLater: the login could not be done now.
            bridge.errors.NotFound: the identity may not use this space.
        """

    def invalidate(self, token: str) -> None:
        """Report a token the platform refused (the next :meth:`access` logs in)."""

    def names(self) -> ResolvedNames:
        """What the config's channel and user names resolved to so far."""

    def names_resolved(self, names: ResolvedNames) -> None:
        """Publish what the config's names resolve to on this connection."""

    def publish(self, status: IntakeStatus) -> None:
        """Show the connection's state."""

    def act(self, action: Action) -> None:
        """Hand a member's click (already checked by the platform) to its conversation."""


class Intake(Protocol):
    """One connection's intake, driven by its :class:`IntakeHost` on one thread."""

    def start(self) -> None:
        """Connect, catch up from the stored cursors, and go live (retrying on its own)."""

    def handle(self, message: object) -> bool:
        """Take a message the intake told or scheduled to itself.

        Returns:
            False when ``message`` is not one of the intake's own.
        """

    def close(self) -> None:
        """Disconnect and release threads; must not raise."""


class ChatPlatform(Renderer, Protocol):
    """A chat platform, as the runtime uses it (see the module docstring)."""

    @property
    def name(self) -> str:
        """The platform's name in config and keys (e.g. ``slack``)."""

    @property
    def limits(self) -> PlatformLimits:
        """What the platform allows."""

    def spaces(self, bindings: Sequence[Binding]) -> list[str]:
        """The spaces to connect to for one agent's bindings on this platform."""

    def login(self, agent: AgentSettings) -> Session:
        """Log the agent's identity on this platform in.

        Raises:
            bridge.errors.LoginRefused: the credentials are refused.
            bridge.errors.RetryLater: the platform could not be reached.
        """

    def open(self, host: IntakeHost, agent: AgentSettings,
             bindings: Sequence[Binding]) -> Intake:
        """The intake of one connection (not started)."""

    def client(self, access: Access) -> ChatClient:
        """Outbound calls as the identity that ``access`` belongs to."""

    def live_status(self, access: Access, target: Target, run_id: str) -> LiveStatus | None:
        """A native live status for the run ``run_id`` in ``target``; None where the
        platform has none (``limits.native_status`` is False) or it cannot apply there."""

    def checks(self, agent: AgentSettings, bindings: Sequence[Binding], *,
               timeout_s: float) -> list[PlatformCheck]:
        """The platform's lines for ``bridge doctor``: the identity's login, its spaces,
        the bound channels, what the platform lets it do.

        Args:
            agent: The agent whose identity is checked.
            bindings: The agent's bindings on this platform.
            timeout_s: Longest wait for any one call (seconds).
        """

