"""Tests of bridge.scope_logic: dedup, context, debounce and the serial queue."""

from __future__ import annotations

import attrs
import pytest

from bridge.engage import EngageRule
from bridge.model import Inbound
from bridge.policy import AccessPolicy
from bridge.prompt import PromptLine
from bridge.scope_logic import (
    CONTEXT_MESSAGES,
    Action,
    ArmDebounce,
    Dedup,
    OverBudget,
    Refuse,
    ScopeLogic,
    StartRun,
)


def msg(
    seq: int, content: str = "", *, addressed: bool = True, x_type: str = "general",
    author: str = "Ann", message_id: str | None = None, channel_name: str = "general",
) -> Inbound:
    return Inbound(
        platform="fabric", agent="echo", space="dev", channel_id="c-1",
        channel_name=channel_name, is_direct=x_type == "dm",
        message_id=message_id if message_id is not None else f"m-{seq}", seq=seq,
        author_id=f"u-{author}", author_name=author, content=content or f"text {seq}",
        addressed=addressed,
    )


def logic() -> ScopeLogic:
    return ScopeLogic("echo", "dev", "general", debounce_s=0.3)


def only_arm(actions: list[Action]) -> ArmDebounce:
    assert len(actions) == 1
    action = actions[0]
    assert isinstance(action, ArmDebounce)
    return action


def only_start(actions: list[Action]) -> StartRun:
    assert len(actions) == 1
    action = actions[0]
    assert isinstance(action, StartRun)
    return action


def test_dedup_is_bounded_and_forgets_oldest() -> None:
    dedup = Dedup(size=3)
    assert [dedup.seen(x) for x in "abc"] == [False, False, False]
    assert dedup.seen("a") is True
    assert dedup.seen("d") is False  # evicts the oldest: "b" ("a" was just seen again)
    assert len(dedup) == 3
    assert dedup.seen("b") is False
    assert dedup.seen("d") is True


def test_dedup_fifo_without_reuse() -> None:
    dedup = Dedup(size=2)
    for item in ["x", "y", "z"]:
        assert dedup.seen(item) is False
    assert len(dedup) == 2
    assert dedup.seen("x") is False  # forgotten


def test_duplicate_message_ignored() -> None:
    scope = logic()
    only_arm(scope.accept(msg(1)))
    counts = (scope.received, scope.engaged, len(scope.pending), scope.generation)
    assert scope.accept(msg(1)) == []
    assert (scope.received, scope.engaged, len(scope.pending), scope.generation) == counts


def test_duplicate_ignored_beyond_small_dedup() -> None:
    scope = ScopeLogic("echo", "dev", "general", 0.3, dedup_size=2)
    scope.accept(msg(1, addressed=False))
    scope.accept(msg(2, addressed=False))
    scope.accept(msg(3, addressed=False))
    assert scope.received == 3
    scope.accept(msg(1, addressed=False))  # forgotten, so accepted again
    assert scope.received == 4


def test_context_message_goes_into_next_prompt() -> None:
    scope = logic()
    assert scope.accept(msg(1, "just chatting", addressed=False, author="Bob")) == []
    assert scope.state == "idle"
    assert (scope.received, scope.engaged) == (1, 0)
    arm = only_arm(scope.accept(msg(2, "hey agent")))
    start = only_start(scope.debounce_elapsed(arm.generation))
    assert start.prompt.context == (PromptLine("Bob", "just chatting", 1, "u-Bob", True),)
    assert start.prompt.messages == (PromptLine("Ann", "hey agent", 2, "u-Ann", True),)
    assert start.message_ids == ("m-2",)
    # Context is used once.
    scope.run_finished(start.run_id, ok=True)
    arm = only_arm(scope.accept(msg(3)))
    assert only_start(scope.debounce_elapsed(arm.generation)).prompt.context == ()


def test_dm_engages_without_wakeup() -> None:
    scope = logic()
    arm = only_arm(scope.accept(msg(1, addressed=False, x_type="dm")))
    assert arm.delay_s == 0.3
    assert scope.state == "debouncing"
    assert scope.engaged == 1


