"""CardKit card entities: create, stream element content, settings, full update.

Rules (docs cardkit-v1 card/create, card-element/content, card/settings,
card/update; streaming-updates-openapi-overview; lark-oapi 1.7.5
``api/cardkit/v1/model/*_request.py``):

- ``POST /cardkit/v1/cards {type: "card_json", data: "<JSON>"}`` makes a card;
  ``config.streaming_mode`` true opens streaming.
- Every later op carries ``sequence``, which must be strictly above every
  earlier op's on that card, else 300317.
- Element content (``PUT …/elements/:element_id/content``) works only while
  streaming: after ``settings`` set ``streaming_mode`` false, or once the
  streaming timeout passed since it was opened (default 600 s, reported ~10
  min), it answers 300309.
- A card entity may be sent in one message only (a second send: 300315,
  the code is inferred).

Not thread-safe by itself: :class:`~adapters.chat.lark.double.state.Tenant`
calls it under its lock.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from adapters.chat.lark.double.model import (
    BAD_PARAMS,
    BAD_SEQUENCE,
    CARD_INVALID,
    CARD_NOT_FOUND,
    ELEMENT_NOT_FOUND,
    STREAM_CLOSED,
    Card,
    LarkError,
    find_element,
    loads_object,
    new_id,
)

#: Default streaming lifetime after it was opened, in seconds.
STREAM_TIMEOUT_S = 600.0


def _streaming(data: dict[str, Any]) -> bool:
    config = data.get("config")
    return bool(isinstance(config, dict) and config.get("streaming_mode"))


class CardStore:
    """Every CardKit card of the tenant (see the module docstring)."""

    def __init__(self) -> None:
        """Start empty, with the default streaming timeout."""
        self.cards: dict[str, Card] = {}
        self.stream_timeout_s = STREAM_TIMEOUT_S

    def get(self, card_id: str, app_id: str | None = None) -> Card:
        """A card (of ``app_id`` when given).

        Raises:
            LarkError: 300301 for an unknown card (or another app's).
        """
        card = self.cards.get(card_id)
        if card is None or (app_id is not None and card.app_id != app_id):
            raise LarkError(CARD_NOT_FOUND, f"card not found: {card_id}")
        self._tick(card)
        return card

    def view(self, card_id: str) -> dict[str, Any]:
        """The card's current JSON (element contents applied) plus ``streaming``."""
        card = self.get(card_id)
        return {**copy.deepcopy(card.data), "streaming": card.streaming}

    def create(self, app_id: str, body: dict[str, Any]) -> Card:
        """``POST /cardkit/v1/cards``.

        Raises:
            LarkError: 99992402 on a wrong ``type``; 230099 on bad card JSON.
        """
        if body.get("type") != "card_json" or not isinstance(body.get("data"), str):
            raise LarkError(BAD_PARAMS, "field validation failed: type must be card_json "
                                        "and data a JSON string")
        data = loads_object(body["data"], CARD_INVALID, "card json")
        card = Card(card_id=new_id("7", 9), app_id=app_id, data=data)
        self._set_streaming(card, _streaming(data))
        self.cards[card.card_id] = card
        return card

    def content(self, app_id: str, card_id: str, element_id: str,
                body: dict[str, Any]) -> Card:
        """``PUT …/elements/:element_id/content {content, sequence, uuid}``.

        Raises:
            LarkError: 300301, 300302 (unknown element), 300317, 300309.
        """
        card = self.get(card_id, app_id)
        sequence = self._sequence(card, body)
        element = find_element(card.data, element_id)
        if element is None:
            raise LarkError(ELEMENT_NOT_FOUND, f"element not found: {element_id}")
        if not card.streaming:
            raise LarkError(STREAM_CLOSED, "card is not in streaming mode")
        if not isinstance(body.get("content"), str):
            raise LarkError(BAD_PARAMS, "field validation failed: content")
        element["content"] = body["content"]
        card.sequence = sequence
        return card

    def settings(self, app_id: str, card_id: str, body: dict[str, Any]) -> Card:
        """``PATCH …/settings {settings: "<JSON>", sequence}``: merge ``config``
        (and ``card_link``) into the card.

        Raises:
            LarkError: 300301, 300317, 99992402 on bad settings JSON.
        """
        card = self.get(card_id, app_id)
        sequence = self._sequence(card, body)
        settings = loads_object(str(body.get("settings", "")), BAD_PARAMS, "settings")
        config = settings.get("config")
        if isinstance(config, dict):
            merged = dict(card.data.get("config") or {})
            merged.update(config)
            card.data["config"] = merged
        if "card_link" in settings:
            card.data["card_link"] = settings["card_link"]
        self._set_streaming(card, _streaming(card.data))
        card.sequence = sequence
        return card

    def update(self, app_id: str, card_id: str, body: dict[str, Any]) -> Card:
        """``PUT /cardkit/v1/cards/:card_id {card: {type, data}, sequence}``.

        Raises:
            LarkError: 300301, 300317, 99992402, 230099.
        """
        card = self.get(card_id, app_id)
        sequence = self._sequence(card, body)
        new = body.get("card")
        if not isinstance(new, dict) or new.get("type") != "card_json":
            raise LarkError(BAD_PARAMS, "field validation failed: card")
        card.data = loads_object(str(new.get("data", "")), CARD_INVALID, "card json")
        self._set_streaming(card, _streaming(card.data))
        card.sequence = sequence
        return card

    def _sequence(self, card: Card, body: dict[str, Any]) -> int:
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise LarkError(BAD_PARAMS, "field validation failed: sequence")
        if sequence <= card.sequence:
            raise LarkError(BAD_SEQUENCE, f"sequence {sequence} is not above "
                                          f"the card's last ({card.sequence})")
        return sequence

    def _set_streaming(self, card: Card, on: bool) -> None:
        if on and not card.streaming:
            card.opened_at = time.monotonic()
        card.streaming = on

    def _tick(self, card: Card) -> None:
        """Close streaming whose timeout passed (config follows, as on the platform)."""
        if card.streaming and time.monotonic() - card.opened_at >= self.stream_timeout_s:
            card.streaming = False
            config = card.data.get("config")
            if isinstance(config, dict):
                config["streaming_mode"] = False
