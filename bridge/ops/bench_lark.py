"""``bridge bench --platform lark``: what the bridge costs on Feishu/Lark, measured
against the Feishu/Lark double.

Starts the Lark double (:class:`adapters.chat.lark.double.LarkDouble`) on
loopback in this process, with one custom app per agent (``echo``, ``echo2``,
...; each gets every group message, ``im:message.group_msg``, as a deployment
that follows threads does), a member ``alice``, and N groups holding alice and
every agent's bot. The bridge runs as a child process (``bin/bridge start
--no-tui``, so its RSS and threads are its own) with a config that has only
``[platforms.lark]``: the echo agents bound to every chat with ``scope =
"thread"``, ``debounce_s = 0``, log level ``warning``, and the apps' credentials
referenced as ``env:BRIDGE_BENCH_LARK_ID_<AGENT>`` /
``env:BRIDGE_BENCH_LARK_SECRET_<AGENT>`` (the values are handed to the child in
its environment, never written to a file).

Alice posts through the double (as a person in Feishu does; no open API call),
each post a group ``@mention`` of one agent's bot (round robin, so each (agent,
group) pair is used) holding a unique token; the echo agent answers with the
text, as a reply to the post. The bench finds answers without reading
histories: the double calls an observer on every message an app sends or
changes and on every event ack (:meth:`LarkDouble.observe` and
:meth:`LarkDouble.observe_acks`), which timestamps them on a monotonic clock of
this process.

One run measures:

- the transport floor: post -> the mentioned app's ack (code 200) of the
  post's ``im.message.receive_v1`` event on its long connection (the bridge's
  handler only hands the event on, so the ack comes before any work);
- the bridge: post -> the mentioned app's answer (a message whose
  ``parent_id`` or ``root_id`` is the post and whose text ends with the token);
- throughput: steps of M messages at R, 2R, 4R, ... messages per second, with
  the ladder of :func:`bridge.ops.bench.climb`;
- answers lost (none within 15 s of a step's last post), doubled (more than
  one bot message holding one post's token) and extra (any bot message holding
  a token beyond the one right answer);
- the bridge process's peak RSS, threads, and CPU per step (as the Fabric bench);
- the bridge's open API calls during the steps (the double's counters, by route);
- recovery: from an abrupt close of an app's long connection (``drop_sockets``,
  no close frame) to the answer of a message posted right after it.
"""

from __future__ import annotations

import json
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
    from adapters.chat.lark.double import Delivery, LarkApp, LarkDouble

#: The member who posts.
MEMBER = "alice"
#: The environment variables that hand an agent's app id and secret to the bridge
#: (``{kind}`` is ``ID`` or ``SECRET``, ``{agent}`` the agent's name in capitals).
CREDENTIAL_ENV = "BRIDGE_BENCH_LARK_{kind}_{agent}"
#: The event a member's message brings an app (docs im/v1 message receive_v1).
RECEIVE = "im.message.receive_v1"
#: The open API routes that put a message in a chat (send, reply), as the double counts them.
POST_ROUTES = ("POST /open-apis/im/v1/messages",
               "POST /open-apis/im/v1/messages/:message_id/reply")