def test_new_engaged_message_rearms_and_stale_generation_ignored() -> None:
    scope = logic()
    first = only_arm(scope.accept(msg(1)))
    second = only_arm(scope.accept(msg(2)))
    assert second.generation != first.generation
    assert scope.debounce_elapsed(first.generation) == []
    assert scope.state == "debouncing"
    assert scope.runs == 0
    start = only_start(scope.debounce_elapsed(second.generation))
    assert start.message_ids == ("m-1", "m-2")


def test_burst_becomes_one_run_in_seq_order() -> None:
    scope = logic()
    arms = [only_arm(scope.accept(msg(seq, f"part {seq}"))) for seq in (12, 10, 11)]
    start = only_start(scope.debounce_elapsed(arms[-1].generation))
    assert start.prompt.user_text() == "part 10\npart 11\npart 12"
    assert start.message_ids == ("m-10", "m-11", "m-12")
    assert (start.prompt.agent, start.prompt.space, start.prompt.channel) == (
        "echo", "dev", "general")
    assert scope.runs == 1
    assert scope.state == "running"
    assert scope.current_run == start.run_id


def test_channel_name_follows_messages() -> None:
    scope = logic()
    arm = only_arm(scope.accept(msg(1, channel_name="renamed")))
    assert only_start(scope.debounce_elapsed(arm.generation)).prompt.channel == "renamed"


def test_messages_during_run_are_queued_then_start_next_run() -> None:
    scope = logic()
    arm = only_arm(scope.accept(msg(1, "first")))
    run1 = only_start(scope.debounce_elapsed(arm.generation))
    assert scope.accept(msg(3, "third")) == []
    assert scope.accept(msg(2, "second")) == []
    assert scope.accept(msg(4, "aside", addressed=False, author="Bob")) == []
    assert scope.state == "queued"
    # A stale timer during the run starts nothing.
    assert scope.debounce_elapsed(arm.generation) == []
    assert scope.run_finished("not-a-run", ok=True) == []
    assert scope.state == "queued"
    rearm = only_arm(scope.run_finished(run1.run_id, ok=True))
    assert scope.state == "debouncing"
    run2 = only_start(scope.debounce_elapsed(rearm.generation))
    assert run2.run_id != run1.run_id
    assert run2.prompt.user_text() == "second\nthird"
    assert run2.message_ids == ("m-2", "m-3")
    assert run2.prompt.context == (PromptLine("Bob", "aside", 4, "u-Bob", True),)
    assert scope.runs == 2


def test_run_finished_without_pending_goes_idle_and_counts_failures() -> None:
    scope = logic()
    arm = only_arm(scope.accept(msg(1)))
    run = only_start(scope.debounce_elapsed(arm.generation))
    assert scope.run_finished(run.run_id, ok=False) == []
    assert scope.state == "idle"
    assert scope.failures == 1
    assert scope.current_run is None
    # A second report of the same run is ignored.
    assert scope.run_finished(run.run_id, ok=False) == []
    assert scope.failures == 1


def test_unknown_run_finished_ignored_when_idle() -> None:
    scope = logic()
    assert scope.run_finished("abc", ok=False) == []
    assert (scope.state, scope.failures) == ("idle", 0)


def test_debounce_without_pending_starts_nothing() -> None:
    scope = logic()
    assert scope.debounce_elapsed(0) == []
    assert scope.state == "idle"


def test_context_bounded_by_count() -> None:
    scope = logic()
    for seq in range(1, CONTEXT_MESSAGES + 11):
        scope.accept(msg(seq, addressed=False))
    arm = only_arm(scope.accept(msg(1000)))
    context = only_start(scope.debounce_elapsed(arm.generation)).prompt.context
    assert len(context) == CONTEXT_MESSAGES
    assert context[0].seq == 11
    assert context[-1].seq == CONTEXT_MESSAGES + 10


def test_context_in_seq_order() -> None:
    scope = logic()
    scope.accept(msg(5, addressed=False))
    scope.accept(msg(4, addressed=False))
    arm = only_arm(scope.accept(msg(6)))
    context = only_start(scope.debounce_elapsed(arm.generation)).prompt.context
    assert [line.seq for line in context] == [4, 5]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "idle"),
        (["context"], "idle"),
        (["engage"], "debouncing"),
        (["engage", "elapse"], "running"),
        (["engage", "elapse", "engage"], "queued"),
        (["engage", "elapse", "context"], "running"),
        (["engage", "elapse", "finish"], "idle"),
        (["engage", "elapse", "engage", "finish"], "debouncing"),
    ],
)
def test_state_strings(steps: list[str], expected: str) -> None:
    scope = logic()
    run_id = ""
    for seq, step in enumerate(steps, start=1):
        if step == "context":
            scope.accept(msg(seq, addressed=False))
        elif step == "engage":
            scope.accept(msg(seq))
        elif step == "elapse":
            run_id = only_start(scope.debounce_elapsed(scope.generation)).run_id
        else:
            scope.run_finished(run_id, ok=True)
    assert scope.state == expected


