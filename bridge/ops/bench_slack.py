"""``bridge bench --platform slack``: what the bridge costs on Slack, measured against
the Slack double.

Starts the Slack double (:class:`adapters.chat.slack.double.SlackDouble`) on
loopback in this process, with one app per agent (``echo``, ``echo2``, ...;
each with its own bot and app-level tokens), a member ``alice``, and N public
channels holding alice and every agent's bot. The bridge runs as a child process
(``bin/bridge start --no-tui``, so its RSS and threads are its own) with a
config that has only ``[platforms.slack]``: the echo agents bound to every
channel, ``debounce_s = 0``, log level ``warning``, and tokens referenced as
``env:BRIDGE_BENCH_SLACK_BOT_<AGENT>`` / ``env:BRIDGE_BENCH_SLACK_APP_<AGENT>``
(the values are handed to the child in its environment, never written to a
file).

Alice posts through the double (as a person in Slack does; no Web API call), each
post a channel ``@mention`` of one agent (round robin, so each (agent, channel)
pair is used) holding a unique token; the echo agent's answer repeats the text
in the post's thread. The bench finds answers without reading histories: the
double calls an observer on every stored message and on every Socket Mode ack
(:meth:`SlackDouble.observe` and :meth:`SlackDouble.observe_acks`), which
timestamps them on a monotonic clock of this process.

One run measures:

- the transport floor: post -> the bridge's Socket Mode ack of the post's
  ``app_mention`` envelope (the bridge acks before any work);
- the bridge: post -> the mentioned agent's answer stored in the post's thread;
- throughput: steps of M messages at R, 2R, 4R, ... messages per second, with
  the ladder of :func:`bridge.ops.bench.climb`;
- answers lost (none within 15 s of a step's last post), doubled (more than
  one answer to one post) and extra (any bot message holding a token beyond the
  one right answer);
- the bridge process's peak RSS, threads, and CPU per step (as the Fabric bench);
- the bridge's Web API calls during the steps (the double's counters);
- recovery: from an abrupt socket close (``drop_sockets``), and from a
  ``disconnect`` envelope, to the answer of a message posted right after it.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from bridge.cli.compose import load_config
from bridge.ops.bench import (
    SETTLE_S,
    TOKEN_PREFIX,
    StepReport,
    _log_levels,
    _ratio,
    _ready,
    _Sampler,
    agent_names,
    climb,
    cpu_seconds,
    percentile_table,
    post_paced,
    present,
    step_report,
    steps_table,
)
from bridge.statefiles import read_status

if TYPE_CHECKING:  # imported when a bench runs, not by ``bridge --help``
    from adapters.chat.slack.double import Delivery, SlackApp, SlackDouble
    from bridge.ops.loadkit import BridgeProcess

#: The member who posts.
MEMBER = "alice"
#: Threads posting in parallel (posts are in-process calls into the double).
POSTERS = 4
#: Seconds allowed from a socket fault to the answer of the next message.
RECOVERY_S = 30.0
#: Seconds to wait for an app to be back to one open socket before a fault.
STEADY_S = 15.0
#: The environment variables that hand an agent's tokens to the bridge
#: (``{kind}`` is ``BOT`` or ``APP``, ``{agent}`` the agent's name in capitals).
TOKEN_ENV = "BRIDGE_BENCH_SLACK_{kind}_{agent}"

#: The ``--json`` fields of ``--platform slack``, documented in ``bridge bench --help``.
JSON_FIELDS = {
    "platform": "always slack (the Fabric bench's JSON has no such field)",
    "channels": "channels created for the run (N)",
    "agents": "echo agents, one Slack app each, each bound to every channel (A)",
    "messages": "messages per step (M)",
    "rate": "offered rate of the first step, messages/s (R)",
    "ack_p50_ms": "transport floor at rate R: post -> the bridge's Socket Mode ack of its "
                  "app_mention envelope, median, ms",
    "ack_p99_ms": "the same, 99th percentile, ms",
    "bridge_p50_ms": "bridge at rate R: post -> the agent's answer stored in the post's "
                     "thread, median, ms",
    "bridge_p99_ms": "the same, 99th percentile, ms",
    "overhead_p50_ms": "bridge_p50_ms - ack_p50_ms (0 when nothing was answered)",
    "overhead_p99_ms": "bridge_p99_ms - ack_p99_ms (0 when nothing was answered)",
    "throughput_per_s": "answered messages/s at the highest step with p99 < 1 s and none "
                        "lost (0 when none)",
    "throughput_rate": "offered rate of that step, messages/s (0 when none)",
    "sent": "messages posted over all steps",
    "answered": "of those, answered in their thread by the agent they mention",
    "lost": "not answered within 15 s of the step's last post",
    "doubled": "messages of the whole run (warm-up and recovery too) with more than one "
               "answer",
    "extra": "bot messages of the whole run holding a message's token beyond its one right "
             "answer (a second answer, another agent, outside the thread)",
    "post_errors": "member posts the double refused (not counted as sent)",
    "rss_mb": "peak RSS of the bridge process (VmHWM), MB",
    "threads_idle": "threads of the bridge process once connected, before any message",
    "threads_peak": "most threads of the bridge process in any 100 ms sample",
    "actors": "actors in the bridge's supervision tree at the end",
    "scopes": "scopes in the bridge at the end",
    "api_calls": "the bridge's Web API calls during the steps (every method)",
    "api_methods": "those calls by method, {method: calls}",
    "posts_per_answer": "chat.postMessage calls / answered",
    "api_calls_per_answer": "api_calls / answered",
    "reconnect_s": "seconds from an abrupt close of the first agent's socket (no close "
                   "frame) to the answer of a message posted right after it (-1: none within "
                   "30 s)",
    "reconnect_disconnect_s": "the same after a Socket Mode disconnect envelope "
                              "(refresh_requested) instead",
    "bridge_log_warnings": "WARNING lines in the bridge's log (slack-sdk's too)",
    "bridge_log_errors": "ERROR and CRITICAL lines in the bridge's log (slack-sdk logs an "
                         "ERROR when a socket drops)",
    "duration_s": "seconds of the whole run, start to stop",
    "steps": "one object per step: rate, sent, answered, lost, post_rate, answered_per_s, "
             "duration_s, p50_ms, p99_ms, floor_p50_ms and floor_p99_ms (the ack), "
             "threads_peak, bridge_cpu_pct, bench_cpu_pct",
}


@attrs.frozen
class SlackBenchReport:
    """What a Slack bench run measured; the fields are described in :data:`JSON_FIELDS`."""

    channels: int
    agents: int
    messages: int
    rate: float
    ack_p50_ms: float
    ack_p99_ms: float
    bridge_p50_ms: float
    bridge_p99_ms: float
    overhead_p50_ms: float
    overhead_p99_ms: float
    throughput_per_s: float
    throughput_rate: float
    sent: int
    answered: int
    lost: int
    doubled: int
    extra: int
    post_errors: int
    rss_mb: float
    threads_idle: int
    threads_peak: int
    actors: int
    scopes: int
    api_calls: int
    api_methods: dict[str, int]
    posts_per_answer: float
    api_calls_per_answer: float
    reconnect_s: float
    reconnect_disconnect_s: float
    bridge_log_warnings: int
    bridge_log_errors: int
    duration_s: float
    steps: tuple[StepReport, ...]
    platform: str = "slack"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the keys of :data:`JSON_FIELDS`."""
        data = attrs.asdict(self, recurse=True)
        data["steps"] = [attrs.asdict(step) for step in self.steps]
        return data


