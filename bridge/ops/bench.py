"""``bridge bench``: what the bridge costs, measured against the dev guild.

Starts the dev guild as a child process (:mod:`bridge.ops.guildproc`; its seed
extended by agent users ``echo``, ``echo2``, ...) and the bridge as another
(``bin/bridge start --no-tui``, so its RSS and threads are its own) with those
echo agents bound to every channel, ``debounce_s = 0`` and log level
``warning``. It creates N channels (xType ``work``; members alice, bob and
every agent). Members alice and bob post over REST with aiohttp and listen on
socket.io, joined to every channel, on one asyncio loop of this process
(:mod:`bridge.ops.aiomembers`): the posts start at the offered rate, up to
:data:`IN_FLIGHT` at once, so the bench can offer well over a thousand posts
per second.

With no agents (``--agents 0``) no bridge runs (a bridge without agents has no
connection): the steps measure the transport floor alone, and pass while its
p99 stays under 1 s and every post reaches the other member.

Every post carries a unique token and ``wakeupUserId`` of one agent (round
robin over the agents, so each (agent, channel) pair is used), which wakes that
agent only. The agents' answers carry no wakeup and no mention, so they wake
nobody: in a ``general`` channel every post wakes every other member, so each
post would wake every agent (agents ignore each other's answers: bots never
engage an agent unless it sets ``allow_bots``).

One run measures, from a monotonic clock in this process:

- the transport floor: post -> ``message.created`` of that post received by the
  *other* member's socket;
- the bridge: post -> the agent's answer (holding the token) received by the
  poster's socket; the bridge's overhead is the difference of the percentiles;
- throughput: steps of M messages at R, 2R, 4R, ... messages per second,
  stopping at the first step whose p99 reaches 1 s or that loses an answer, or
  when answered messages per second stop growing (with no agents: whose floor
  p99 reaches 1 s or that loses a post, or when posts per second stop growing);
- CPU, as a share of one core: of the bridge, of this process (the members)
  and of the dev guild's process;
- the bridge process's peak RSS (``VmHWM``) and thread count (sampled every
  100 ms from ``/proc/<pid>/status``);
- the agents' platform API calls (posts, edits; the dev guild's counters) per
  answered message.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from bridge.board import BoardSnapshot
from bridge.cli.compose import load_config
from bridge.config import ConfigError
from bridge.errors import ChatError
from bridge.statefiles import read_status

if TYPE_CHECKING:  # the rest is imported when a bench runs, not by ``bridge --help``
    from adapters.chat.fabric.devguild import Seed
    from bridge.ops.aiomembers import BenchLoop, Crowd
    from bridge.ops.guildproc import GuildProcess
    from bridge.ops.loadkit import BridgeProcess

_R = TypeVar("_R", bound="Report")
_S = TypeVar("_S", bound="StepReport")

#: Members who post and listen (seeded humans).
MEMBERS = ("alice", "bob")
#: A step passes while its p99 time to answer stays under this many seconds.
SLO_S = 1.0
#: Seconds to wait for the last answers of a step after its last post.
SETTLE_S = 15.0
#: Most posts in flight at once (and HTTP connections open), all members together.
IN_FLIGHT = 64
#: A step must raise answered messages per second by this factor to go on.
GROWTH = 1.05
#: Offered rates stop doubling above this many messages per second.
MAX_RATE = 5000.0
#: Seconds between two samples of the bridge's /proc status.
SAMPLE_S = 0.1
#: Token prefix of the bench's messages.
TOKEN_PREFIX = "bn"

#: The ``--json`` fields, documented in ``bridge bench --help``.
JSON_FIELDS = {
    "channels": "channels created for the run (N)",
    "agents": "echo agents, each bound to every channel (A); 0: no bridge runs, the steps "
              "measure the transport floor only (a step passes when its floor p99 < 1 s and "
              "every post reached the other member) and the bridge's fields (bridge_*, "
              "overhead_*, throughput_per_s, answered, lost, extra, rss_mb, threads_*, "
              "actors, scopes, agent_*, *_per_answer) are 0",
    "messages": "messages per step (M)",
    "rate": "offered rate of the first step, messages/s (R)",
    "floor_p50_ms": "transport floor at rate R: post -> message.created at another member, "
                    "median, ms",
    "floor_p99_ms": "the same, 99th percentile, ms",
    "bridge_p50_ms": "bridge at rate R: post -> the agent's answer at the poster, median, ms",
    "bridge_p99_ms": "the same, 99th percentile, ms",
    "overhead_p50_ms": "bridge_p50_ms - floor_p50_ms (0 when nothing was answered)",
    "overhead_p99_ms": "bridge_p99_ms - floor_p99_ms (0 when nothing was answered)",
    "throughput_per_s": "answered messages/s at the highest step with p99 < 1 s and none "
                        "lost (0 when none)",
    "throughput_rate": "offered rate of that step, messages/s (0 when none; with --agents "
                       "0: of the highest step that passed)",
    "sent": "messages posted over all steps",
    "answered": "of those, answered (one answer per message expected)",
    "lost": "not answered within 15 s of the step's last post",
    "extra": "answers beyond the one expected (a second answer, another agent)",
    "post_errors": "member posts that failed (not counted as sent)",
    "rss_mb": "peak RSS of the bridge process (VmHWM), MB",
    "threads_idle": "threads of the bridge process once connected, before any message",
    "rss_idle_mb": "RSS of the bridge process (VmRSS) once connected, before any message, MB",
    "threads_peak": "most threads of the bridge process in any 100 ms sample",
    "rss_end_mb": "RSS of the bridge process (VmRSS) at the end, after --idle-wait, MB",
    "threads_end": "threads of the bridge process at the end, after --idle-wait",
    "actors": "actors in the bridge's supervision tree at the end",
    "scopes": "scopes in the bridge at the end",
    "agent_posts": "agents' POST .../messages calls during the steps",
    "agent_edits": "agents' PATCH .../messages calls during the steps",
    "agent_presence": "agents' PUT /agents/:id/presence calls during the steps",
    "posts_per_answer": "agent_posts / answered",
    "edits_per_answer": "agent_edits / answered",
    "api_calls_per_answer": "(agent_posts + agent_edits) / answered",
    "presence_per_answer": "agent_presence / answered (not in api_calls_per_answer)",
    "bridge_log_warnings": "WARNING lines in the bridge's log",
    "bridge_log_errors": "ERROR and CRITICAL lines in the bridge's log",
    "duration_s": "seconds of the whole run, start to stop",
    "steps": "one object per step: rate, sent, answered, lost, post_rate, answered_per_s, "
             "duration_s, p50_ms, p99_ms, floor_p50_ms, floor_p99_ms, threads_peak, "
             "delivered (posts whose message.created reached the other member), and CPU "
             "time over wall time as % of one core (200 = two cores): bridge_cpu_pct (the "
             "bridge's process), bench_cpu_pct (the bench's own process: the members "
             "posting and listening), guild_cpu_pct (the dev guild's process)",
}


@attrs.frozen
class StepReport:
    """One step of the throughput ladder.

    Attributes:
        rate: Offered rate, messages per second.
        sent: Messages posted.
        answered: Of those, answered.
        lost: Not answered within :data:`SETTLE_S` of the last post.
        post_rate: Achieved posting rate, messages per second.
        answered_per_s: Answers per second, first post to last answer.
        duration_s: Seconds from the first post to the last answer.
        p50_ms: Median time from a post to its answer, milliseconds.
        p99_ms: 99th percentile of the same, milliseconds.
        floor_p50_ms: Median transport floor, milliseconds.
        floor_p99_ms: 99th percentile transport floor, milliseconds.
        threads_peak: Most threads of the bridge process during the step.
        bridge_cpu_pct: CPU time of the bridge process over wall time, percent
            (200 = both cores of a 2-core machine).
        bench_cpu_pct: The same for the bench's process (its members and posters;
            with a platform double, the double too).
    """

    rate: float
    sent: int
    answered: int
    lost: int
    post_rate: float
    answered_per_s: float
    duration_s: float
    p50_ms: float
    p99_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    threads_peak: int
    bridge_cpu_pct: float
    bench_cpu_pct: float

    @property
    def passed(self) -> bool:
        """True when p99 stayed under :data:`SLO_S` and nothing was lost."""
        return self.sent > 0 and self.lost == 0 and self.p99_ms < SLO_S * 1000

    @property
    def progress(self) -> float:
        """What the throughput ladder must raise to go on: answered messages per second."""
        return self.answered_per_s

    def summary(self) -> str:
        """The step in one line (without its number)."""
        return (f"{self.rate:g}/s offered, {self.post_rate:g}/s posted, "
                f"{self.answered}/{self.sent} answered, {self.answered_per_s:g}/s, "
                f"p99 {self.p99_ms:.0f} ms, {self.threads_peak} threads")


@attrs.frozen
class GuildStep(StepReport):
    """A step against the dev guild, with a bridge (see :class:`FloorStep` without).

    Attributes:
        delivered: Posts whose ``message.created`` reached the other member.
        guild_cpu_pct: CPU time of the dev guild's process over wall time, percent.
    """

    delivered: int
    guild_cpu_pct: float

    def summary(self) -> str:
        """The step in one line (without its number), with the CPU of each process."""
        return (StepReport.summary(self) + f"; cpu % bridge {self.bridge_cpu_pct:.0f}, "
                f"bench {self.bench_cpu_pct:.0f}, guild {self.guild_cpu_pct:.0f}")


@attrs.frozen
class FloorStep(GuildStep):
    """A step against the dev guild with no bridge: the transport floor alone.

    Its bridge fields (``answered``, ``lost``, ``answered_per_s``,
    ``duration_s``, ``p50_ms``, ``p99_ms``, ``threads_peak``,
    ``bridge_cpu_pct``) are 0.
    """

    @property
    def passed(self) -> bool:
        """True when the floor's p99 stayed under :data:`SLO_S` and every post reached
        the other member."""
        return (self.sent > 0 and self.delivered == self.sent
                and self.floor_p99_ms < SLO_S * 1000)

    @property
    def progress(self) -> float:
        """What the throughput ladder must raise to go on: posts per second."""
        return self.post_rate

    def summary(self) -> str:
        """The step in one line (without its number)."""
        return (f"{self.rate:g}/s offered, {self.post_rate:g}/s posted, "
                f"{self.delivered}/{self.sent} reached the other member, floor p99 "
                f"{self.floor_p99_ms:.0f} ms; cpu % bench {self.bench_cpu_pct:.0f}, "
                f"guild {self.guild_cpu_pct:.0f}")


@attrs.frozen
class BenchReport:
    """What a bench run measured; the fields are described in :data:`JSON_FIELDS`."""

    channels: int
    agents: int
    messages: int
    rate: float
    floor_p50_ms: float
    floor_p99_ms: float
    bridge_p50_ms: float
    bridge_p99_ms: float
    overhead_p50_ms: float
    overhead_p99_ms: float
    throughput_per_s: float
    throughput_rate: float
    sent: int
    answered: int
    lost: int
    extra: int
    post_errors: int
    rss_mb: float
    threads_idle: int
    rss_idle_mb: float
    threads_peak: int
    rss_end_mb: float
    threads_end: int
    actors: int
    scopes: int
    agent_posts: int
    agent_edits: int
    agent_presence: int
    posts_per_answer: float
    edits_per_answer: float
    api_calls_per_answer: float
    presence_per_answer: float
    bridge_log_warnings: int
    bridge_log_errors: int
    duration_s: float
    steps: tuple[GuildStep, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the keys of :data:`JSON_FIELDS`."""
        data = attrs.asdict(self, recurse=True)
        data["steps"] = [attrs.asdict(step) for step in self.steps]
        return data


