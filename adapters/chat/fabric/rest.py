"""Fabric REST: Center login and the guild API, with typed errors.

Status codes map to :mod:`bridge.errors` so callers branch on the class:
401 -> Unauthorized, 403 -> Forbidden, 404 -> NotFound, 409 -> Conflict,
413 -> TooLarge, 429 and 5xx -> RetryLater (with Retry-After when given),
other 4xx -> BadRequest; a request that got no answer -> RetryLater(ambiguous).
Idempotent GETs are retried by urllib3 (connect errors, 502/503/504).

Exactly-once posting rests on identity, never on text: :meth:`FabricGuild.post`
takes the caller's idempotency key and sends it as the message's nonce
(:data:`adapters.chat.fabric.rules.MESSAGE_NONCE_FIELD`), and
:meth:`FabricGuild.find_posted` answers "did the post with this key land?" by
paging the channel's history back to where the post could first have landed.
Other platforms implement the same two calls with their own key (Slack's
``client_msg_id`` or message metadata, Feishu/Lark's ``uuid`` on send).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import attrs
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from adapters.chat.fabric import rules
from bridge.errors import (
    BadRequest,
    ChatError,
    Conflict,
    Forbidden,
    LoginRefused,
    NotFound,
    RetryLater,
    TooLarge,
    Unauthorized,
)
from bridge.isotime import parse_iso
from bridge.secrets import register_secret

log = logging.getLogger(__name__)

#: Seconds to wait for a connect and for an answer.
HTTP_TIMEOUT = (3.05, 10.0)
#: Most history pages :meth:`FabricGuild.find_posted` reads for one search (each
#: of up to :data:`adapters.chat.fabric.rules.HISTORY_LIMIT_MAX` messages).
FIND_MAX_PAGES = 25
#: Seconds the guild's clock may be behind ours when a search stops at a post's
#: first send time.
CLOCK_SKEW_S = 300.0


def http_session() -> requests.Session:
    """A requests session that retries idempotent GETs on connect errors and 502/503/504."""
    session = requests.Session()
    retry = Retry(total=3, connect=3, read=0, backoff_factor=0.2,
                  status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}),
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@attrs.frozen
class GuildAccess:
    """What an identity needs to talk to one guild.

    Attributes:
        guild: Guild node id.
        endpoint: Guild base URL (without ``/api``).
        token: Guild access token (registered for redaction).
        user_id: The identity's user id.
        user_name: The identity's display name.
        issued_at: Epoch seconds when the session was obtained.
    """

    guild: str
    endpoint: str
    token: str = attrs.field(repr=False)
    user_id: str
    user_name: str
    issued_at: float


@attrs.frozen
class FabricSession:
    """A Center session: tokens, the user and the guilds it may use."""

    access_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    user_id: str
    user_name: str
    guilds: dict[str, GuildAccess]
    issued_at: float

    def access(self, space: str) -> GuildAccess | None:
        """The access to guild ``space``, or None when the identity is not in it."""
        return self.guilds.get(space)

    def holds(self, token: str) -> bool:
        """Whether ``token`` is this session's Center token or one of its guild tokens."""
        return token == self.access_token or any(g.token == token for g in self.guilds.values())


def read_answer(code: int, raw: bytes, retry_after: str | None, what: str) -> Any:
    """A guild's or Center's answer, from its parts (any HTTP client): its JSON body, or
    the typed error.

    Args:
        code: The HTTP status code.
        raw: The answer's body as received (bytes; empty when it had none).
        retry_after: The ``Retry-After`` header, or None.
        what: Short description of the call for the message (no secrets).

    Returns:
        The parsed JSON body; None for 204 or an empty body.

    Raises:
        ChatError: a non-2xx answer (typed as :func:`raise_for_answer`), or a 2xx
            answer whose body is not JSON.
    """
    try:
        body = json.loads(raw) if raw and code != 204 else None
    except ValueError:
        if code < 300:
            raise ChatError(f"{what}: answered with a non-JSON body") from None
        body = None
    raise_for_answer(code, body, retry_after, what)
    return body


def raise_for_answer(code: int, body: Any, retry_after: str | None, what: str) -> None:
    """Raise the typed error for a non-2xx answer, from its parts (any HTTP client).

    Args:
        code: The HTTP status code.
        body: The answer's parsed JSON body, or None when it had none.
        retry_after: The ``Retry-After`` header, or None.
        what: Short description of the call for the message (no secrets).

    Raises:
        ChatError: a subclass chosen by status code (see the module docstring).
    """
    if code < 300:
        return
    detail = _error_text(body)
    message = f"{what}: HTTP {code}" + (f" ({detail})" if detail else "")
    if code == 401:
        raise Unauthorized(message)
    if code == 403:
        raise Forbidden(message)
    if code == 404:
        raise NotFound(message)
    if code == 409:
        raise Conflict(message)
    if code == 413:
        raise TooLarge(message)
    if code == 429 or code >= 500:
        raise RetryLater(message, _retry_after(retry_after), ambiguous=code >= 500)
    raise BadRequest(message)


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return ""


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _seq_of(message: dict[str, Any]) -> int:
    seq = message.get("seq")
    return seq if isinstance(seq, int) else 0


