"""``bridge chat``: a terminal member of a Fabric channel (for trying the bridge).

Prints the channel live with author names, and posts each line typed. Reads
the member's API key from the dev guild's seed, or from ``--api-key``: a
reference (``env:NAME``, ``file:PATH``) or ``-`` for standard input, never the
key itself (a command line is visible to every user of the machine).
"""

from __future__ import annotations

import getpass
import queue
import sys
import threading
import time
from typing import Any, TextIO

from adapters.chat.fabric.config import devguild_settings, fabric_settings
from adapters.chat.fabric.realtime import FabricSocket
from adapters.chat.fabric.rest import FabricCenter, FabricGuild, GuildAccess
from bridge.config import Config
from bridge.errors import ChatError, Unauthorized
from bridge.sanitize import terminal_safe, terminal_safe_lines
from bridge.secrets import Secret, SecretError, resolve_secret

#: Seconds between reconnect attempts of the chat client.
RECONNECT_S = 1.0


class ChatSession:
    """One member in one channel: printing and posting.

    Args:
        center: Center client.
        api_key: The member's API key.
        guild: Guild node id.
        channel: Channel name or id.
        out: Where lines are printed.
    """

    def __init__(self, center: FabricCenter, api_key: str, guild: str, channel: str,
                 out: TextIO) -> None:
        self.center = center
        self.api_key = api_key
        self.guild_id = guild
        self.out = out
        self.lock = threading.Lock()
        self.names: dict[str, str] = {}
        self.access = self._login()
        self.rest = FabricGuild(self.access)
        self.channel = self._find_channel(channel)
        self.socket: FabricSocket | None = None
        self.closed = threading.Event()
        # Live messages are printed off the socket's loop: printing one may look up its
        # author's name over REST, which must not hold up the process's I/O loop.
        self._live: queue.SimpleQueue[tuple[dict[str, Any], str] | None] = queue.SimpleQueue()
        self._printer = threading.Thread(target=self._print_live, name="chat-printer",
                                         daemon=True)
        self._printer.start()

    def _login(self) -> GuildAccess:
        session = self.center.login(self.api_key)
        access = session.guilds.get(self.guild_id)
        if access is None:
            raise ChatError(f"{session.user_name} has no access to guild {self.guild_id!r}")
        return access

    def _find_channel(self, wanted: str) -> dict[str, Any]:
        channels = self.rest.channels()
        for channel in channels:
            if wanted in (channel.get("id"), channel.get("name")):
                return channel
        names = ", ".join(sorted(str(c.get("name")) for c in channels))
        raise ChatError(f"no channel {wanted!r} in guild {self.guild_id} (channels: {names})")

    def name(self, user_id: str) -> str:
        """Display name of a user (cached)."""
        if user_id not in self.names:
            self.names[user_id] = self.rest.user_name(user_id) or user_id[:8]
        return self.names[user_id]

    def show(self, message: dict[str, Any], prefix: str = "") -> None:
        """Print one message as ``[seq] name: content``.

        Other members write the name and the content: control characters in
        them are shown as escapes (the content keeps its line breaks).
        """
        author = terminal_safe(self.name(str(message.get("authorUserId", "?"))))
        content = terminal_safe_lines(str(message.get("content")))
        with self.lock:
            print(f"{prefix}[{terminal_safe(str(message.get('seq')))}] {author}: {content}",
                  file=self.out, flush=True)

    def connect(self) -> None:
        """Connect the socket and join the channel (logging in again on a refused token)."""
        def on_event(name: str, payload: Any) -> None:
            if not isinstance(payload, dict) or payload.get("channelId") != self.channel["id"]:
                return
            if name == "message.created":
                self._live.put((payload, ""))
            elif name == "message.updated":
                self._live.put((payload, "(edited) "))

        def on_closed(reason: str) -> None:
            print(f"-- disconnected ({reason}); reconnecting", file=self.out, flush=True)
            threading.Thread(target=self._reconnect, daemon=True).start()

        while not self.closed.is_set():
            socket = FabricSocket(self.access.endpoint, lambda: self.access.token, on_event,
                                  on_closed)
            try:
                socket.connect()
            except Unauthorized:
                self.access = self._login()
                self.rest.access = self.access
                continue
            except ChatError as exc:
                print(f"-- {exc}; retrying", file=self.out, flush=True)
                time.sleep(RECONNECT_S)
                continue
            self.socket = socket
            if not socket.join(self.channel["id"]):
                print("-- the guild did not confirm the join; messages may be missed",
                      file=self.out, flush=True)
            return

    def _print_live(self) -> None:
        """Print the live messages in the order they came, until :meth:`close`."""
        while (item := self._live.get()) is not None:
            message, prefix = item
            try:
                self.show(message, prefix)
            except ChatError as exc:  # the author's name could not be looked up
                print(f"-- message {terminal_safe(str(message.get('seq')))} not shown: {exc}",
                      file=self.out, flush=True)

    def _reconnect(self) -> None:
        time.sleep(RECONNECT_S)
        self.connect()

    def post(self, text: str) -> None:
        """Post one line (logging in again once on a 401)."""
        try:
            self.rest.post(self.channel["id"], text)
        except Unauthorized:
            self.access = self._login()
            self.rest.access = self.access
            self.rest.post(self.channel["id"], text)

    def close(self) -> None:
        """Disconnect, then print what already arrived (waits at most 2 s for it)."""
        self.closed.set()
        if self.socket is not None:
            self.socket.close()
        self._live.put(None)
        self._printer.join(timeout=2.0)


