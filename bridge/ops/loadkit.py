"""Pieces shared by the load tools (``bridge soak``, ``bridge bench``).

A member who posts over the guild's REST API, the bridge as a child process
(``bin/bridge start --no-tui -c CONFIG``), and a nearest-rank percentile.

For the benches against a platform double started in this process
(``bridge bench --platform slack``, ``--platform lark``): the token
bookkeeping (:class:`TokenTracker`), the paced steps and the recovery probe
(:class:`DoubleBench`), and one whole measured run (:func:`measure`).

Light to import (``bridge --help`` imports the benches for their JSON fields):
platform SDKs and doubles are imported where they are used.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from bridge.board import BoardSnapshot
from bridge.cli.compose import load_config
from bridge.errors import Unauthorized
from bridge.ops.bench import (
    SETTLE_S,
    TOKEN_PREFIX,
    StepReport,
    _log_levels,
    _ratio,
    _ready,
    _Sampler,
    climb,
    cpu_seconds,
    post_paced,
    step_report,
)
from bridge.statefiles import read_status

if TYPE_CHECKING:  # imported where a member posts, not by ``bridge --help``
    from adapters.chat.fabric.devguild import DevGuild

_App = TypeVar("_App")

ROOT = Path(__file__).resolve().parents[2]
#: Environment variable naming another checkout whose ``bin/bridge`` the benches
#: start (to compare two commits' bridges under the same bench and dev guild).
CHECKOUT_ENV = "BRIDGE_BENCH_CHECKOUT"


def bridge_checkout() -> Path:
    """The checkout whose bridge the benches start: ``$BRIDGE_BENCH_CHECKOUT`` or this one.

    Raises:
        RuntimeError: when the variable names a folder without ``bin/bridge``.
    """
    named = os.environ.get(CHECKOUT_ENV)
    if not named:
        return ROOT
    folder = Path(named).expanduser().resolve()
    if not (folder / "bin" / "bridge").is_file():
        raise RuntimeError(f"{CHECKOUT_ENV}={named}: no bin/bridge there")
    return folder
#: Seconds allowed for the bridge to start and connect.
START_TIMEOUT_S = 30.0


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) of ``values`` by nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class RestMember:
    """A member who posts over REST and logs in again when the token is refused.

    Args:
        guild: The dev guild.
        name: Seeded user name.

    Not thread-safe (one requests session): give each posting thread its own.
    """

    def __init__(self, guild: DevGuild, name: str) -> None:
        self.guild = guild
        from adapters.chat.fabric.rest import FabricGuild

        self.name = name
        self.rest = FabricGuild(self._login())

    def _login(self) -> Any:
        from adapters.chat.fabric.rest import FabricCenter

        return FabricCenter(self.guild.center_url).login(self.guild.api_key(self.name)).guilds[
            "dev"]

    def post(self, channel_id: str, content: str,
             wakeup_user_id: str | None = None) -> dict[str, Any]:
        """Post in a channel; returns the created Message.

        Raises:
            ChatError: typed by status, when the post fails (after one re-login on 401).
        """
        try:
            return self.rest.post(channel_id, content, wakeup_user_id)
        except Unauthorized:
            self.rest.access = self._login()
            return self.rest.post(channel_id, content, wakeup_user_id)


def _any_connected(snapshot: BoardSnapshot) -> bool:
    return any(c.state == "connected" for c in snapshot.connections)


class BridgeProcess:
    """The bridge as a child process (``bin/bridge start --no-tui -c CONFIG``).

    Args:
        config_path: The bridge config file.
        state_dir: Its state dir (where ``status.json`` is read from).
        log_path: File that receives the child's stdout and stderr (appended).
        env: The child's environment (None: this process's).
    """

    def __init__(self, config_path: Path, state_dir: Path, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, or None before :meth:`start`."""
        return self.process.pid if self.process is not None else None

    def start(self, ready: Callable[[BoardSnapshot], bool] = _any_connected,
              timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child and wait until its status file satisfies ``ready``.

        Args:
            ready: Predicate on the child's board snapshot (default: one
                connection is connected).
            timeout_s: Seconds to wait.

        Raises:
            RuntimeError: when the child exits or is not ready in time.
        """
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(bridge_checkout() / "bin" / "bridge"), "start",
                 "--no-tui", "-c", str(self.config_path)], stdout=log,
                stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snapshot = read_status(self.state_dir)
            if snapshot and snapshot.pid == self.process.pid and ready(snapshot):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the bridge exited with {self.process.returncode}; see "
                                   f"{self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"the bridge was not ready within {timeout_s:.0f}s; see "
                           f"{self.log_path}")

    def kill9(self) -> None:
        """``kill -9`` the child and reap it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGINT the child and wait up to 10 s (then SIGKILL); idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- benches against a platform double in this process -------------------------

