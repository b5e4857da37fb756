"""Signed button values: a click is honoured only for what the bridge itself put in the button.

Why: on Feishu/Lark a card button's callback carries back the ``value`` object
the button was posted with, but it is the member's client that sends it (see
open.feishu.cn, Feishu cards, "card callback communication" (卡片回传交互):
``action.value`` is returned as configured, beside the operator's ``open_id``
and the chat's ``open_chat_id``). A member could send a value the bridge never
posted, e.g. a Stop for someone else's run. Issue 14's contract is therefore:
the value carries the run id, scope id, chat id, the operators allowed to
press it, the action, the policy fingerprint, an expiry, a nonce and a key
version, HMAC-signed with a key from the state dir (rotatable); a click is
honoured only if the signature, expiry and nonce (single use) check out, the
clicker is allowed, and the run is still the live one in that scope. Anything
else is refused without detail: :class:`ControlRefused` carries a short reason
for the log; a member is shown nothing more than "not available".

The value (:func:`sign`) is a flat object of strings with short names:

====  ==========================================================
``a``  action, e.g. ``stop``
``r``  run id
``s``  scope id (the stable text of the conversation's key)
``c``  chat id (the platform's id of the chat it was posted in)
``o``  operators: member ids allowed to press it, comma-separated
``p``  policy fingerprint
``e``  expiry, whole epoch seconds (decimal)
``n``  nonce (URL-safe base64 text, at least 128 bits)
``v``  key version (decimal)
``sig`` HMAC-SHA256 over the canonical encoding of the fields above
       (:func:`canonical_bytes`), URL-safe base64 without padding
====  ==========================================================

This module is pure: no I/O, no clock, no randomness, no threads. The caller
passes the time, the nonce (``secrets.token_urlsafe(16)``) and the keys
(``adapters/chat/control_keys.py`` keeps them in the state dir).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

__all__ = [
    "FIELDS",
    "MAX_FIELD_CHARS",
    "MIN_KEY_BYTES",
    "MIN_NONCE_CHARS",
    "REASONS",
    "ControlClaims",
    "ControlRefused",
    "KeyRing",
    "NonceLedger",
    "canonical_bytes",
    "claims_for",
    "sign",
    "verify",
]

#: The signed fields of a value, in the order of the canonical encoding.
FIELDS: Final = ("a", "r", "s", "c", "o", "p", "e", "n", "v")
#: The name of the signature field.
SIG: Final = "sig"
#: The longest field a value may carry, in characters (bounds the work a forged value costs).
MAX_FIELD_CHARS: Final = 1000
#: The shortest nonce, in characters: 22 URL-safe base64 characters are 128 bits.
MIN_NONCE_CHARS: Final = 22
#: The shortest key, in bytes (HMAC-SHA256's block is 64 bytes, its output 32).
MIN_KEY_BYTES: Final = 32
#: Separates operator ids in the ``o`` field (so no operator id may contain it).
OPERATOR_SEPARATOR: Final = ","
#: Prefixes the canonical encoding: a signature for anything else never fits a value.
DOMAIN: Final = "bridge.control.v1"

#: Why a click is refused (:attr:`ControlRefused.reason`), for the log.
REASONS: Final = frozenset({
    "malformed", "unknown key", "bad signature", "expired", "wrong chat", "wrong run",
    "stale policy", "wrong operator", "replayed",
})

_NONCE = re.compile(r"[A-Za-z0-9_-]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,17}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")


class ControlRefused(Exception):
    """A click on a signed control is not honoured.

    The reason is for the log only; a member is told no more than "not available".

    Attributes:
        reason: One of :data:`REASONS`.
    """

    def __init__(self, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


def _text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise ValueError(f"{attribute.name} must be 1 to {MAX_FIELD_CHARS} characters")


def _operators(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
               value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("operators must name at least one member")
    if any(not isinstance(item, str) or not item or OPERATOR_SEPARATOR in item
           for item in value):
        raise ValueError(f"operator ids must be non-empty text without {OPERATOR_SEPARATOR!r}")
    if len(OPERATOR_SEPARATOR.join(value)) > MAX_FIELD_CHARS:
        raise ValueError(f"operators must fit in {MAX_FIELD_CHARS} characters")


def _as_tuple(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


def _nonce(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if (not isinstance(value, str) or not MIN_NONCE_CHARS <= len(value) <= MAX_FIELD_CHARS
            or not _NONCE.fullmatch(value)):
        raise ValueError(f"nonce must be at least {MIN_NONCE_CHARS} URL-safe base64 characters")


def _whole(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**18:
        raise ValueError(f"{attribute.name} must be a whole number from 0 below 10**18")


@attrs.frozen
class ControlClaims:
    """What a signed control says: who may do what to which run, where, until when.

    Attributes:
        action: What the control does, e.g. ``stop``.
        run_id: The run it acts on.
        scope: The conversation's id as stable text (``str`` of its scope key).
        chat_id: The platform's id of the chat the control is posted in.
        operators: Ids of the members allowed to press it (the run's requesters
            and the agent's admins, by id); none may contain a comma.
        policy: The policy fingerprint the run was started under.
        expires_at: When it stops being honoured, whole epoch seconds.
        nonce: Random URL-safe base64 text of at least 128 bits
            (``secrets.token_urlsafe(16)``); a click on it is honoured once.
        key_version: The version of the key it is signed with.

    Raises:
        ValueError: when a field is empty, too long (over :data:`MAX_FIELD_CHARS`
            characters) or of the wrong shape.
    """

    action: str = attrs.field(validator=_text)
    run_id: str = attrs.field(validator=_text)
    scope: str = attrs.field(validator=_text)
    chat_id: str = attrs.field(validator=_text)
    operators: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_operators)
    policy: str = attrs.field(validator=_text)
    expires_at: int = attrs.field(validator=_whole)
    nonce: str = attrs.field(validator=_nonce)
    key_version: int = attrs.field(validator=_whole)


def _freeze_keys(keys: Mapping[int, bytes]) -> Mapping[int, bytes]:
    return MappingProxyType(dict(keys))


@attrs.frozen
class KeyRing:
    """The keys that sign controls, by version: sign with the current, verify with any.

    Its repr names the versions only, never the key bytes.

    Attributes:
        keys: Key bytes (at least :data:`MIN_KEY_BYTES` each) by version (>= 1).
            Old versions stay so that controls already posted keep working until
            they expire.
        current: The version new controls are signed with; one of ``keys``.

    Raises:
        ValueError: when ``current`` is not in ``keys``, a version is below 1 or
            a key is shorter than :data:`MIN_KEY_BYTES`.
    """

    keys: Mapping[int, bytes] = attrs.field(converter=_freeze_keys, repr=False, hash=False)
    current: int

    def __attrs_post_init__(self) -> None:
        for version, key in self.keys.items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ValueError(f"key versions must be whole numbers >= 1, got {version!r}")
            if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key version {version} must be at least {MIN_KEY_BYTES} bytes")
        if self.current not in self.keys:
            raise ValueError(f"current key version {self.current} is not in the ring")

    def __repr__(self) -> str:
        return f"KeyRing(versions={sorted(self.keys)}, current={self.current})"


def claims_for(action: str, run_id: str, scope: str, chat_id: str, operators: Iterable[str],
               policy: str, *, now: float, ttl_s: int, key_version: int,
               nonce: str) -> ControlClaims:
    """The claims of a new control, valid ``ttl_s`` seconds from ``now``.

    Args:
        action: What the control does, e.g. ``stop``.
        run_id: The run it acts on.
        scope: The conversation's id as stable text.
        chat_id: The platform's id of the chat it is posted in.
        operators: Ids of the members allowed to press it (duplicates are dropped,
            the first kept).
        policy: The policy fingerprint of the run.
        now: The current time, epoch seconds.
        ttl_s: How long it is honoured, whole seconds (> 0).
        key_version: The version to sign with, normally ``ring.current``.
        nonce: Fresh random text, ``secrets.token_urlsafe(16)``.

    Returns:
        The claims; ``expires_at`` is ``int(now) + ttl_s``.

    Raises:
        ValueError: when ``ttl_s`` is not positive or a field is invalid (see
            :class:`ControlClaims`).
    """
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a whole number of seconds > 0, got {ttl_s!r}")
    return ControlClaims(action, run_id, scope, chat_id, tuple(dict.fromkeys(operators)),
                         policy, int(now) + ttl_s, nonce, key_version)


def _fields(claims: ControlClaims) -> dict[str, str]:
    """The claims as the value's fields (without the signature)."""
    return {"a": claims.action, "r": claims.run_id, "s": claims.scope, "c": claims.chat_id,
            "o": OPERATOR_SEPARATOR.join(claims.operators), "p": claims.policy,
            "e": str(claims.expires_at), "n": claims.nonce, "v": str(claims.key_version)}


def canonical_bytes(claims: ControlClaims) -> bytes:
    """The bytes the signature covers: a JSON array of :data:`DOMAIN` and the fields.

    Args:
        claims: What to encode.

    Returns:
        ASCII JSON (non-ASCII escaped), one string per field in :data:`FIELDS` order,
        so that no two different claims encode alike.
    """
    fields = _fields(claims)
    return json.dumps([DOMAIN, *(fields[name] for name in FIELDS)], ensure_ascii=True,
                      separators=(",", ":")).encode("ascii")


def _signature(key: bytes, claims: ControlClaims) -> str:
    digest = hmac.new(key, canonical_bytes(claims), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(claims: ControlClaims, ring: KeyRing) -> dict[str, str]:
    """The value to put in the button: the claims' fields and their signature.

    Args:
        claims: What the control allows (signed with the key of ``claims.key_version``).
        ring: The keys.

    Returns:
        The fields of :data:`FIELDS` and ``sig``, each a string (about 200
        characters plus the ids and the operators).

    Raises:
        ValueError: when ``claims.key_version`` is not in ``ring``.
    """
    key = ring.keys.get(claims.key_version)
    if key is None:
        raise ValueError(f"key version {claims.key_version} is not in the ring")
    return {**_fields(claims), SIG: _signature(key, claims)}


def _parse(value: object) -> tuple[ControlClaims, str]:
    """The claims and signature of a value, checked for shape only.

    Raises:
        ControlRefused: ``malformed`` when it is not a mapping of exactly the
            expected string fields in their canonical form.
    """
    if not isinstance(value, Mapping) or set(value) != {*FIELDS, SIG}:
        raise ControlRefused("malformed")
    fields: dict[str, str] = {}
    for name in (*FIELDS, SIG):
        item: Any = value[name]
        if not isinstance(item, str) or len(item) > MAX_FIELD_CHARS:
            raise ControlRefused("malformed")
        fields[name] = item
    if (not _DECIMAL.fullmatch(fields["e"]) or not _DECIMAL.fullmatch(fields["v"])
            or not _SIG.fullmatch(fields[SIG])):
        raise ControlRefused("malformed")
    try:
        claims = ControlClaims(fields["a"], fields["r"], fields["s"], fields["c"],
                               tuple(fields["o"].split(OPERATOR_SEPARATOR)), fields["p"],
                               int(fields["e"]), fields["n"], int(fields["v"]))
    except ValueError:
        raise ControlRefused("malformed") from None
    if _fields(claims) != {name: fields[name] for name in FIELDS}:  # one text per claims
        raise ControlRefused("malformed")
    return claims, fields[SIG]


def verify(value: object, ring: KeyRing, *, now: float, clicker: str, chat_id: str,
           scope: str, live_run: str | None, policy: str,
           seen: NonceLedger) -> ControlClaims:
    """Check a click's value; honour it at most once.

    Call it where the live run is known (the conversation's own actor). The
    checks run in this order, and the first that fails is the reason:
    ``malformed`` (not a mapping of exactly the expected string fields),
    ``unknown key`` (its version is not in ``ring``: rotated out), ``bad
    signature`` (compared in constant time), ``expired`` (``now`` is at or past
    its expiry), ``wrong chat`` (posted in another chat), ``wrong run`` (for
    another conversation, or its run is not the live one there), ``stale
    policy`` (the policy changed since it was posted), ``wrong operator`` (the
    clicker is not one of its operators), ``replayed`` (its nonce was honoured
    before). Only a value that passes every check has its nonce recorded in
    ``seen``, so a refused click never uses up the button.

    Args:
        value: The value the click carried back (anything: it comes from a client).
        ring: The keys; any version still in it verifies.
        now: The current time, epoch seconds.
        clicker: The id of the member who clicked, as the platform reports it.
        chat_id: The chat the click came from, as the platform reports it.
        scope: The id of the conversation checking it (stable text of its key).
        live_run: The run live in that conversation now (None: none).
        policy: The policy fingerprint in force there now.
        seen: The nonces honoured so far; the value's nonce is added to it.

    Returns:
        The verified claims.

    Raises:
        ControlRefused: with one of :data:`REASONS`; log the reason, show the
            member no more than "not available".
    """
    claims = _authentic(value, ring, now=now, chat_id=chat_id)
    if claims.scope != scope or live_run is None or claims.run_id != live_run:
        raise ControlRefused("wrong run")
    if claims.policy != policy:
        raise ControlRefused("stale policy")
    if clicker not in claims.operators:
        raise ControlRefused("wrong operator")
    if claims.nonce in seen:
        raise ControlRefused("replayed")
    seen.add(claims.nonce, claims.expires_at, now=now)
    return claims


def verify_signed(value: object, ring: KeyRing, *, now: float, clicker: str, chat_id: str,
                  seen: NonceLedger) -> ControlClaims:
    """Check what a platform's adapter can check of a click, before it knows the live run.

    The checks of :func:`verify` without ``wrong run`` and ``stale policy``, in the
    same order: ``malformed``, ``unknown key``, ``bad signature``, ``expired``,
    ``wrong chat``, ``wrong operator``, ``replayed``. A value that passes has its
    nonce recorded in ``seen``; the caller hands the claims to the conversation,
    which checks that ``claims.run_id`` is its live run (a click on a run no longer
    live is refused there, and its button is spent: that run is over).

    Args:
        value: The value the click carried back (anything: it comes from a client).
        ring: The keys; any version still in it verifies.
        now: The current time, epoch seconds.
        clicker: The id of the member who clicked, as the platform reports it.
        chat_id: The chat the click came from, as the platform reports it.
        seen: The nonces honoured so far; the value's nonce is added to it.

    Returns:
        The verified claims.

    Raises:
        ControlRefused: with one of :data:`REASONS`.
    """
    claims = _authentic(value, ring, now=now, chat_id=chat_id)
    if clicker not in claims.operators:
        raise ControlRefused("wrong operator")
    if claims.nonce in seen:
        raise ControlRefused("replayed")
    seen.add(claims.nonce, claims.expires_at, now=now)
    return claims


def _authentic(value: object, ring: KeyRing, *, now: float, chat_id: str) -> ControlClaims:
    """The claims of a well-formed value signed by a key of ``ring``, unexpired, for
    ``chat_id``.

    Raises:
        ControlRefused: ``malformed``, ``unknown key``, ``bad signature``, ``expired`` or
            ``wrong chat``.
    """
    claims, signature = _parse(value)
    key = ring.keys.get(claims.key_version)
    if key is None:
        raise ControlRefused("unknown key")
    if not hmac.compare_digest(_signature(key, claims).encode("ascii"),
                               signature.encode("ascii")):
        raise ControlRefused("bad signature")
    if now >= claims.expires_at:
        raise ControlRefused("expired")
    if claims.chat_id != chat_id:
        raise ControlRefused("wrong chat")
    return claims


class NonceLedger:
    """The nonces of honoured controls, each kept until its control expires.

    Bounded: each :meth:`add` first forgets the nonces whose controls have
    expired (a click on those is refused as ``expired`` anyway); when
    ``capacity`` nonces are still live, it forgets the one that expires
    soonest (with one ttl for every control: the oldest), which re-opens only
    that control to one more click until it expires. With a capacity of
    100,000 and Stop buttons that live an hour that takes over 27 honoured
    clicks a second.

    Not thread-safe: the caller serializes access (one actor owns it, or a lock).

    Args:
        capacity: The most nonces kept (> 0).

    Raises:
        ValueError: when ``capacity`` is not positive.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __contains__(self, nonce: object) -> bool:
        """Whether ``nonce`` was recorded and not forgotten since."""
        return nonce in self._expiry

    def __len__(self) -> int:
        """How many nonces are kept."""
        return len(self._expiry)

    def add(self, nonce: str, expires_at: int, *, now: float) -> None:
        """Record ``nonce`` until ``expires_at``.

        Args:
            nonce: The honoured control's nonce.
            expires_at: When its control expires, epoch seconds.
            now: The current time, epoch seconds (expired nonces are dropped).
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, old = heapq.heappop(heap)
            self._expiry.pop(old, None)
        if nonce in self._expiry:
            return
        while len(self._expiry) >= self.capacity:
            _, old = heapq.heappop(heap)
            self._expiry.pop(old, None)
        self._expiry[nonce] = expires_at
        heapq.heappush(heap, (expires_at, nonce))