def token_env(agent: str, kind: str) -> str:
    """The environment variable holding an agent's ``BOT`` or ``APP`` token."""
    return TOKEN_ENV.format(kind=kind, agent=agent.upper())


def config_text(api_url: str, state_dir: Path, agents: int) -> str:
    """The bridge config of a Slack bench run: only ``[platforms.slack]``, A echo
    agents bound to every channel, tokens as ``env:`` references (:func:`token_env`)."""
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "{state_dir}"
        debounce_s = 0.0
        log_level = "warning"

        [platforms.slack]
        api_url = "{api_url}"
    """)
    for name in agent_names(agents):
        text += textwrap.dedent(f"""
            [agents.{name}]
            kind = "echo"
            max_runs_per_hour = 0

            [agents.{name}.slack]
            bot_token = "env:{token_env(name, 'BOT')}"
            app_token = "env:{token_env(name, 'APP')}"

            [[bindings]]
            agent = "{name}"
            platform = "slack"
            channels = ["*"]
        """)
    return text


def child_env(apps: Mapping[str, SlackApp]) -> dict[str, str]:
    """This process's environment plus each agent's tokens, without proxy settings
    (slack-sdk honours ``HTTP(S)_PROXY`` and ignores ``NO_PROXY``, so loopback
    would go to the proxy)."""
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy")}
    for name, app in apps.items():
        env[token_env(name, "BOT")] = app.bot_token
        env[token_env(name, "APP")] = app.app_token
    return env


# -- what the double saw -------------------------------------------------------


@attrs.define
class _Post:
    posted_at: float
    bot_user_id: str
    app_id: str
    ts: str = ""


class SlackTracker:
    """Matches what the double observed (messages stored, acks) to the bench's posts.

    The double's observers (:meth:`on_message`, :meth:`on_ack`) only queue what
    they see with the time they saw it; :meth:`drain` does the matching on the
    bench's thread. One queue keeps the double's order: a post is always seen
    before its ack and its answer.

    Args:
        member_id: The posting member's user id.
        bot_users: ``{bot user id: app id}`` of the bench's agents.

    Attributes:
        answers: ``{token: when its right answer was stored}`` (monotonic seconds).
        floor: ``{token: when the mentioned app acked its app_mention}``.
        extra: Bot messages holding a token beyond its one right answer.
    """

    def __init__(self, member_id: str, bot_users: Mapping[str, str]) -> None:
        self.member_id = member_id
        self.bot_users = dict(bot_users)
        self.sent: dict[str, _Post] = {}
        self.answers: dict[str, float] = {}
        self.floor: dict[str, float] = {}
        self.extra = 0
        self._holding: collections.Counter[str] = collections.Counter()
        self._by_ts: dict[str, str] = {}
        self._seen: collections.deque[tuple[float, str, Any]] = collections.deque()
        self._lock = threading.Lock()

    @property
    def doubled(self) -> int:
        """Posts with more than one bot message holding their token."""
        return sum(1 for count in self._holding.values() if count > 1)

    def expect(self, token: str, posted_at: float, bot_user_id: str) -> None:
        """Register a token about to be posted, mentioning ``bot_user_id`` (thread-safe)."""
        with self._lock:
            self.sent[token] = _Post(posted_at, bot_user_id, self.bot_users[bot_user_id])

    def forget(self, token: str) -> None:
        """Drop a token whose post failed (thread-safe)."""
        with self._lock:
            self.sent.pop(token, None)

    def posted(self, tokens: list[str]) -> dict[str, float]:
        """``{token: when it was posted}`` for those of ``tokens`` posted (thread-safe)."""
        with self._lock:
            return {t: self.sent[t].posted_at for t in tokens if t in self.sent}

    def on_message(self, change: str, message: dict[str, Any]) -> None:
        """The double's message observer: queue a new message with the time now."""
        if change == "posted":
            self._seen.append((time.monotonic(), "message", message))

    def on_ack(self, app_id: str, delivery: Delivery) -> None:
        """The double's ack observer: queue an ``app_mention`` ack with the time now."""
        event = delivery.payload.get("event")
        if isinstance(event, dict) and event.get("type") == "app_mention":
            self._seen.append((time.monotonic(), "ack", (app_id, str(event.get("ts")))))

    def drain(self) -> None:
        """Match everything queued so far."""
        while self._seen:
            at, kind, data = self._seen.popleft()
            if kind == "ack":
                self._ack(at, *data)
            else:
                self._message(at, data)

    def _token(self, text: str) -> tuple[str, _Post] | None:
        for word in text.split():
            if word.startswith(TOKEN_PREFIX):
                with self._lock:
                    post = self.sent.get(word)
                if post is not None:
                    return word, post
        return None

    def _message(self, at: float, message: dict[str, Any]) -> None:
        found = self._token(str(message.get("text", "")))
        if found is None:
            return
        token, post = found
        author = message.get("user")
        if author == self.member_id and not message.get("bot_id"):
            post.ts = str(message.get("ts"))
            self._by_ts[post.ts] = token
            return
        if author not in self.bot_users:
            return
        self._holding[token] += 1
        right = (author == post.bot_user_id and bool(post.ts)
                 and message.get("thread_ts") == post.ts)
        if right and token not in self.answers:
            self.answers[token] = at
        else:
            self.extra += 1

    def _ack(self, at: float, app_id: str, ts: str) -> None:
        token = self._by_ts.get(ts)
        if token is None or token in self.floor:
            return
        with self._lock:
            post = self.sent.get(token)
        if post is not None and post.app_id == app_id:
            self.floor[token] = at


