"""The logic of one conversation scope, without threads or timers.

The Scope actor feeds events in (a message arrived, the debounce window
elapsed, a run finished) and carries out the returned actions (arm a debounce
timer, start a run). Keeping the rules here makes them unit-testable.

Rules (from the first platform's own plugins and the design):

- dedup by message id, remembering the last 5,000 ids;
- the access rules (:mod:`bridge.policy`) decide who may engage the agent:
  a channel outside ``allowed_channels`` is dropped, bots never engage (unless
  ``allow_bots``), a member who is not allowed is refused once per hour (the
  message is kept as context with ``sender_scope = "all"``, else dropped);
- the binding's engage rule (:mod:`bridge.engage`) decides whether an allowed
  message engages; the others are kept as context for the next prompt
  (bounded by count and characters) or dropped (``ignored = "drop"``);
- engaged messages wait for a debounce window (default 300 ms) that restarts
  with each new engaged message, then become one run;
- one run at a time: messages that engage during a run wait and are merged
  into the next run, which starts after the next debounce window;
- a run budget (``max_runs_per_hour``) per member per conversation: when a
  member's is spent, that member's messages of a run that would start are kept
  as context instead, with a notice once an hour; other members' messages still
  run, so one member cannot spend a conversation's budget for everyone.

Time comes from an injected monotonic clock, so tests drive it.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Iterable

import attrs

from bridge.engage import EngageGate, EngageRule
from bridge.model import Inbound
from bridge.names import ResolvedNames, listed
from bridge.policy import (
    AccessPolicy,
    HourlyBudget,
    OncePerWindow,
    Sender,
    classify_sender,
    is_bot,
)
from bridge.prompt import Prompt, PromptLine

#: Message ids remembered for dedup (5,000, as the first platform's plugins do).
DEDUP_SIZE = 5000
#: Context kept for the next prompt: at most this many messages ...
CONTEXT_MESSAGES = 50
#: Bot or agent messages in a row (no human message between them) that may engage
#: one conversation; later ones are context until a human writes: a loop breaker
#: for agents that answer each other (``allow_bots = true``). Humans are never held.
BOT_STREAK_LIMIT = 5
#: Members whose run budgets one conversation remembers.
BUDGETS_KEPT = 1_000
#: ... and at most this many characters in all.
CONTEXT_CHARS = 20_000


class Dedup:
    """A bounded set of recently seen ids; the oldest id is forgotten first.

    Args:
        size: How many ids to remember.
    """

    def __init__(self, size: int = DEDUP_SIZE) -> None:
        self._size = size
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def seen(self, item: str) -> bool:
        """Record ``item``; return True if it was already remembered."""
        if item in self._ids:
            self._ids.move_to_end(item)
            return True
        self._ids[item] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


@attrs.frozen
class ArmDebounce:
    """Action: tell the scope ``DebounceElapsed(generation)`` after ``delay_s`` seconds."""

    generation: int
    delay_s: float


@attrs.frozen
class StartRun:
    """Action: start a run with this prompt and id.

    Attributes:
        run_id: New unique run id.
        prompt: What the agent is asked.
        message_ids: Ids of the engaged messages it answers.
        context_ids: Ids of the context messages its prompt includes.
        messages: The engaged messages it answers, by seq (their receipts, their files).
    """

    run_id: str
    prompt: Prompt
    message_ids: tuple[str, ...]
    context_ids: tuple[str, ...] = ()
    messages: tuple[Inbound, ...] = ()


@attrs.frozen
class Refuse:
    """Action: answer ``message_id`` with the agent's refusal (once per user per hour)."""

    message_id: str
    author_id: str


@attrs.frozen
class OverBudget:
    """Action: the run budget is spent; these messages became context instead of a run.

    Attributes:
        message_ids: The engaged messages that were not run.
        notify: True for the first time in an hour (post a notice), else False.
    """

    message_ids: tuple[str, ...]
    notify: bool


Action = ArmDebounce | StartRun | Refuse | OverBudget


