"""The in-memory chat platform: the chat port (:mod:`bridge.platform`) on a :class:`MemoryServer`.

A real platform in the sense of errbot's test backend: the runtime drives it
exactly as it drives Fabric or Slack (log in, open an intake, post, edit,
"did it land?", render), while the tests act as members on the same server.
The agent's identity is a :class:`~adapters.chat.memory.config.MemoryIdentity`
(given in code): the server knows its credential as a user's.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.chat.memory import render
from adapters.chat.memory.client import MemoryClient, MemorySession
from adapters.chat.memory.config import MemoryIdentity
from adapters.chat.memory.intake import FIRST_SIGHT, MemoryIntake
from adapters.chat.memory.server import MemoryServer
from bridge.config import AgentSettings, Binding
from bridge.errors import LoginRefused
from bridge.model import Target
from bridge.platform import Access, IntakeHost, PlatformCheck, PlatformLimits
from bridge.run_view import RunView


class MemoryPlatform:
    """The chat port on an in-memory server (:class:`bridge.platform.ChatPlatform`).

    Args:
        server: The server its identities and members share.
        name: The platform's name in keys.
        edit_interval_s: Seconds between two edits of one status message.
        first_sight: Messages caught up in a channel an intake sees for the first time.
        retry_s: First delay before an intake connects again (seconds; it doubles).
        retry_max_s: Longest delay between an intake's attempts (seconds).
        send_per_s: Each identity's sends a second (its outbound budget; 0: none).
        send_burst: The budget's size (sends at once after a quiet spell).
    """

    def __init__(self, server: MemoryServer, *, name: str = "memory",
                 edit_interval_s: float = 1.0, first_sight: int = FIRST_SIGHT,
                 retry_s: float = 1.0, retry_max_s: float = 30.0, send_per_s: float = 0.0,
                 send_burst: int = 1) -> None:
        self.server = server
        self._name = name
        self._limits = PlatformLimits(text_chars=server.text_chars,
                                      edit_interval_s=edit_interval_s, threads=True,
                                      buttons=True, reactions=True, files=True,
                                      send_per_s=send_per_s, send_burst=send_burst)
        self.first_sight = first_sight
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s

    @property
    def name(self) -> str:
        """The platform's name (``memory`` unless built with another)."""
        return self._name

    @property
    def limits(self) -> PlatformLimits:
        """Text up to the server's limit, threads, buttons, reactions and files; no native
        status."""
        return self._limits

    def spaces(self, bindings: Sequence[Binding]) -> list[str]:
        """The spaces the bindings name, in binding order."""
        return list(dict.fromkeys(binding.space for binding in bindings))

    def login(self, agent: AgentSettings) -> MemorySession:
        """Log the agent's identity in with its credential.

        Raises:
            bridge.errors.LoginRefused: The agent has no key, or the server knows no such key.
        """
        identity = agent.identity(self.name)
        if not isinstance(identity, MemoryIdentity):
            raise LoginRefused(f"agent {agent.name} has no identity on {self.name} (a "
                               "MemoryIdentity in its identities)")
        credential = identity.credential.reveal()
        user_id, token, issued_at = self.server.login(credential)
        return MemorySession(self.server.user(user_id).name, issued_at, user_id, token,
                             frozenset(self.server.spaces_of(user_id)))

    def open(self, host: IntakeHost, agent: AgentSettings,
             bindings: Sequence[Binding]) -> MemoryIntake:
        """The intake of ``host``'s connection (not started)."""
        return MemoryIntake(self.server, host, agent, bindings, platform=self.name,
                            first_sight=self.first_sight, retry_s=self.retry_s,
                            retry_max_s=self.retry_max_s)

    def client(self, access: Access) -> MemoryClient:
        """Outbound calls as the identity of ``access``."""
        return MemoryClient(self.server, access)

    def live_status(self, access: Access, target: Target, run_id: str) -> None:
        """None: the in-memory platform has no native live status (a posted status is edited)."""
        return None

    def checks(self, agent: AgentSettings, bindings: Sequence[Binding], *,
               timeout_s: float) -> list[PlatformCheck]:
        """Doctor's lines: the login with the agent's credential, then each bound space.

        A space line fails when the identity is not in the space or cannot see a
        bound channel (by name or id). The server is in memory, so nothing waits
        and ``timeout_s`` is not used.
        """
        name = f"{self.name} login ({agent.name})"
        try:
            session = self.login(agent)
        except LoginRefused as exc:
            return [PlatformCheck(name, "fail", f"the {self.name} server refused agent "
                                                f"{agent.name}'s credential ({exc}); check "
                                                f"the credential of its {self.name} identity")]
        spaces = ", ".join(sorted(session.spaces)) or "none"
        found = [PlatformCheck(name, "ok", f"the {self.name} server accepted agent "
                                           f"{agent.name}'s credential (user "
                                           f"{session.user_name}, spaces: {spaces})")]
        for binding in bindings:
            found.append(self._space_check(agent.name, session, binding))
        return found

    def _space_check(self, agent: str, session: MemorySession, binding: Binding) -> PlatformCheck:
        name = f"space {binding.space} ({agent})"
        if session.access(binding.space) is None:
            return PlatformCheck(name, "fail", f"agent {agent} is not in space {binding.space}; "
                                               "fix the binding's space or add the agent")
        channels = self.server.channels(binding.space, session.user_id)
        seen = {c.name for c in channels} | {c.id for c in channels}
        missing = [c for c in binding.channels if c != "*" and c not in seen]
        if missing:
            return PlatformCheck(name, "fail", f"space {binding.space}: agent {agent} cannot "
                                               f"see bound channel(s) {', '.join(missing)}; fix "
                                               "the binding's channels or add the agent")
        return PlatformCheck(name, "ok", f"space {binding.space}: agent {agent} sees "
                                         f"{len(channels)} channel(s)")

    def render_status(self, view: RunView) -> str:
        """The live status text (see :func:`adapters.chat.memory.render.render_status`)."""
        return render.render_status(view, self.limits.text_chars)

    def render_answer(self, text: str, footer: str) -> list[str]:
        """The answer's pieces (see :func:`adapters.chat.memory.render.render_answer`)."""
        return render.render_answer(text, footer, self.limits.text_chars)
