"""A run's live status on Feishu/Lark: one CardKit card, streamed in place.

As the docs' streaming update guide (open.feishu.cn cardkit-v1
"streaming-updates-openapi-overview") and lark-oapi's own channel layer
(``channel/outbound/streaming/markdown_stream.py``) do it:

1. ``POST cardkit/v1/cards`` a JSON 2.0 card in streaming mode: the status as
   one Markdown element, then a Stop button with a signed value;
2. send it **once** as an ``interactive`` message referencing the card id (a reply
   in the run's thread);
3. each later snapshot replaces the element's text
   (``PUT …/elements/status/content``) with a strictly rising ``sequence``
   (the platform refuses an old one with ``300317``; the runtime edits at most once
   a second, the platform allows 10 operations a second per card);
4. at the end: streaming off (``PATCH …/settings``), then the whole card
   replaced by the final text without the button (``PUT cardkit/v1/cards/:id``).

The platform closes streaming by itself about 10 minutes after it opened
(``300309``/``200850`` on the next update): the card is then replaced whole on
every update, so a long run keeps showing its progress. Any other refusal
raises, and the runtime falls back to a status message it edits (the
:class:`~adapters.chat.lark.client.LarkClient` card, then post, then text chain).
"""

from __future__ import annotations

import json
import logging

from adapters.chat.lark import render
from adapters.chat.lark.api import Refusal
from adapters.chat.lark.client import LarkClient, uuid_of
from bridge.errors import ChatError
from bridge.model import Control, Target
from bridge.run_view import RunView

log = logging.getLogger(__name__)

#: Streaming was closed (after about 10 minutes, or by us): replace the card whole.
STREAMING_CLOSED = frozenset({300309, 200850})
#: The ``sequence`` was not above the card's last: move past it and try once more.
SEQUENCE_OLD = 300317


class LarkLiveStatus:
    """One run's streamed status card (:class:`bridge.platform.LiveStatus`).

    Args:
        client: Calls as the app.
        target: The run's chat and thread.
        run_id: The run.
    """

    def __init__(self, client: LarkClient, target: Target, run_id: str) -> None:
        self.client = client
        self.api = client.api
        self.target = target
        self.run_id = run_id
        self.card_id = ""
        self.message_id = ""
        self.sequence = 0
        self.streaming = True

    def show(self, view: RunView) -> None:
        """Create and send the card (first call), else update its text.

        Raises:
            bridge.errors.ChatError: the platform refused (the runtime falls back).
        """
        text = render.render_status(view)
        if not self.card_id:
            self._open(text, view)
            return
        if not self.message_id:
            self._send()  # the card's send failed before: again, with the same uuid
        if self.streaming:
            try:
                self._op("PUT", "/open-apis/cardkit/v1/cards/:card_id/elements/:element_id/content",
                         {"content": text}, element=True)
                return
            except Refusal as exc:
                if exc.code not in STREAMING_CLOSED:
                    raise
                log.info("lark live status of run %s: streaming closed by the platform; "
                         "replacing the card whole from now on", self.run_id)
                self.streaming = False
        self._replace(render.card(text, buttons=self._buttons(view)))

    def finish(self, view: RunView) -> None:
        """Close streaming and show the final text without the Stop button.

        Raises:
            bridge.errors.ChatError: the platform refused.
        """
        text = render.render_status(view)
        if not self.card_id:
            self._open(text, view, final=True)
            return
        if not self.message_id:
            self._send()
        if self.streaming:
            try:
                self._op("PATCH", "/open-apis/cardkit/v1/cards/:card_id/settings",
                         {"settings": json.dumps({"config": {"streaming_mode": False}})})
            except Refusal as exc:
                if exc.code not in STREAMING_CLOSED:
                    raise
            self.streaming = False
        self._replace(render.card(text))

    def _buttons(self, view: RunView) -> list[dict[str, object]]:
        if view.final:
            return []
        control = Control("stop", "Stop", self.run_id, for_users=view.stoppers,
                          policy=view.policy)
        value = self.client.button_value
        if value is None:
            return []
        try:
            return [render.button(control.label, value(control, self.target),
                                  name=control.name)]
        except ValueError as exc:  # e.g. no one named who may press it: no button
            log.warning("run %s: Stop button not signed (%s): left out", self.run_id, exc)
            return []

    def _open(self, text: str, view: RunView, *, final: bool = False) -> None:
        card = render.card(text, buttons=[] if final else self._buttons(view),
                           streaming=not final, summary=f"{view.agent} · {view.state}")
        data = self.api.call("POST", "/open-apis/cardkit/v1/cards",
                             what=f"status card of run {self.run_id}",
                             body={"type": "card_json", "data": json.dumps(card,
                                                                           ensure_ascii=False)})
        card_id = str(data.get("card_id", ""))
        if not card_id:
            raise ChatError(f"status card of run {self.run_id}: no card id in the answer")
        self.card_id = card_id
        self.streaming = not final
        self._send()

    def _send(self) -> None:
        """Send the card as a message. Keyed by the card: sent again after a failure it
        is the same message (the platform's uuid dedupe); a new card (after a restart)
        is a new message, not the first card's, which a run key would return for an hour."""
        self.message_id = self.client.send_card(
            self.target, render.card_ref_content(self.card_id),
            uuid=uuid_of(f"live:{self.run_id}:{self.card_id}"))

    def _replace(self, card: dict[str, object]) -> None:
        self._op("PUT", "/open-apis/cardkit/v1/cards/:card_id",
                 {"card": {"type": "card_json", "data": json.dumps(card, ensure_ascii=False)}})

    def _op(self, method: str, uri: str, body: dict[str, object], *,
            element: bool = False) -> None:
        """One card operation with the next ``sequence`` (moved past an old one once)."""
        paths = {"card_id": self.card_id}
        if element:
            paths["element_id"] = render.STATUS_ELEMENT
        for attempt in (1, 2):
            self.sequence += 1
            try:
                self.api.call(method, uri, what=f"status card of run {self.run_id}",
                              paths=paths, body={**body, "sequence": self.sequence,
                                                 "uuid": uuid_of(f"{self.card_id}:"
                                                                 f"{self.sequence}")},
                              expect=STREAMING_CLOSED | {SEQUENCE_OLD})
                return
            except Refusal as exc:
                if exc.code != SEQUENCE_OLD or attempt == 2:
                    raise
                self.sequence += 100