# -- access, engage rules, refusals, the run budget ---------------------------------------


class Clock:
    """A fake monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gated(rule: EngageRule | None = None, access: AccessPolicy | None = None,
          clock: Clock | None = None) -> ScopeLogic:
    return ScopeLogic("echo", "dev", "general", 0.3, rule=rule, access=access,
                      bot_names=("echo", "helper"), clock=clock or Clock())


def person(seq: int, author: str, content: str = "", *, addressed: bool = True,
           mentioned: bool = False, bot: bool = False) -> Inbound:
    return attrs.evolve(msg(seq, content, author=author, addressed=addressed), mentioned=mentioned,
                        author_is_bot=bot)


LISTED = AccessPolicy(allowed_users=("ann",))
KNOWN = AccessPolicy(allowed_users=("ann",), sender_scope="known")
SILENT = AccessPolicy(allowed_users=("ann",), refusal="")


@pytest.mark.parametrize(("rule", "access", "message", "verdict", "refused"), [
    (None, None, person(1, "ann"), "engaged", False),
    (None, None, person(1, "ann", addressed=False), "context", False),
    (EngageRule(ignored="drop"), None, person(1, "ann", addressed=False), "dropped", False),
    (None, None, person(1, "helper"), "context", False),             # another agent
    (None, None, person(1, "bot9", bot=True), "context", False),     # a bot
    (EngageRule(ignored="drop"), None, person(1, "bot9", bot=True), "dropped", False),
    (None, AccessPolicy(allow_bots=True), person(1, "bot9", bot=True), "engaged", False),
    (None, LISTED, person(1, "bob"), "context", True),               # refused, kept
    (None, LISTED, person(1, "bob", addressed=False), "context", False),  # did not engage
    (None, KNOWN, person(1, "bob"), "dropped", True),                # refused, dropped
    (None, KNOWN, person(1, "bob", addressed=False), "dropped", False),
    (None, SILENT, person(1, "bob"), "context", False),              # refusal = ""
    (None, AccessPolicy(allowed_channels=("ops",)), person(1, "ann"), "dropped", False),
    (EngageRule("mention"), None, person(1, "ann"), "context", False),
    (EngageRule("mention"), None, person(1, "ann", mentioned=True), "engaged", False),
    (EngageRule("mention"), LISTED, person(1, "bob", mentioned=True), "context", True),
    (EngageRule("pattern", "^!run"), None, person(1, "ann", "!run it", addressed=False),
     "engaged", False),
])
def test_accept_verdicts(rule: EngageRule | None, access: AccessPolicy | None,
                         message: Inbound, verdict: str, refused: bool) -> None:
    scope = gated(rule, access)
    actions = scope.accept(message)
    assert scope.verdict == verdict, scope.reason
    assert scope.reason
    assert any(isinstance(a, Refuse) for a in actions) is refused
    assert (len(scope.context) == 1) is (verdict == "context")
    if verdict == "context":  # the prompt line says whether its author may talk to the agent
        assert scope.context[0][1].allowed is (message.author_name == "ann")
    assert (scope.pending == [message]) is (verdict == "engaged")


def test_refusal_once_per_user_per_hour() -> None:
    clock = Clock()
    scope = gated(access=LISTED, clock=clock)
    refusals = []
    for seq, (author, advance) in enumerate([("bob", 0), ("bob", 10), ("carl", 0),
                                             ("bob", 3600), ("bob", 1)], start=1):
        clock.now += advance
        refusals.append([a for a in scope.accept(person(seq, author))
                         if isinstance(a, Refuse)])
    assert [[r.author_id for r in actions] for actions in refusals] == [
        ["u-bob"], [], ["u-carl"], ["u-bob"], []]
    assert refusals[0] == [Refuse("m-1", "u-bob")]


def test_mention_sticky_conversation_and_release() -> None:
    clock = Clock()
    scope = gated(EngageRule("mention-sticky", sticky_s=60), clock=clock)
    verdicts = []
    for seq, (mentioned, advance) in enumerate(
            [(False, 0), (True, 0), (False, 30), (False, 59), (False, 61)], start=1):
        clock.now += advance
        scope.accept(person(seq, "ann", addressed=False, mentioned=mentioned))
        verdicts.append(scope.verdict)
    assert verdicts == ["context", "engaged", "engaged", "engaged", "context"]
    scope.accept(person(6, "ann", mentioned=True))
    assert scope.release() is True and scope.release() is False
    scope.accept(person(7, "ann", addressed=False))
    assert scope.verdict == "context"


def test_refused_and_bot_messages_do_not_start_a_sticky_conversation() -> None:
    scope = gated(EngageRule("mention-sticky"), access=LISTED)
    scope.accept(person(1, "bob", mentioned=True))
    scope.accept(person(2, "helper", mentioned=True))
    scope.accept(person(3, "ann", addressed=False))
    assert scope.verdict == "context"


def test_a_finished_run_keeps_the_sticky_conversation_going() -> None:
    clock = Clock()
    scope = gated(EngageRule("mention-sticky", sticky_s=60), clock=clock)
    arm = only_arm(scope.accept(person(1, "ann", mentioned=True)))
    start = only_start(scope.debounce_elapsed(arm.generation))
    clock.now += 50
    scope.run_finished(start.run_id, ok=True)
    clock.now += 50
    scope.accept(person(2, "ann", addressed=False))
    assert scope.verdict == "engaged"


def test_run_budget_turns_runs_into_context_with_one_notice_per_hour() -> None:
    clock = Clock()
    scope = gated(access=AccessPolicy(max_runs_per_hour=2), clock=clock)
    outcomes: list[str] = []
    for seq in range(1, 6):
        arm = only_arm(scope.accept(person(seq, "ann")))
        actions = scope.debounce_elapsed(arm.generation)
        assert len(actions) == 1
        action = actions[0]
        if isinstance(action, StartRun):
            scope.run_finished(action.run_id, ok=True)
            outcomes.append("run")
        else:
            assert isinstance(action, OverBudget)
            assert action.message_ids == (f"m-{seq}",)
            outcomes.append("notice" if action.notify else "silent")
        clock.now += 60
    assert outcomes == ["run", "run", "notice", "silent", "silent"]
    assert [line.text for _, line in scope.context] == ["text 3", "text 4", "text 5"]
    clock.now += 3600
    arm = only_arm(scope.accept(person(6, "ann")))
    start = only_start(scope.debounce_elapsed(arm.generation))
    assert start.context_ids == ("m-3", "m-4", "m-5")


def test_one_member_cannot_spend_the_run_budget_for_everyone() -> None:
    clock = Clock()
    scope = gated(access=AccessPolicy(max_runs_per_hour=2), clock=clock)
    for seq in (1, 2):
        arm = only_arm(scope.accept(person(seq, "ann")))
        scope.run_finished(only_start(scope.debounce_elapsed(arm.generation)).run_id, ok=True)
    # Ann's budget is spent; Bob's message in the same window still runs, Ann's waits.
    scope.accept(person(3, "ann"))
    arm = only_arm(scope.accept(person(4, "bob")))
    actions = scope.debounce_elapsed(arm.generation)
    assert [type(a) for a in actions] == [OverBudget, StartRun]
    over, start = actions
    assert isinstance(over, OverBudget) and over.message_ids == ("m-3",)
    assert isinstance(start, StartRun) and start.message_ids == ("m-4",)


def test_without_a_debounce_window_the_run_starts_at_once() -> None:
    """``debounce_s = 0``: the engaged message starts its run with no timer in between,
    and a message that waited for that run starts the next one as soon as it ends."""
    scope = ScopeLogic("echo", "dev", "general", debounce_s=0)
    [start] = scope.accept(msg(1, "first"))
    assert isinstance(start, StartRun)
    assert [line.text for line in start.prompt.messages] == ["first"]
    assert scope.accept(msg(2, "during the run")) == []
    [following] = scope.run_finished(start.run_id, ok=True)
    assert isinstance(following, StartRun)
    assert [line.text for line in following.prompt.messages] == ["during the run"]