def agent_names(count: int) -> list[str]:
    """Names of the bench's agents: ``echo``, ``echo2``, ``echo3``, ..."""
    return ["echo" if i == 0 else f"echo{i + 1}" for i in range(count)]


def bench_seed(agents: int) -> Seed:
    """The packaged dev guild seed plus agent users up to ``agents`` echo agents.

    An added agent ``echoN`` gets the seeded echo's key followed by ``N``
    (see :func:`agent_key`) and an id derived from its name.
    """
    from adapters.chat.fabric.devguild import SeedUser, load_seed

    base = load_seed()
    known = {user.name for user in base.users}
    echo_key = next(user.api_key for user in base.users if user.name == "echo")
    extra = tuple(SeedUser(name=name, kind="agent", api_key=agent_key(echo_key, name))
                  for name in agent_names(agents) if name not in known)
    return attrs.evolve(base, users=base.users + extra)


def agent_key(echo_key: str, name: str) -> str:
    """The dev guild key of bench agent ``name``: echo's key, then its number if any."""
    return echo_key + name.removeprefix("echo")


def config_text(center_url: str, state_dir: Path, agents: int, echo_key: str) -> str:
    """The bridge config of a bench run: A echo agents bound to every channel."""
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "{state_dir}"
        debounce_s = 0.0
        log_level = "warning"

        [fabric]
        center_url = "{center_url}"
    """)
    for name in agent_names(agents):
        text += textwrap.dedent(f"""
            [agents.{name}]
            kind = "echo"
            api_key = "{agent_key(echo_key, name)}"
            max_runs_per_hour = 0

            [[bindings]]
            agent = "{name}"
            guild = "dev"
            channels = ["*"]
        """)
    return text


# -- the bridge process from /proc -------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    """Fields of ``/proc/<pid>/status`` (empty when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (0.0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Sampler:
    """Samples the thread count and RSS high-water mark of a process every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_threads = 0
        self.window_threads = 0
        self.rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def sample(self) -> int:
        """Take one sample now; returns the current thread count."""
        fields = proc_status(self.pid)
        threads = int(fields.get("Threads", "0") or 0)
        self.peak_threads = max(self.peak_threads, threads)
        self.window_threads = max(self.window_threads, threads)
        hwm = fields.get("VmHWM", "0 kB").split()[0]
        self.rss_kb = max(self.rss_kb, int(hwm) if hwm.isdigit() else 0)
        return threads

    def window(self) -> int:
        """The peak thread count since the last call (a step's peak)."""
        peak, self.window_threads = self.window_threads, 0
        return peak

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def start(self) -> None:
        """Start sampling on a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self.sample()
        self._stop.set()
        self._thread.join(timeout=2)


# -- members' inboxes and the token bookkeeping --------------------------------


class _Inbox(Protocol):
    """What a member's socket received (:class:`bridge.ops.aiomembers.AsyncMember`)."""

    name: str
    #: ``(monotonic seconds, message.created payload)``, oldest first.
    events: collections.deque[tuple[float, dict[str, Any]]]


@attrs.define
class _Sent:
    posted_at: float
    poster: str
    agent_id: str


class _Tracker:
    """Matches tokens in received messages to the posts that carried them."""

    def __init__(self, agent_ids: Iterable[str]) -> None:
        self.agent_ids = frozenset(agent_ids)
        self.sent: dict[str, _Sent] = {}
        self.floor: dict[str, float] = {}
        self.answers: dict[str, float] = {}
        self.extra = 0
        self._answer_ids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def expect(self, token: str, posted_at: float, poster: str, agent_id: str) -> None:
        """Register a token about to be posted (thread-safe); ``agent_id`` is the agent
        it wakes ("" for none)."""
        with self._lock:
            self.sent[token] = _Sent(posted_at, poster, agent_id)

    def forget(self, token: str) -> None:
        """Drop a token whose post failed (thread-safe)."""
        with self._lock:
            self.sent.pop(token, None)

    def drain(self, inboxes: Iterable[_Inbox]) -> None:
        """Process every queued event of the members' inboxes."""
        for inbox in inboxes:
            while inbox.events:
                at, payload = inbox.events.popleft()
                self._event(inbox.name, at, payload)

    def _event(self, receiver: str, at: float, payload: dict[str, Any]) -> None:
        content, author = payload.get("content"), payload.get("authorUserId")
        if not isinstance(content, str) or not isinstance(author, str):
            return
        for word in content.split():
            if not word.startswith(TOKEN_PREFIX):
                continue
            with self._lock:
                sent = self.sent.get(word)
            if sent is None:
                continue
            if author in self.agent_ids:
                if receiver == sent.poster:
                    self._answer(word, sent, author, str(payload.get("messageId")), at)
            elif receiver != sent.poster and word not in self.floor:
                self.floor[word] = at

    def _answer(self, token: str, sent: _Sent, author: str, message_id: str,
                at: float) -> None:
        key = (token, author)
        known = self._answer_ids.setdefault(key, message_id)
        if known != message_id or author != sent.agent_id:
            self.extra += 1  # a second answer, or one by an agent that was not woken
        elif token not in self.answers:
            self.answers[token] = at


# -- the run -------------------------------------------------------------------


class _Bench:
    """State of one bench run: its loop and members, the guild, the bridge (None with no
    agents), the channels and the token bookkeeping."""

    def __init__(self, loop: BenchLoop, crowd: Crowd, guild: GuildProcess,
                 bridge: BridgeProcess | None, channel_ids: list[str], agent_ids: list[str],
                 sampler: _Sampler | None) -> None:
        self.loop = loop
        self.crowd = crowd
        self.guild = guild
        self.bridge = bridge
        self.channel_ids = channel_ids
        self.agent_ids = agent_ids
        self.sampler = sampler
        self.tracker = _Tracker(agent_ids)
        self.post_errors = 0

    def step(self, number: int, rate: float, count: int) -> GuildStep:
        """Post ``count`` messages at ``rate`` per second and wait up to :data:`SETTLE_S`
        for each to reach the other member and, with a bridge, for its answer."""
        tokens = [f"{TOKEN_PREFIX}{number}-{i:06d}" for i in range(count)]
        if self.sampler is not None:
            self.sampler.window()
        bridge_pid = (self.bridge.pid if self.bridge is not None else None) or 0
        guild_pid = self.guild.pid or 0
        bridge_before, guild_before = cpu_seconds(bridge_pid), cpu_seconds(guild_pid)
        bench_before, wall_before = time.process_time(), time.monotonic()
        self.post_errors += self.loop.run(self._post_and_settle(tokens, rate))
        wall = time.monotonic() - wall_before
        tracker = self.tracker
        posted = [t for t in tokens if t in tracker.sent]
        base = step_report(rate, {t: tracker.sent[t].posted_at for t in posted},
                           tracker.answers, tracker.floor, wall=wall,
                           bridge_cpu=cpu_seconds(bridge_pid) - bridge_before if bridge_pid
                           else 0.0,
                           bench_cpu=time.process_time() - bench_before,
                           threads_peak=self.sampler.window() if self.sampler else 0)
        fields = attrs.asdict(base, recurse=False)
        fields["delivered"] = sum(1 for t in posted if t in tracker.floor)
        fields["guild_cpu_pct"] = _percent(cpu_seconds(guild_pid) - guild_before, wall)
        if self.bridge is None:
            fields["lost"] = 0  # no answer was expected
            return FloorStep(**fields)
        return GuildStep(**fields)

    async def _post_and_settle(self, tokens: list[str], rate: float) -> int:
        """On the bench's loop: post ``tokens`` at ``rate``, then wait for what they
        bring; returns how many posts failed."""
        members, channels, agents = self.crowd.members, self.channel_ids, self.agent_ids
        tracker = self.tracker
        errors = 0

        async def post(i: int) -> None:
            nonlocal errors
            member = members[i % len(members)]
            channel = channels[i % len(channels)]
            agent = agents[(i // len(channels)) % len(agents)] if agents else ""
            tracker.expect(tokens[i], time.monotonic(), member.name, agent)
            if not await member.post(channel, f"{tokens[i]} from {member.name}", agent or None):
                tracker.forget(tokens[i])
                errors += 1

        from bridge.ops.aiomembers import pace

        await pace(len(tokens), rate, post, IN_FLIGHT)
        waiting = {t for t in tokens if t in tracker.sent}
        deadline = time.monotonic() + SETTLE_S
        while True:
            tracker.drain(members)
            waiting = {t for t in waiting if t not in tracker.floor
                       or (bool(agents) and t not in tracker.answers)}
            if not waiting or time.monotonic() >= deadline:
                return errors
            await asyncio.sleep(0.01)


def post_paced(count: int, rate: float, posters: Sequence[Callable[[int], None]],
               idle: Callable[[], None]) -> None:
    """Call ``post(i)`` for i in 0..count-1, the i-th at ``i / rate`` seconds from now.

    On threads, for the platform doubles' benches (the Fabric bench paces its
    posts on asyncio: :func:`bridge.ops.aiomembers.pace`). Each of ``posters``
    runs on its own thread and takes the next index when it is free, so a slow
    post delays only its own thread. The calling thread calls
    ``idle()`` every 10 ms until every post returned.

    Args:
        count: Posts to make.
        rate: Offered rate, posts per second (> 0).
        posters: One post function per thread; each must handle its own errors.
        idle: Called on this thread while the posters work (e.g. to drain queues).
    """
    lock = threading.Lock()
    cursor = [0]
    start = time.monotonic() + 0.05

    def work(post: Callable[[int], None]) -> None:
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= count:
                return
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            post(i)

    workers = [threading.Thread(target=work, args=(post,), name=f"bench-post-{n}",
                                daemon=True) for n, post in enumerate(posters)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        idle()
        time.sleep(0.01)


def step_report(rate: float, sent_at: Mapping[str, float], answers: Mapping[str, float],
                floor: Mapping[str, float], *, wall: float, bridge_cpu: float,
                bench_cpu: float, threads_peak: int) -> StepReport:
    """One step's figures from the monotonic times of its posts, answers and floor events.

    Args:
        rate: Offered rate, messages per second.
        sent_at: ``{token: when it was posted}`` for the step's posts (failed ones left out).
        answers: ``{token: when its answer arrived}`` (tokens of other steps are ignored).
        floor: ``{token: when its transport floor event arrived}`` (likewise).
        wall: Seconds of the step, wall clock.
        bridge_cpu: CPU seconds of the bridge process during the step.
        bench_cpu: CPU seconds of this process during the step.
        threads_peak: Most threads of the bridge during the step.

    Returns:
        The :class:`StepReport` (percentiles by nearest rank, in milliseconds).
    """
    from bridge.ops.loadkit import percentile

    posted = list(sent_at)
    delays = [answers[t] - sent_at[t] for t in posted if t in answers]
    floors = [floor[t] - sent_at[t] for t in posted if t in floor]
    first = min(sent_at.values(), default=0.0)
    last_post = max(sent_at.values(), default=0.0)
    last_answer = max((answers[t] for t in posted if t in answers), default=first)
    duration = max(last_answer - first, 1e-9)
    return StepReport(
        rate=rate, sent=len(posted), answered=len(delays), lost=len(posted) - len(delays),
        post_rate=round((len(posted) - 1) / (last_post - first), 1)
        if last_post > first else 0.0,
        answered_per_s=round(len(delays) / duration, 1) if delays else 0.0,
        duration_s=round(duration if delays else 0.0, 3),
        p50_ms=_ms(percentile(delays, 0.5)), p99_ms=_ms(percentile(delays, 0.99)),
        floor_p50_ms=_ms(percentile(floors, 0.5)),
        floor_p99_ms=_ms(percentile(floors, 0.99)),
        threads_peak=threads_peak,
        bridge_cpu_pct=_percent(bridge_cpu, wall), bench_cpu_pct=_percent(bench_cpu, wall))


def _percent(cpu_s: float, wall_s: float) -> float:
    """CPU seconds over wall seconds, percent of one core (0.0 for no wall time)."""
    return round(100 * cpu_s / wall_s, 1) if wall_s > 0 else 0.0


def climb(step: Callable[[int, float], _S], rate: float, max_steps: int,
          say: Callable[[str], None]) -> list[_S]:
    """The throughput ladder: steps at ``rate``, twice that, ... (at most ``max_steps``).

    Stops after the first step that did not pass (:attr:`StepReport.passed`),
    when its :attr:`StepReport.progress` (answered messages per second; posts
    per second for a :class:`FloorStep`) grew by less than :data:`GROWTH`, or
    when the next rate would pass :data:`MAX_RATE`.

    Args:
        step: Runs step ``number`` (1, 2, ...) at an offered rate (messages per second).
        rate: Offered rate of the first step, messages per second.
        max_steps: Most steps.
        say: Told one line per step.

    Returns:
        The steps run, in order.
    """
    steps: list[_S] = []
    step_rate = rate
    for number in range(1, max_steps + 1):
        done = step(number, step_rate)
        steps.append(done)
        say(f"step {number}: {done.summary()}")
        if not done.passed:
            break
        if len(steps) > 1 and done.progress < steps[-2].progress * GROWTH:
            break
        step_rate *= 2
        if step_rate > MAX_RATE:
            break
    return steps


def _kb(field: str) -> int:
    """``"1234 kB"`` (a /proc status size) -> 1234; 0 when absent."""
    number = field.split()[0] if field.split() else ""
    return int(number) if number.isdigit() else 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


def _agent_calls(guild: GuildProcess, names: list[str]) -> dict[str, int]:
    """The agents' API calls so far by kind (``post``, ``edit``, ``presence``)."""
    calls = guild.api_calls()
    return {kind: sum(calls.get((kind, n), 0) for n in names)
            for kind in ("post", "edit", "presence")}


def _log_levels(path: Path) -> tuple[int, int]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0, 0
    warnings = sum(1 for line in lines if " WARNING " in line)
    errors = sum(1 for line in lines if " ERROR " in line or " CRITICAL " in line)
    return warnings, errors


def _ready(agents: int, channels: int) -> Callable[[BoardSnapshot], bool]:
    def ready(snapshot: BoardSnapshot) -> bool:
        up = [c for c in snapshot.connections if c.state == "connected"]
        return len(up) >= agents and all(c.channels >= channels for c in up)
    return ready


def run_bench(channels: int = 10, agents: int = 1, messages: int = 200, rate: float = 50.0,
              max_steps: int = 6, config: Path | None = None, log_copy: Path | None = None,
              progress: Callable[[str], None] | None = None,
              profile: Path | None = None, idle_wait_s: float = 0.0) -> BenchReport:
    """Run the bench and return its report.

    Args:
        channels: Channels to create and post in (N).
        agents: Echo agents bound to every channel (A); 0 runs no bridge and
            measures the transport floor only.
        messages: Messages per step (M).
        rate: Offered rate of the first step, messages per second (R); each
            further step doubles it.
        max_steps: Most steps of the throughput ladder.
        config: A bridge config template to run instead of the generated one
            (``{center_url}`` and ``{state_dir}`` are replaced); None: generated.
        log_copy: Where to copy the bridge's log at the end (None: not kept).
        progress: Called with one line per phase (None: silent).
        profile: Sample the bridge with py-spy during the steps (after the
            warm-up) and write its raw stacks here (None: no profile); see
            :mod:`bridge.ops.profile`.
        idle_wait_s: Seconds to wait after the steps before the bridge's RSS
            and threads at the end are taken (conversations idle longer than
            ``[bridge] scope_idle_s`` are stopped by then).

    Returns:
        The :class:`BenchReport`.

    Raises:
        ValueError: on a parameter out of range, or a ``config``, ``log_copy``
            or ``profile`` with no agents.
        bridge.ops.profile.ProfileError: py-spy is missing or cannot attach.
        ConfigError: when the ``config`` template is not a valid bridge config.
        RuntimeError: when the dev guild or the bridge cannot be started or a
            member cannot join.
    """
    if channels < 1 or agents < 0 or messages < 1 or rate <= 0 or max_steps < 1:
        raise ValueError("channels, messages, rate and steps must be positive, and agents "
                         "not negative")
    if agents == 0 and (config is not None or log_copy is not None or profile is not None):
        raise ValueError("with --agents 0 no bridge runs: --config, --log and --profile do "
                         "not apply")
    from adapters.chat.fabric.rest import FabricCenter, FabricGuild
    from bridge.ops.aiomembers import BenchLoop, Crowd
    from bridge.ops.guildproc import GuildProcess
    from bridge.ops.loadkit import BridgeProcess
    from bridge.ops.profile import Profiler

    say = progress or (lambda line: None)
    began = time.monotonic()
    names = agent_names(agents)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp, \
            GuildProcess(agents) as guild, BenchLoop() as loop:
        folder = Path(tmp)
        state_dir = folder / "var"
        bridge: BridgeProcess | None = None
        if agents:
            config_path = folder / "bridge.toml"
            if config is None:
                text = config_text(guild.center_url, state_dir, agents, guild.api_key("echo"))
            else:
                text = config.read_text(encoding="utf-8").replace(
                    "{center_url}", guild.center_url).replace("{state_dir}", str(state_dir))
            config_path.write_text(text, encoding="utf-8")
            load_config(config_path)
            bridge = BridgeProcess(config_path, state_dir, folder / "bridge.log")
        owner = FabricGuild(FabricCenter(guild.center_url).login(
            guild.api_key(MEMBERS[0])).guilds["dev"])
        invited = [guild.user_id(n) for n in (*MEMBERS[1:], *names)]
        channel_ids = [str(owner.create_channel(f"bench-{i}", "work", members=invited)["id"])
                       for i in range(channels)]
        say(f"{channels} channels created; " + (
            f"starting the bridge with {agents} agent(s)" if bridge is not None
            else "no agents: no bridge runs, the transport floor only"))
        crowd: Crowd | None = None
        sampler: _Sampler | None = None
        threads_idle = 0
        rss_idle_mb = 0.0
        snapshot: BoardSnapshot | None = None
        try:
            if bridge is not None:
                bridge.start(_ready(agents, channels),
                             timeout_s=30.0 + channels * agents / 20)
                sampler = _Sampler(bridge.pid or 0)
                time.sleep(0.5)
                threads_idle = sampler.sample()
                rss_idle_mb = round(_kb(proc_status(bridge.pid or 0).get("VmRSS", "")) / 1024, 1)
                sampler.start()
            crowd = loop.run(Crowd.open(guild.center_url, {n: guild.api_key(n) for n in MEMBERS},
                                        channel_ids, IN_FLIGHT))
            bench = _Bench(loop, crowd, guild, bridge, channel_ids,
                           [guild.user_id(n) for n in names], sampler)
            warm = bench.step(0, rate, channels)  # one message per channel
            say((f"bridge pid {bridge.pid}: {threads_idle} threads idle; warm-up "
                 f"{warm.answered}/{warm.sent} answered") if bridge is not None else
                f"warm-up: {warm.delivered}/{warm.sent} reached the other member")
            calls_before = _agent_calls(guild, names)
            profiler = Profiler(bridge.pid or 0, profile) if profile and bridge else None
            if profiler is not None:
                profiler.start()
            steps = climb(lambda number, step_rate: bench.step(number, step_rate, messages),
                          rate, max_steps, say)
            if profiler is not None:
                profiler.stop()
                say(f"profile of the bridge during the steps written to {profile}")
            calls_after = _agent_calls(guild, names)
            if bridge is not None and idle_wait_s > 0:
                say(f"waiting {idle_wait_s:g} s with every conversation idle")
                time.sleep(idle_wait_s)
            end = proc_status(bridge.pid or 0) if bridge is not None else {}
            if bridge is not None and sampler is not None:
                time.sleep(0.6)  # one more status.json write
                snapshot = read_status(state_dir)
                sampler.stop()
        finally:
            if crowd is not None:
                loop.run(crowd.close(), timeout_s=5.0)
            if bridge is not None:
                bridge.stop()
        warnings, errors = _log_levels(folder / "bridge.log") if bridge else (0, 0)
        if log_copy is not None:
            shutil.copyfile(folder / "bridge.log", log_copy)
    first = steps[0]
    passing = [s for s in steps if s.passed]
    best = passing[-1] if passing else None
    answered = sum(s.answered for s in steps)
    posts, edits, presence = (calls_after[kind] - calls_before[kind]
                              for kind in ("post", "edit", "presence"))
    return BenchReport(
        channels=channels, agents=agents, messages=messages, rate=rate,
        floor_p50_ms=first.floor_p50_ms, floor_p99_ms=first.floor_p99_ms,
        bridge_p50_ms=first.p50_ms, bridge_p99_ms=first.p99_ms,
        overhead_p50_ms=round(first.p50_ms - first.floor_p50_ms, 2) if first.answered else 0.0,
        overhead_p99_ms=round(first.p99_ms - first.floor_p99_ms, 2) if first.answered else 0.0,
        throughput_per_s=best.answered_per_s if best else 0.0,
        throughput_rate=best.rate if best else 0.0,
        sent=sum(s.sent for s in steps), answered=answered, lost=sum(s.lost for s in steps),
        extra=bench.tracker.extra, post_errors=bench.post_errors,
        rss_mb=round(sampler.rss_kb / 1024, 1) if sampler else 0.0, threads_idle=threads_idle,
        rss_idle_mb=rss_idle_mb, threads_peak=sampler.peak_threads if sampler else 0,
        rss_end_mb=round(_kb(end.get("VmRSS", "")) / 1024, 1),
        threads_end=int(end.get("Threads", "0") or 0),
        actors=len(snapshot.actors) if snapshot else 0,
        scopes=len(snapshot.scopes) if snapshot else 0,
        agent_posts=posts, agent_edits=edits, agent_presence=presence,
        posts_per_answer=_ratio(posts, answered), edits_per_answer=_ratio(edits, answered),
        api_calls_per_answer=_ratio(posts + edits, answered),
        presence_per_answer=_ratio(presence, answered),
        bridge_log_warnings=warnings, bridge_log_errors=errors,
        duration_s=round(time.monotonic() - began, 1), steps=tuple(steps))


# -- output --------------------------------------------------------------------


def json_fields_help() -> str:
    """The ``--json`` fields as text for ``bridge bench --help``."""
    return "; ".join(f"{name}: {text}" for name, text in JSON_FIELDS.items())


def percentile_table(title: str, rows: Iterable[tuple[str, float, float]]) -> Any:
    """A rich table of measures with their p50 and p99.

    Args:
        title: The table's title.
        rows: ``(measure, p50, p99)``, in milliseconds or the unit the measure names.
    """
    from rich.table import Table

    summary = Table(title=title)
    summary.add_column("measure")
    summary.add_column("p50", justify="right")
    summary.add_column("p99", justify="right")
    for name, p50, p99 in rows:
        summary.add_row(name, f"{p50:.1f}", f"{p99:.1f}")
    return summary


def render(report: BenchReport) -> Any:
    """The report as rich renderables (a summary table, totals and the steps)."""
    from rich.console import Group
    from rich.table import Table

    if report.agents == 0:
        return render_floor(report)
    summary = percentile_table(
        f"bridge bench: {report.channels} channels, {report.agents} agent(s), "
        f"{report.messages} messages/step, from {report.rate:g}/s",
        [("transport floor (ms)", report.floor_p50_ms, report.floor_p99_ms),
         ("post -> answer (ms)", report.bridge_p50_ms, report.bridge_p99_ms),
         ("bridge overhead (ms)", report.overhead_p50_ms, report.overhead_p99_ms)])
    totals = Table(show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    rows = [
        ("sustained throughput", f"{report.throughput_per_s:g} answered/s at "
                                 f"{report.throughput_rate:g}/s offered"),
        ("sent / answered / lost / extra",
         f"{report.sent} / {report.answered} / {report.lost} / {report.extra}"),
        ("peak RSS of the bridge", f"{report.rss_mb:.1f} MB"),
        ("threads idle / peak", f"{report.threads_idle} / {report.threads_peak}"),
        ("RSS idle / at the end", f"{report.rss_idle_mb:.1f} / {report.rss_end_mb:.1f} MB"),
        ("threads at the end", f"{report.threads_end}"),
        ("actors / scopes at the end", f"{report.actors} / {report.scopes}"),
        ("agent API calls per answer", f"{report.api_calls_per_answer:g} (posts "
                                       f"{report.posts_per_answer:g}, edits "
                                       f"{report.edits_per_answer:g}); presence "
                                       f"{report.presence_per_answer:g}"),
        ("bridge log warnings / errors",
         f"{report.bridge_log_warnings} / {report.bridge_log_errors}"),
        ("run time", f"{report.duration_s:g} s"),
    ]
    for row in rows:
        totals.add_row(*row)
    return Group(summary, totals, steps_table(report.steps, guild=True))


def render_floor(report: BenchReport) -> Any:
    """A run with no agents as rich renderables: it says no bridge ran, then the floor."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    summary = percentile_table(
        f"bridge bench: NO BRIDGE RAN (--agents 0): the transport floor only; "
        f"{report.channels} channels, {report.messages} messages/step, from "
        f"{report.rate:g}/s",
        [("transport floor (ms)", report.floor_p50_ms, report.floor_p99_ms)])
    totals = Table(show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    passing = [s for s in report.steps if s.passed]
    rows = [
        ("bridge", "none ran: no agents, so no answers, bridge CPU, memory or threads"),
        ("sent / reached the other member / post errors",
         f"{report.sent} / {sum(s.delivered for s in report.steps)} / {report.post_errors}"),
        ("most posts/s of a passing step", f"{max(s.post_rate for s in passing):g} at "
                                           f"{report.throughput_rate:g}/s offered"
         if passing else "none passed"),
        ("run time", f"{report.duration_s:g} s"),
    ]
    for row in rows:
        totals.add_row(*row)
    table = Table(title="transport floor steps (no bridge): rates per second, times in ms; "
                        "reached: posts whose message.created reached the other member; "
                        "bench, guild: % of one core used by this process, by the dev "
                        "guild's", box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
    for column in ("offer", "post", "reached", "floor50", "floor99", "bench", "guild",
                   "passed"):
        table.add_column(column, justify="right")
    for s in report.steps:
        table.add_row(f"{s.rate:g}", f"{s.post_rate:g}", f"{s.delivered}/{s.sent}",
                      f"{s.floor_p50_ms:.1f}", f"{s.floor_p99_ms:.1f}",
                      f"{s.bench_cpu_pct:.0f}", f"{s.guild_cpu_pct:.0f}",
                      "yes" if s.passed else "no")
    return Group(summary, totals, table)


def steps_table(steps: Iterable[StepReport], floor: str = "floor99",
                guild: bool = False) -> Any:
    """The throughput steps as a rich table; ``floor`` heads the floor's p99 column.

    With ``guild`` a last column holds the dev guild's CPU (of a :class:`GuildStep`).
    """
    from rich import box
    from rich.table import Table

    title = ("throughput steps: rates per second, times in ms; thr: bridge threads; cpu, "
             "bench: % of one core used by the bridge, by this process")
    columns = ["offer", "post", "answered", "lost", "answ/s", "p50", "p99", floor, "thr",
               "cpu", "bench"]
    if guild:
        title += ", guild: by the dev guild's"
        columns.append("guild")
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right")
    for s in steps:
        row = [f"{s.rate:g}", f"{s.post_rate:g}", f"{s.answered}/{s.sent}",
               str(s.lost), f"{s.answered_per_s:g}", f"{s.p50_ms:.1f}",
               f"{s.p99_ms:.1f}", f"{s.floor_p99_ms:.1f}", str(s.threads_peak),
               f"{s.bridge_cpu_pct:.0f}", f"{s.bench_cpu_pct:.0f}"]
        if guild:
            row.append(f"{s.guild_cpu_pct:.0f}" if isinstance(s, GuildStep) else "-")
        table.add_row(*row)
    return table


class Report(Protocol):
    """What :func:`present` prints: a report that is also a JSON object."""

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""


def present(run: Callable[[Callable[[str], None]], _R], render_report: Callable[[_R], Any],
            as_json: bool) -> int:
    """Run a bench and print its report: rich tables, or one JSON object with ``as_json``.

    Args:
        run: Runs the bench, telling its progress lines to the function it gets.
        render_report: The report as rich renderables.
        as_json: Print ``report.to_dict()`` as JSON on stdout (progress stays silent).

    Returns:
        0 when the run completed, 1 when it could not run, 2 for a bad config.
    """
    from rich.console import Console

    console = Console(stderr=as_json)

    def show(line: str) -> None:
        if not as_json:
            console.print(f"  {line}", highlight=False)

    try:
        report = run(show)
    except ConfigError as exc:
        print(f"bridge bench: bad config: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError, ChatError) as exc:
        print(f"bridge bench: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report.to_dict()), flush=True)
    else:
        console.print(render_report(report))
    return 0


def main_bench(channels: int, agents: int, messages: int, rate: float, max_steps: int,
               config: Path | None, as_json: bool, log_copy: Path | None = None,
               profile: Path | None = None, idle_wait_s: float = 0.0) -> int:
    """``bridge bench``: print the report; exit 0 when the run completed.

    With ``profile``, the functions that took the most samples follow the
    report (on standard error with ``as_json``, so the JSON stays alone).

    Returns:
        0 when the run completed, 1 when it could not run, 2 for a bad config.
    """
    from bridge.ops.profile import ProfileError

    def run(show: Callable[[str], None]) -> BenchReport:
        try:
            return run_bench(channels, agents, messages, rate, max_steps, config, log_copy,
                             show, profile, idle_wait_s)
        except ProfileError as exc:
            raise RuntimeError(str(exc)) from None

    code = present(run, render, as_json)
    if code == 0 and profile is not None:
        from rich.console import Console

        from bridge.ops.profile import render_summary, summarize_file

        Console(stderr=as_json).print(render_summary(
            summarize_file(profile), f"the bridge during the steps ({profile})"))
    return code
