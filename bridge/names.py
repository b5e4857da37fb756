"""Config entries that name channels and users, resolved to ids.

Access rules (``allowed_channels``, ``allowed_users``, ``admins``) and bindings
(``channels``) match a channel or an author by its **id** only. An entry may
still be a name, for convenience: each connection resolves it to an id when
it loads the channel list (channel entries) or the user list (user entries).
Chat platforms promise unique ids, not unique names: any member may create a private
channel called ``general``, and two members may share a display name. So:

- an entry that is the id of a known channel (or user) is that id; ids win
  over names;
- a name that exactly one known channel (or user) carries (compared
  case-folded) resolves to its id and is **pinned**: it keeps that id for the
  life of the process, so a channel created later with the same name never
  takes its rights (the newcomer is reported, kind ``second``);
- a name that several carry is refused (kind ``ambiguous``, with their ids):
  it matches nothing, never one of them by name, until only one carries it;
- a name that nobody carries matches nothing (kind ``unknown``); a later load
  may resolve it.

Deny lists (a binding's ``exclude_channels``) are not resolved: they fail
closed instead, matching by id and by the channel's current name.

Everything here is pure; the gateway keeps the pins (see
:class:`ResolvedNames`) and ``bridge doctor`` shows what each entry resolves to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from bridge.config import Binding
    from bridge.policy import AccessPolicy

#: The binding entry that means every channel (never resolved).
WILDCARD = "*"
#: :attr:`NameProblem.kind` values.
PROBLEM_KINDS = ("ambiguous", "unknown", "second")
#: Why names are resolved and pinned (for log lines and ``doctor``).
NOT_UNIQUE = ("chat platforms do not guarantee unique channel or user names, so config entries "
              "are matched by id; a name is resolved to an id when the channel or user list "
              "loads and stays pinned to it; ids are recommended")


@attrs.frozen
class NameProblem:
    """A config entry that did not resolve to exactly one id, or that a newcomer shares.

    Attributes:
        entry: The config entry as written.
        kind: ``ambiguous`` (several carry the name: refused, matches nothing),
            ``unknown`` (nothing carries the id or name: matches nothing) or
            ``second`` (pinned, and another one now carries the name too).
        ids: The ids that carry the name (``ambiguous``), or the newcomers'
            ids (``second``); sorted; empty for ``unknown``.
        pinned: The id the entry stays pinned to (``second``), else empty.
    """

    entry: str
    kind: str
    ids: tuple[str, ...] = ()
    pinned: str = ""

    def describe(self, what: str) -> str:
        """One line for the log or ``doctor``.

        Args:
            what: ``channel`` or ``user``.
        """
        ids = ", ".join(self.ids)
        if self.kind == "ambiguous":
            return (f"{what} name {self.entry!r} is carried by {len(self.ids)} {what}s ({ids}): "
                    f"refused, it matches none of them; write the id instead")
        if self.kind == "second":
            return (f"another {what} named {self.entry!r} appeared ({ids}); the entry stays "
                    f"pinned to {self.pinned} and the newcomer gets none of its rights")
        return f"{what} entry {self.entry!r} matches no {what} id or name seen"


@attrs.frozen
class ResolvedNames:
    """What one connection's config names resolved to: case-folded name to id.

    Only names are here; an entry that is an id matches as it is. Entries
    never leave these maps (they are the pins).

    Attributes:
        channels: Channel names (binding ``channels``, ``allowed_channels``).
        users: User names (``allowed_users``, ``admins``).
    """

    channels: Mapping[str, str] = attrs.field(factory=dict)
    users: Mapping[str, str] = attrs.field(factory=dict)


def listed(entries: Iterable[str], key_id: str, resolved: Mapping[str, str]) -> bool:
    """True when one of ``entries`` is ``key_id`` or a name resolved (pinned) to it.

    Ids compare case-insensitively (a uuid may be written in upper case);
    names never match by themselves.

    Args:
        entries: Config entries (ids or names).
        key_id: The channel's or author's id; empty never matches.
        resolved: Case-folded name to id (:class:`ResolvedNames`).
    """
    if not key_id:
        return False
    folded = key_id.casefold()
    return any(entry.casefold() == folded or resolved.get(entry.casefold()) == key_id
               for entry in entries)


def resolve_names(entries: Iterable[str], known: Mapping[str, str],
                  pinned: Mapping[str, str] | None = None,
                  ) -> tuple[dict[str, str], list[NameProblem]]:
    """Resolve config entries against the ids and names seen (see the module docstring).

    Args:
        entries: Config entries, ids or names; ``*`` and empty ones are skipped.
        known: Id to name of every channel (or user) seen.
        pinned: Case-folded name to id from earlier loads; such a name keeps
            its id whatever ``known`` says now.

    Returns:
        ``(resolved, problems)``: case-folded name to id for every name
        entry that resolved (or was pinned), and the entries that did not
        resolve to exactly one id or that a newcomer shares, in entry order.
    """
    pinned = pinned or {}
    ids = {key.casefold() for key in known}
    carriers: dict[str, list[str]] = {}
    for key, name in known.items():
        carriers.setdefault(name.casefold(), []).append(key)
    resolved: dict[str, str] = {}
    problems: list[NameProblem] = []
    seen: set[str] = set()
    for entry in entries:
        folded = entry.casefold()
        if not entry or entry == WILDCARD or folded in seen:
            continue
        seen.add(folded)
        if folded in ids:
            continue  # an id: matched as it is
        carried = sorted(carriers.get(folded, ()))
        if folded in pinned:
            pin = pinned[folded]
            resolved[folded] = pin
            others = tuple(key for key in carried if key != pin)
            if others:
                problems.append(NameProblem(entry, "second", others, pin))
        elif len(carried) == 1:
            resolved[folded] = carried[0]
        elif carried:
            problems.append(NameProblem(entry, "ambiguous", tuple(carried)))
        else:
            problems.append(NameProblem(entry, "unknown"))
    return resolved, problems


def channel_entries(bindings: Iterable[Binding], access: AccessPolicy) -> tuple[str, ...]:
    """The channel entries to resolve for one connection.

    Args:
        bindings: The agent's bindings in one space (their ``channels``).
        access: The agent's access rules (``allowed_channels``).

    Returns:
        The entries in config order, without ``*``; exclusions are left out
        (they match by id and by name, see the module docstring).
    """
    entries = [entry for binding in bindings for entry in binding.channels]
    entries += access.allowed_channels
    return tuple(dict.fromkeys(entry for entry in entries if entry != WILDCARD))


def user_entries(access: AccessPolicy) -> tuple[str, ...]:
    """The user entries to resolve for one agent: ``admins``, then ``allowed_users``."""
    return tuple(dict.fromkeys((*access.admins, *access.allowed_users)))


def resolve_connection(bindings: Iterable[Binding], access: AccessPolicy,
                       channels: Mapping[str, str], users: Mapping[str, str] | None,
                       previous: ResolvedNames) -> tuple[ResolvedNames, list[str]]:
    """What a connection's channel and user names resolve to, keeping earlier pins.

    Args:
        bindings: The connection's bindings.
        access: The agent's access rules.
        channels: Id to name of every channel the identity can see.
        users: Id to name of the space's users; None when not loaded (user names
            keep their earlier pins).
        previous: What they resolved to before.

    Returns:
        The resolved names, and one line per problem (see :meth:`NameProblem.describe`).
    """
    channel_ids, problems = resolve_names(channel_entries(bindings, access), channels,
                                          previous.channels)
    found = [problem.describe("channel") for problem in problems]
    user_ids: dict[str, str] = {}
    if users is not None and user_entries(access):
        user_ids, problems = resolve_names(user_entries(access), users, previous.users)
        found += [problem.describe("user") for problem in problems]
    return ResolvedNames({**previous.channels, **channel_ids},
                         {**previous.users, **user_ids}), found
