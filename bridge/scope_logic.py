"""The logic of one conversation scope, without threads or timers.

The Scope actor feeds events in (a message arrived, the debounce window
elapsed, a run finished) and carries out the returned actions (arm a debounce
timer, start a run). Keeping the rules here makes them unit-testable.

Rules (from Fabric's own plugins and the design):

- dedup by message id, remembering the last 5,000 ids;
- a message engages on ``wakeup`` or in a ``dm``; the others are kept as
  context for the next prompt (bounded by count and characters);
- engaged messages wait for a debounce window (default 300 ms) that restarts
  with each new engaged message, then become one run;
- one run at a time: messages that engage during a run wait and are merged
  into the next run, which starts after the next debounce window.
"""

from __future__ import annotations

import collections
import uuid

import attrs

from bridge.engage import engages
from bridge.messages import Inbound
from bridge.prompt import Prompt, PromptLine

#: Message ids remembered for dedup (Fabric plugins remember 5,000).
DEDUP_SIZE = 5000
#: Context kept for the next prompt: at most this many messages ...
CONTEXT_MESSAGES = 50
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
    """

    run_id: str
    prompt: Prompt
    message_ids: tuple[str, ...]
    context_ids: tuple[str, ...] = ()


Action = ArmDebounce | StartRun


class ScopeLogic:
    """State of one scope: dedup, context, pending messages, the current run.

    Args:
        agent: Agent name.
        guild: Guild node id.
        channel: Channel name (for prompts).
        debounce_s: Debounce window in seconds.
        dedup_size: Message ids remembered.
    """

    def __init__(
        self, agent: str, guild: str, channel: str, debounce_s: float,
        dedup_size: int = DEDUP_SIZE,
    ) -> None:
        self.agent = agent
        self.guild = guild
        self.channel = channel
        self.debounce_s = debounce_s
        self.dedup = Dedup(dedup_size)
        self.context: collections.deque[tuple[str, PromptLine]] = collections.deque()
        self.verdict = ""
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

    def accept(self, message: Inbound) -> list[Action]:
        """Take one inbound message; :attr:`verdict` then says what it was.

        ``verdict`` is ``duplicate``, ``context`` or ``engaged``.

        Returns:
            ``[]`` for a duplicate, a context message, or a message that waits
            for the current run; ``[ArmDebounce]`` when a window (re)starts.
        """
        if self.dedup.seen(message.message_id):
            self.verdict = "duplicate"
            return []
        self.received += 1
        if message.channel_name:
            self.channel = message.channel_name
        if not engages(message):
            self.verdict = "context"
            self._add_context(message.message_id, PromptLine.of(message))
            return []
        self.verdict = "engaged"
        self.engaged += 1
        self.pending.append(message)
        if self.current_run is not None:
            return []
        return [self._arm()]

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
        run_id = uuid.uuid4().hex[:12]
        prompt = Prompt(
            agent=self.agent,
            guild=self.guild,
            channel=self.channel,
            messages=tuple(PromptLine.of(m) for m in pending),
            context=tuple(line for _, line in sorted(self.context, key=lambda c: c[1].seq)),
        )
        context_ids = tuple(message_id for message_id, _ in self.context)
        self.context.clear()
        self.current_run = run_id
        self.runs += 1
        return [StartRun(run_id, prompt, tuple(m.message_id for m in pending), context_ids)]

    def run_finished(self, run_id: str, ok: bool) -> list[Action]:
        """The run ``run_id`` ended; unknown ids are ignored.

        Returns:
            ``[ArmDebounce]`` when messages arrived during the run, else ``[]``.
        """
        if run_id != self.current_run:
            return []
        self.current_run = None
        if not ok:
            self.failures += 1
        return [self._arm()] if self.pending else []

    def _arm(self) -> ArmDebounce:
        self.generation += 1
        self.debouncing = True
        return ArmDebounce(self.generation, self.debounce_s)

    def _add_context(self, message_id: str, line: PromptLine) -> None:
        self.context.append((message_id, line))
        while len(self.context) > CONTEXT_MESSAGES or (
            len(self.context) > 1 and sum(len(c.text) for _, c in self.context) > CONTEXT_CHARS
        ):
            self.context.popleft()