class ScopeLogic:
    """State of one scope: dedup, context, pending messages, the current run.

    Args:
        agent: Agent name.
        space: The chat platform's space id.
        channel: Channel name (for prompts).
        debounce_s: Debounce window in seconds.
        dedup_size: Message ids remembered.
        rule: The binding's engage rule (default: ``addressed``).
        access: The agent's access rules (default: everyone, no bots).
        bot_names: Names of the bridge's agents (their messages count as a bot's).
        names: What the connection's name entries resolved to (the access rules
            match by id; see :mod:`bridge.names`); the scope actor keeps
            :attr:`names` current.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, agent: str, space: str, channel: str, debounce_s: float,
        dedup_size: int = DEDUP_SIZE, *, rule: EngageRule | None = None,
        access: AccessPolicy | None = None, bot_names: Iterable[str] = (),
        names: ResolvedNames | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self.space = space
        self.channel = channel
        self.debounce_s = debounce_s
        self.dedup = Dedup(dedup_size)
        self.gate = EngageGate(rule)
        self.access = access or AccessPolicy()
        self.bot_names = frozenset(bot_names)
        self.names = names or ResolvedNames()
        #: Bot messages since the last human one (see :data:`BOT_STREAK_LIMIT`).
        self.bot_streak = 0
        self.clock = clock
        #: Run budgets per author id (least recently used forgotten first).
        self.budgets: collections.OrderedDict[str, HourlyBudget] = collections.OrderedDict()
        self.refusals = OncePerWindow()
        self.budget_notices = OncePerWindow()
        self.context: collections.deque[tuple[str, PromptLine]] = collections.deque()
        #: Ids of context messages dropped beyond the bounds (no prompt will take
        #: them); the scope closes them in the store (:meth:`take_evicted`).
        self.evicted: list[str] = []
        self.verdict = ""
        self.reason = ""
        self.pending: list[Inbound] = []
        self.current_run: str | None = None
        self.generation = 0
        self.debouncing = False
        self.received = 0
        self.engaged = 0
        self.runs = 0
        self.failures = 0

    @property
    def state(self) -> str:
        """``idle``, ``debouncing``, ``running`` or ``queued`` (running with messages waiting)."""
        if self.current_run is not None:
            return "queued" if self.pending else "running"
        return "debouncing" if self.debouncing else "idle"

    def sender(self, message: Inbound) -> Sender:
        """The access rules applied to the author and channel of ``message``."""
        return classify_sender(self.access, message, self.agent, self.bot_names, self.names)

    def is_admin(self, user_id: str) -> bool:
        """Whether ``user_id`` is one of the agent's admins (by id, or a name resolved to it)."""
        return listed(self.access.admins, user_id, self.names.users)

    def admin_ids(self) -> frozenset[str]:
        """The agent's admins as ids: the config's ids, and its names resolved so far."""
        return frozenset(self.names.users.get(entry.casefold(), entry)
                         for entry in self.access.admins)

    def refuse_now(self, author_id: str) -> bool:
        """True when ``author_id`` should get the refusal now (once per hour; never silent)."""
        return bool(self.access.refusal) and self.refusals.first(author_id, self.clock())

    def release(self) -> bool:
        """``/release``: end a mention-sticky conversation; False when none was active."""
        return self.gate.release(self.clock())

    def accept(self, message: Inbound) -> list[Action]:
        """Take one inbound message; :attr:`verdict` and :attr:`reason` then say what it was.

        ``verdict`` is ``duplicate``, ``dropped`` (forgotten: channel not
        allowed, ``ignored = "drop"``, or a sender outside ``sender_scope =
        "known"``), ``context`` or ``engaged``.

        Returns:
            ``[]`` for a duplicate, a dropped or context message, or a message
            that waits for the current run; ``[ArmDebounce]`` when a window
            (re)starts (with no window, ``debounce_s`` 0: the run's
            ``[StartRun]`` at once); ``[Refuse]`` when a member who is not allowed should be
            told so (once per hour).
        """
        if self.dedup.seen(message.message_id):
            self.verdict, self.reason = "duplicate", "message id seen before"
            return []
        self.received += 1
        from_bot = not message.author_known or is_bot(message, self.agent, self.bot_names)
        self.bot_streak = self.bot_streak + 1 if from_bot else 0
        if message.channel_name:
            self.channel = message.channel_name
        now = self.clock()
        sender = self.sender(message)
        if not sender.visible:
            self.verdict, self.reason = "dropped", sender.reason
            return []
        decision = self.gate.decide(message, now)
        if not sender.allowed:
            actions: list[Action] = []
            reason = sender.reason
            if sender.kind == "refused" and decision.engage:
                if self.refuse_now(message.author_id):
                    actions.append(Refuse(message.message_id, message.author_id))
                    reason += "; refused"
                else:
                    reason += "; not answered (refused within the hour, or refusal is silent)"
            if sender.kind == "refused" and self.access.sender_scope == "known":
                self.verdict, self.reason = "dropped", reason
            else:
                self._ignore(message, reason, allowed=False)
            return actions
        if not decision.engage:
            self._ignore(message, decision.reason, allowed=True)
            return []
        if from_bot and self.bot_streak > BOT_STREAK_LIMIT:
            self._ignore(message, f"loop breaker: {self.bot_streak} bot messages in a row "
                         "with no human message between", allowed=True)
            return []
        self.gate.engaged(now)
        self.verdict, self.reason = "engaged", f"{decision.reason} ({sender.reason})"
        self.engaged += 1
        self.pending.append(message)
        if self.current_run is not None:
            return []
        return self._arm()

    def debounce_elapsed(self, generation: int) -> list[Action]:
        """The window armed with ``generation`` elapsed; stale generations are ignored.

        Returns:
            ``[StartRun]`` when messages are pending and no run is active, else ``[]``.
        """
        if generation != self.generation or self.current_run is not None:
            return []
        self.debouncing = False
        if not self.pending:
            return []
        pending = sorted(self.pending, key=lambda m: m.seq)
        self.pending = []
        now = self.clock()
        spent = {m.author_id for m in pending if not self._budget(m.author_id).available(now)}
        actions: list[Action] = []
        if spent:
            over = [m for m in pending if m.author_id in spent]
            for message in over:  # engaged, so their authors are allowed
                self._add_context(message.message_id, PromptLine.of(message, allowed=True))
            actions.append(OverBudget(tuple(m.message_id for m in over),
                                      self.budget_notices.first("budget", now)))
            pending = [m for m in pending if m.author_id not in spent]
            if not pending:
                return actions
        for author_id in dict.fromkeys(m.author_id for m in pending):
            self._budget(author_id).take(now)
        run_id = uuid.uuid4().hex[:12]
        prompt = Prompt(
            agent=self.agent,
            space=self.space,
            channel=self.channel,
            messages=tuple(PromptLine.of(m, allowed=True) for m in pending),
            context=tuple(line for _, line in sorted(self.context, key=lambda c: c[1].seq)),
        )
        context_ids = tuple(message_id for message_id, _ in self.context)
        self.context.clear()
        self.current_run = run_id
        self.runs += 1
        return [*actions,
                StartRun(run_id, prompt, tuple(m.message_id for m in pending), context_ids,
                         tuple(pending))]

    def _budget(self, author_id: str) -> HourlyBudget:
        """The run budget of one member in this conversation (bounded memory)."""
        budget = self.budgets.pop(author_id, None)
        if budget is None:
            budget = HourlyBudget(self.access.max_runs_per_hour)
        self.budgets[author_id] = budget
        while len(self.budgets) > BUDGETS_KEPT:
            self.budgets.popitem(last=False)
        return budget

    def run_finished(self, run_id: str, ok: bool) -> list[Action]:
        """The run ``run_id`` ended; unknown ids are ignored.

        Returns:
            ``[ArmDebounce]`` when messages arrived during the run (``[StartRun]``
            at once with no window), else ``[]``.
        """
        if run_id != self.current_run:
            return []
        self.current_run = None
        self.gate.activity(self.clock())
        if not ok:
            self.failures += 1
        return self._arm() if self.pending else []

    def _arm(self) -> list[Action]:
        """Open a debounce window; with no window (``debounce_s`` 0) the run starts now."""
        self.generation += 1
        self.debouncing = True
        if self.debounce_s <= 0:
            return self.debounce_elapsed(self.generation)
        return [ArmDebounce(self.generation, self.debounce_s)]

    def _ignore(self, message: Inbound, reason: str, *, allowed: bool) -> None:
        """A message that does not engage: context or dropped, per the rule's ``ignored``.

        ``allowed`` says whether its author may talk to the agent (kept in the prompt line).
        """
        if self.gate.rule.ignored == "drop":
            self.verdict, self.reason = "dropped", f"{reason}; ignored = drop"
            return
        self.verdict, self.reason = "context", reason
        self._add_context(message.message_id, PromptLine.of(message, allowed))

    def take_evicted(self) -> list[str]:
        """The ids of context messages dropped beyond the bounds since the last call."""
        evicted, self.evicted = self.evicted, []
        return evicted

    def _add_context(self, message_id: str, line: PromptLine) -> None:
        self.context.append((message_id, line))
        while len(self.context) > CONTEXT_MESSAGES or (
            len(self.context) > 1 and sum(len(c.text) for _, c in self.context) > CONTEXT_CHARS
        ):
            self.evicted.append(self.context.popleft()[0])