def message_nonce(idempotency_key: str) -> str:
    """The nonce sent for an idempotency key (the same key always gives the same nonce).

    Args:
        idempotency_key: The caller's key, e.g. an outbox key ``<run_id>:<index>``.

    Returns:
        The key itself when it fits :data:`adapters.chat.fabric.rules.MESSAGE_NONCE_MAX`
        characters, else ``sha256:`` and the start of its SHA-256 hex digest
        (exactly that many characters).
    """
    if len(idempotency_key) <= rules.MESSAGE_NONCE_MAX:
        return idempotency_key
    prefix = "sha256:"
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return prefix + digest[:rules.MESSAGE_NONCE_MAX - len(prefix)]


#: Where a guild's REST API starts below its endpoint.
API_PREFIX = "/api"


@attrs.frozen
class GuildRequest:
    """One call of a guild's REST API as data, for any HTTP client (no I/O here).

    Attributes:
        method: HTTP method.
        path: Path below the guild's API (starts with ``/``).
        what: Short description of the call for error messages (no secrets).
        body: The JSON body (None: the call has none, as a ``GET``).
    """

    method: str
    path: str
    what: str
    body: dict[str, str] | None = None

    def url(self, endpoint: str) -> str:
        """The call's URL at a guild's endpoint (its base URL, without ``/api``)."""
        return endpoint + API_PREFIX + self.path


def user_request(user_id: str) -> GuildRequest:
    """``GET /users/:id`` (inferred; the dev guild serves it): read with :func:`read_user`."""
    return GuildRequest("GET", f"/users/{user_id}", "user")


def read_user(data: Any) -> tuple[str, str] | None:
    """A user from the JSON body of ``GET /users/:id``.

    Returns:
        ``(display name, kind)`` with kind ``human``, ``agent`` or ``""`` when not
        given; None when the body names no user.
    """
    if not isinstance(data, dict):
        return None
    name, kind = data.get("name"), data.get("kind")
    if not isinstance(name, str) or not name:
        return None
    return name, kind if isinstance(kind, str) else ""


def auth_headers(token: str) -> dict[str, str]:
    """The headers that authenticate a guild REST call with a guild token."""
    return {"Authorization": f"Bearer {token}"}


def post_request(channel_id: str, content: str, wakeup_user_id: str | None = None, *,
                 idempotency_key: str | None = None) -> GuildRequest:
    """``POST /channels/:id/messages`` (see :meth:`FabricGuild.post` for the arguments).

    Returns:
        The request; send it with :func:`auth_headers` of the poster's guild token.
    """
    body: dict[str, str] = {"content": content}
    if wakeup_user_id:
        body["wakeupUserId"] = wakeup_user_id
    if idempotency_key is not None:
        body[rules.MESSAGE_NONCE_FIELD] = message_nonce(idempotency_key)
    return GuildRequest("POST", f"/channels/{channel_id}/messages", "post message", body)


def edit_request(channel_id: str, message_id: str, content: str) -> GuildRequest:
    """``PATCH /channels/:id/messages/:messageId`` (see :meth:`FabricGuild.edit`).

    Returns:
        The request; send it with :func:`auth_headers` of the author's guild token.
    """
    return GuildRequest("PATCH", f"/channels/{channel_id}/messages/{message_id}",
                        "edit message", {"content": content})


