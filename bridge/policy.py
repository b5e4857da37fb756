"""Access rules (who may talk to an agent, where) and workspace rules, without I/O.

Access is per agent (``[agents.NAME]``):

- ``allowed_users``: ids or names of the members who may engage the agent and
  use its commands; empty means every member (with ``sender_scope = "all"``);
- ``admins``: ids or names of members who may also use admin commands; an
  admin is always allowed;
- ``allowed_channels``: ids or names of the channels where the agent listens
  at all; empty means every bound channel;
- channels and authors match by id only: a name entry matches the one id it
  was resolved (and pinned) to when the connection loaded the channel or user
  list (:mod:`bridge.names`), never a channel or member that merely carries
  the name; an unresolved name matches nothing;
- ``sender_scope``: ``all`` (messages of members who are not allowed are still
  kept as context) or ``known`` (only listed users and admins: everything
  from anyone else is dropped, and an empty ``allowed_users`` means nobody
  but the admins);
- ``allow_bots``: when false (default), messages of bots and agents (the
  agent itself included) never engage the agent;
- ``max_runs_per_hour``: a run budget per member per scope (0: no budget);
- ``refusal``: what a member who is not allowed is told, once per hour (empty:
  silence). The refusal never says why.

Workspaces: every configured workspace is resolved with ``realpath`` and
rejected when it is broad (``/``, a home folder itself, ``/tmp`` itself, a
system root such as ``/etc`` or ``/usr``), inside a system folder that is
never a workspace (``/etc``, ``/proc``, ...), or outside ``workspace_roots``
when roots are configured.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
from collections.abc import Iterable
from pathlib import Path

import attrs

from bridge.model import Inbound
from bridge.names import ResolvedNames, listed

#: ``sender_scope`` values.
SENDER_SCOPES = ("all", "known")
#: Default refusal (deliberately says nothing about the policy).
DEFAULT_REFUSAL = "Sorry, I can't take requests from you here."
#: Default run budget of one scope.
DEFAULT_MAX_RUNS_PER_HOUR = 60
#: One hour, in seconds (refusals and the run budget count per hour).
HOUR_S = 3600.0

#: Folders that are never a workspace themselves (besides every home folder).
BROAD_PATHS = frozenset({
    "/", "/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr", "/usr/local", "/usr/bin",
    "/usr/lib", "/usr/share", "/usr/src", "/var", "/var/lib", "/var/log", "/bin", "/sbin",
    "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/proc", "/sys", "/dev", "/root", "/home",
    "/run", "/opt", "/srv", "/mnt", "/media", "/snap", "/nix", "/Users", "/private",
    "/private/tmp", "/private/var", "/System", "/Library", "/Applications", "/Volumes",
})
#: Folders whose insides are never a workspace.
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/bin", "/sbin", "/lib", "/lib32",
                "/lib64", "/libx32", "/usr/bin", "/usr/sbin", "/usr/lib", "/System")


@attrs.frozen
class AccessPolicy:
    """An agent's access rules (see the module docstring).

    Attributes:
        allowed_users: Ids or names; empty means every member (``sender_scope = "all"``).
        admins: Ids or names of admins (always allowed).
        allowed_channels: Ids or names; empty means every bound channel.
        sender_scope: ``all`` or ``known``.
        allow_bots: Whether bots and agents may engage the agent.
        max_runs_per_hour: Runs per member per scope per hour; 0 means no budget.
        refusal: Text of the once-per-hour refusal; empty for silence.
    """

    allowed_users: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    allowed_channels: tuple[str, ...] = ()
    sender_scope: str = "all"
    allow_bots: bool = False
    max_runs_per_hour: int = DEFAULT_MAX_RUNS_PER_HOUR
    refusal: str = DEFAULT_REFUSAL

    def fingerprint(self) -> dict[str, object]:
        """The parts a session's safety depends on (for the policy fingerprint)."""
        return {"allowed_users": sorted(_fold(self.allowed_users)),
                "admins": sorted(_fold(self.admins)),
                "allowed_channels": sorted(_fold(self.allowed_channels)),
                "sender_scope": self.sender_scope, "allow_bots": self.allow_bots}


def _fold(items: Iterable[str]) -> set[str]:
    return {item.casefold() for item in items}


#: Sender kinds, from most to least trusted.
SENDER_KINDS = ("admin", "allowed", "refused", "bot", "unknown", "channel")


@attrs.frozen
class Sender:
    """Who wrote a message, as far as the access rules go.

    Attributes:
        kind: ``admin``, ``allowed``, ``refused`` (a member who is not
            allowed), ``bot`` (a bot or agent while ``allow_bots`` is false),
            ``unknown`` (the author's kind could not be learned: fail closed, it
            never engages, even with ``allow_bots``) or ``channel`` (the channel
            is not in ``allowed_channels``).
        reason: Why, for the log (never shown in the chat).
    """

    kind: str
    reason: str

    @property
    def allowed(self) -> bool:
        """True for admins and allowed members."""
        return self.kind in ("admin", "allowed")

    @property
    def visible(self) -> bool:
        """True when the message may be kept as context at all."""
        return self.kind != "channel"


def is_bot(message: Inbound, agent: str, bot_names: Iterable[str] = ()) -> bool:
    """True when the author is a bot or an agent.

    A message is from a bot when the platform says so (``author_is_bot``),
    when its author is the agent itself, or when the author's name is the
    name of an agent this bridge runs (``bot_names``).

    Args:
        message: The message.
        agent: The receiving agent's name.
        bot_names: Names of the bridge's agents.
    """
    if message.author_is_bot:
        return True
    names = _fold([agent, *bot_names])
    return message.author_name.casefold() in names or message.author_id.casefold() in names


