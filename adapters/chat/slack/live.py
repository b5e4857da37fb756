"""A run's native live status on Slack: a streamed message in its thread.

``chat.startStream`` opens the message with the run's headline and steps as
``plan_update``/``task_update`` chunks (docs.slack.dev reference/methods/
chat.startStream; chunk shapes: slack_sdk ``models/messages/chunk.py``),
``chat.appendStream`` sends only what changed (a chunk counts as shown only
once Slack accepted it: :class:`~adapters.chat.slack.stream.StatusStream`),
and ``chat.stopStream`` ends it with the summary (elapsed, usage). A live
stream takes no buttons (``streaming_state_conflict``), so the run's Stop
button is a small message of its own below the stream, deleted when the run
ends. Any refusal (a stream that expired after about 5 idle minutes:
``message_not_in_streaming_state``, python-slack-sdk#1859; missing
permissions; a rate limit) is raised, and the runtime falls back to one posted
status message edited in place; this stream's Stop message goes first.
"""

from __future__ import annotations

import logging
from typing import Any

from adapters.chat.slack.api import translated
from adapters.chat.slack.client import SlackClient
from adapters.chat.slack.stream import StatusStream
from bridge.errors import ChatError
from bridge.model import Control, Target
from bridge.run_view import RunView

log = logging.getLogger(__name__)


class SlackLiveStatus:
    """One run's streamed status message (:class:`bridge.platform.LiveStatus`).

    Args:
        client: The app's client (its Web API client posts the stream).
        target: The run's conversation: a channel and a thread (streams live in threads).
        run_id: The run (its Stop button carries it).
    """

    def __init__(self, client: SlackClient, target: Target, run_id: str) -> None:
        assert target.thread, "a Slack stream lives in a thread"
        self.client = client
        self.target = target
        self.run_id = run_id
        self.stream = StatusStream()
        self.ts = ""
        self.stop_ts = ""

    def show(self, view: RunView) -> None:
        """Start the stream (and post its Stop button), or append what changed.

        Raises:
            bridge.errors.ChatError: Slack refused; the Stop message is deleted first.
        """
        try:
            if not self.ts:
                self._start(view)
            else:
                self._append(self.stream.pending(view))
        except ChatError:
            self._drop_stop()
            raise

    def finish(self, view: RunView) -> None:
        """Stop the stream with the run's last chunks and summary; delete the Stop message.

        Raises:
            bridge.errors.ChatError: Slack refused (the Stop message is deleted anyway).
        """
        try:
            if not self.ts:
                self._start(view, stop_button=False)
            chunks = self.stream.final(view)
            with translated(f"chat.stopStream in {self.target.channel}"):
                self.client.web.chat_stopStream(channel=self.target.channel, ts=self.ts,
                                                chunks=chunks)
            self.stream.commit(chunks)
        finally:
            self._drop_stop()

    def _start(self, view: RunView, *, stop_button: bool = True) -> None:
        chunks = self.stream.pending(view)
        params: dict[str, Any] = {"channel": self.target.channel,
                                  "thread_ts": self.target.thread, "chunks": chunks,
                                  "task_display_mode": "timeline"}
        if not self.target.channel.startswith("D"):  # outside DMs Slack asks who it is for
            params["recipient_user_id"] = self._recipient()
            params["recipient_team_id"] = self.client.access.team_id
        with translated(f"chat.startStream in {self.target.channel}"):
            answer = self.client.web.chat_startStream(**params)
        self.ts = str(answer.get("ts", ""))
        self.stream.commit(chunks)
        if stop_button:
            self.stop_ts = self.client.post(
                self.target, f"{view.agent} is working on it",
                idempotency_key=f"stop:{self.run_id}",
                controls=(Control("stop", "Stop", self.run_id),))

    def _append(self, chunks: list[dict[str, Any]]) -> None:
        if not chunks:
            return
        with translated(f"chat.appendStream in {self.target.channel}"):
            self.client.web.chat_appendStream(channel=self.target.channel, ts=self.ts,
                                              chunks=chunks)
        self.stream.commit(chunks)

    def _recipient(self) -> str:
        """Who the stream is for: the author of the thread's first message."""
        with translated(f"conversations.replies {self.target.channel}"):
            answer = self.client.web.conversations_replies(channel=self.target.channel,
                                                           ts=self.target.thread, limit=1)
        messages = answer.get("messages") or []
        user = messages[0].get("user") if messages and isinstance(messages[0], dict) else None
        return str(user or "")

    def _drop_stop(self) -> None:
        """Delete the Stop message (best effort: a leftover button only stops nothing)."""
        if not self.stop_ts:
            return
        stop_ts, self.stop_ts = self.stop_ts, ""
        try:
            self.client.delete(self.target, stop_ts)
        except ChatError as exc:
            log.warning("slack: the Stop message of run %s not deleted: %s", self.run_id, exc)
