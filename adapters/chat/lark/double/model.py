"""The double's records (people, apps, chats, messages, cards) and small pure helpers.

Shapes follow lark-oapi 1.7.5 (``lark_oapi/api/im/v1/model/*.py``, the
``event/context.py`` envelope) and open.feishu.cn's docs. Error codes marked
*inferred* below were not found documented and are chosen to be plausible.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import attrs

#: Scopes every app gets unless told otherwise. ``im:message.group_msg`` (every
#: group message, not only @-mentions) is added by ``group_messages=True``.
DEFAULT_SCOPES = (
    "im:message", "im:message:send_as_bot", "im:message.p2p_msg:readonly",
    "im:message.group_at_msg:readonly", "im:chat:readonly", "im:resource",
    "im:message.reactions:write_only", "cardkit:card:write", "contact:user.base:readonly",
)
#: The scope that lets an app get every group message.
GROUP_MSG_SCOPE = "im:message.group_msg"
#: File extensions a user's post shows as images (``img`` tags); others are ``media``.
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "gif", "webp")

# Error codes (docs server-error-codes, api-call-guide; see the protocol note).
NO_TOKEN = 99991661          # "Missing access token for authorization"
BAD_TOKEN = 99991663         # "Invalid access token for authorization"
NO_SCOPE = 99991672          # missing scope, with the grant URL in msg
RATE_LIMITED = 99991400      # frequency limit (HTTP 429, x-ogw-ratelimit-reset)
BAD_PARAMS = 99992402        # "field validation failed"
BAD_SECRET = 10014           # token endpoint: "app secret invalid"
BAD_APP = 10003              # token endpoint: unknown app id (inferred)
INVALID = 230001             # invalid request parameter (bad content, not a card, ...)
NOT_IN_CHAT = 230002         # the bot is not in the chat (also: unknown chat)
RECALLED = 230011            # the message was recalled
NO_PERMISSION = 230027       # not the app's own message (inferred for edits)
CANT_RECALL = 230026         # recalling another's message (inferred)
CARD_INVALID = 230099        # bad card content
RESOURCE_NOT_IN_MSG = 234003  # a resource key not in that message (inferred)
NO_REACTION = 231003         # unknown reaction id (inferred)
CHAT_NO_ACCESS = 232011      # reading a chat the bot is not in (inferred)
STREAM_CLOSED = 300309       # CardKit: streaming mode closed / timed out
BAD_SEQUENCE = 300317        # CardKit: sequence not above the last one
CARD_NOT_FOUND = 300301      # CardKit: unknown card id (inferred)
ELEMENT_NOT_FOUND = 300302   # CardKit: unknown element id (inferred)
CARD_SENT = 300315           # CardKit: a card entity may be sent only once (inferred)



class LarkError(Exception):
    """A refusal, answered as ``{"code": code, "msg": msg}`` with HTTP ``status``.

    The double's test-facing methods raise it too (e.g. posting where the user
    is no member).

    Attributes:
        code: Feishu's error code.
        msg: The message.
        status: The HTTP status (Feishu answers 400 for most refusals).
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        """Create the error (see the attributes)."""
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status

    def to_json(self) -> dict[str, Any]:
        """The answer body ``{"code", "msg"}``."""
        return {"code": self.code, "msg": self.msg}


@attrs.frozen
class LarkApp:
    """A custom app with its bot (all fixed at creation).

    Attributes:
        app_id: ``cli_…``.
        app_secret: The secret at creation (see ``LarkDouble.rotate_secret``).
        bot_open_id: The bot's ``ou_…`` (what mentions of it carry).
        name: The app's and bot's name.
    """

    app_id: str
    app_secret: str = attrs.field(repr=False)
    bot_open_id: str
    name: str


@attrs.define
class Person:
    """A tenant member (a person)."""

    open_id: str
    union_id: str
    user_id: str
    name: str

    def ids(self) -> dict[str, str]:
        """``{open_id, union_id, user_id}``, as events carry them."""
        return {"open_id": self.open_id, "union_id": self.union_id, "user_id": self.user_id}


@attrs.define
class AppRecord:
    """An installed app: its public face plus what can change."""

    app: LarkApp
    secret: str
    scopes: set[str]
    union_id: str