def classify_sender(policy: AccessPolicy, message: Inbound, agent: str,
                    bot_names: Iterable[str] = (), names: ResolvedNames | None = None) -> Sender:
    """Apply the access rules to the author and channel of ``message``.

    Channels and authors match by id: an id entry, or a name entry through
    ``names`` (see :mod:`bridge.names`); a channel's or author's name alone
    never matches.

    Args:
        policy: The agent's access rules.
        message: The message.
        agent: The receiving agent's name.
        bot_names: Names of the bridge's agents (see :func:`is_bot`).
        names: What this connection's name entries resolved to (default:
            nothing, so only id entries match).
    """
    names = names or ResolvedNames()
    if policy.allowed_channels and not listed(policy.allowed_channels, message.channel_id,
                                              names.channels):
        return Sender("channel", "channel not in allowed_channels")
    if not message.author_known:
        return Sender("unknown", "author's kind is unknown (lookup failed); kept as context")
    if is_bot(message, agent, bot_names) and not policy.allow_bots:
        return Sender("bot", "author is a bot or agent (allow_bots = false)")
    if listed(policy.admins, message.author_id, names.users):
        return Sender("admin", "author is an admin")
    if listed(policy.allowed_users, message.author_id, names.users):
        return Sender("allowed", "author is in allowed_users")
    if not policy.allowed_users and policy.sender_scope == "all":
        return Sender("allowed", "every member is allowed")
    if policy.sender_scope == "known":
        return Sender("refused", "author is not a known user (sender_scope = known)")
    return Sender("refused", "author is not in allowed_users")


class HourlyBudget:
    """At most ``limit`` events in any sliding window of ``window_s`` seconds.

    Args:
        limit: Events allowed per window; 0 means no limit.
        window_s: The window, in seconds.
    """

    def __init__(self, limit: int, window_s: float = HOUR_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: collections.deque[float] = collections.deque()

    def _evict(self, now: float) -> None:
        """Forget the events that left the window ending at ``now`` (seconds)."""
        while self.times and now - self.times[0] >= self.window_s:
            self.times.popleft()

    def available(self, now: float) -> bool:
        """Whether one more event at ``now`` would be allowed; nothing is recorded.

        Args:
            now: The time of the event, in seconds (the same clock as :meth:`take`'s).

        Returns:
            True when there is no limit or fewer than ``limit`` events fall in the
            ``window_s`` seconds before ``now``.
        """
        self._evict(now)
        return not self.limit or len(self.times) < self.limit

    def take(self, now: float) -> bool:
        """Record one event at ``now`` if the budget allows it.

        Args:
            now: The time of the event, in seconds (non-decreasing between calls).

        Returns:
            Whether the event was allowed (and recorded).
        """
        if not self.available(now):
            return False
        self.times.append(now)
        return True


class OncePerWindow:
    """Says yes to each key at most once per ``window_s`` seconds.

    Args:
        window_s: The window, in seconds.
        size: Keys remembered (the oldest are forgotten first).
    """

    def __init__(self, window_s: float = HOUR_S, size: int = 10_000) -> None:
        self.window_s = window_s
        self.size = size
        self.last: collections.OrderedDict[str, float] = collections.OrderedDict()

    def first(self, key: str, now: float) -> bool:
        """True when ``key`` was not said yes to within the window; records it then."""
        when = self.last.get(key)
        if when is not None and now - when < self.window_s:
            return False
        self.last[key] = now
        self.last.move_to_end(key)
        while len(self.last) > self.size:
            self.last.popitem(last=False)
        return True


# -- workspaces ------------------------------------------------------------------


class WorkspaceError(ValueError):
    """A workspace path is not allowed (broad, a system folder, outside the roots)."""


def home_folders() -> frozenset[str]:
    """Real paths of the current user's home and of every account's home."""
    homes = {os.path.expanduser("~")}
    with contextlib.suppress(OSError):
        homes.update(entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir)
    return frozenset(os.path.realpath(home) for home in homes)


def check_workspace(path: Path | str, roots: Iterable[Path | str] = (),
                    homes: frozenset[str] | None = None) -> Path:
    """Resolve a workspace path and check it is narrow enough.

    Args:
        path: An absolute path.
        roots: ``workspace_roots``; when given, the workspace must be one of
            them or inside one of them (both compared as real paths).
        homes: Home folders that are not workspaces themselves (default:
            :func:`home_folders`).

    Returns:
        The real path.

    Raises:
        WorkspaceError: naming the path and the rule it breaks.
    """
    if not os.path.isabs(path):
        raise WorkspaceError(f"{path} is not an absolute path")
    real = os.path.realpath(path)
    shown = str(path) if real == os.path.normpath(path) else f"{path} (really {real})"
    if real in BROAD_PATHS:
        raise WorkspaceError(f"{shown} is too broad to be a workspace")
    if real in (home_folders() if homes is None else homes):
        raise WorkspaceError(f"{shown} is a home folder; use a folder inside it")
    for tree in SYSTEM_TREES:
        if real.startswith(tree + "/"):
            raise WorkspaceError(f"{shown} is inside the system folder {tree}")
    real_roots = [os.path.realpath(root) for root in roots]
    if real_roots and not any(real == root or real.startswith(root.rstrip("/") + "/")
                              for root in real_roots):
        raise WorkspaceError(f"{shown} is outside workspace_roots")
    return Path(real)