#: The ``--json`` fields of ``--platform lark``, documented in ``bridge bench --help``.
JSON_FIELDS = {
    "platform": "always lark",
    "channels": "group chats created for the run (N)",
    "agents": "echo agents, one custom app each, each bound to every chat (A)",
    "messages": "messages per step (M)",
    "rate": "offered rate of the first step, messages/s (R)",
    "ack_p50_ms": "transport floor at rate R: post -> the mentioned app's ack of its "
                  "im.message.receive_v1 event on the long connection, median, ms",
    "ack_p99_ms": "the same, 99th percentile, ms",
    "bridge_p50_ms": "bridge at rate R: post -> the agent's answer stored as a reply to "
                     "the post, median, ms",
    "bridge_p99_ms": "the same, 99th percentile, ms",
    "overhead_p50_ms": "bridge_p50_ms - ack_p50_ms (0 when nothing was answered)",
    "overhead_p99_ms": "bridge_p99_ms - ack_p99_ms (0 when nothing was answered)",
    "throughput_per_s": "answered messages/s at the highest step with p99 < 1 s and none "
                        "lost (0 when none)",
    "throughput_rate": "offered rate of that step, messages/s (0 when none)",
    "sent": "messages posted over all steps",
    "answered": "of those, answered in a reply by the agent they mention",
    "lost": "not answered within 15 s of the step's last post",
    "doubled": "messages of the whole run (warm-up and recovery too) with more than one "
               "bot message holding their token",
    "extra": "bot messages of the whole run holding a message's token beyond its one right "
             "answer (a second answer, another agent, not a reply to the post)",
    "post_errors": "member posts the double refused (not counted as sent)",
    "rss_mb": "peak RSS of the bridge process (VmHWM), MB",
    "threads_idle": "threads of the bridge process once connected, before any message",
    "threads_peak": "most threads of the bridge process in any 100 ms sample",
    "actors": "actors in the bridge's supervision tree at the end",
    "scopes": "scopes in the bridge at the end",
    "api_calls": "the bridge's open API calls during the steps (every route, tokens too)",
    "api_methods": "those calls by route, {\"METHOD /open-apis/...\": calls}",
    "posts_per_answer": "message sends and replies (POST im/v1/messages, POST "
                        "im/v1/messages/:message_id/reply) / answered",
    "api_calls_per_answer": "api_calls / answered",
    "reconnect_s": "seconds from an abrupt close of the first agent's long connection (no "
                   "close frame) to the answer of a message posted right after it (-1: none "
                   "within 30 s)",
    "bridge_log_warnings": "WARNING lines in the bridge's log (lark-oapi's too)",
    "bridge_log_errors": "ERROR and CRITICAL lines in the bridge's log (lark-oapi logs "
                         "ERRORs when its connection drops and when it is closed at stop)",
    "duration_s": "seconds of the whole run, start to stop",
    "steps": "one object per step: rate, sent, answered, lost, post_rate, answered_per_s, "
             "duration_s, p50_ms, p99_ms, floor_p50_ms and floor_p99_ms (the ack), "
             "threads_peak, bridge_cpu_pct, bench_cpu_pct",
}


@attrs.frozen(kw_only=True)
class LarkBenchReport(DoubleBenchReport):
    """What a Feishu/Lark bench run measured; the fields are described in :data:`JSON_FIELDS`."""

    platform: str = "lark"


def credential_env(agent: str, kind: str) -> str:
    """The environment variable holding an agent's app ``ID`` or ``SECRET``."""
    return CREDENTIAL_ENV.format(kind=kind, agent=agent.upper())


def config_text(domain: str, state_dir: Path, agents: int) -> str:
    """The bridge config of a Feishu/Lark bench run: only ``[platforms.lark]``, A echo
    agents bound to every chat (``scope = "thread"``), credentials as ``env:``
    references (:func:`credential_env`)."""
    text = textwrap.dedent(f"""
        [bridge]
        state_dir = "{state_dir}"
        debounce_s = 0.0
        log_level = "warning"

        [platforms.lark]
        domain = "{domain}"
    """)
    for name in agent_names(agents):
        text += textwrap.dedent(f"""
            [agents.{name}]
            kind = "echo"
            max_runs_per_hour = 0

            [agents.{name}.lark]
            app_id = "env:{credential_env(name, 'ID')}"
            app_secret = "env:{credential_env(name, 'SECRET')}"

            [[bindings]]
            agent = "{name}"
            platform = "lark"
            channels = ["*"]
            scope = "thread"
        """)
    return text


def child_env(apps: Mapping[str, LarkApp]) -> dict[str, str]:
    """This process's environment without proxy settings (lark-oapi's clients would
    send loopback calls to the proxy), plus each agent's app id and secret."""
    env = environ_without_proxies()
    for name, app in apps.items():
        env[credential_env(name, "ID")] = app.app_id
        env[credential_env(name, "SECRET")] = app.app_secret
    return env


# -- what the double saw -------------------------------------------------------


def _text(content: Any) -> str:
    """The ``text`` of a text message's content JSON (``{"text": "@_user_1 …"}``); ``""``."""
    try:
        parsed = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        return ""
    return str(parsed.get("text", "")) if isinstance(parsed, dict) else ""