def read_api_key(ref: str, stdin: TextIO) -> Secret:
    """Resolve ``--api-key``: a reference or ``-``, never a key written on the command line.

    Args:
        ref: ``env:NAME`` (an environment variable), ``file:PATH`` (the file's
            content, stripped; a relative path is relative to the current folder)
            or ``-``: standard input, typed without echo on a terminal, else its
            first line (the following lines are what the member posts).
        stdin: Standard input.

    Returns:
        The key.

    Raises:
        SecretError: The reference cannot be resolved, standard input holds no
            key, or ``ref`` is neither (most likely a key itself: refused, and
            not repeated in the message).
    """
    if ref == "-":
        if stdin.isatty():
            value = getpass.getpass("API key (not shown): ")
        else:
            value = stdin.readline().strip()
        if not value:
            raise SecretError("--api-key -: no key on standard input (its first line is "
                              "the key)")
        return Secret(value, "stdin")
    if ref.startswith(("env:", "file:")):
        return resolve_secret(ref)
    raise SecretError("--api-key takes env:NAME, file:PATH or - (the key on standard input), "
                      "not the key itself: a command line is visible to every user of this "
                      "machine")


def run_chat(config: Config, *, user: str, channel: str, guild: str | None,
             api_key_ref: str | None, history: int, stdin: TextIO = sys.stdin,
             out: TextIO = sys.stdout) -> int:
    """Run ``bridge chat`` until end of input or Ctrl-C.

    Returns:
        The exit code (0, or 1 with a message on stderr).
    """
    guild_id = guild or config.bindings[0].space
    try:
        if api_key_ref is not None:
            api_key = read_api_key(api_key_ref, stdin).reveal()
        else:
            from adapters.chat.fabric.devguild import load_seed

            devguild = devguild_settings(config)
            seed = load_seed(devguild.seed if devguild else None)
            users = {u.name: u for u in seed.users}
            if user not in users:
                print(f"bridge chat: no seeded user {user!r} (users: "
                      f"{', '.join(sorted(users))}); pass --api-key for others", file=sys.stderr)
                return 1
            api_key = users[user].api_key
        session = ChatSession(FabricCenter(fabric_settings(config).center_url), api_key,
                              guild_id, channel, out)
    except (ChatError, SecretError, LookupError) as exc:
        print(f"bridge chat: {exc}", file=sys.stderr)
        return 1
    print(f"-- {user} in #{terminal_safe(str(session.channel['name']))} ({guild_id}); "
          "type a line and press "
          "Enter to post, Ctrl-D to quit", file=out, flush=True)
    try:
        if history > 0:
            for message in session.rest.history(session.channel["id"], limit=history):
                session.show(message)
        session.connect()
        for line in stdin:
            text = line.rstrip("\n")
            if text.strip():
                try:
                    session.post(text)
                except ChatError as exc:
                    print(f"-- not posted: {exc}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    except ChatError as exc:
        print(f"bridge chat: {exc}", file=sys.stderr)
        return 1
    finally:
        session.close()
    return 0
