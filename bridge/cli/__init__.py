"""The ``bridge`` command line: start, top, status, devguild, chat, doctor, keys.

This module is the composition root: it is the one place in ``bridge/`` that
imports the actors (lazily, inside the commands that run them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from bridge.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
)

if TYPE_CHECKING:  # the dev guild package imports its servers (socket.io, aiohttp)
    from adapters.chat.fabric.devguild.config import DevGuildConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_STORE = 3

log = logging.getLogger("bridge")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="Lets members of a Fabric guild talk to coding agents. "
                    "Run 'bridge start' for the bridge (the embedded default starts the dev "
                    "guild and the echo agent), then 'bridge chat --as alice general' in a "
                    "second terminal.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("-c", "--config", type=Path, default=None, metavar="FILE",
                             help=f"config file (default: {DEFAULT_CONFIG})")
        return command

    start = add("start", "Start the bridge with a live terminal UI (Ctrl-C stops it).")
    start.add_argument("--no-tui", action="store_true",
                       help="log plain lines instead of the live UI (also when stdout is "
                            "not a terminal)")
    add("top", "Show the live UI of a bridge that is already running (read from its state "
               "dir).")
    status = add("status", "Print the state of the running bridge once; exit 1 when none runs.")
    status.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    devguild = add("devguild", "Run the dev guild (Center + guild on 127.0.0.1) alone, until "
                               "Ctrl-C.")
    devguild.epilog = ("Reads only [devguild] (host, center_port, guild_port, seed, "
                       "token_ttl_s), [bridge] and, when present, [fabric] content_limit; a file "
                       "with just '[devguild]' is enough. Without seed, the seed packaged with "
                       "the bridge is used (users alice, bob, echo).")
    doctor = add("doctor", "Check the config, the state store, Center and the guilds, and the "
                           "agent binaries; each line says what is wrong and how to fix it. "
                           "Exit 0 when nothing fails (warnings are allowed), 1 otherwise.")
    doctor.epilog = ("Center and the guilds are checked by logging in with each agent's API "
                     "key (keys are never printed); with a [devguild] table they are checked "
                     "only while the bridge runs, since the dev guild starts with it. A missing "
                     "state store is reported, never created. Example: bin/bridge doctor -c "
                     "conf/bridge.toml")
    doctor.add_argument("--timeout", type=float, default=3.0, metavar="S",
                        help="seconds allowed for each network request and each "
                             "'BINARY --version' (default 3)")
    soak = sub.add_parser(
        "soak", help="Run the bridge under faults and check nothing is lost or doubled.",
        description="Starts the dev guild and the bridge (as a child process), posts from "
                    "several members in several channels, injects faults (dropped sockets, "
                    "expired tokens, failing and lost posts, slow responses, kill -9 and "
                    "restart), then checks every message against the channel history. Exit "
                    "0 when nothing was lost or answered twice.")
    soak.add_argument("--duration", type=float, default=60.0, metavar="S",
                      help="seconds of load and faults (default 60)")
    soak.add_argument("--channels", type=int, default=3, metavar="N",
                      help="channels to post in (default 3)")
    soak.add_argument("--rate", type=float, default=4.0, metavar="R",
                      help="messages per second over all channels (default 4)")
    soak.add_argument("--kill-every", type=float, default=10.0, metavar="S",
                      help="mean seconds between kill -9 restarts of the bridge; 0: never "
                           "(default 10)")
    soak.add_argument("--seed", type=int, default=None, help="random seed, for a rerun")
    soak.add_argument("--json", action="store_true", help="print the report as one JSON "
                      "object: duration_s, channels, sent, answered, lost, twice, restarts, "
                      "reconnects, faults, p50_s, p99_s, ok")
    bench = sub.add_parser(
        "bench", help="Measure the bridge: latency over the transport floor, throughput, "
                      "memory, threads, API calls per answer.",
        description="Starts the dev guild and the bridge as child processes, the bridge "
                    "with A echo agents bound to every channel (debounce 0), creates N "
                    "channels, and has members alice and bob post over REST and listen on "
                    "socket.io, on one asyncio loop of the bench (the i-th post of a step "
                    "at i/rate seconds, many in flight). Each post wakes one agent "
                    "(wakeupUserId, round robin). Measures the transport floor (post -> "
                    "message.created at the other member) and post -> answer at rate R, "
                    "then steps of M messages at R, 2R, 4R, ... until p99 reaches 1 s, an "
                    "answer is lost or answered/s stops growing; and the CPU of the bridge, "
                    "of the bench and of the dev guild. With --agents 0 no bridge runs: the "
                    "steps measure the transport floor only, what the bench and the dev "
                    "guild can carry. With --platform slack: the Slack double instead, one app "
                    "per agent, N channels with member alice and every agent's bot; each "
                    "post @mentions one agent (round robin) and is answered in its thread; "
                    "the floor is the bridge's Socket Mode ack of the mention; also measures "
                    "the time from a dropped socket, and from a disconnect envelope, to the "
                    "next answer. With --platform lark: the Feishu/Lark double instead, one "
                    "custom app per agent, N group chats with member alice and every agent's "
                    "bot; each post @mentions one agent's bot (round robin) and is answered "
                    "in a reply to it; the floor is the app's ack of the post's "
                    "im.message.receive_v1 event on its long connection; also measures the "
                    "time from a dropped long connection to the next answer. Exit 0 when "
                    "the run completed.")
    bench.add_argument("--platform", choices=("fabric", "slack", "lark"), default="fabric",
                       help="what to run against: the Fabric dev guild (default), the "
                            "Slack double or the Feishu/Lark double")
    bench.add_argument("--channels", type=int, default=10, metavar="N",
                       help="channels to create and post in (default 10)")
    bench.add_argument("--agents", type=int, default=1, metavar="A",
                       help="echo agents (echo, echo2, ...) bound to every channel (default "
                            "1); 0: no bridge runs and the steps measure the transport floor "
                            "only (a step passes when its floor p99 < 1 s and every post "
                            "reached the other member; the bridge's fields are 0); Fabric "
                            "only")
    bench.add_argument("--messages", type=int, default=200, metavar="M",
                       help="messages per step (default 200)")
    bench.add_argument("--rate", type=float, default=50.0, metavar="R",
                       help="messages per second of the first step; each further step "
                            "doubles it (default 50)")
    bench.add_argument("--steps", type=int, default=6, metavar="K",
                       help="most throughput steps (default 6)")
    bench.add_argument("-c", "--config", type=Path, default=None, metavar="FILE",
                       help="bridge config template to run instead of the generated one; "
                            "{center_url} and {state_dir} in it are replaced; it must bind "
                            "agents echo, echo2, ... (keys: the seeded echo's key, then the "
                            "number) "
                            "to every channel of guild dev. With --platform slack: "
                            "{api_url} and {state_dir} are replaced, and agent NAME's tokens "
                            "are env:BRIDGE_BENCH_SLACK_BOT_<NAME> and "
                            "env:BRIDGE_BENCH_SLACK_APP_<NAME> (NAME in capitals). With "
                            "--platform lark: {domain} and {state_dir} are replaced, and "
                            "agent NAME's app id and secret are "
                            "env:BRIDGE_BENCH_LARK_ID_<NAME> and "
                            "env:BRIDGE_BENCH_LARK_SECRET_<NAME>")
    bench.add_argument("--json", action="store_true",
                       help="print the report as one JSON object (fields below)")
    bench.add_argument("--log", type=Path, default=None, metavar="FILE",
                       help="copy the bridge's log (level warning) to FILE at the end")
    bench.add_argument("--profile", type=Path, default=None, metavar="FILE",
                       help="sample the bridge with py-spy during the steps (after the "
                            "warm-up), write its raw stacks (py-spy's raw format: one "
                            "'frame;frame;... count' line per stack) to FILE, and print the "
                            "functions that took the most samples; needs py-spy (in the dev "
                            "extra); Fabric only")
    bench.add_argument("--idle-wait", type=float, default=0.0, metavar="S",
                       help="after the steps, wait S seconds before taking the bridge's RSS "
                            "and threads at the end (rss_end_mb, threads_end): with a config "
                            "whose [bridge] scope_idle_s is shorter than S, every "
                            "conversation has been stopped as idle by then (default 0)")
    bench.add_argument("--status-run", type=float, default=0.0, metavar="S",
                       help="instead: one codex-style run of S seconds with a tool step every "
                            "second; print its posts, edits and edits per second (JSON with "
                            "--json: the fields of the status report below); Fabric only")
    bench.add_argument("--status-runs", type=int, default=1, metavar="N",
                       help="with --status-run: N such runs at once, one per channel "
                            "(default 1)")
    bench.add_argument("--status-budget", type=float, default=0.0, metavar="R",
                       help="with --status-run: the agent's outbound budget, posts and edits "
                            "per second with a burst of R ([platforms.fabric] send_per_s and "
                            "send_burst; default 0: none)")
    from bridge.ops import bench_lark, bench_slack
    from bridge.ops.bench import json_fields_help
    from bridge.ops.bench_status import status_fields_help

    bench.epilog = ("JSON fields: " + json_fields_help() + ". JSON fields with --platform "
                    "slack: " + bench_slack.json_fields_help() + ". JSON fields with "
                    "--platform lark: " + bench_lark.json_fields_help() + ". JSON fields "
                    "with --status-run: " + status_fields_help())
    keys = sub.add_parser("keys", help="Manage the keys the bridge signs its buttons with.",
                          description="Manage the keys the bridge signs its buttons with "
                                      "(control-keys.json in the state dir).")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    rotate_help = ("Rotate the key that signs the buttons the bridge posts (Feishu/Lark Stop "
                   "buttons); buttons already posted stay valid until they expire.")
    rotate = keys_sub.add_parser("rotate", help=rotate_help, description=rotate_help)
    rotate.add_argument("-c", "--config", type=Path, default=None, metavar="FILE",
                        help=f"config file (default: {DEFAULT_CONFIG})")
    rotate.add_argument("--keep", type=int, default=2, metavar="N",
                        help="key versions to keep, the new one included (default 2); 1 "
                             "drops the older keys at once, so buttons already posted stop "
                             "working (after the key file was exposed)")
    rotate.epilog = ("A running bridge signs with the new key once it reads the key file "
                     "again. Keys are never printed.")
    chat = add("chat", "Talk in a channel of the dev guild as a seeded member.")
    chat.add_argument("--as", dest="user", required=True, metavar="USER",
                      help="seeded user name, e.g. alice or bob (with --api-key: the name "
                           "shown)")
    chat.add_argument("channel", help="channel name or id, e.g. general")
    chat.add_argument("--guild", default=None,
                      help="guild node id (default: the first binding's guild)")
    chat.add_argument("--api-key", default=None, metavar="REF",
                      help="the member's API key instead of the seed's, as a reference: "
                           "env:NAME (an environment variable), file:PATH (a file; relative "
                           "to the current folder) or - (standard input: typed without echo "
                           "on a terminal, else its first line, and the lines after it are "
                           "posted). The key itself is refused: a command line is visible to "
                           "every user of the machine")
    chat.add_argument("--history", type=int, default=20, metavar="N",
                      help="messages of history to print first (default 20)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` when None).

    Returns:
        The exit code: 0 ok, 1 failure, 2 bad config, 3 unusable state store.
    """
    args = build_parser().parse_args(argv)
    if args.command == "bench" and args.platform != "fabric":
        if args.status_run > 0 or args.profile is not None:
            print("bridge bench: --status-run and --profile are for the Fabric dev guild only",
                  file=sys.stderr)
            return EXIT_CONFIG
        if args.platform == "lark":
            from bridge.ops.bench_lark import main_lark_bench as main_double_bench
        else:
            from bridge.ops.bench_slack import main_slack_bench as main_double_bench

        return main_double_bench(args.channels, args.agents, args.messages, args.rate,
                                 args.steps, args.config, args.json, args.log)
    if args.command == "bench" and args.status_run > 0:
        from bridge.ops.bench_status import main_status_run

        return main_status_run(args.status_run, args.json, args.status_runs,
                               args.status_budget)
    if args.command == "bench":
        from bridge.ops.bench import main_bench

        return main_bench(args.channels, args.agents, args.messages, args.rate, args.steps,
                          args.config, args.json, args.log, args.profile, args.idle_wait)
    if args.command == "devguild":  # reads [devguild] and [bridge]; needs no [fabric] or agents
        try:
            from adapters.chat.fabric.devguild.config import load_devguild_config
            from bridge.cli.compose import SCHEMAS

            devguild_config = load_devguild_config(args.config, SCHEMAS)
        except ConfigError as exc:
            print(f"bridge: bad config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return cmd_devguild(devguild_config)
    if args.command == "soak":
        from bridge.ops.soak import main_soak

        return main_soak(args.duration, args.channels, args.rate, args.seed, args.kill_every,
                         args.json)
    from bridge.cli.compose import load_config
    from bridge.secrets import SecretError, receive_handed_secrets

    try:
        receive_handed_secrets()  # after the re-exec of 'start' (see cmd_start)
        config = load_config(args.config)
    except (ConfigError, SecretError) as exc:
        print(f"bridge: bad config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "start":
        return cmd_start(config, no_tui=args.no_tui)
    if args.command == "status":
        return cmd_status(config, as_json=args.json)
    if args.command == "top":
        return cmd_top(config)
    if args.command == "doctor":
        return cmd_doctor(config, timeout_s=args.timeout)
    if args.command == "keys":
        return cmd_keys_rotate(config, keep=args.keep)
    from adapters.chat.fabric.chat import run_chat

    return run_chat(config, user=args.user, channel=args.channel, guild=args.guild,
                    api_key_ref=args.api_key, history=args.history)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_start(config: Config, *, no_tui: bool) -> int:
    """``bridge start``: run until Ctrl-C or SIGTERM, then stop cleanly.

    First, before any thread: re-executes itself once without the secret
    environment variables (so an agent cannot read them from
    ``/proc/<pid>/environ``; see :mod:`bridge.secrets`), then makes the state
    dir private (umask 077, dir 0700, files 0600; see
    :func:`bridge.statefiles.secure_state_dir`).
    """
    from adapters.agents.childenv import BASE_ENV
    from bridge.board import Board
    from bridge.cli.compose import DevGuildMissing, bridge_app
    from bridge.logs import setup_logging
    from bridge.ops.tui import run_live
    from bridge.secrets import SecretError, env_secret_names, exec_without_env_secrets
    from bridge.statefiles import AlreadyRunning, secure_state_dir
    from bridge.store import StoreError

    try:
        # Returns only when no secret variable is set. Variables every agent child gets
        # anyway (PATH, HOME, proxies) stay, the bridge needs them too.
        exec_without_env_secrets(env_secret_names() - set(BASE_ENV))
        secure_state_dir(config.bridge.state_dir)
    except (OSError, SecretError) as exc:
        print(f"bridge: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    use_tui = not no_tui and sys.stdout.isatty()
    board = Board()
    if not use_tui:
        setup_logging(None, config.bridge.log_level, sys.stdout)
    stop = threading.Event()
    _stop_on_signals(stop)
    app = bridge_app(config, board)
    try:
        app.start()
    except AlreadyRunning as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except StoreError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (OSError, DevGuildMissing) as exc:
        app.stop()
        print(f"bridge: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if use_tui:
            run_live(board.snapshot, stop, title=f"bridge ({config.path.name})")
        else:
            stop.wait()
    finally:
        log.info("stopping")
        app.stop()
    return EXIT_OK


def cmd_status(config: Config, *, as_json: bool) -> int:
    """``bridge status``: one snapshot of the running bridge, from its state dir."""
    from bridge.ops.tui import plain_status
    from bridge.statefiles import StatusError, read_status, running_pid

    state_dir = config.bridge.state_dir
    try:
        pid = running_pid(state_dir)
        snapshot = read_status(state_dir) if pid is not None else None
    except StatusError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if pid is None or snapshot is None:
        print(f"bridge: no bridge is running on state dir {state_dir} "
              f"(start one with: bin/bridge start -c {config.path})", file=sys.stderr)
        return EXIT_FAILURE
    if as_json:
        print(json.dumps(snapshot.to_dict(), indent=2))
    else:
        print(plain_status(snapshot))
    return EXIT_OK


def cmd_top(config: Config) -> int:
    """``bridge top``: the live UI of a running bridge, read from its status file."""
    from bridge.board import BoardSnapshot
    from bridge.ops.tui import run_live
    from bridge.statefiles import read_status, running_pid

    state_dir = config.bridge.state_dir

    def source() -> BoardSnapshot | None:
        return read_status(state_dir) if running_pid(state_dir) is not None else None

    stop = threading.Event()
    _stop_on_signals(stop)
    run_live(source, stop, title=f"bridge top ({state_dir})",
             waiting_text=f"waiting for a bridge on {state_dir}… (Ctrl-C to quit)")
    return EXIT_OK


def cmd_devguild(config: DevGuildConfig) -> int:
    """``bridge devguild``: serve the dev guild until Ctrl-C."""
    from adapters.chat.fabric.devguild import DevGuild

    settings = config.devguild
    guild = DevGuild(config.seed, host=settings.host, center_port=settings.center_port,
                     guild_port=settings.guild_port, token_ttl_s=settings.token_ttl_s,
                     content_limit=config.content_limit)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Ctrl-C stops it cleanly from the moment the banner says so (handlers first).
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        guild.start()
    except OSError as exc:
        print(f"bridge: cannot start the dev guild: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"dev guild running (pid {os.getpid()}): center {guild.center_url}, "
          f"guild {guild.guild_url}; Ctrl-C stops it", flush=True)
    stop.wait()
    guild.stop()
    return EXIT_OK


def cmd_doctor(config: Config, *, timeout_s: float = 3.0) -> int:
    """``bridge doctor``: print one line per check; exit 0 when none fails, else 1."""
    from bridge.ops.doctor import ASCII_MARKS, MARKS, format_check, run_checks, summary

    checks = run_checks(config, timeout_s=timeout_s)
    try:
        "".join(MARKS.values()).encode(sys.stdout.encoding or "ascii")
        marks = MARKS
    except (UnicodeEncodeError, LookupError):
        marks = ASCII_MARKS
    for check in checks:
        print(format_check(check, marks))
    print(summary(checks))
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILURE


def cmd_keys_rotate(config: Config, *, keep: int) -> int:
    """``bridge keys rotate``: a new key for new buttons; the last ``keep`` versions stay."""
    from adapters.chat.control_keys import KEY_FILE, KeyFileError, load_key_ring, rotate

    if keep < 1:
        print("bridge keys rotate: --keep must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = config.bridge.state_dir
    try:
        version = rotate(state_dir, keep=keep)
        kept = sorted(load_key_ring(state_dir).keys)
    except (KeyFileError, OSError) as exc:
        print(f"bridge: cannot rotate the button key: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"button key version {version} is current; buttons signed with version(s) "
          f"{', '.join(map(str, kept))} are honoured until they expire "
          f"({state_dir / KEY_FILE})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