# -- the run -------------------------------------------------------------------


class _SlackBench:
    """State of one Slack bench run (double, bridge, member, channels, apps)."""

    def __init__(self, double: SlackDouble, bridge: BridgeProcess, member_id: str,
                 channel_ids: list[str], apps: list[SlackApp], sampler: _Sampler) -> None:
        self.double = double
        self.bridge = bridge
        self.member_id = member_id
        self.channel_ids = channel_ids
        self.apps = apps
        self.sampler = sampler
        self.tracker = SlackTracker(member_id, {app.bot_user_id: app.app_id for app in apps})
        self.post_errors = 0
        double.observe(self.tracker.on_message)
        double.observe_acks(self.tracker.on_ack)

    def _post(self, token: str, channel: str, app: SlackApp) -> bool:
        """Post ``token`` as a mention of ``app`` in ``channel``; False when refused."""
        from adapters.chat.slack.double import SlackError

        self.tracker.expect(token, time.monotonic(), app.bot_user_id)
        try:
            self.double.post(self.member_id, channel, f"<@{app.bot_user_id}> {token}")
        except SlackError:
            self.tracker.forget(token)
            return False
        return True

    def step(self, number: int, rate: float, count: int) -> StepReport:
        """Post ``count`` messages at ``rate`` per second and wait for their answers."""
        tokens = [f"{TOKEN_PREFIX}{number}-{i:06d}" for i in range(count)]
        channels, apps = self.channel_ids, self.apps
        lock = threading.Lock()
        errors = [0]
        self.sampler.window()
        pid = self.bridge.pid or 0
        cpu_before, bench_before, wall_before = (cpu_seconds(pid), time.process_time(),
                                                 time.monotonic())

        def post(i: int) -> None:
            app = apps[(i // len(channels)) % len(apps)]
            if not self._post(tokens[i], channels[i % len(channels)], app):
                with lock:
                    errors[0] += 1

        tracker = self.tracker
        post_paced(count, rate, [post] * POSTERS, tracker.drain)
        posted = tracker.posted(tokens)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            tracker.drain()
            if all(t in tracker.answers and t in tracker.floor for t in posted):
                break
            time.sleep(0.01)
        tracker.drain()
        wall = time.monotonic() - wall_before
        self.post_errors += errors[0]
        return step_report(rate, posted, tracker.answers, tracker.floor, wall=wall,
                           bridge_cpu=cpu_seconds(pid) - cpu_before,
                           bench_cpu=time.process_time() - bench_before,
                           threads_peak=self.sampler.window())

    def recover(self, label: str, fault: Callable[[SlackApp], int]) -> float:
        """Seconds from ``fault`` on the first agent's sockets to the answer of a
        message posted right after it; -1.0 when none within :data:`RECOVERY_S`
        (or when the app had no socket to hurt)."""
        app = self.apps[0]
        _wait(lambda: self.double.sockets(app) == 1, STEADY_S)
        token = f"{TOKEN_PREFIX}{label}-000000"
        at = time.monotonic()
        if fault(app) < 1 or not self._post(token, self.channel_ids[0], app):
            return -1.0
        deadline = at + RECOVERY_S
        while time.monotonic() < deadline:
            self.tracker.drain()
            if token in self.tracker.answers:
                return round(self.tracker.answers[token] - at, 3)
            time.sleep(0.01)
        return -1.0


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 50 ms until it holds or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def run_slack_bench(channels: int = 10, agents: int = 1, messages: int = 200,
                    rate: float = 50.0, max_steps: int = 6, config: Path | None = None,
                    log_copy: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> SlackBenchReport:
    """Run the bench against the Slack double and return its report.

    Args:
        channels: Channels to create and post in (N).
        agents: Echo agents, one Slack app each, bound to every channel (A).
        messages: Messages per step (M).
        rate: Offered rate of the first step, messages per second (R); each
            further step doubles it.
        max_steps: Most steps of the throughput ladder.
        config: A bridge config template to run instead of the generated one
            (``{api_url}`` and ``{state_dir}`` are replaced; tokens as in
            :func:`config_text`); None: generated.
        log_copy: Where to copy the bridge's log at the end (None: not kept).
        progress: Called with one line per phase (None: silent).

    Returns:
        The :class:`SlackBenchReport`.

    Raises:
        ValueError: on a parameter out of range.
        ConfigError: when the ``config`` template is not a valid bridge config.
        RuntimeError: when the bridge cannot be started.
        OSError: when the double cannot listen.
    """
    if channels < 1 or agents < 1 or messages < 1 or rate <= 0 or max_steps < 1:
        raise ValueError("channels, agents, messages, rate and steps must be positive")
    from adapters.chat.slack.checks import BOT_SCOPES
    from adapters.chat.slack.double import SlackDouble
    from bridge.ops.loadkit import BridgeProcess

    say = progress or (lambda line: None)
    began = time.monotonic()
    names = agent_names(agents)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp, SlackDouble() as double:
        folder = Path(tmp)
        state_dir = folder / "var"
        config_path = folder / "bridge.toml"
        apps = {name: double.add_app(name, scopes=BOT_SCOPES) for name in names}
        member_id = double.add_user(MEMBER)
        channel_ids = [double.add_channel(f"bench-{i}", [member_id, *apps.values()])
                       for i in range(channels)]
        if config is None:
            text = config_text(double.api_url, state_dir, agents)
        else:
            text = config.read_text(encoding="utf-8").replace(
                "{api_url}", double.api_url).replace("{state_dir}", str(state_dir))
        config_path.write_text(text, encoding="utf-8")
        env = child_env(apps)
        _check_config(config_path, env)
        say(f"{channels} channels created; starting the bridge with {agents} agent(s)")
        bridge = BridgeProcess(config_path, state_dir, folder / "bridge.log", env)
        try:
            bridge.start(_ready(agents, channels), timeout_s=30.0 + channels * agents / 20)
            sampler = _Sampler(bridge.pid or 0)
            time.sleep(0.5)
            threads_idle = sampler.sample()
            sampler.start()
            bench = _SlackBench(double, bridge, member_id, channel_ids, list(apps.values()),
                                sampler)
            warm = bench.step(0, rate, channels)  # one message per channel
            say(f"bridge pid {bridge.pid}: {threads_idle} threads idle; warm-up "
                f"{warm.answered}/{warm.sent} answered")
            calls_before = double.call_counts()
            steps = climb(lambda number, step_rate: bench.step(number, step_rate, messages),
                          rate, max_steps, say)
            calls_after = double.call_counts()
            reconnect_s = bench.recover("drop", double.drop_sockets)
            say(f"dropped socket: next answer after {reconnect_s:g} s")
            disconnect_s = bench.recover("disc", double.disconnect)
            say(f"disconnect envelope: next answer after {disconnect_s:g} s")
            time.sleep(0.6)  # one more status.json write; late doubles land
            bench.tracker.drain()
            snapshot = read_status(state_dir)
            sampler.stop()
        finally:
            bridge.stop()
        warnings, errors = _log_levels(folder / "bridge.log")
        if log_copy is not None:
            shutil.copyfile(folder / "bridge.log", log_copy)
    first = steps[0]
    passing = [s for s in steps if s.passed]
    best = passing[-1] if passing else None
    answered = sum(s.answered for s in steps)
    methods = {method: calls - calls_before.get(method, 0)
               for method, calls in sorted(calls_after.items())
               if calls > calls_before.get(method, 0)}
    api_calls = sum(methods.values())
    return SlackBenchReport(
        channels=channels, agents=agents, messages=messages, rate=rate,
        ack_p50_ms=first.floor_p50_ms, ack_p99_ms=first.floor_p99_ms,
        bridge_p50_ms=first.p50_ms, bridge_p99_ms=first.p99_ms,
        overhead_p50_ms=round(first.p50_ms - first.floor_p50_ms, 2) if first.answered else 0.0,
        overhead_p99_ms=round(first.p99_ms - first.floor_p99_ms, 2) if first.answered else 0.0,
        throughput_per_s=best.answered_per_s if best else 0.0,
        throughput_rate=best.rate if best else 0.0,
        sent=sum(s.sent for s in steps), answered=answered, lost=sum(s.lost for s in steps),
        doubled=bench.tracker.doubled, extra=bench.tracker.extra,
        post_errors=bench.post_errors, rss_mb=round(sampler.rss_kb / 1024, 1),
        threads_idle=threads_idle, threads_peak=sampler.peak_threads,
        actors=len(snapshot.actors) if snapshot else 0,
        scopes=len(snapshot.scopes) if snapshot else 0,
        api_calls=api_calls, api_methods=methods,
        posts_per_answer=_ratio(methods.get("chat.postMessage", 0), answered),
        api_calls_per_answer=_ratio(api_calls, answered),
        reconnect_s=reconnect_s, reconnect_disconnect_s=disconnect_s,
        bridge_log_warnings=warnings, bridge_log_errors=errors,
        duration_s=round(time.monotonic() - began, 1), steps=tuple(steps))


def _check_config(path: Path, env: Mapping[str, str]) -> None:
    """Load the config as the child will, with its token variables set here for the while.

    Raises:
        ConfigError: when it is not a valid bridge config.
    """
    added = {key: value for key, value in env.items() if key not in os.environ}
    os.environ.update(added)
    try:
        load_config(path)
    finally:
        for key in added:
            os.environ.pop(key, None)


# -- output --------------------------------------------------------------------


def json_fields_help() -> str:
    """The ``--platform slack`` ``--json`` fields as text for ``bridge bench --help``."""
    return "; ".join(f"{name}: {text}" for name, text in JSON_FIELDS.items())


def _seconds(value: float) -> str:
    return "no answer within 30 s" if value < 0 else f"{value:.2f} s"


def render(report: SlackBenchReport) -> Any:
    """The report as rich renderables (a summary table, totals and the steps)."""
    from rich.console import Group
    from rich.table import Table

    summary = percentile_table(
        f"bridge bench --platform slack: {report.channels} channels, {report.agents} "
        f"agent(s), {report.messages} messages/step, from {report.rate:g}/s",
        [("post -> Socket Mode ack (ms)", report.ack_p50_ms, report.ack_p99_ms),
         ("post -> answer in thread (ms)", report.bridge_p50_ms, report.bridge_p99_ms),
         ("bridge overhead (ms)", report.overhead_p50_ms, report.overhead_p99_ms)])
    totals = Table(show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    methods = ", ".join(f"{method} {calls / report.answered:.2f}"
                        for method, calls in report.api_methods.items()) \
        if report.answered else "-"
    rows = [
        ("sustained throughput", f"{report.throughput_per_s:g} answered/s at "
                                 f"{report.throughput_rate:g}/s offered"),
        ("sent / answered / lost / doubled / extra",
         f"{report.sent} / {report.answered} / {report.lost} / {report.doubled} / "
         f"{report.extra}"),
        ("peak RSS of the bridge", f"{report.rss_mb:.1f} MB"),
        ("threads idle / peak", f"{report.threads_idle} / {report.threads_peak}"),
        ("actors / scopes at the end", f"{report.actors} / {report.scopes}"),
        ("Web API calls per answer", f"{report.api_calls_per_answer:g} ({methods})"),
        ("dropped socket -> next answer", _seconds(report.reconnect_s)),
        ("disconnect envelope -> next answer", _seconds(report.reconnect_disconnect_s)),
        ("bridge log warnings / errors",
         f"{report.bridge_log_warnings} / {report.bridge_log_errors}"),
        ("run time", f"{report.duration_s:g} s"),
    ]
    for row in rows:
        totals.add_row(*row)
    return Group(summary, totals, steps_table(report.steps, floor="ack99"))


def main_slack_bench(channels: int, agents: int, messages: int, rate: float, max_steps: int,
                     config: Path | None, as_json: bool, log_copy: Path | None = None) -> int:
    """``bridge bench --platform slack``: print the report; exit 0 when the run completed.

    Returns:
        0 when the run completed, 1 when it could not run, 2 for a bad config.
    """
    return present(lambda show: run_slack_bench(channels, agents, messages, rate, max_steps,
                                                config, log_copy, show), render, as_json)
