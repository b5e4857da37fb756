"""Fabric domain facts with no I/O, shared by the dev guild and the Fabric client.

Everything here follows ``fabric-protocol.md``. Facts that were not seen in
Fabric's own source are marked *inferred*, and each lives in one named constant
or function so that it is cheap to correct.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from bridge.chunking import utf16_length

#: Most characters a message's content may hold (the dev guild's limit), counted
#: in UTF-16 code units as a JavaScript server counts ``String.length``
#: (*inferred*: see :data:`CONTENT_LIMIT_UTF16`).
CONTENT_LIMIT = 8000
#: Whether the content limit counts UTF-16 code units rather than code points
#: (*inferred*: Fabric's servers and plugins are JavaScript).
CONTENT_LIMIT_UTF16 = True


def content_length(text: str) -> int:
    """Length of a message's content as the content limit counts it (see above).

    Args:
        text: The content.

    Returns:
        Its length in UTF-16 code units (a character outside the Basic
        Multilingual Plane, e.g. most emoji, counts 2), or in code points when
        :data:`CONTENT_LIMIT_UTF16` is off.
    """
    return utf16_length(text) if CONTENT_LIMIT_UTF16 else len(text)


#: Lifetime of a guild access token, in seconds.
GUILD_TOKEN_TTL_S = 900.0
#: How long a client may cache a session before logging in again, in seconds
#: (the Fabric plugins' ``TOKEN_TTL_MS`` of 8 minutes).
SESSION_CACHE_TTL_S = 480.0
#: Messages returned by a history call without ``limit`` (*inferred*).
HISTORY_LIMIT_DEFAULT = 50
#: Largest ``limit`` a history call honours; larger values are clamped (*inferred*).
HISTORY_LIMIT_MAX = 200
#: Field of ``POST /channels/:id/messages`` and of Message objects holding a
#: client's idempotency key for the post (*inferred*: ``fabric-protocol.md`` does
#: not define one). The dev guild stores it with the message and returns it in
#: REST answers, history and socket events; clients search for it, never for text.
MESSAGE_NONCE_FIELD = "nonce"
#: Most characters a message nonce may hold; longer ones answer 400 (*inferred*).
MESSAGE_NONCE_MAX = 64
#: Every channel ``xType``.
X_TYPES = ("general", "work", "report", "discuss", "triage", "custom", "announce", "dm")
#: Every agent presence status accepted by ``PUT /agents/:userId/presence``.
PRESENCE_STATES = ("idle", "on_call", "busy", "offline", "exhausted", "unknown")
#: The socket.io namespace of the realtime API.
REALTIME_NAMESPACE = "/realtime"

#: xTypes whose every other member is woken by a post.
WAKE_ALL_X_TYPES = frozenset({"dm", "general"})
#: xTypes that wake nobody.
WAKE_NONE_X_TYPES = frozenset({"report", "announce"})
#: xTypes that wake the members in the channel's wake list.
WAKE_LIST_X_TYPES = frozenset({"triage", "custom"})
#: xTypes that wake the members mentioned in the content.
WAKE_MENTIONED_X_TYPES = frozenset({"work", "discuss"})

_MENTION = re.compile(r"<@([^<>\s:]+)>")
_NAME_MENTION = re.compile(r"<@user\.name:([^<>\s]+)>")
_BACKTICKS = re.compile(r"`+")


def _outside_code(content: str) -> Iterator[tuple[int, int]]:
    """Yield the ``(start, end)`` spans of ``content`` that are not code.

    *Inferred* (Fabric's parser was not seen): code follows CommonMark's rule
    for backtick runs. A run of N backticks opens a span that the next run of
    exactly N backticks closes, so inline code (`` `x` ``) and fenced blocks
    (```` ```...``` ````) are both skipped; a run that is never closed is plain
    text.

    Args:
        content: Message text.

    Yields:
        Half-open character index ranges, in order, that lie outside code.
    """
    start = 0
    pos = 0
    while True:
        opening = _BACKTICKS.search(content, pos)
        if opening is None:
            break
        width = len(opening.group())
        closing = next(
            (m for m in _BACKTICKS.finditer(content, opening.end()) if len(m.group()) == width),
            None,
        )
        if closing is None:
            pos = opening.end()
            continue
        yield start, opening.start()
        start = pos = closing.end()
    yield start, len(content)


def mentioned_user_ids(content: str) -> frozenset[str]:
    """Return the user ids mentioned as ``<@userId>`` outside backtick code.

    Args:
        content: Message text.

    Returns:
        The ids between ``<@`` and ``>``; empty if none.
    """
    found: set[str] = set()
    for start, end in _outside_code(content):
        found.update(m.group(1) for m in _MENTION.finditer(content, start, end))
    return frozenset(found)


def rewrite_name_mentions(content: str, resolve: Callable[[str], str | None]) -> str:
    """Rewrite ``<@user.name:NAME>`` to ``<@userId>``, as the guild does on a post.

    *Inferred*: mentions inside backtick code and names that ``resolve`` does not
    know are left as written.

    Args:
        content: Message text as the client sent it.
        resolve: Maps a user name to its id, or None when there is no such user.

    Returns:
        The content with every known name mention replaced.
    """

    def replace(match: re.Match[str]) -> str:
        user_id = resolve(match.group(1))
        return match.group() if user_id is None else f"<@{user_id}>"

    pieces: list[str] = []
    last = 0
    for start, end in _outside_code(content):
        pieces.append(content[last:start])
        pieces.append(_NAME_MENTION.sub(replace, content[start:end]))
        last = end
    return "".join(pieces)


def channel_kind(x_type: str) -> str:
    """Return the Channel ``kind`` field for an xType.

    *Inferred*: Fabric's Channel carries a ``kind`` whose values were not seen;
    the dev guild reports ``"dm"`` for direct messages and ``"channel"`` otherwise.

    Args:
        x_type: One of :data:`X_TYPES`.

    Returns:
        ``"dm"`` or ``"channel"``.
    """
    return "dm" if x_type == "dm" else "channel"


def wakes(
    *,
    x_type: str,
    author_id: str,
    recipient_id: str,
    content: str,
    wake_list: frozenset[str] = frozenset(),
    wakeup_user_id: str | None = None,
) -> bool:
    """Decide whether a post wakes one recipient ("Wakeup, per recipient").

    The author is never woken. A post with ``wakeupUserId`` wakes that one user
    only. Otherwise ``dm`` and ``general`` wake every other member, ``report``
    and ``announce`` nobody, ``triage`` and ``custom`` the members in the wake
    list, ``work`` and ``discuss`` the members mentioned in the content. An
    unknown xType wakes nobody (*inferred*).

    Args:
        x_type: The channel's xType.
        author_id: User id of the message's author.
        recipient_id: User id of the member receiving the event.
        content: The stored content (mentions already rewritten to ``<@userId>``).
        wake_list: User ids in the channel's wake list (``triage``, ``custom``).
        wakeup_user_id: The post's ``wakeupUserId``, if any.

    Returns:
        True when the recipient should be woken.
    """
    if recipient_id == author_id:
        return False
    if wakeup_user_id is not None:
        return recipient_id == wakeup_user_id
    if x_type in WAKE_ALL_X_TYPES:
        return True
    if x_type in WAKE_LIST_X_TYPES:
        return recipient_id in wake_list
    if x_type in WAKE_MENTIONED_X_TYPES:
        return recipient_id in mentioned_user_ids(content)
    return False