#: Proxy settings the platform SDKs honour (requests, slack-sdk, websockets);
#: a child would send its loopback calls to the proxy.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
#: Seconds allowed from a socket fault to the answer of the next message.
RECOVERY_S = 30.0
#: Seconds to wait for an app to be back to one open socket before a fault.
STEADY_S = 15.0
#: Threads posting in parallel (posts are in-process calls into the double).
POSTERS = 4


def environ_without_proxies() -> dict[str, str]:
    """This process's environment without :data:`PROXY_VARIABLES` (in any case).

    slack-sdk honours ``HTTP(S)_PROXY`` and ignores ``NO_PROXY``, and lark-oapi's
    requests and websockets clients honour them too, so a child bridge would
    send its loopback calls to the proxy.
    """
    return {key: value for key, value in os.environ.items()
            if key.lower() not in PROXY_VARIABLES}


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 50 ms until it holds or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def check_sizes(channels: int, agents: int, messages: int, rate: float, max_steps: int) -> None:
    """Refuse a bench run's sizes out of range.

    Raises:
        ValueError: when any is not positive.
    """
    if channels < 1 or agents < 1 or messages < 1 or rate <= 0 or max_steps < 1:
        raise ValueError("channels, agents, messages, rate and steps must be positive")


def write_config(path: Path, generated: str, template: Path | None,
                 replacements: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Write a bench run's bridge config and check it loads.

    Args:
        path: Where to write it.
        generated: The generated config text (used when ``template`` is None).
        template: An operator's config template, its ``{name}`` placeholders
            replaced by ``replacements``.
        replacements: Placeholder (without braces) to value.
        env: The child's environment (the secrets the config references).

    Raises:
        ConfigError: when it is not a valid bridge config.
    """
    text = generated
    if template is not None:
        text = template.read_text(encoding="utf-8")
        for name, value in replacements.items():
            text = text.replace("{" + name + "}", value)
    path.write_text(text, encoding="utf-8")
    check_config(path, env)


def check_config(path: Path, env: Mapping[str, str]) -> None:
    """Load the config as the child will, with the variables of ``env`` this process
    lacks (the secrets it references) set here for the while.

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


def recovery_text(seconds: float) -> str:
    """A recovery time for the tables: ``1.23 s``, or the lack of an answer (negative)."""
    return f"no answer within {RECOVERY_S:g} s" if seconds < 0 else f"{seconds:.2f} s"


@attrs.define
class PostRecord:
    """A bench post as its tracker knows it.

    Attributes:
        posted_at: When it was posted (monotonic seconds of this process).
        bot_id: The user id of the bot it mentions (Slack ``U…``, Feishu/Lark ``ou_…``).
        app_id: That bot's app.
        ref: The post's id on the platform once known (Slack ``ts``, Feishu/Lark
            ``om_…``); empty before.
    """

    posted_at: float
    bot_id: str
    app_id: str
    ref: str = ""


class TokenTracker:
    """Matches what a double observed (bot messages, acks) to the bench's posts by token.

    The double's observers only queue what they see with the time they saw it
    (:meth:`see`, on the double's thread, with its lock held); :meth:`drain`
    matches it on the bench's thread through :meth:`handle`, which a platform's
    tracker implements. One queue keeps the double's order.

    Args:
        bot_users: ``{bot user id: app id}`` of the bench's agents.

    Attributes:
        sent: ``{token: its post}`` (failed posts left out).
        answers: ``{token: when its right answer was stored}`` (monotonic seconds).
        floor: ``{token: when the mentioned app acked the post's event}``.
        extra: Bot messages holding a token beyond its one right answer.
    """

    def __init__(self, bot_users: Mapping[str, str]) -> None:
        self.bot_users = dict(bot_users)
        self.sent: dict[str, PostRecord] = {}
        self.answers: dict[str, float] = {}
        self.floor: dict[str, float] = {}
        self.extra = 0
        self._holding: collections.Counter[str] = collections.Counter()
        self._seen: collections.deque[tuple[float, str, Any]] = collections.deque()
        self._lock = threading.Lock()

    @property
    def doubled(self) -> int:
        """Posts with more than one bot message holding their token."""
        return sum(1 for count in self._holding.values() if count > 1)

    def expect(self, token: str, posted_at: float, bot_id: str) -> None:
        """Register a token about to be posted, mentioning ``bot_id`` (thread-safe).

        Raises:
            KeyError: when ``bot_id`` is not one of the bench's bots.
        """
        with self._lock:
            self.sent[token] = PostRecord(posted_at, bot_id, self.bot_users[bot_id])

    def forget(self, token: str) -> None:
        """Drop a token whose post failed (thread-safe)."""
        with self._lock:
            self.sent.pop(token, None)

    def posted(self, tokens: Iterable[str]) -> dict[str, float]:
        """``{token: when it was posted}`` for those of ``tokens`` posted (thread-safe)."""
        with self._lock:
            return {t: self.sent[t].posted_at for t in tokens if t in self.sent}

    def see(self, kind: str, data: Any) -> None:
        """Queue something a double observed, with the time now (any thread)."""
        self._seen.append((time.monotonic(), kind, data))

    def drain(self) -> None:
        """Match everything queued so far (the bench's thread)."""
        while self._seen:
            at, kind, data = self._seen.popleft()
            self.handle(at, kind, data)

    def handle(self, at: float, kind: str, data: Any) -> None:
        """Match one queued observation (``kind`` and ``data`` as given to :meth:`see`)."""
        raise NotImplementedError

    def find(self, text: str) -> tuple[str, PostRecord] | None:
        """The first bench token in ``text`` that was posted, with its post; None if none."""
        for word in text.split():
            if word.startswith(TOKEN_PREFIX):
                with self._lock:
                    post = self.sent.get(word)
                if post is not None:
                    return word, post
        return None

    def bot_message(self, at: float, token: str, right: bool) -> None:
        """Count a bot message holding ``token``: its first right answer, else an extra."""
        self._holding[token] += 1
        if right and token not in self.answers:
            self.answers[token] = at
        else:
            self.extra += 1


class DoubleBench(Generic[_App]):
    """One bench run against a double: paced steps and the recovery probe.

    A platform's bench implements :meth:`post` (a member's mention of an app in
    a channel) and :meth:`sockets` (an app's open sockets at the double).

    Args:
        tracker: Its token bookkeeping, fed by the double's observers.
        bridge: The bridge process.
        channel_ids: The channels to post in.
        apps: The apps, one per agent (the double's records).
        sampler: The sampler of the bridge process (running).

    Attributes:
        post_errors: Posts the double refused so far.
    """

    def __init__(self, tracker: TokenTracker, bridge: BridgeProcess, channel_ids: list[str],
                 apps: list[_App], sampler: _Sampler) -> None:
        self.tracker = tracker
        self.bridge = bridge
        self.channel_ids = channel_ids
        self.apps = apps
        self.sampler = sampler
        self.post_errors = 0

    def post(self, token: str, channel: str, app: _App) -> bool:
        """Post ``token`` as a member's mention of ``app`` in ``channel`` and register it
        with the tracker; False when the double refused it."""
        raise NotImplementedError

    def sockets(self, app: _App) -> int:
        """How many sockets of ``app`` are open at the double."""
        raise NotImplementedError

    def step(self, number: int, rate: float, count: int) -> StepReport:
        """Post ``count`` messages at ``rate`` per second (channel by channel, then the
        next app) and wait up to :data:`SETTLE_S` for their answers and acks."""
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
            if not self.post(tokens[i], channels[i % len(channels)], app):
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

    def recover(self, label: str, fault: Callable[[_App], int]) -> float:
        """Seconds from ``fault`` on the first app's sockets to the answer of a message
        posted right after it; -1.0 when none within :data:`RECOVERY_S` (or when the
        app had no socket to hurt)."""
        app = self.apps[0]
        wait_for(lambda: self.sockets(app) == 1, STEADY_S)
        token = f"{TOKEN_PREFIX}{label}-000000"
        at = time.monotonic()
        if fault(app) < 1 or not self.post(token, self.channel_ids[0], app):
            return -1.0
        deadline = at + RECOVERY_S
        while time.monotonic() < deadline:
            self.tracker.drain()
            if token in self.tracker.answers:
                return round(self.tracker.answers[token] - at, 3)
            time.sleep(0.01)
        return -1.0


@attrs.frozen(kw_only=True)
class DoubleBenchReport:
    """What a bench run against a platform double measured (the fields every double
    bench shares; ``bench_slack.JSON_FIELDS`` describes them). A platform's report
    subclasses it, names its ``platform`` and adds its own recoveries."""

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
    bridge_log_warnings: int
    bridge_log_errors: int
    duration_s: float
    steps: tuple[StepReport, ...]
    platform: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the keys of the platform's ``JSON_FIELDS``."""
        data = attrs.asdict(self, recurse=True)
        data["steps"] = [attrs.asdict(step) for step in self.steps]
        return data


@attrs.frozen
class Measured:
    """What :func:`measure` saw in one run.

    Attributes:
        steps: The throughput ladder's steps.
        threads_idle: Threads of the bridge once connected, before any message.
        threads_peak: Most threads of the bridge in any sample.
        rss_kb: Peak RSS of the bridge (VmHWM), KiB.
        actors: Actors in the bridge's supervision tree at the end.
        scopes: Scopes in the bridge at the end.
        methods: The bridge's API calls during the steps, ``{method or route: calls}``.
        recoveries: ``{fault label: seconds to the next answer}`` (-1: none).
        doubled: Posts with more than one answer (whole run).
        extra: Bot messages holding a token beyond its right answer (whole run).
        post_errors: Member posts the double refused.
        log_warnings: WARNING lines in the bridge's log.
        log_errors: ERROR and CRITICAL lines in the bridge's log.
    """

    steps: tuple[StepReport, ...]
    threads_idle: int
    threads_peak: int
    rss_kb: int
    actors: int
    scopes: int
    methods: dict[str, int]
    recoveries: dict[str, float]
    doubled: int
    extra: int
    post_errors: int
    log_warnings: int
    log_errors: int

    def fields(self, post_methods: Iterable[str]) -> dict[str, Any]:
        """The report fields every double bench shares (see ``bench_slack.JSON_FIELDS``),
        ``posts_per_answer`` counting the calls of ``post_methods``."""
        first = self.steps[0]
        passing = [s for s in self.steps if s.passed]
        best = passing[-1] if passing else None
        answered = sum(s.answered for s in self.steps)
        api_calls = sum(self.methods.values())
        posts = sum(self.methods.get(method, 0) for method in post_methods)
        return {
            "ack_p50_ms": first.floor_p50_ms, "ack_p99_ms": first.floor_p99_ms,
            "bridge_p50_ms": first.p50_ms, "bridge_p99_ms": first.p99_ms,
            "overhead_p50_ms": round(first.p50_ms - first.floor_p50_ms, 2)
            if first.answered else 0.0,
            "overhead_p99_ms": round(first.p99_ms - first.floor_p99_ms, 2)
            if first.answered else 0.0,
            "throughput_per_s": best.answered_per_s if best else 0.0,
            "throughput_rate": best.rate if best else 0.0,
            "sent": sum(s.sent for s in self.steps), "answered": answered,
            "lost": sum(s.lost for s in self.steps), "doubled": self.doubled,
            "extra": self.extra, "post_errors": self.post_errors,
            "rss_mb": round(self.rss_kb / 1024, 1), "threads_idle": self.threads_idle,
            "threads_peak": self.threads_peak, "actors": self.actors, "scopes": self.scopes,
            "api_calls": api_calls, "api_methods": dict(self.methods),
            "posts_per_answer": _ratio(posts, answered),
            "api_calls_per_answer": _ratio(api_calls, answered),
            "bridge_log_warnings": self.log_warnings, "bridge_log_errors": self.log_errors,
            "steps": tuple(self.steps)}


def measure(bridge: BridgeProcess, make_bench: Callable[[_Sampler], DoubleBench[_App]], *,
            agents: int, channels: int, rate: float, messages: int, max_steps: int,
            call_counts: Callable[[], Mapping[str, int]],
            faults: Sequence[tuple[str, str, Callable[[_App], int]]],
            say: Callable[[str], None]) -> Measured:
    """One measured run: start the bridge, warm up, climb the ladder, probe recovery, stop.

    The warm-up posts one message per channel at ``rate`` (not counted). API
    calls are those ``call_counts`` grew by during the ladder.

    Args:
        bridge: The bridge process (not started; stopped at the end, whatever happens).
        make_bench: Makes the run's bench, given the running sampler.
        agents: Agents the bridge must connect before the run starts.
        channels: Channels each of them must see.
        rate: Offered rate of the first step, messages per second.
        messages: Messages per step.
        max_steps: Most steps of the ladder.
        call_counts: The double's API call counters, ``{method or route: calls}``.
        faults: ``(label, what, fault)`` to probe in order with :meth:`DoubleBench.recover`
            (``what`` names the fault in the progress lines).
        say: Told one line per phase.

    Returns:
        The :class:`Measured` run.

    Raises:
        RuntimeError: when the bridge cannot be started.
    """
    bridge.start(_ready(agents, channels), timeout_s=30.0 + channels * agents / 20)
    try:
        sampler = _Sampler(bridge.pid or 0)
        time.sleep(0.5)
        threads_idle = sampler.sample()
        sampler.start()
        bench = make_bench(sampler)
        warm = bench.step(0, rate, channels)  # one message per channel
        say(f"bridge pid {bridge.pid}: {threads_idle} threads idle; warm-up "
            f"{warm.answered}/{warm.sent} answered")
        calls_before = call_counts()
        steps = climb(lambda number, step_rate: bench.step(number, step_rate, messages),
                      rate, max_steps, say)
        calls_after = call_counts()
        recoveries: dict[str, float] = {}
        for label, what, fault in faults:
            recoveries[label] = bench.recover(label, fault)
            say(f"{what}: next answer after {recoveries[label]:g} s")
        time.sleep(0.6)  # one more status.json write; late doubles land
        bench.tracker.drain()
        snapshot = read_status(bridge.state_dir)
        sampler.stop()
    finally:
        bridge.stop()
    warnings, errors = _log_levels(bridge.log_path)
    methods = {method: calls - calls_before.get(method, 0)
               for method, calls in sorted(calls_after.items())
               if calls > calls_before.get(method, 0)}
    return Measured(
        steps=tuple(steps), threads_idle=threads_idle, threads_peak=sampler.peak_threads,
        rss_kb=sampler.rss_kb, actors=len(snapshot.actors) if snapshot else 0,
        scopes=len(snapshot.scopes) if snapshot else 0, methods=methods,
        recoveries=recoveries, doubled=bench.tracker.doubled, extra=bench.tracker.extra,
        post_errors=bench.post_errors, log_warnings=warnings, log_errors=errors)


def render_double(report: Any, *, platform: str, ack: str, answer: str, calls: str,
                  recoveries: Sequence[tuple[str, float]],
                  method_name: Callable[[str], str] = str) -> Any:
    """A double bench's report as rich renderables: percentiles, totals and the steps.

    Args:
        report: A report with the fields :meth:`Measured.fields` makes, and
            ``channels``, ``agents``, ``messages``, ``rate``, ``duration_s``.
        platform: The ``--platform`` value, for the title.
        ack: Names the transport floor's row (``post -> … ack``).
        answer: Names the answer's row (``post -> answer …``).
        calls: Names the platform's API (``Web API``, ``Open API``).
        recoveries: ``(what happened, seconds to the next answer)`` rows.
        method_name: A method or route as the table shows it.
    """
    from rich.console import Group
    from rich.table import Table

    from bridge.ops.bench import percentile_table, steps_table

    summary = percentile_table(
        f"bridge bench --platform {platform}: {report.channels} channels, {report.agents} "
        f"agent(s), {report.messages} messages/step, from {report.rate:g}/s",
        [(f"{ack} (ms)", report.ack_p50_ms, report.ack_p99_ms),
         (f"{answer} (ms)", report.bridge_p50_ms, report.bridge_p99_ms),
         ("bridge overhead (ms)", report.overhead_p50_ms, report.overhead_p99_ms)])
    totals = Table(show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    methods = ", ".join(f"{method_name(method)} {count / report.answered:.2f}"
                        for method, count in report.api_methods.items()) \
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
        (f"{calls} calls per answer", f"{report.api_calls_per_answer:g} ({methods})"),
        *((f"{what} -> next answer", recovery_text(seconds)) for what, seconds in recoveries),
        ("bridge log warnings / errors",
         f"{report.bridge_log_warnings} / {report.bridge_log_errors}"),
        ("run time", f"{report.duration_s:g} s"),
    ]
    for row in rows:
        totals.add_row(*row)
    return Group(summary, totals, steps_table(report.steps, floor="ack99"))