class LarkTracker(TokenTracker):
    """Matches what the Lark double observed (app messages, event acks) to the bench's posts.

    The double's observers (:meth:`on_message`, :meth:`on_ack`) only queue what
    they see; :meth:`drain` matches it on the bench's thread. The right answer
    is a message of the mentioned app whose ``parent_id`` or ``root_id`` is the
    post and whose text ends with the token; a message counts once, when it is
    first seen holding a token (posted, or changed into it). An ack names its
    post by the event's text, so it needs nothing from the poster.

    Args:
        bot_users: ``{bot open id: app id}`` of the bench's agents.

    Attributes:
        answers: ``{token: when its right answer was stored}`` (monotonic seconds).
        floor: ``{token: when the mentioned app acked the post's receive event}``.
        extra: Bot messages holding a token beyond its one right answer.
    """

    def __init__(self, bot_users: Mapping[str, str]) -> None:
        super().__init__(bot_users)
        self._counted: set[str] = set()
        self._waiting: list[tuple[float, dict[str, Any]]] = []

    def posted_as(self, token: str, message_id: str) -> None:
        """Note the message id the double gave a post (thread-safe)."""
        with self._lock:
            post = self.sent.get(token)
            if post is not None and not post.ref:
                post.ref = message_id

    def on_message(self, change: str, message: dict[str, Any]) -> None:
        """The double's message observer: queue an app's new or changed message."""
        if change in ("posted", "changed") and message.get("app_id"):
            self.see("message", message)

    def on_ack(self, app_id: str, delivery: Delivery) -> None:
        """The double's ack observer: queue an ack (code 200) of a receive event."""
        if delivery.acked and delivery.event_type == RECEIVE:
            message = (delivery.event.get("event") or {}).get("message") or {}
            self.see("ack", (app_id, str(message.get("message_id", "")),
                             message.get("content")))

    def drain(self) -> None:
        """Match everything queued so far, and answers seen before their post's id was."""
        waiting, self._waiting = self._waiting, []
        for at, message in waiting:
            self._message(at, message)
        super().drain()

    def handle(self, at: float, kind: str, data: Any) -> None:
        """Match a queued message or ack."""
        if kind == "ack":
            self._ack(at, *data)
        else:
            self._message(at, data)

    def _message(self, at: float, message: dict[str, Any]) -> None:
        message_id = str(message.get("message_id", ""))
        if message_id in self._counted:
            return
        text = str(message.get("text", ""))
        found = self.find(text)
        if found is None:
            return
        token, post = found
        if not post.ref:  # the poster has not noted the post's id yet
            self._waiting.append((at, message))
            return
        self._counted.add(message_id)
        self.bot_message(at, token, message.get("app_id") == post.app_id
                         and post.ref in (message.get("parent_id"), message.get("root_id"))
                         and text.rstrip().endswith(token))

    def _ack(self, at: float, app_id: str, message_id: str, content: Any) -> None:
        found = self.find(_text(content))
        if found is None:
            return
        token, post = found
        if post.app_id == app_id and token not in self.floor:
            self.floor[token] = at
        self.posted_as(token, message_id)


# -- the run -------------------------------------------------------------------


class _LarkBench(DoubleBench["LarkApp"]):
    """One Feishu/Lark bench run: member alice @mentions the apps' bots in the groups."""

    def __init__(self, double: LarkDouble, bridge: BridgeProcess, member_id: str,
                 chat_ids: list[str], apps: list[LarkApp], sampler: _Sampler) -> None:
        tracker = LarkTracker({app.bot_open_id: app.app_id for app in apps})
        super().__init__(tracker, bridge, chat_ids, apps, sampler)
        self.lark_tracker = tracker
        self.double = double
        self.member_id = member_id
        double.observe(tracker.on_message)
        double.observe_acks(tracker.on_ack)

    def post(self, token: str, channel: str, app: LarkApp) -> bool:
        """Post ``token`` as an @mention of ``app``'s bot in group ``channel``; False
        when refused."""
        from adapters.chat.lark.double import LarkError

        self.tracker.expect(token, time.monotonic(), app.bot_open_id)
        try:
            message_id = self.double.post(self.member_id, channel, token, mentions=[app])
        except LarkError:
            self.tracker.forget(token)
            return False
        self.lark_tracker.posted_as(token, message_id)
        return True

    def sockets(self, app: LarkApp) -> int:
        """The app's open long connections."""
        return self.double.sockets(app)


