"""``bridge soak``: the bridge under faults, checked against the channel history.

Starts the dev guild in this process and the bridge (``bin/bridge start
--no-tui``) as a child process, has several members post in several channels,
and meanwhile injects faults: dropped sockets, expired tokens, posts of the
agent failing with 500 and 429 (Retry-After), answers lost after the post
landed, slow responses, and ``kill -9`` of the bridge followed by a restart.
Idle scopes are stopped after 2 s, so scopes are also rebuilt from the store
all the time.
At the end it checks every engaging message against the channel history and
reports: messages sent, answered, lost, answered twice, restarts survived,
reconnects, the p50/p99 time to answer, and the state store's size (database
and WAL, bytes) sampled during the run and at the end. Target: 0 lost, 0 twice.
The bridge runs with a retention of a fifth of the duration (at least 120 s,
with the catch-up window equal to it), so a long soak prunes all along and its
database size levels off.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from adapters.chat.fabric.devguild import DevGuild, load_seed
from bridge.errors import ChatError
from bridge.isotime import parse_iso
from bridge.ops.loadkit import BridgeProcess, RestMember
from bridge.ops.loadkit import percentile as percentile  # re-exported for callers of soak
from bridge.store import DB_FILE, file_bytes

#: Members who post (seeded humans).
MEMBERS = ("alice", "bob")
#: Seconds allowed for the final answers.
SETTLE_TIMEOUT_S = 60.0
#: Shortest retention the soak gives the bridge (seconds).
MIN_RETENTION_S = 120.0


@attrs.frozen
class SoakReport:
    """What a soak run measured.

    Attributes:
        duration_s: Seconds of load (faults included), not counting the settle time.
        channels: Channels used.
        sent: Engaging messages posted by members.
        answered: Of those, answered by the agent at least once.
        lost: Not answered by the end of the settle time.
        twice: Answered in more than one agent message.
        restarts: ``kill -9`` and restarts of the bridge survived.
        reconnects: Socket drops injected (each forces a reconnect).
        faults: Count of each fault injected.
        p50_s: Median seconds from a post to its answer.
        p99_s: 99th percentile of the same.
        db_bytes: Size of the state store (database plus WAL, bytes) once every
            answer arrived, before the bridge stopped.
        db_samples: ``(seconds since the load started, bytes)`` samples of the
            same size during the run, about twelve.
        retention_s: The retention the bridge ran with (seconds).
    """

    duration_s: float
    channels: int
    sent: int
    answered: int
    lost: int
    twice: int
    restarts: int
    reconnects: int
    faults: dict[str, int]
    p50_s: float
    p99_s: float
    db_bytes: int = 0
    db_samples: tuple[tuple[float, int], ...] = ()
    retention_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing was lost and nothing answered twice."""
        return self.lost == 0 and self.twice == 0

    def text(self) -> str:
        """The report as lines for a terminal."""
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        samples = ", ".join(f"{at:.0f}s {size}" for at, size in self.db_samples) or "none"
        return "\n".join([
            f"soak: {self.duration_s:.0f}s over {self.channels} channels",
            f"  messages sent     {self.sent}",
            f"  answered          {self.answered}",
            f"  lost              {self.lost}",
            f"  answered twice    {self.twice}",
            f"  restarts survived {self.restarts}",
            f"  reconnects        {self.reconnects}",
            f"  faults            {faults}",
            f"  time to answer    p50 {self.p50_s:.3f}s  p99 {self.p99_s:.3f}s",
            f"  database          {self.db_bytes} bytes at the end (db + WAL, retention "
            f"{self.retention_s:.0f}s)",
            f"  database samples  {samples}",
            f"  result            {'PASS' if self.ok else 'FAIL'}",
        ])


def _config_text(center_url: str, state_dir: Path, api_key: str, retention_s: float) -> str:
    return textwrap.dedent(f"""
        [bridge]
        state_dir = "{state_dir}"
        debounce_s = 0.2
        scope_idle_s = 2
        log_level = "info"
        catch_up_window_s = {retention_s!r}
        retention_days = {retention_s / 86_400!r}
        [fabric]
        center_url = "{center_url}"
        [agents.echo]
        kind = "echo"
        api_key = "{api_key}"
        max_runs_per_hour = 0
        [[bindings]]
        agent = "echo"
        guild = "dev"
        channels = ["*"]
    """)


def _created(message: dict[str, Any]) -> float:
    created = parse_iso(message.get("createdAt"))
    if created is None:
        raise ValueError(f"dev guild message {message.get('messageId')} has no readable "
                         f"createdAt")
    return created


