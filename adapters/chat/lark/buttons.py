"""Signed values for the buttons the bridge puts on Feishu/Lark cards.

A card button's callback value comes back from the member's client as an
object the client could forge (docs open.feishu.cn "card callback
communication": ``action.value`` is what the card carried). So every value the
bridge posts is signed (:mod:`bridge.signed_controls`: run id, conversation,
chat, who may press it, action, policy fingerprint, expiry, nonce, key version;
HMAC-SHA256 with the key in the state dir's ``control-keys.json``, rotated by
``bridge keys rotate``), and a click is honoured only when the signature,
expiry, chat, operator and single use check out here, and then the
conversation finds the run still live (:meth:`actors.scope.Scope._click`).
Anything else is refused with a toast that says no more than "not available".

The conversation in a value is the thread root of the target (``-`` for the
chat itself).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from adapters.chat.control_keys import load_key_ring
from bridge.model import Control, Target
from bridge.signed_controls import (
    ControlClaims,
    ControlRefused,
    KeyRing,
    NonceLedger,
    claims_for,
    sign,
    verify_signed,
)

#: How long a posted button is honoured (seconds): longer than any run should last.
BUTTON_TTL_S = 24 * 3600
#: The conversation text of a target at a chat's top level.
CHAT_ITSELF = "-"

Refused = ControlRefused


class ButtonSigner:
    """Signs the values of buttons and checks those of clicks (thread-safe).

    The key ring is read from the state dir once, on first use.

    Args:
        state_dir: The bridge's state dir.
        ttl_s: How long a button is honoured (seconds).
    """

    def __init__(self, state_dir: Path, *, ttl_s: int = BUTTON_TTL_S) -> None:
        self.state_dir = state_dir
        self.ttl_s = ttl_s
        self._ring: KeyRing | None = None
        self._seen = NonceLedger()
        self._lock = threading.Lock()

    def ring(self) -> KeyRing:
        """The keys (read from the state dir on first use).

        Raises:
            OSError: the key file cannot be read or made.
            ValueError: the key file is malformed or readable by others.
        """
        with self._lock:
            if self._ring is None:
                self._ring = load_key_ring(self.state_dir)
            return self._ring

    def value(self, control: Control, target: Target) -> Mapping[str, str]:
        """The signed callback value of ``control`` posted in ``target``.

        Raises:
            ValueError: a field the claims refuse (e.g. no one may press it).
        """
        ring = self.ring()
        claims = claims_for(control.name, control.value, target.thread or CHAT_ITSELF,
                            target.channel, control.for_users, control.policy or "-",
                            now=time.time(), ttl_s=self.ttl_s, key_version=ring.current,
                            nonce=secrets.token_urlsafe(16))
        return sign(claims, ring)

    def check(self, value: object, *, clicker: str, chat_id: str) -> ControlClaims:
        """Check a click's value (and spend it: a value is honoured once).

        Args:
            value: The ``action.value`` the click carried.
            clicker: The clicker's ``open_id``.
            chat_id: The chat the click came from.

        Returns:
            The claims; :func:`thread_of` gives the conversation's thread.

        Raises:
            ControlRefused: why (for the log only).
        """
        ring = self.ring()
        with self._lock:
            return verify_signed(value, ring, now=time.time(), clicker=clicker,
                                 chat_id=chat_id, seen=self._seen)


def thread_of(claims: ControlClaims) -> str:
    """The thread of the conversation a checked value names (empty: the chat itself)."""
    return "" if claims.scope == CHAT_ITSELF else claims.scope
