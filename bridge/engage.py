"""The engage gate: does a message start (or join) a run, or is it context?

Each binding chooses an engage mode (``engage`` in ``[[bindings]]``):

- ``addressed`` (default): engage when the platform's adapter says the
  message is addressed to this agent (by the platform's own rules, e.g. a
  flag the platform sets, a mention, a DM), or on any message of a direct
  conversation (a platform may accept older names of this mode, see
  :class:`bridge.config.Aliases`);
- ``mention``: engage only when the agent is mentioned;
- ``mention-sticky``: after a mention, keep engaging on the channel's messages
  until the agent has been idle for ``sticky_s`` seconds or someone writes
  ``/release``;
- ``pattern``: engage when the text matches ``engage_pattern`` (a regex,
  searched anywhere in the text; ``.`` means always).

``engage_pattern`` comes from the config but runs on member text, so a pattern
with catastrophic backtracking (``(a|a)+$``) could hold the scope for minutes
on one crafted message. Patterns are compiled with the ``regex`` package and
searched with a time limit (:data:`PATTERN_TIMEOUT_S`): a search that runs out
does not engage, and says so in the decision's reason (the scope logs it). At
load, :func:`pattern_problem` refuses a pattern that already runs out on
simple probe texts.

Messages that do not engage follow ``ignored``: ``accumulate`` keeps them as
context for the next prompt, ``drop`` forgets them. Stale catch-up messages
never engage, whatever the mode.
"""

from __future__ import annotations

import attrs
import regex

from bridge.model import Inbound

#: The engage modes a binding may choose.
ENGAGE_MODES = ("addressed", "mention", "mention-sticky", "pattern")
#: What happens to messages that do not engage.
IGNORED_MODES = ("accumulate", "drop")
#: Default seconds of agent idleness that end a mention-sticky conversation.
DEFAULT_STICKY_S = 600.0
#: Seconds one ``engage_pattern`` search may take on one message; longer: no match.
PATTERN_TIMEOUT_S = 0.25
#: Seconds one probe search may take when a pattern is checked at load.
PROBE_TIMEOUT_S = 0.5
#: Characters of each probe text (2,000: a quarter of a typical content limit).
PROBE_CHARS = 2000


def _compile(rule: EngageRule) -> regex.Pattern[str] | None:
    return regex.compile(rule.pattern) if rule.mode == "pattern" else None


def pattern_problem(pattern: str) -> str | None:
    """Check an ``engage_pattern`` before it is used: valid, and no runaway backtracking.

    The pattern is searched in probe texts of :data:`PROBE_CHARS` characters
    (each of a few characters, and each literal character of the pattern,
    repeated, then a NUL that rarely matches), the shape that makes nested
    quantifiers such as ``(a|a)+$`` backtrack exponentially. This is a best
    effort: a pattern that passes is still searched with a time limit.

    Args:
        pattern: The regular expression (``regex`` package syntax, a superset of ``re``).

    Returns:
        None when the pattern is usable, else what is wrong with it.
    """
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        return f"not a valid regular expression: {exc}"
    letters = dict.fromkeys("a0 -_.\n" + "".join(c for c in pattern if c.isalnum()))
    for char in letters:
        try:
            compiled.search(char * PROBE_CHARS + "\0", timeout=PROBE_TIMEOUT_S)
        except TimeoutError:
            return (f"searching {PROBE_CHARS} repeated {char!r} characters took over "
                    f"{PROBE_TIMEOUT_S:g} s (nested quantifiers such as (a+)+ or (a|a)+ "
                    "backtrack without end on member text); simplify the pattern")
    return None


@attrs.frozen
class EngageRule:
    """A binding's engage settings.

    Attributes:
        mode: One of :data:`ENGAGE_MODES`.
        pattern: ``pattern`` mode: the regex searched in the text (validated at load,
            searched with a time limit of :data:`PATTERN_TIMEOUT_S` seconds).
        sticky_s: ``mention-sticky`` mode: idle seconds that end the conversation.
        ignored: One of :data:`IGNORED_MODES`.
    """

    mode: str = "addressed"
    pattern: str = ""
    sticky_s: float = DEFAULT_STICKY_S
    ignored: str = "accumulate"
    regex: regex.Pattern[str] | None = attrs.field(
        default=attrs.Factory(_compile, takes_self=True), eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.mode not in ENGAGE_MODES:
            raise ValueError(f"engage mode must be one of {', '.join(ENGAGE_MODES)} "
                             f"(got {self.mode!r})")
        if self.ignored not in IGNORED_MODES:
            raise ValueError(f"ignored must be one of {', '.join(IGNORED_MODES)} "
                             f"(got {self.ignored!r})")
        if self.mode == "pattern" and not self.pattern:
            raise ValueError("engage = \"pattern\" needs engage_pattern")


@attrs.frozen
class Decision:
    """Whether a message engages, and why (for the log).

    Attributes:
        engage: True when the message starts (or joins) a run.
        reason: Short reason, e.g. ``addressed``, ``not mentioned``, ``sticky``.
    """

    engage: bool
    reason: str


class EngageGate:
    """Applies one :class:`EngageRule`; holds the mention-sticky state of one scope.

    Time is passed in (``now``, monotonic seconds) so the rules stay pure.

    Args:
        rule: The binding's engage settings.
    """

    def __init__(self, rule: EngageRule | None = None) -> None:
        self.rule = rule or EngageRule()
        self.sticky_until = 0.0

    def decide(self, message: Inbound, now: float) -> Decision:
        """Decide whether ``message`` engages (without changing the sticky state)."""
        rule = self.rule
        if message.stale:
            return Decision(False, "stale catch-up message")
        if rule.mode == "addressed":
            if message.addressed:
                return Decision(True, "addressed")
            if message.is_direct:
                return Decision(True, "any message in a direct conversation")
            return Decision(False, "not addressed to this agent")
        if rule.mode in ("mention", "mention-sticky"):
            if message.mentioned:
                return Decision(True, "mentioned")
            if rule.mode == "mention-sticky" and self.active(now):
                return Decision(True, "sticky conversation")
            return Decision(False, "not mentioned")
        assert rule.regex is not None
        try:
            found = rule.regex.search(message.content, timeout=PATTERN_TIMEOUT_S)
        except TimeoutError:
            return Decision(False, f"engage_pattern search gave up after {PATTERN_TIMEOUT_S:g} s "
                                   "(treated as no match; simplify the pattern)")
        if found:
            return Decision(True, "matches engage_pattern")
        return Decision(False, "does not match engage_pattern")

    def engaged(self, now: float) -> None:
        """An allowed message engaged: (re)start the sticky window."""
        if self.rule.mode == "mention-sticky":
            self.sticky_until = now + self.rule.sticky_s

    def activity(self, now: float) -> None:
        """The agent was active (a run ended): a running sticky window restarts."""
        if self.active(now):
            self.sticky_until = now + self.rule.sticky_s

    def active(self, now: float) -> bool:
        """True while a mention-sticky conversation is going on."""
        return self.rule.mode == "mention-sticky" and now < self.sticky_until

    def release(self, now: float) -> bool:
        """End a mention-sticky conversation (``/release``); False when none was active."""
        was = self.active(now)
        self.sticky_until = 0.0
        return was


def engages(message: Inbound) -> bool:
    """Return True when the message engages under the default ``addressed`` mode.

    Args:
        message: The accepted message.
    """
    return EngageGate().decide(message, 0.0).engage