@attrs.define
class Chat:
    """A p2p chat or a group (``topic``: every top-level message opens a thread)."""

    chat_id: str
    name: str
    mode: str  # "p2p" | "group" | "topic"
    users: list[str]  # open ids, in order of joining
    apps: list[str]  # app ids
    owner: str


@attrs.define
class Msg:
    """One message as stored; ``content`` is the JSON string Feishu carries."""

    message_id: str
    chat_id: str
    sender_id: str  # open id (people and bots)
    app_id: str  # "" for people
    msg_type: str
    content: str
    create_time: int  # ms
    update_time: int  # ms
    root_id: str = ""
    parent_id: str = ""
    thread_id: str = ""
    uuid: str = ""
    mentions: list[dict[str, Any]] = attrs.Factory(list)
    keys: set[str] = attrs.Factory(set)
    card_id: str = ""
    deleted: bool = False
    updated: bool = False


@attrs.define
class Card:
    """A CardKit card entity."""

    card_id: str
    app_id: str
    data: dict[str, Any]
    sequence: int = 0
    streaming: bool = False
    opened_at: float = 0.0  # time.monotonic() when streaming was switched on
    message_id: str = ""


def new_id(prefix: str, nbytes: int = 16) -> str:
    """``prefix`` + random hex (``nbytes`` bytes)."""
    return prefix + secrets.token_hex(nbytes)


class Clock:
    """Millisecond timestamps that rise strictly (messages sort by them)."""

    def __init__(self) -> None:
        """Start at the wall clock."""
        self._last = 0

    def now_ms(self) -> int:
        """The wall clock in ms, at least one above the last value handed out."""
        self._last = max(int(time.time() * 1000), self._last + 1)
        return self._last


def loads_object(text: str, code: int = INVALID, what: str = "content") -> dict[str, Any]:
    """Parse a JSON object string.

    Raises:
        LarkError: ``code`` when it is no JSON object.
    """
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise LarkError(code, f"invalid {what}: not JSON") from exc
    if not isinstance(value, dict):
        raise LarkError(code, f"invalid {what}: not a JSON object")
    return value


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a JSON value, depth first, the outer ones first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def text_of(msg_type: str, content: dict[str, Any] | None) -> str:
    """The plain text of a message or card: ``text``; ``post`` text/a/at/md
    tags (lines joined by newlines); card ``markdown``/``plain_text``/
    ``lark_md`` contents. Other kinds: ``""``.

    Args:
        msg_type: ``text``, ``post``, ``interactive`` (a card dict) or other.
        content: The parsed content (for ``interactive``, the card JSON).
    """
    if not content:
        return ""
    if msg_type == "text":
        return str(content.get("text", ""))
    if msg_type == "post":
        body = content if "content" in content else next(
            (v for v in content.values() if isinstance(v, dict)), {})
        lines = []
        for line in body.get("content") or []:
            parts = []
            for tag in line if isinstance(line, list) else []:
                if not isinstance(tag, dict):
                    continue
                if tag.get("tag") in ("text", "a", "md"):
                    parts.append(str(tag.get("text", "")))
                elif tag.get("tag") == "at":
                    parts.append(f"@{tag.get('user_name', '')}")
            if parts:
                lines.append("".join(parts))
        return "\n".join(lines)
    if msg_type == "interactive":
        texts = [str(node["content"]) for node in walk(content)
                 if node.get("tag") in ("markdown", "plain_text", "lark_md")
                 and isinstance(node.get("content"), str)]
        return "\n".join(texts)
    return ""


def find_element(card: dict[str, Any], element_id: str) -> dict[str, Any] | None:
    """The element of a card JSON 2.0 with that ``element_id`` (None: none)."""
    for node in walk(card):
        if node.get("element_id") == element_id and "tag" in node:
            return node
    return None


def find_button(card: dict[str, Any], name: str) -> tuple[dict[str, Any], Any] | None:
    """A button of a card and its callback value: the one named ``name``, or
    (``name`` empty) the first with a ``callback`` behavior (or a legacy
    ``value``). None when there is none."""
    for node in walk(card):
        if node.get("tag") != "button":
            continue
        value: Any = None
        found = False
        for behavior in node.get("behaviors") or []:
            if isinstance(behavior, dict) and behavior.get("type") == "callback":
                value, found = behavior.get("value"), True
                break
        if not found and "value" in node:
            value, found = node["value"], True
        if (name and node.get("name") == name) or (not name and found):
            return node, value
    return None