def run_lark_bench(channels: int = 10, agents: int = 1, messages: int = 200,
                   rate: float = 50.0, max_steps: int = 6, config: Path | None = None,
                   log_copy: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> LarkBenchReport:
    """Run the bench against the Feishu/Lark double and return its report.

    Args:
        channels: Group chats to create and post in (N).
        agents: Echo agents, one custom app each, bound to every chat (A).
        messages: Messages per step (M).
        rate: Offered rate of the first step, messages per second (R); each
            further step doubles it.
        max_steps: Most steps of the throughput ladder.
        config: A bridge config template to run instead of the generated one
            (``{domain}`` and ``{state_dir}`` are replaced; credentials as in
            :func:`config_text`); None: generated.
        log_copy: Where to copy the bridge's log at the end (None: not kept).
        progress: Called with one line per phase (None: silent).

    Returns:
        The :class:`LarkBenchReport`.

    Raises:
        ValueError: on a parameter out of range.
        ConfigError: when the ``config`` template is not a valid bridge config.
        RuntimeError: when the bridge cannot be started.
        OSError: when the double cannot listen.
    """
    check_sizes(channels, agents, messages, rate, max_steps)
    from adapters.chat.lark.double import LarkDouble

    say = progress or (lambda line: None)
    began = time.monotonic()
    names = agent_names(agents)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp, LarkDouble() as double:
        folder = Path(tmp)
        state_dir = folder / "var"
        config_path = folder / "bridge.toml"
        apps = {name: double.add_app(name, group_messages=True) for name in names}
        member_id = double.add_user(MEMBER)
        chat_ids = [double.add_group(f"bench-{i}", [member_id, *apps.values()])
                    for i in range(channels)]
        env = child_env(apps)
        write_config(config_path, config_text(double.domain, state_dir, agents), config,
                     {"domain": double.domain, "state_dir": str(state_dir)}, env)
        say(f"{channels} group chats created; starting the bridge with {agents} agent(s)")
        bridge = BridgeProcess(config_path, state_dir, folder / "bridge.log", env)
        run = measure(
            bridge, lambda sampler: _LarkBench(double, bridge, member_id, chat_ids,
                                               list(apps.values()), sampler),
            agents=agents, channels=channels, rate=rate, messages=messages,
            max_steps=max_steps, call_counts=double.call_counts,
            faults=[("drop", "dropped long connection", double.drop_sockets)], say=say)
        if log_copy is not None:
            shutil.copyfile(folder / "bridge.log", log_copy)
    return LarkBenchReport(
        channels=channels, agents=agents, messages=messages, rate=rate,
        **run.fields(POST_ROUTES), reconnect_s=run.recoveries["drop"],
        duration_s=round(time.monotonic() - began, 1))


# -- output --------------------------------------------------------------------


def json_fields_help() -> str:
    """The ``--platform lark`` ``--json`` fields as text for ``bridge bench --help``."""
    return "; ".join(f"{name}: {text}" for name, text in JSON_FIELDS.items())


def _route(key: str) -> str:
    """``"POST /open-apis/im/v1/messages"`` as ``"POST im/v1/messages"``."""
    return key.replace("/open-apis/", "", 1)


def render(report: LarkBenchReport) -> Any:
    """The report as rich renderables (a summary table, totals and the steps)."""
    return render_double(report, platform="lark", ack="post -> event ack",
                         answer="post -> answer as a reply", calls="open API",
                         recoveries=[("dropped long connection", report.reconnect_s)],
                         method_name=_route)


def main_lark_bench(channels: int, agents: int, messages: int, rate: float, max_steps: int,
                    config: Path | None, as_json: bool, log_copy: Path | None = None) -> int:
    """``bridge bench --platform lark``: print the report; exit 0 when the run completed.

    Returns:
        0 when the run completed, 1 when it could not run, 2 for a bad config.
    """
    return present(lambda show: run_lark_bench(channels, agents, messages, rate, max_steps,
                                               config, log_copy, show), render, as_json)
