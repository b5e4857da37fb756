"""``python -m adapters.chat.slack.double [--port P]``: a seeded double until Ctrl-C.

Seeds one app (``bridge``), one person (``alice``), a channel ``#general`` with
both and their DM, then prints the URLs, ids and the double's made-up tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from adapters.chat.slack.double.server import SlackDouble


def main(argv: list[str] | None = None) -> int:
    """Run the double until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m adapters.chat.slack.double",
                                     description="A local Slack (Web API + Socket Mode).")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: the OS chooses)")
    args = parser.parse_args(argv)
    double = SlackDouble(host=args.host, port=args.port)
    app = double.add_app("bridge", commands=["/bridge"])
    alice = double.add_user("alice")
    general = double.add_channel("general", [alice, app])
    dm = double.open_dm(alice, app)
    with double:
        print(f"api_url     {double.api_url}")
        print(f"team_id     {double.team_id}")
        print(f"app_id      {app.app_id}  bot user {app.bot_user_id}  bot {app.bot_id}")
        print(f"bot_token   {app.bot_token}")
        print(f"app_token   {app.app_token}")
        print(f"alice       {alice}  #general {general}  DM {dm}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
