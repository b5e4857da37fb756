"""The Web API methods: arguments in, Slack's JSON answers out.

:meth:`WebApi.call` takes a method name, the caller's token and the merged
arguments (query, form or JSON body) and returns the answer body and headers.
Refusals are HTTP 200 ``{"ok": false, "error"}`` as on Slack (docs
apis/web-api). Argument names and answer shapes follow docs.slack.dev
reference/methods/*; what is marked *inferred* was not documented.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from adapters.chat.slack.double.model import (
    HISTORY_SCOPE,
    READ_SCOPE,
    TYPE_NAMES,
    SlackApp,
    SlackError,
    page,
)
from adapters.chat.slack.double.state import MARKDOWN_LIMIT, Workspace

#: Most blocks a message may carry (docs reference/block-kit/blocks).
BLOCKS_LIMIT = 50


@attrs.frozen
class Caller:
    """Who calls: ``kind`` is ``bot`` (an ``xoxb-`` token) or ``app`` (``xapp-``)."""

    kind: str
    app: SlackApp

    @property
    def user(self) -> str:
        """The bot user the call acts as."""
        return self.app.bot_user_id


class Params:
    """The arguments of one call, read with Slack's leniency (strings or JSON values)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        """Wrap the merged arguments."""
        self._data = data

    def text(self, key: str) -> str | None:
        """A string argument (numbers become strings; absent or empty: None).

        Raises:
            SlackError: ``invalid_arguments`` for a list or object.
        """
        value = self._data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise SlackError("invalid_arguments")

    def flag(self, key: str) -> bool:
        """A boolean argument: ``true``/``1`` (string, number or JSON boolean)."""
        value = self._data.get(key)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return bool(value) if isinstance(value, bool | int) else False

    def number(self, key: str, default: int, *, error: str = "invalid_arguments") -> int:
        """An integer argument (absent: ``default``).

        Raises:
            SlackError: ``error`` when it is not an integer.
        """
        value = self._data.get(key)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise SlackError(error) from exc

    def structured(self, key: str, kind: type, error: str) -> Any:
        """A list/object argument, given as JSON or as a JSON string (absent: None).

        Raises:
            SlackError: ``error`` when it is neither, or not of ``kind``.
        """
        value = self._data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SlackError(error) from exc
        if not isinstance(value, kind):
            raise SlackError(error)
        return value


def _blocks(params: Params) -> list[dict[str, Any]] | None:
    blocks: list[dict[str, Any]] | None = params.structured("blocks", list, "invalid_blocks")
    if blocks is not None and (len(blocks) > BLOCKS_LIMIT or not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)):
        raise SlackError("invalid_blocks")
    return blocks


def _metadata(params: Params) -> dict[str, Any] | None:
    """``metadata``: ``{"event_type": str, "event_payload": object}`` (docs metadata)."""
    metadata: dict[str, Any] | None = params.structured("metadata", dict,
                                                        "invalid_metadata_format")
    if metadata is not None and not (isinstance(metadata.get("event_type"), str)
                                     and isinstance(metadata.get("event_payload"), dict)):
        raise SlackError("invalid_metadata_format")
    return metadata


def _chunks(params: Params) -> list[dict[str, Any]] | None:
    chunks: list[dict[str, Any]] | None = params.structured("chunks", list, "invalid_chunks")
    return chunks


def _paged(params: Params, default: int, most: int) -> tuple[str | None, int]:
    limit = params.number("limit", default, error="invalid_limit")
    return params.text("cursor"), min(max(limit, 1), most)