def run_soak(duration_s: float = 60.0, channels: int = 3, rate: float = 4.0,
             seed: int | None = None, kill_every_s: float = 10.0,
             progress: Callable[[str], None] | None = None) -> SoakReport:
    """Run a soak and return its report.

    Args:
        duration_s: Seconds of load and faults.
        channels: Channels to post in (created for the run).
        rate: Messages per second, over all members and channels.
        seed: Seed of the random choices (None: random).
        kill_every_s: Mean seconds between ``kill -9`` restarts of the bridge (0: never).
        progress: Called with one line per event (None: silent).

    Returns:
        The :class:`SoakReport`.

    Raises:
        RuntimeError: when the bridge cannot be started.
    """
    say = progress or (lambda line: None)
    rng = random.Random(seed)
    faults: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bridge-soak-") as tmp, \
            DevGuild(load_seed(), center_port=0, guild_port=0) as guild:
        folder = Path(tmp)
        state_dir = folder / "var"
        config_path = folder / "bridge.toml"
        retention_s = max(MIN_RETENTION_S, duration_s / 5)
        config_path.write_text(_config_text(guild.center_url, state_dir, guild.api_key("echo"),
                                            retention_s), encoding="utf-8")
        members = [RestMember(guild, name) for name in MEMBERS]
        owner = members[0]
        ids = [owner.rest.create_channel(f"soak-{i}", "general",
                                         members=[guild.user_id(n) for n in
                                                  (*MEMBERS[1:], "echo")])["id"]
               for i in range(channels)]
        bridge = BridgeProcess(config_path, state_dir, folder / "bridge.log")
        bridge.start()
        say(f"bridge pid {bridge.process.pid if bridge.process else '?'} connected; "
            f"{channels} channels, {rate}/s for {duration_s:.0f}s")
        sent: dict[str, tuple[str, float]] = {}
        stop = threading.Event()
        restarts = 0

        def post_loop() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                token = f"soak-{number:05d}-{rng.randrange(16**6):06x}"
                channel = rng.choice(ids)
                member = rng.choice(members)
                try:
                    member.post(channel, f"{token} from {member.name}")
                    sent[token] = (channel, time.time())
                except ChatError as exc:
                    say(f"post failed ({exc}); not counted")
                stop.wait(rng.expovariate(rate))

        poster = threading.Thread(target=post_loop, name="soak-poster", daemon=True)
        poster.start()
        echo_id = guild.user_id("echo")
        actions: list[tuple[str, Callable[[], object]]] = [
            ("drop-sockets", guild.drop_sockets),
            ("expire-tokens", guild.expire_tokens),
            ("posts-500", lambda: guild.fail_next_posts(2, 500, user_id=echo_id)),
            ("posts-429", lambda: guild.fail_next_posts(1, 429, retry_after_s=1,
                                                        user_id=echo_id)),
            ("answer-lost", lambda: guild.fail_next_posts(1, 502, user_id=echo_id,
                                                          landed=True)),
            ("slow", lambda: guild.set_delay(0.3)),
        ]
        started = time.monotonic()
        next_kill = started + (rng.expovariate(1 / kill_every_s) if kill_every_s else 1e18)
        sample_every_s = max(5.0, duration_s / 12)
        next_sample = started + sample_every_s
        samples: list[tuple[float, int]] = []
        try:
            while time.monotonic() - started < duration_s:
                time.sleep(rng.uniform(0.5, 1.5))
                guild.set_delay(0)
                if time.monotonic() >= next_sample:
                    samples.append((round(time.monotonic() - started, 1),
                                    sum(file_bytes(state_dir / DB_FILE))))
                    next_sample += sample_every_s
                if time.monotonic() >= next_kill:
                    bridge.kill9()
                    restarts += 1
                    say(f"kill -9 #{restarts}")
                    bridge.start()
                    next_kill = time.monotonic() + rng.expovariate(1 / kill_every_s)
                    continue
                name, action = rng.choice(actions)
                action()
                faults[name] = faults.get(name, 0) + 1
                say(f"fault: {name}")
        finally:
            stop.set()
            poster.join(timeout=10)
            guild.set_delay(0)
            guild.fail_next_posts(0)
        load_s = time.monotonic() - started
        answers: dict[str, list[float]] = {}

        def settled() -> bool:
            answers.clear()
            for channel in ids:
                for message in guild.state.messages(channel):
                    if message["authorUserId"] != echo_id:
                        continue
                    for token in message["content"].split():
                        if token.startswith("soak-") and token in sent:
                            answers.setdefault(token, []).append(_created(message))
            return all(token in answers for token in sent)

        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        final_bytes = sum(file_bytes(state_dir / DB_FILE))
        say(f"database {final_bytes} bytes (db + WAL)")
        bridge.stop()
        settled()
        delays = [min(answers[t]) - posted for t, (_, posted) in sent.items() if t in answers]
        return SoakReport(
            duration_s=load_s, channels=channels, sent=len(sent), answered=len(answers),
            lost=len(sent) - len(answers),
            twice=sum(1 for times in answers.values() if len(times) > 1),
            restarts=restarts, reconnects=faults.get("drop-sockets", 0) + restarts,
            faults=faults, p50_s=percentile(delays, 0.5), p99_s=percentile(delays, 0.99),
            db_bytes=final_bytes, db_samples=tuple(samples), retention_s=retention_s)


def main_soak(duration_s: float, channels: int, rate: float, seed: int | None,
              kill_every_s: float, as_json: bool) -> int:
    """``bridge soak``: print the report; exit 0 when nothing was lost or doubled, else 1."""
    def show(line: str) -> None:
        if not as_json:
            print(f"  {line}", flush=True)

    try:
        report = run_soak(duration_s, channels, rate, seed, kill_every_s, show)
    except RuntimeError as exc:
        print(f"bridge soak: {exc}", file=sys.stderr)
        return 1
    if as_json:
        data = attrs.asdict(report)
        data["ok"] = report.ok
        print(json.dumps(data))
    else:
        print(report.text())
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return 0 if report.ok else 1
