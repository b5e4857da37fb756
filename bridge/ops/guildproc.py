"""The dev guild in a child process, for ``bridge bench``.

The bench's members and the dev guild are both busy Python code: in one
process they share one interpreter lock, so on a 2-core machine together they
could use at most one core, and the guild's CPU could not be told from the
bench's. As a child (``python -m bridge.ops.guildproc AGENTS``) the guild has a
core of its own and its CPU is its process's (``/proc/<pid>/stat``).

The child serves :func:`bridge.ops.bench.bench_seed` of ``AGENTS`` on free
loopback ports and talks JSON lines on its standard streams:

- once listening it writes ``{"center_url": URL, "users": {name: [id, api_key]}}``;
- for each line ``calls`` read it writes the dev guild's API call counters,
  ``[[kind, user name, calls], ...]`` (see :meth:`DevGuild.api_calls`);
- at the end of its input (the parent closed the pipe or exited) it stops.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
#: Seconds the child may take to stop once its input ends.
STOP_TIMEOUT_S = 5.0


class GuildProcess:
    """The dev guild of a bench run, as a child process.

    Args:
        agents: Bench agents to seed (``echo``, ``echo2``, ...; see
            :func:`bridge.ops.bench.bench_seed`).

    Attributes:
        center_url: Center base URL with ``/api`` (empty before :meth:`start`).
    """

    def __init__(self, agents: int) -> None:
        self.agents = agents
        self.center_url = ""
        self._users: dict[str, tuple[str, str]] = {}
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, or None before :meth:`start`."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child and wait until it listens.

        Raises:
            RuntimeError: when the child exits before it listens.
        """
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bridge.ops.guildproc", str(self.agents)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._answer()
        self.center_url = str(hello["center_url"])
        self._users = {str(name): (str(ids[0]), str(ids[1]))
                       for name, ids in hello["users"].items()}

    def _answer(self) -> Any:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait(timeout=STOP_TIMEOUT_S)
            raise RuntimeError(f"the dev guild's process exited with {code}")
        return json.loads(line)

    def user_id(self, name: str) -> str:
        """A seeded user's id; KeyError if unknown."""
        return self._users[name][0]

    def api_key(self, name: str) -> str:
        """A seeded user's API key; KeyError if unknown."""
        return self._users[name][1]

    def api_calls(self) -> dict[tuple[str, str], int]:
        """The guild's API call counters, ``{(kind, user name): calls}`` (see
        :meth:`adapters.chat.fabric.devguild.DevGuild.api_calls`).

        Raises:
            RuntimeError: when the child is not running.
        """
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the dev guild's process is not running")
        try:
            self._process.stdin.write("calls\n")
            self._process.stdin.flush()
        except OSError as exc:
            raise RuntimeError(f"the dev guild's process is gone ({exc})") from None
        return {(str(kind), str(name)): int(calls) for kind, name, calls in self._answer()}

    def stop(self) -> None:
        """End the child's input and wait for it (killed after :data:`STOP_TIMEOUT_S`);
        idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # a child already gone
                process.stdin.close()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> GuildProcess:
        """Start the child and return it."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the child."""
        self.stop()


def serve(agents: int, commands: IO[str], answers: IO[str]) -> None:
    """The child's work: serve the bench seed and answer ``commands`` until they end.

    Args:
        agents: Bench agents to seed.
        commands: Where the parent's lines are read from.
        answers: Where the JSON lines go.
    """
    from adapters.chat.fabric.devguild import DevGuild
    from bridge.ops.bench import bench_seed

    seed = bench_seed(agents)

    def say(data: Any) -> None:
        answers.write(json.dumps(data) + "\n")
        answers.flush()

    with DevGuild(seed, center_port=0, guild_port=0) as guild:
        say({"center_url": guild.center_url,
             "users": {user.name: [guild.user_id(user.name), guild.api_key(user.name)]
                       for user in seed.users}})
        for line in commands:
            if line.strip() == "calls":
                say([[kind, name, calls] for (kind, name), calls in guild.api_calls().items()])


def main(argv: list[str]) -> int:
    """``python -m bridge.ops.guildproc AGENTS``: see the module docstring.

    Returns:
        0 once the input ended (or on Ctrl-C), 2 on a bad argument.
    """
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m bridge.ops.guildproc AGENTS", file=sys.stderr)
        return 2
    # Ctrl-C reaches the whole process group: the parent stops too.
    with contextlib.suppress(KeyboardInterrupt):
        serve(int(argv[0]), sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