class WebApi:
    """The Web API of one :class:`Workspace`.

    Attributes:
        workspace: The state behind it.
    """

    def __init__(self, workspace: Workspace, open_link: Callable[[SlackApp], str]) -> None:
        """Create the API.

        Args:
            workspace: The state.
            open_link: Returns a new Socket Mode URL for an app (``apps.connections.open``).
        """
        self.workspace = workspace
        self._open_link = open_link
        self._methods: dict[str, Callable[[Caller, Params], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "reactions.get": self._reactions_get,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.info": self._file_info,
        }
        #: The scope each method needs of a bot (kind-dependent ones are checked inside).
        self._scopes: dict[str, str] = {
            "chat.postMessage": "chat:write", "chat.update": "chat:write",
            "chat.delete": "chat:write", "chat.postEphemeral": "chat:write",
            "chat.startStream": "chat:write", "chat.appendStream": "chat:write",
            "chat.stopStream": "chat:write", "users.info": "users:read",
            "reactions.add": "reactions:write", "reactions.remove": "reactions:write",
            "reactions.get": "reactions:read", "files.getUploadURLExternal": "files:write",
            "files.completeUploadExternal": "files:write", "files.info": "files:read",
        }

    def known(self, method: str) -> bool:
        """Whether the double implements ``method``."""
        return method in self._methods

    def call(self, method: str, token: str | None,
             data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Run one call.

        Args:
            method: E.g. ``"chat.postMessage"``.
            token: From ``Authorization: Bearer`` or the ``token`` argument.
            data: The merged arguments.

        Returns:
            ``(answer body, headers)``; bot-token calls get ``x-oauth-scopes``.
        """
        headers: dict[str, str] = {}
        try:
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            kind, app = self.workspace.authenticate(token)
            caller = Caller(kind, app)
            if kind == "bot":
                headers["x-oauth-scopes"] = ",".join(app.scopes)
            if (kind == "app") != (method == "apps.connections.open"):
                raise SlackError("not_allowed_token_type")
            needed = self._scopes.get(method)
            if needed:
                self._need(caller, needed)
            return {"ok": True, **handler(caller, Params(data))}, headers
        except SlackError as exc:
            return exc.to_json(), headers

    @staticmethod
    def _need(caller: Caller, scope: str) -> None:
        if caller.kind == "bot" and scope not in caller.app.scopes:
            raise SlackError("missing_scope", needed=scope, provided=",".join(caller.app.scopes))

    def _need_kind(self, caller: Caller, channel: str | None, scopes: Mapping[str, str]) -> None:
        self._need(caller, scopes[self.workspace.channel_kind(channel or "")])

    # -- auth and sockets ----------------------------------------------------

    def _auth_test(self, caller: Caller, params: Params) -> dict[str, Any]:
        ws = self.workspace
        return {"url": ws.base_url, "team": ws.team_name, "user": caller.app.name,
                "team_id": ws.team_id, "user_id": caller.user, "bot_id": caller.app.bot_id,
                "is_enterprise_install": False}

    def _connections_open(self, caller: Caller, params: Params) -> dict[str, Any]:
        return {"url": self._open_link(caller.app)}

    # -- chat ----------------------------------------------------------------

    def _post_message(self, caller: Caller, params: Params) -> dict[str, Any]:
        """``chat.postMessage``: text, blocks, thread_ts, reply_broadcast, metadata,
        markdown_text (not with text or blocks; ≤12,000 characters)."""
        text, blocks, markdown = params.text("text"), _blocks(params), params.text("markdown_text")
        if markdown is not None:
            if text is not None or blocks is not None:
                raise SlackError("markdown_text_conflict")
            if len(markdown) > MARKDOWN_LIMIT:
                raise SlackError("msg_too_long")
            text = markdown
        if text is None and blocks is None and params.text("attachments") is None:
            raise SlackError("no_text")
        message = self.workspace.post(
            caller.user, params.text("channel") or "", text=text or "", blocks=blocks,
            thread_ts=params.text("thread_ts"), broadcast=params.flag("reply_broadcast"),
            metadata=_metadata(params))
        return {"channel": params.text("channel") or "", "ts": message["ts"], "message": message}

    def _update(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel, ts = params.text("channel") or "", params.text("ts") or ""
        text = params.text("text") or params.text("markdown_text")
        message = self.workspace.update(caller.user, channel, ts, text=text,
                                        blocks=_blocks(params), metadata=_metadata(params))
        return {"channel": channel, "ts": ts, "text": message["text"], "message": message}

    def _delete(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel, ts = params.text("channel") or "", params.text("ts") or ""
        self.workspace.delete(caller.user, channel, ts)
        return {"channel": channel, "ts": ts}

    def _post_ephemeral(self, caller: Caller, params: Params) -> dict[str, Any]:
        text, blocks = params.text("text") or params.text("markdown_text"), _blocks(params)
        if text is None and blocks is None:
            raise SlackError("no_text")
        ts = self.workspace.post_ephemeral(
            caller.user, params.text("channel") or "", params.text("user") or "",
            text=text or "", blocks=blocks, thread_ts=params.text("thread_ts"))
        return {"message_ts": ts}

    def _start_stream(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel = params.text("channel") or ""
        message = self.workspace.start_stream(
            caller.user, channel, params.text("thread_ts"),
            recipient_user_id=params.text("recipient_user_id"),
            recipient_team_id=params.text("recipient_team_id"),
            markdown_text=params.text("markdown_text"), chunks=_chunks(params),
            task_display_mode=params.text("task_display_mode"))
        return {"channel": channel, "ts": message["ts"]}

    def _append_stream(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel, ts = params.text("channel") or "", params.text("ts") or ""
        self.workspace.append_stream(caller.user, channel, ts,
                                     markdown_text=params.text("markdown_text"),
                                     chunks=_chunks(params))
        return {"channel": channel, "ts": ts}

    def _stop_stream(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel, ts = params.text("channel") or "", params.text("ts") or ""
        message = self.workspace.stop_stream(
            caller.user, channel, ts, markdown_text=params.text("markdown_text"),
            chunks=_chunks(params), blocks=_blocks(params), metadata=_metadata(params))
        return {"channel": channel, "ts": ts, "message": message}

    # -- conversations -------------------------------------------------------

    def _conversations_list(self, caller: Caller, params: Params) -> dict[str, Any]:
        """``types`` (default ``public_channel``), ``limit`` (default 100, ≤1000), ``cursor``."""
        names = (params.text("types") or "public_channel").split(",")
        kinds = []
        for name in (n.strip() for n in names if n.strip()):
            if name not in TYPE_NAMES:
                raise SlackError("invalid_types")
            kinds.append(TYPE_NAMES[name])
            self._need(caller, READ_SCOPE[TYPE_NAMES[name]])
        cursor, limit = _paged(params, 100, 1000)
        chosen, next_cursor = page(self.workspace.conversations(caller.user, kinds),
                                   cursor, limit)
        return {"channels": chosen, "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_info(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel = params.text("channel")
        self._need_kind(caller, channel, READ_SCOPE)
        return {"channel": self.workspace.conversation_info(caller.user, channel or "")}

    def _conversations_members(self, caller: Caller, params: Params) -> dict[str, Any]:
        channel = params.text("channel")
        self._need_kind(caller, channel, READ_SCOPE)
        cursor, limit = _paged(params, 100, 1000)
        chosen, next_cursor = page(self.workspace.members(caller.user, channel or ""),
                                   cursor, limit)
        return {"members": chosen, "response_metadata": {"next_cursor": next_cursor}}

    def _history(self, caller: Caller, params: Params) -> dict[str, Any]:
        """``channel``, ``oldest``, ``latest``, ``inclusive``, ``limit`` (default 100,
        ≤999), ``cursor``, ``include_all_metadata``."""
        channel = params.text("channel")
        self._need_kind(caller, channel, HISTORY_SCOPE)
        cursor, limit = _paged(params, 100, 999)
        return self.workspace.history(
            caller.user, channel or "", oldest=params.text("oldest"),
            latest=params.text("latest"), inclusive=params.flag("inclusive"), limit=limit,
            cursor=cursor, include_all_metadata=params.flag("include_all_metadata"))

    def _replies(self, caller: Caller, params: Params) -> dict[str, Any]:
        """``channel``, ``ts``, ``oldest``, ``latest``, ``inclusive``, ``limit``
        (default 1000), ``cursor``, ``include_all_metadata``."""
        channel = params.text("channel")
        self._need_kind(caller, channel, HISTORY_SCOPE)
        ts = params.text("ts")
        if ts is None:
            raise SlackError("invalid_arguments")
        cursor, limit = _paged(params, 1000, 1000)
        return self.workspace.replies(
            caller.user, channel or "", ts, oldest=params.text("oldest"),
            latest=params.text("latest"), inclusive=params.flag("inclusive"), limit=limit,
            cursor=cursor, include_all_metadata=params.flag("include_all_metadata"))

    def _users_info(self, caller: Caller, params: Params) -> dict[str, Any]:
        return {"user": self.workspace.user_info(params.text("user") or "")}

    # -- reactions -------------------------------------------------------------

    def _react(self, caller: Caller, params: Params, add: bool) -> dict[str, Any]:
        self.workspace.react(caller.user, params.text("channel") or "",
                             params.text("timestamp") or "", params.text("name") or "",
                             add=add)
        return {}

    def _reactions_add(self, caller: Caller, params: Params) -> dict[str, Any]:
        return self._react(caller, params, True)

    def _reactions_remove(self, caller: Caller, params: Params) -> dict[str, Any]:
        return self._react(caller, params, False)

    def _reactions_get(self, caller: Caller, params: Params) -> dict[str, Any]:
        return self.workspace.reactions_get(caller.user, params.text("channel") or "",
                                            params.text("timestamp") or "")

    # -- files -----------------------------------------------------------------

    def _upload_url(self, caller: Caller, params: Params) -> dict[str, Any]:
        file_id, url = self.workspace.start_upload(
            caller.user, params.text("filename") or "", params.number("length", 0))
        return {"upload_url": url, "file_id": file_id}

    def _complete_upload(self, caller: Caller, params: Params) -> dict[str, Any]:
        files = params.structured("files", list, "invalid_arguments") or []
        if not all(isinstance(f, dict) for f in files):
            raise SlackError("invalid_arguments")
        channel = params.text("channel_id") or (params.text("channels") or "").split(",")[0]
        done = self.workspace.complete_upload(
            caller.user, files, channel_id=channel or None,
            thread_ts=params.text("thread_ts"),
            initial_comment=params.text("initial_comment") or "")
        return {"files": done}

    def _file_info(self, caller: Caller, params: Params) -> dict[str, Any]:
        return {"file": self.workspace.file_info(params.text("file") or "")}

