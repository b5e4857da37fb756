"""Signed button values (issue 14): a click is honoured once, only as the bridge signed it."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.chat.control_keys import KEY_FILE, KeyFileError, load_key_ring, rotate
from bridge.signed_controls import (
    FIELDS,
    ControlClaims,
    ControlRefused,
    KeyRing,
    NonceLedger,
    claims_for,
    sign,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.5
TTL_S = 3600
SCOPE = "lark:echo:tenant:oc_chat"
RING = KeyRing({1: b"\x01" * 32}, 1)
NONCE = "AAAAAAAAAAAAAAAAAAAAAA"  # 22 characters: 128 bits


def make_claims(*, ring: KeyRing = RING, nonce: str = NONCE) -> ControlClaims:
    return claims_for("stop", "run-1", SCOPE, "oc_chat", ("ou_alice", "ou_admin"), "pf-1",
                      now=NOW, ttl_s=TTL_S, key_version=ring.current, nonce=nonce)


def check(value: object, *, ring: KeyRing = RING, seen: NonceLedger | None = None,
          now: float = NOW + 1, clicker: str = "ou_alice", chat_id: str = "oc_chat",
          scope: str = SCOPE, live_run: str | None = "run-1",
          policy: str = "pf-1") -> ControlClaims:
    return verify(value, ring, now=now, clicker=clicker, chat_id=chat_id, scope=scope,
                  live_run=live_run, policy=policy,
                  seen=seen if seen is not None else NonceLedger())


def refused(value: object, **kwargs: object) -> str:
    """The reason ``value`` is refused (fails the test when it is honoured)."""
    with pytest.raises(ControlRefused) as info:
        check(value, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


# --------------------------------------------------------------------------- sign and verify


def test_round_trip_gives_back_the_claims_and_uses_the_nonce() -> None:
    claims = make_claims()
    value = sign(claims, RING)
    assert set(value) == {*FIELDS, "sig"} and all(isinstance(v, str) for v in value.values())
    assert value["r"] == "run-1" and value["o"] == "ou_alice,ou_admin" and value["v"] == "1"
    assert value["e"] == str(int(NOW) + TTL_S)
    seen = NonceLedger()
    assert check(value, seen=seen) == claims
    assert NONCE in seen and len(seen) == 1
    # The other operator (an admin) is allowed too, on a fresh button.
    other = sign(make_claims(nonce="B" * 22), RING)
    assert check(other, clicker="ou_admin", seen=seen).operators == ("ou_alice", "ou_admin")


def test_claims_for_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        claims_for("stop", "run-1", SCOPE, "oc", ("ou_a",), "pf", now=NOW, ttl_s=0,
                   key_version=1, nonce=NONCE)
    with pytest.raises(ValueError):  # too short a nonce
        claims_for("stop", "run-1", SCOPE, "oc", ("ou_a",), "pf", now=NOW, ttl_s=60,
                   key_version=1, nonce="short")
    with pytest.raises(ValueError):  # an operator id would split in two
        claims_for("stop", "run-1", SCOPE, "oc", ("ou_a,ou_b",), "pf", now=NOW, ttl_s=60,
                   key_version=1, nonce=NONCE)
    with pytest.raises(ValueError):  # nobody could press it
        claims_for("stop", "run-1", SCOPE, "oc", (), "pf", now=NOW, ttl_s=60, key_version=1,
                   nonce=NONCE)
    with pytest.raises(ValueError):  # not a version of the ring
        sign(claims_for("stop", "run-1", SCOPE, "oc", ("ou_a",), "pf", now=NOW, ttl_s=60,
                        key_version=7, nonce=NONCE), RING)


def test_tampered_field_is_a_bad_signature() -> None:
    value = sign(make_claims(), RING)
    assert refused({**value, "r": "run-2"}, live_run="run-2") == "bad signature"
    assert refused({**value, "o": "ou_mallory"}, clicker="ou_mallory") == "bad signature"
    later = str(int(value["e"]) + 86_400)
    assert refused({**value, "e": later}) == "bad signature"


def test_tampered_signature_is_refused() -> None:
    value = sign(make_claims(), RING)
    first = "B" if value["sig"][0] != "B" else "C"
    assert refused({**value, "sig": first + value["sig"][1:]}) == "bad signature"
    other_key = sign(make_claims(), KeyRing({1: b"\x02" * 32}, 1))
    assert refused(other_key) == "bad signature"


def test_expired() -> None:
    value = sign(make_claims(), RING)
    expires_at = int(NOW) + TTL_S
    assert check(value, now=expires_at - 0.001).run_id == "run-1"
    assert refused(value, now=expires_at) == "expired"
    assert refused(value, now=expires_at + 10_000) == "expired"


def test_replayed() -> None:
    value = sign(make_claims(), RING)
    seen = NonceLedger()
    check(value, seen=seen)
    assert refused(value, seen=seen) == "replayed"
    assert refused(dict(value), seen=seen, clicker="ou_admin") == "replayed"


def test_wrong_operator() -> None:
    value = sign(make_claims(), RING)
    assert refused(value, clicker="ou_mallory") == "wrong operator"
    assert refused(value, clicker="") == "wrong operator"


def test_wrong_chat() -> None:
    assert refused(sign(make_claims(), RING), chat_id="oc_other") == "wrong chat"


def test_wrong_run() -> None:
    value = sign(make_claims(), RING)
    assert refused(value, live_run="run-2") == "wrong run"  # another run is live now
    assert refused(value, live_run=None) == "wrong run"  # no run is live
    assert refused(value, scope=SCOPE + ":thread") == "wrong run"  # checked in another scope


def test_stale_policy() -> None:
    assert refused(sign(make_claims(), RING), policy="pf-2") == "stale policy"


def test_unknown_key_version() -> None:
    ring2 = KeyRing({2: b"\x02" * 32}, 2)
    value = sign(make_claims(ring=ring2), ring2)
    assert refused(value) == "unknown key"
    assert check(value, ring=KeyRing({1: b"\x01" * 32, 2: b"\x02" * 32}, 1)).key_version == 2


def _malformed_values() -> list[object]:
    value = sign(make_claims(), RING)
    missing = dict(value)
    del missing["n"]
    return [
        missing,
        {**value, "x": "1"},  # an extra field
        {**value, "e": int(value["e"])},  # not a string
        {**value, "o": ["ou_alice"]},
        {**value, "e": "0" + value["e"]},  # a second spelling of the same number
        {**value, "e": "+" + value["e"]},
        {**value, "v": " 1"},
        {**value, "o": "ou_alice,,ou_admin"},
        {**value, "n": "short"},
        {**value, "sig": value["sig"] + "A"},
        {**value, "r": "x" * 5000},
        list(value.items()),
        json.dumps(value),
        None,
        42,
    ]


@pytest.mark.parametrize("value", _malformed_values())
def test_malformed(value: object) -> None:
    assert refused(value) == "malformed"


@pytest.mark.parametrize("kwargs", [
    {"clicker": "ou_mallory"}, {"chat_id": "oc_other"}, {"live_run": "run-2"},
    {"policy": "pf-2"}, {"now": NOW + TTL_S + 1},
])
def test_a_refused_click_does_not_use_up_the_button(kwargs: dict[str, object]) -> None:
    value = sign(make_claims(), RING)
    seen = NonceLedger()
    refused(value, seen=seen, **kwargs)
    assert NONCE not in seen
    assert check(value, seen=seen).nonce == NONCE
    assert NONCE in seen


_SIGNED = sign(make_claims(), RING)


@given(name=st.sampled_from((*FIELDS, "sig")),
       new=st.one_of(st.text(max_size=60), st.integers(), st.none(),
                     st.lists(st.text(max_size=5), max_size=2)))
def test_any_single_field_change_is_refused(name: str, new: object) -> None:
    if new == _SIGNED[name]:
        return
    changed = {**_SIGNED, name: new}
    with pytest.raises(ControlRefused):
        check(changed)


@given(name=st.sampled_from((*FIELDS, "sig")))
def test_any_missing_field_is_refused(name: str) -> None:
    changed = {key: text for key, text in _SIGNED.items() if key != name}
    with pytest.raises(ControlRefused) as info:
        check(changed)
    assert info.value.reason == "malformed"


# --------------------------------------------------------------------------- the ledger


def test_ledger_forgets_expired_nonces_on_insert() -> None:
    seen = NonceLedger()
    seen.add("a" * 22, 100, now=50)
    seen.add("b" * 22, 200, now=60)
    assert "a" * 22 in seen and len(seen) == 2
    seen.add("c" * 22, 300, now=100)  # a's control expired at 100
    assert "a" * 22 not in seen and "b" * 22 in seen and len(seen) == 2


def test_full_ledger_drops_the_soonest_expiring() -> None:
    seen = NonceLedger(capacity=3)
    for nonce, expires_at in (("x", 500), ("y", 300), ("z", 400)):
        seen.add(nonce, expires_at, now=0)
    seen.add("w", 600, now=0)
    assert "y" not in seen and {"x", "z", "w"} <= {n for n in "xyzw" if n in seen}
    assert len(seen) == 3
    with pytest.raises(ValueError):
        NonceLedger(capacity=0)


# --------------------------------------------------------------------------- the key file


def _key_texts(ring: KeyRing) -> list[str]:
    """Every spelling of the ring's keys that could leak."""
    texts = []
    for key in ring.keys.values():
        texts += [base64.urlsafe_b64encode(key).decode(), base64.b64encode(key).decode(),
                  key.hex(), repr(key)[2:-1]]
    return texts


