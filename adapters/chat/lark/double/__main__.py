"""``python -m adapters.chat.lark.double [--port P] [--print-secrets]``: a seeded double.

Runs until Ctrl-C. Seeds one app (``bridge``), one person (``alice``), their p2p chat and a
topic group with both, then prints the domain, the ids and the environment
variable names to set. The app secret is written to a file (mode 0600), not
printed, unless ``--print-secrets`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading

from adapters.chat.lark.double.server import LarkDouble


def main(argv: list[str] | None = None) -> int:
    """Run the double until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m adapters.chat.lark.double",
                                     description="A local Feishu/Lark open platform.")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: the OS chooses)")
    parser.add_argument("--print-secrets", action="store_true",
                        help="print the app secret as an export line instead of to a file")
    args = parser.parse_args(argv)
    double = LarkDouble(host=args.host, port=args.port)
    app = double.add_app("bridge")
    alice = double.add_user("alice")
    dm = double.add_p2p(alice, app)
    group = double.add_group("general", [alice, app], topic=True)
    with double:
        print(f"domain      {double.domain}")
        print(f"app_id      {app.app_id}  bot {app.bot_open_id}")
        print(f"alice       {alice}  p2p {dm}  topic group {group}")
        print(f"export CODER_LARK_APP_ID={app.app_id}")
        if args.print_secrets:
            print(f"export CODER_LARK_APP_SECRET={app.app_secret}")
        else:
            fd, path = tempfile.mkstemp(prefix="lark-double-secret-")
            with os.fdopen(fd, "w") as out:
                out.write(app.app_secret + "\n")
            print(f"CODER_LARK_APP_SECRET: the secret is in {path}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
