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

import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from bridge.ops.bench import _Sampler, agent_names, present
from bridge.ops.loadkit import (
    BridgeProcess,
    DoubleBench,
    DoubleBenchReport,
    TokenTracker,
    check_sizes,
    environ_without_proxies,
    measure,
    render_double,
    write_config,
)

if TYPE_CHECKING:  # imported when a bench runs, not by ``bridge --help``
    from adapters.chat.slack.double import Delivery, SlackApp, SlackDouble

#: The member who posts.
MEMBER = "alice"
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


@attrs.frozen(kw_only=True)
class SlackBenchReport(DoubleBenchReport):
    """What a Slack bench run measured; the fields are described in :data:`JSON_FIELDS`."""

    reconnect_disconnect_s: float
    platform: str = "slack"


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
    """This process's environment without proxy settings (slack-sdk honours
    ``HTTP(S)_PROXY`` and ignores ``NO_PROXY``, so loopback would go to the proxy),
    plus each agent's tokens."""
    env = environ_without_proxies()
    for name, app in apps.items():
        env[token_env(name, "BOT")] = app.bot_token
        env[token_env(name, "APP")] = app.app_token
    return env


# -- what the double saw -------------------------------------------------------


class SlackTracker(TokenTracker):
    """Matches what the Slack double observed (messages stored, acks) to the bench's posts.

    The double's observers (:meth:`on_message`, :meth:`on_ack`) only queue what
    they see; :meth:`drain` matches it on the bench's thread. The double's order
    holds: a post is always seen before its ack and its answer. The right answer
    is the mentioned app's bot's message in the post's thread.

    Args:
        member_id: The posting member's user id.
        bot_users: ``{bot user id: app id}`` of the bench's agents.

    Attributes:
        answers: ``{token: when its right answer was stored}`` (monotonic seconds).
        floor: ``{token: when the mentioned app acked its app_mention}``.
        extra: Bot messages holding a token beyond its one right answer.
    """

    def __init__(self, member_id: str, bot_users: Mapping[str, str]) -> None:
        super().__init__(bot_users)
        self.member_id = member_id
        self._by_ts: dict[str, str] = {}

    def on_message(self, change: str, message: dict[str, Any]) -> None:
        """The double's message observer: queue a new message with the time now."""
        if change == "posted":
            self.see("message", message)

    def on_ack(self, app_id: str, delivery: Delivery) -> None:
        """The double's ack observer: queue an ``app_mention`` ack with the time now."""
        event = delivery.payload.get("event")
        if isinstance(event, dict) and event.get("type") == "app_mention":
            self.see("ack", (app_id, str(event.get("ts"))))

    def handle(self, at: float, kind: str, data: Any) -> None:
        """Match a queued message or ack."""
        if kind == "ack":
            self._ack(at, *data)
        else:
            self._message(at, data)

    def _message(self, at: float, message: dict[str, Any]) -> None:
        found = self.find(str(message.get("text", "")))
        if found is None:
            return
        token, post = found
        author = message.get("user")
        if author == self.member_id and not message.get("bot_id"):
            post.ref = str(message.get("ts"))
            self._by_ts[post.ref] = token
            return
        if author not in self.bot_users:
            return
        self.bot_message(at, token, author == post.bot_id and bool(post.ref)
                         and message.get("thread_ts") == post.ref)

    def _ack(self, at: float, app_id: str, ts: str) -> None:
        token = self._by_ts.get(ts)
        if token is None or token in self.floor:
            return
        post = self.sent.get(token)
        if post is not None and post.app_id == app_id:
            self.floor[token] = at


# -- the run -------------------------------------------------------------------


class _SlackBench(DoubleBench["SlackApp"]):
    """One Slack bench run: member alice mentions the apps in the channels."""

    def __init__(self, double: SlackDouble, bridge: BridgeProcess, member_id: str,
                 channel_ids: list[str], apps: list[SlackApp], sampler: _Sampler) -> None:
        tracker = SlackTracker(member_id, {app.bot_user_id: app.app_id for app in apps})
        super().__init__(tracker, bridge, channel_ids, apps, sampler)
        self.double = double
        self.member_id = member_id
        double.observe(tracker.on_message)
        double.observe_acks(tracker.on_ack)

    def post(self, token: str, channel: str, app: SlackApp) -> bool:
        """Post ``token`` as a mention of ``app`` in ``channel``; False when refused."""
        from adapters.chat.slack.double import SlackError

        self.tracker.expect(token, time.monotonic(), app.bot_user_id)
        try:
            self.double.post(self.member_id, channel, f"<@{app.bot_user_id}> {token}")
        except SlackError:
            self.tracker.forget(token)
            return False
        return True

    def sockets(self, app: SlackApp) -> int:
        """The app's open Socket Mode connections."""
        return self.double.sockets(app)


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
    check_sizes(channels, agents, messages, rate, max_steps)
    from adapters.chat.slack.checks import BOT_SCOPES
    from adapters.chat.slack.double import SlackDouble

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
        env = child_env(apps)
        write_config(config_path, config_text(double.api_url, state_dir, agents), config,
                     {"api_url": double.api_url, "state_dir": str(state_dir)}, env)
        say(f"{channels} channels created; starting the bridge with {agents} agent(s)")
        bridge = BridgeProcess(config_path, state_dir, folder / "bridge.log", env)
        run = measure(
            bridge, lambda sampler: _SlackBench(double, bridge, member_id, channel_ids,
                                                list(apps.values()), sampler),
            agents=agents, channels=channels, rate=rate, messages=messages,
            max_steps=max_steps, call_counts=double.call_counts,
            faults=[("drop", "dropped socket", double.drop_sockets),
                    ("disc", "disconnect envelope", double.disconnect)], say=say)
        if log_copy is not None:
            shutil.copyfile(folder / "bridge.log", log_copy)
    return SlackBenchReport(
        channels=channels, agents=agents, messages=messages, rate=rate,
        **run.fields(["chat.postMessage"]), reconnect_s=run.recoveries["drop"],
        reconnect_disconnect_s=run.recoveries["disc"],
        duration_s=round(time.monotonic() - began, 1))


# -- output --------------------------------------------------------------------


def json_fields_help() -> str:
    """The ``--platform slack`` ``--json`` fields as text for ``bridge bench --help``."""
    return "; ".join(f"{name}: {text}" for name, text in JSON_FIELDS.items())


def render(report: SlackBenchReport) -> Any:
    """The report as rich renderables (a summary table, totals and the steps)."""
    return render_double(report, platform="slack", ack="post -> Socket Mode ack",
                         answer="post -> answer in thread", calls="Web API",
                         recoveries=[("dropped socket", report.reconnect_s),
                                     ("disconnect envelope", report.reconnect_disconnect_s)])


def main_slack_bench(channels: int, agents: int, messages: int, rate: float, max_steps: int,
                     config: Path | None, as_json: bool, log_copy: Path | None = None) -> int:
    """``bridge bench --platform slack``: print the report; exit 0 when the run completed.

    Returns:
        0 when the run completed, 1 when it could not run, 2 for a bad config.
    """
    return present(lambda show: run_slack_bench(channels, agents, messages, rate, max_steps,
                                                config, log_copy, show), render, as_json)