def test_key_ring_repr_names_no_key() -> None:
    ring = KeyRing({1: b"\x01" * 32, 3: b"secret-key-bytes-of-32-chars-xx!"}, 3)
    assert repr(ring) == "KeyRing(versions=[1, 3], current=3)"
    assert "secret" not in str(ring)
    with pytest.raises(ValueError):
        KeyRing({1: b"short"}, 1)
    with pytest.raises(ValueError):
        KeyRing({1: b"\x01" * 32}, 2)


def test_key_file_is_created_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ring = load_key_ring(state)
    path = state / KEY_FILE
    assert ring.current == 1 and len(ring.keys[1]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_ring(state) == ring  # read back, not made anew
    assert not list(state.glob(".control-keys.*"))  # no temp file left


def test_rotation_keeps_old_buttons_until_their_version_is_dropped(tmp_path: Path) -> None:
    old_ring = load_key_ring(tmp_path)
    value = sign(make_claims(ring=old_ring), old_ring)
    assert rotate(tmp_path, keep=2) == 2
    ring = load_key_ring(tmp_path)
    assert sorted(ring.keys) == [1, 2] and ring.current == 2
    assert ring.keys[1] == old_ring.keys[1] and ring.keys[2] != old_ring.keys[1]
    assert check(value, ring=ring).key_version == 1
    assert sign(make_claims(ring=ring), ring)["v"] == "2"
    assert rotate(tmp_path, keep=2) == 3
    ring = load_key_ring(tmp_path)
    assert sorted(ring.keys) == [2, 3]
    assert refused(value, ring=ring) == "unknown key"
    assert rotate(tmp_path, keep=1) == 4 and sorted(load_key_ring(tmp_path).keys) == [4]
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        rotate(tmp_path, keep=0)


def test_exposed_or_corrupt_key_file_is_refused_without_its_keys(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path)
    path = tmp_path / KEY_FILE
    path.chmod(0o640)
    with pytest.raises(KeyFileError) as info:
        load_key_ring(tmp_path)
    assert "0640" in str(info.value)
    with pytest.raises(KeyFileError):
        rotate(tmp_path)
    path.chmod(0o600)
    text = path.read_text()
    path.write_text(text.replace('"current": 1', '"current": "one"'))
    with pytest.raises(KeyFileError) as info:
        load_key_ring(tmp_path)
    assert not any(key in str(info.value) for key in _key_texts(ring))
    path.write_text(text[:-5])  # cut short, inside a key
    with pytest.raises(KeyFileError) as info:
        load_key_ring(tmp_path)
    assert not any(key in str(info.value) for key in _key_texts(ring))


# --------------------------------------------------------------------------- bridge keys rotate


def _bridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bin" / "bridge"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_rotates_and_prints_no_key(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(textwrap.dedent("""
        [bridge]
        state_dir = "var"
        [fabric]
        center_url = "http://127.0.0.1:9/api"
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["*"]
    """), encoding="utf-8")
    state = tmp_path / "var"
    first = load_key_ring(state)
    value = sign(make_claims(ring=first), first)
    outputs = []
    for expected in (2, 3):
        result = _bridge("keys", "rotate", "-c", str(config))
        assert result.returncode == 0, result.stderr
        assert f"version {expected} is current" in result.stdout
        outputs.append(result.stdout + result.stderr)
        if expected == 2:
            assert check(value, ring=load_key_ring(state)).key_version == 1
    ring = load_key_ring(state)
    assert sorted(ring.keys) == [2, 3]
    assert refused(value, ring=ring) == "unknown key"
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    every_key = [*_key_texts(first), *_key_texts(ring)]
    assert not any(key in output for key in every_key for output in outputs)
    helped = _bridge("keys", "rotate", "--help")
    assert helped.returncode == 0
    assert "buttons already posted stay valid until they expire" in " ".join(
        helped.stdout.split())