class FabricCenter:
    """Client of a Fabric Center.

    Args:
        center_url: Base URL including ``/api``.
        session: A requests session to reuse (one is made when None).
    """

    def __init__(self, center_url: str, session: requests.Session | None = None) -> None:
        self.center_url = center_url.rstrip("/")
        self.http = session or http_session()

    def login(self, api_key: str) -> FabricSession:
        """Log in with an API key.

        Raises:
            LoginRefused: on 401 (bad or disabled key).
            RetryLater: when Center is unreachable or answers 5xx/429.
            ChatError: on any other unexpected answer.
        """
        try:
            return self._session(self._post("/auth/agent/login", {"apiKey": api_key}, "login"))
        except Unauthorized as exc:
            raise LoginRefused(f"Center refused the API key ({exc})") from None

    def refresh(self, refresh_token: str) -> FabricSession:
        """Trade a refresh token for a new session.

        Raises:
            Unauthorized: when the refresh token is no longer valid.
            RetryLater: when Center is unreachable or answers 5xx/429.
        """
        return self._session(self._post("/auth/refresh", {"refreshToken": refresh_token},
                                        "refresh"))

    def _post(self, path: str, body: dict[str, str], what: str) -> Any:
        try:
            response = self.http.post(self.center_url + path, json=body, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise RetryLater(f"{what}: Center unreachable ({type(exc).__name__})") from None
        return read_answer(response.status_code, response.content,
                           response.headers.get("Retry-After"), what)

    def _session(self, data: Any) -> FabricSession:
        try:
            now = time.time()
            access, refresh = str(data["accessToken"]), str(data["refreshToken"])
            user = data["user"]
            for token in (access, refresh):
                register_secret(token, token=True)
            tokens = {str(t["guildNodeId"]): str(t["token"]) for t in data["guildAccessTokens"]}
            for token in tokens.values():
                register_secret(token, token=True)
            guilds = {}
            for guild in data["guilds"]:
                node = str(guild["nodeId"])
                if node in tokens:
                    guilds[node] = GuildAccess(node, str(guild["endpoint"]).rstrip("/"),
                                               tokens[node], str(user["id"]),
                                               str(user.get("name") or user["id"]), now)
            return FabricSession(access, refresh, str(user["id"]),
                                 str(user.get("name") or user["id"]), guilds, now)
        except (KeyError, TypeError) as exc:
            raise ChatError(f"Center session has an unexpected shape (missing {exc})") from None


class FabricGuild:
    """Client of one guild's REST API, as one identity.

    Args:
        access: Endpoint, token and identity.
        session: A requests session to reuse.
    """

    def __init__(self, access: GuildAccess, session: requests.Session | None = None) -> None:
        self.access = access
        self.api = access.endpoint + API_PREFIX
        self.http = session or http_session()

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        headers = auth_headers(self.access.token)
        try:
            response = self.http.request(method, self.api + path, headers=headers,
                                         timeout=HTTP_TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise RetryLater(f"{what}: guild unreachable ({type(exc).__name__})",
                             ambiguous=method != "GET") from None
        return read_answer(response.status_code, response.content,
                           response.headers.get("Retry-After"), what)

    def channels(self) -> list[dict[str, Any]]:
        """``GET /channels?guildId=``: channels this identity can see.

        Raises:
            ChatError: typed by status (see module docstring).
        """
        data = self._call("GET", "/channels", "list channels",
                          params={"guildId": self.access.guild})
        if not isinstance(data, list):
            raise ChatError("list channels: expected a JSON array")
        return [c for c in data if isinstance(c, dict)]

    def create_channel(self, name: str, x_type: str, *, members: list[str] | None = None,
                       public: bool = True, purpose: str = "") -> dict[str, Any]:
        """``POST /channels`` (path inferred); returns the created Channel.

        Args:
            name: Channel name.
            x_type: One of Fabric's xTypes (``general``, ``work``, ``dm``, ...).
            members: User ids to add (the caller is always a member).
            public: Whether non-members can see and join it.
            purpose: Free text.
        """
        body = {"guildId": self.access.guild, "name": name, "xType": x_type,
                "isPublic": public, "memberUserIds": members or [], "purpose": purpose}
        data = self._call("POST", "/channels", "create channel", json=body)
        return data if isinstance(data, dict) else {}

    def history(self, channel_id: str, seq_from: int | None = None, seq_to: int | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
        """``GET /channels/:id/messages``: messages by ascending ``seq``.

        Args:
            channel_id: Channel id.
            seq_from: First seq (inclusive), or None for the latest page.
            seq_to: Last seq (inclusive), or None.
            limit: At most this many (the guild caps it at 200).
        """
        params: dict[str, int] = {"limit": limit}
        if seq_from is not None:
            params["seqFrom"] = seq_from
        if seq_to is not None:
            params["seqTo"] = seq_to
        data = self._call("GET", f"/channels/{channel_id}/messages", "history", params=params)
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ChatError("history: expected {\"items\": [...]}")
        return sorted((m for m in items if isinstance(m, dict)), key=_seq_of)

    def post(self, channel_id: str, content: str, wakeup_user_id: str | None = None, *,
             idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /channels/:id/messages``; returns the created Message.

        Args:
            channel_id: Channel id.
            content: Text (at most the guild's content limit, in characters).
            wakeup_user_id: The one user to wake, if any.
            idempotency_key: The caller's key for this post, sent as the
                message's nonce (see :func:`message_nonce`) so that
                :meth:`find_posted` can tell whether it landed.

        Raises:
            ChatError: typed by status (see module docstring); a RetryLater with
                ``ambiguous`` set when the post may have landed.
        """
        request = post_request(channel_id, content, wakeup_user_id,
                               idempotency_key=idempotency_key)
        data = self._call(request.method, request.path, request.what, json=request.body)
        return data if isinstance(data, dict) else {}

    def find_posted(self, channel_id: str, idempotency_key: str, *, after_seq: int = 0,
                    not_before: float | None = None,
                    max_pages: int = FIND_MAX_PAGES) -> dict[str, Any] | None:
        """Find this identity's message posted with ``idempotency_key``, by key only.

        Pages the history back from the newest message until it passes
        ``after_seq`` (the post cannot be older), or a message created before
        ``not_before`` (less :data:`CLOCK_SKEW_S`), or the channel's start; at
        most ``max_pages`` pages, after which it logs a warning and answers None.
        Each page asks for :data:`adapters.chat.fabric.rules.HISTORY_LIMIT_MAX` messages
        up to the seq just below the lowest one seen, so gaps in the seqs
        (deleted messages) or a page the guild cut short never make later pages
        smaller: the bound is ``max_pages`` pages of the largest size.

        Args:
            channel_id: Channel id.
            idempotency_key: The key the post was sent with.
            after_seq: A seq the post came after (0: unknown).
            not_before: Epoch seconds before the post's first attempt, or None.
            max_pages: Most history calls, at least 1.

        Returns:
            The Message, or None when it is not in the searched range.

        Raises:
            ChatError: typed by status when a history call fails.
        """
        nonce = message_nonce(idempotency_key)
        floor = after_seq + 1
        since = None if not_before is None else not_before - CLOCK_SKEW_S
        size = rules.HISTORY_LIMIT_MAX
        items = self.history(channel_id, limit=size)
        pages, unmarked = 1, 0
        while items:
            for message in items[::-1]:
                if _seq_of(message) < floor or message.get("authorUserId") != self.access.user_id:
                    continue
                if message.get(rules.MESSAGE_NONCE_FIELD) == nonce:
                    return message
                unmarked += rules.MESSAGE_NONCE_FIELD not in message
            lowest, oldest = _seq_of(items[0]), parse_iso(items[0].get("createdAt"))
            if lowest <= floor or (since is not None and oldest is not None and oldest < since):
                break
            if pages >= max_pages:
                log.warning("channel %s: post %s not found in the last %d history pages "
                            "(back to seq %d; it could be as old as seq %d): taken as not "
                            "landed", channel_id, idempotency_key, pages, lowest, floor)
                return None
            # The next page ends below the lowest seq seen, whatever gaps (deleted
            # messages) or short pages came before: each page holds up to the
            # largest size, so gaps never shrink what the page bound covers.
            items = self.history(channel_id, seq_to=lowest - 1, limit=size)
            pages += 1
        if unmarked:
            log.warning("channel %s: %d of this identity's messages came without %r; the "
                        "guild may not keep it, so landed posts can look lost", channel_id,
                        unmarked, rules.MESSAGE_NONCE_FIELD)
        return None

    def edit(self, channel_id: str, message_id: str, content: str) -> dict[str, Any]:
        """``PATCH /channels/:id/messages/:messageId`` (inferred path); returns the Message."""
        request = edit_request(channel_id, message_id, content)
        data = self._call(request.method, request.path, request.what, json=request.body)
        return data if isinstance(data, dict) else {}

    def delete(self, channel_id: str, message_id: str) -> None:
        """``DELETE /channels/:id/messages/:messageId`` (inferred path); author only."""
        self._call("DELETE", f"/channels/{channel_id}/messages/{message_id}", "delete message")

    def set_presence(self, status: str) -> None:
        """``PUT /agents/:userId/presence``."""
        self._call("PUT", f"/agents/{self.access.user_id}/presence", "set presence",
                   json={"status": status})

    def users(self) -> dict[str, str]:
        """``GET /users`` (inferred; the dev guild serves it): every user's display name.

        Returns:
            User id to display name (entries without a string id and name are skipped).

        Raises:
            ChatError: typed by status (see module docstring).
        """
        data = self._call("GET", "/users", "list users")
        if not isinstance(data, list):
            raise ChatError("list users: expected a JSON array")
        return {item["id"]: item["name"] for item in data
                if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
                and isinstance(item.get("name"), str)}

    def user(self, user_id: str) -> tuple[str, str] | None:
        """``GET /users/:id`` (inferred; the dev guild serves it).

        Returns:
            ``(display name, kind)`` with kind ``human``, ``agent`` or ``""`` when
            not given; None for an unknown user.
        """
        request = user_request(user_id)
        try:
            data = self._call(request.method, request.path, request.what)
        except (NotFound, BadRequest):
            return None
        return read_user(data)

    def user_name(self, user_id: str) -> str | None:
        """A user's display name (see :meth:`user`), or None."""
        found = self.user(user_id)
        return found[0] if found else None
