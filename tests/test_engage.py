"""The engage modes of bridge.engage, table-driven."""

from __future__ import annotations

import pytest

from bridge.engage import EngageGate, EngageRule, engages
from bridge.model import Inbound


def msg(content: str = "hello", *, addressed: bool = False, mentioned: bool = False,
        x_type: str = "work", stale: bool = False) -> Inbound:
    return Inbound(platform="fabric", agent="echo", space="dev", channel_id="c-1",
                   channel_name="general", is_direct=x_type == "dm", message_id="m-1", seq=1,
                   author_id="u-ann", author_name="Ann", content=content, addressed=addressed,
                   mentioned=mentioned, stale=stale)


@pytest.mark.parametrize(("rule", "message", "engage", "reason"), [
    (EngageRule(), msg(addressed=True), True, "addressed"),
    (EngageRule(), msg(x_type="dm"), True, "any message in a direct conversation"),
    (EngageRule(), msg(mentioned=True), False, "not addressed to this agent"),
    (EngageRule(), msg(addressed=True, stale=True), False, "stale catch-up message"),
    (EngageRule("mention"), msg(mentioned=True), True, "mentioned"),
    (EngageRule("mention"), msg(addressed=True), False, "not mentioned"),
    (EngageRule("mention"), msg(x_type="dm"), False, "not mentioned"),
    (EngageRule("mention-sticky"), msg(mentioned=True), True, "mentioned"),
    (EngageRule("mention-sticky"), msg(addressed=True), False, "not mentioned"),
    (EngageRule("pattern", r"^deploy\b"), msg("deploy now"), True, "matches engage_pattern"),
    (EngageRule("pattern", r"^deploy\b"), msg("please deploy", addressed=True), False,
     "does not match engage_pattern"),
    (EngageRule("pattern", "."), msg("anything"), True, "matches engage_pattern"),
    (EngageRule("pattern", "."), msg("anything", stale=True), False, "stale catch-up message"),
])
def test_modes(rule: EngageRule, message: Inbound, engage: bool, reason: str) -> None:
    decision = EngageGate(rule).decide(message, now=100.0)
    assert (decision.engage, decision.reason) == (engage, reason)


@pytest.mark.parametrize(("steps", "expected"), [
    # (time, event) with event: "mention", "plain", "finished", "release"
    ([(0, "mention"), (10, "plain")], [True, True]),
    ([(0, "mention"), (59, "plain"), (118, "plain")], [True, True, True]),
    ([(0, "mention"), (60, "plain")], [True, False]),
    ([(0, "mention"), (50, "finished"), (100, "plain")], [True, None, True]),
    ([(0, "mention"), (5, "release"), (6, "plain")], [True, True, False]),
    ([(0, "release"), (1, "plain")], [False, False]),
    ([(0, "plain")], [False]),
])
def test_sticky_window(steps: list[tuple[float, str]], expected: list[bool | None]) -> None:
    gate = EngageGate(EngageRule("mention-sticky", sticky_s=60))
    results: list[bool | None] = []
    for now, event in steps:
        if event == "release":
            results.append(gate.release(now))
        elif event == "finished":
            gate.activity(now)
            results.append(None)
        else:
            decision = gate.decide(msg(mentioned=event == "mention"), now)
            if decision.engage:
                gate.engaged(now)
            results.append(decision.engage)
    assert results == expected


@pytest.mark.parametrize("kwargs", [
    {"mode": "always"}, {"ignored": "keep"}, {"mode": "pattern"},
])
def test_bad_rules_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        EngageRule(**kwargs)  # type: ignore[arg-type]


def test_default_engages_matches_fabric_rule() -> None:
    assert engages(msg(addressed=True)) and engages(msg(x_type="dm"))
    assert not engages(msg()) and not engages(msg(addressed=True, stale=True))
