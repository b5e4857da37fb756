"""What each platform gives the contract tests: the platform, an identity, a space, members.

A harness sets up one platform with its own server (in memory, or a dev server
on loopback), an agent identity the platform logs in, a human member in the
same space, and acts as that member (posts, with files where the platform
takes them; clicks on controls and reads reactions where it has them). Add a
class and a line in :data:`HARNESSES` for each platform; every test in this
folder then runs on it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from adapters.chat.fabric.config import FabricIdentity, FabricSettings
from adapters.chat.fabric.devguild import DevGuild, load_seed
from adapters.chat.fabric.platform import FabricPlatform
from adapters.chat.fabric.rest import FabricCenter, FabricGuild
from adapters.chat.lark.config import LarkIdentity, LarkSettings
from adapters.chat.lark.double import LarkApp, LarkDouble
from adapters.chat.lark.platform import LarkPlatform
from adapters.chat.lark.session import TENANT
from adapters.chat.memory import MemoryPlatform, MemoryServer, mention
from adapters.chat.memory.config import MemoryIdentity
from adapters.chat.slack.checks import BOT_SCOPES
from adapters.chat.slack.config import SlackIdentity, SlackSettings
from adapters.chat.slack.double import SlackDouble
from adapters.chat.slack.platform import SlackPlatform
from adapters.chat.slack.session import WORKSPACE
from bridge.config import AgentSettings, Binding
from bridge.platform import ChatPlatform, Unsupported
from bridge.secrets import Secret


@attrs.frozen
class Shown:
    """A message as a member sees it in a channel.

    Attributes:
        id: Its message id.
        author_id: Its author's user id.
        text: Its text.
        thread: The id of its thread's first message; empty at the top level.
        files: The files posted with it: (name, content) in order.
    """

    id: str
    author_id: str
    text: str
    thread: str = ""
    files: tuple[tuple[str, bytes], ...] = ()


class Harness(Protocol):
    """One platform set up for the contract tests."""

    @property
    def platform(self) -> ChatPlatform:
        """The platform under test."""

    @property
    def agent(self) -> AgentSettings:
        """An agent whose identity the platform logs in."""

    @property
    def refused(self) -> AgentSettings:
        """An agent whose credentials the platform refuses."""

    @property
    def space(self) -> str:
        """The space the identity and the member are in."""

    @property
    def member_id(self) -> str:
        """The human member's user id."""

    @property
    def file_captions(self) -> bool:
        """Whether a message carrying an uploaded file shows its title as text."""

    @property
    def file_sizes(self) -> bool:
        """Whether a member's file arrives with its size (else ``size_bytes`` is 0)."""

    def bindings(self) -> list[Binding]:
        """The agent's bindings: every channel of the space."""

    def make_channel(self, name: str, *, direct: bool = False) -> str:
        """A new channel with the member and the identity; ``direct``: their DM.

        A plain message in a channel that is not direct is not addressed to the agent.
        """

    def post(self, channel: str, text: str, *, thread: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        """Post ``text`` as the member (in ``thread`` when given, with ``files``: name ->
        content, where the platform takes files); return the message id."""

    def shows(self, channel: str) -> list[Shown]:
        """What the channel shows the member, oldest first (deleted messages left out)."""

    def reactions(self, channel: str, message_id: str) -> dict[str, frozenset[str]]:
        """The reactions the member sees on a message: name -> the ids of who reacted so."""

    def click(self, channel: str, message_id: str, name: str, value: str = "") -> None:
        """Click, as the member, the control ``name`` (carrying ``value``) on a message."""

    def mention(self) -> str:
        """Text that mentions the identity."""

    def drop(self) -> None:
        """Drop the identity's live connections (the intake must reconnect)."""

    def fail_next_post(self, *, landed: bool) -> None:
        """Make the identity's next post fail ambiguously, stored or not (``landed``)."""

    def close(self) -> None:
        """Stop what the harness started."""


class MemoryHarness:
    """The in-memory platform on a server of its own."""

    file_captions = True
    file_sizes = True

    KEY = "memory-key-memo"

    def __init__(self) -> None:
        self.server = MemoryServer(text_chars=1000)
        self.identity_id = self.server.add_user("memo", credential=self.KEY, bot=True)
        self.member_id = self.server.add_user("ann")
        self.space = self.server.add_space("team", [self.identity_id, self.member_id])
        self.platform = MemoryPlatform(self.server, retry_s=0.05, retry_max_s=0.5)
        self.agent = AgentSettings(name="memo", kind="echo",
                                   identities={"memory": MemoryIdentity(Secret(self.KEY))})
        self.refused = AgentSettings(name="memo", kind="echo",
                                     identities={"memory": MemoryIdentity(
                                         Secret("memory-key-unknown"))})

    def bindings(self) -> list[Binding]:
        return [Binding(agent=self.agent.name, space=self.space)]

    def make_channel(self, name: str, *, direct: bool = False) -> str:
        return self.server.add_channel(self.space, name, [self.member_id, self.identity_id],
                                       direct=direct)

    def post(self, channel: str, text: str, *, thread: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        return self.server.post(channel, self.member_id, text, thread=thread, files=files).id

    def shows(self, channel: str) -> list[Shown]:
        return [Shown(m.id, m.author, m.text, m.thread,
                      tuple((f.name, self.server.download(f.id, self.member_id)[1])
                            for f in m.files))
                for m in self.server.history(channel, self.member_id)]

    def reactions(self, channel: str, message_id: str) -> dict[str, frozenset[str]]:
        return self.server.reactions(channel, message_id, self.member_id)

    def click(self, channel: str, message_id: str, name: str, value: str = "") -> None:
        self.server.click(channel, message_id, self.member_id, name, value)

    def mention(self) -> str:
        return mention(self.identity_id)

    def drop(self) -> None:
        assert self.server.drop_connections(self.identity_id) >= 1

    def fail_next_post(self, *, landed: bool) -> None:
        self.server.fail_next_posts(1, landed=landed, author=self.identity_id)

    def close(self) -> None:
        pass


class FabricHarness:
    """Fabric on the seeded dev guild (loopback, OS-chosen ports): ``echo`` is the
    identity, ``alice`` the member, acting through the guild's REST API."""

    file_captions = True
    file_sizes = True

    space = "dev"

    def __init__(self) -> None:
        self.guild = DevGuild(load_seed(None), center_port=0, guild_port=0)
        self.guild.start()
        try:
            self.identity_id = self.guild.user_id("echo")
            self.member_id = self.guild.user_id("alice")
            self.platform = FabricPlatform(FabricSettings(center_url=self.guild.center_url),
                                           catch_up_window_s=600.0)
            self.agent = AgentSettings(name="echo", kind="echo",
                                       identities={"fabric": FabricIdentity(
                                           Secret(self.guild.api_key("echo")))})
            self.refused = AgentSettings(name="echo", kind="echo",
                                         identities={"fabric": FabricIdentity(
                                             Secret("fak_dev_unknown"))})
            session = FabricCenter(self.guild.center_url).login(self.guild.api_key("alice"))
            self.member = FabricGuild(session.guilds[self.space])
        except BaseException:
            self.guild.stop()
            raise

    def bindings(self) -> list[Binding]:
        return [Binding(agent=self.agent.name, space=self.space)]

    def make_channel(self, name: str, *, direct: bool = False) -> str:
        # "work" wakes only the members a message mentions.
        channel = self.member.create_channel(name, "dm" if direct else "work",
                                             members=[self.identity_id], public=not direct)
        return str(channel["id"])

    def post(self, channel: str, text: str, *, thread: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        assert not thread, "Fabric has no threads"
        assert not files, "Fabric takes no files"
        return str(self.member.post(channel, text)["messageId"])

    def shows(self, channel: str) -> list[Shown]:
        return [Shown(m["messageId"], m["authorUserId"], m["content"])
                for m in self.member.history(channel) if not m.get("isDeleted")]

    def reactions(self, channel: str, message_id: str) -> dict[str, frozenset[str]]:
        raise Unsupported("Fabric has no reactions")

    def click(self, channel: str, message_id: str, name: str, value: str = "") -> None:
        raise Unsupported("Fabric has no buttons")

    def mention(self) -> str:
        return f"<@{self.identity_id}>"

    def drop(self) -> None:
        assert self.guild.drop_sockets() >= 1

    def fail_next_post(self, *, landed: bool) -> None:
        self.guild.fail_next_posts(1, 500, user_id=self.identity_id, landed=landed)

    def close(self) -> None:
        self.guild.stop()


class SlackHarness:
    """Slack on the local Slack double (loopback, OS-chosen port), driven by the real
    slack-sdk: ``echo`` is the app, ``alice`` the member."""

    file_captions = True
    file_sizes = True

    space = WORKSPACE

    def __init__(self) -> None:
        self.double = SlackDouble()
        self.double.start()
        try:
            self.member_id = self.double.add_user("alice")
            self.app = self.double.add_app("echo", scopes=BOT_SCOPES)
            self.identity_id = self.app.bot_user_id
            self.platform = SlackPlatform(SlackSettings(api_url=self.double.api_url),
                                          catch_up_window_s=600.0, ping_interval_s=2.0,
                                          retry_s=0.05)
            self.agent = AgentSettings(name="echo", kind="echo", identities={"slack": SlackIdentity(
                Secret(self.app.bot_token), Secret(self.app.app_token))})
            self.refused = AgentSettings(name="echo", kind="echo", identities={
                "slack": SlackIdentity(Secret("xoxb-unknown"), Secret("xapp-unknown"))})
        except BaseException:
            self.double.stop()
            raise

    def bindings(self) -> list[Binding]:
        return [Binding(agent=self.agent.name, space=self.space, platform="slack",
                        scope="thread")]

    def make_channel(self, name: str, *, direct: bool = False) -> str:
        if direct:
            return self.double.open_dm(self.member_id, self.identity_id)
        return self.double.add_channel(name, [self.member_id, self.identity_id])

    def post(self, channel: str, text: str, *, thread: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        return self.double.post(self.member_id, channel, text, thread_ts=thread, files=files)

    def shows(self, channel: str) -> list[Shown]:
        return [Shown(m["ts"], m.get("user") or m.get("bot_id", ""), m.get("text", ""),
                      m["thread_ts"] if m.get("thread_ts") not in (None, m["ts"]) else "",
                      tuple((f["name"], self.double.file_content(f["id"]))
                            for f in m.get("files") or []))
                for m in self.double.history(channel)]

    def reactions(self, channel: str, message_id: str) -> dict[str, frozenset[str]]:
        return {name: frozenset(users)
                for name, users in self.double.reactions(channel, message_id).items() if users}

    def click(self, channel: str, message_id: str, name: str, value: str = "") -> None:
        # Slack shows a button only where the bot put one: a click elsewhere cannot be made.
        message = self.double.message(channel, message_id)
        buttons = [e for b in message.get("blocks") or [] if b.get("type") == "actions"
                   for e in b.get("elements") or []]
        if any(b.get("action_id") == name for b in buttons):
            self.double.click(self.member_id, channel, message_id, name, value)

    def mention(self) -> str:
        return f"<@{self.identity_id}>"

    def drop(self) -> None:
        assert self.double.drop_sockets(self.app) >= 1

    def fail_next_post(self, *, landed: bool) -> None:
        if landed:
            self.double.fail_after_store("chat.postMessage")
        else:
            self.double.fail("chat.postMessage", "internal_error")

    def close(self) -> None:
        self.double.stop()


class LarkHarness:
    """Feishu/Lark on the local Lark double (loopback, OS-chosen port), driven by the
    real lark-oapi: ``echo`` is the app (it gets every group message, as an app with
    ``im:message.group_msg`` does), ``alice`` the member."""

    space = TENANT
    # A file message has no caption, and a member's file event no size (docs
    # im-v1/message content: ``file_key`` and ``file_name`` only).
    file_captions = False
    file_sizes = False

    def __init__(self) -> None:
        self.double = LarkDouble()
        self.double.start()
        self.state_dir = Path(tempfile.mkdtemp(prefix="lark-harness-"))
        try:
            self.member_id = self.double.add_user("alice")
            self.app = self.double.add_app("echo", group_messages=True)
            self.identity_id = self.app.bot_open_id
            self.platform = LarkPlatform(LarkSettings(domain=self.double.domain),
                                         catch_up_window_s=600.0, state_dir=self.state_dir,
                                         retry_s=0.05)
            self.agent = AgentSettings(name="echo", kind="echo", identities={"lark": LarkIdentity(
                self.app.app_id, Secret(self.app.app_secret))})
            self.refused = AgentSettings(name="echo", kind="echo", identities={
                "lark": LarkIdentity(self.app.app_id, Secret("not-the-secret"))})
        except BaseException:
            self.close()
            raise

    def bindings(self) -> list[Binding]:
        return [Binding(agent=self.agent.name, space=self.space, platform="lark",
                        scope="thread")]

    def make_channel(self, name: str, *, direct: bool = False) -> str:
        if direct:
            return self.double.add_p2p(self.member_id, self.app)
        return self.double.add_group(name, [self.member_id, self.app])

    def post(self, channel: str, text: str, *, thread: str = "",
             files: Mapping[str, bytes] | None = None) -> str:
        mentions: list[LarkApp | str] = []
        if text.startswith(self.mention()):
            text, mentions = text[len(self.mention()):].lstrip(), [self.app]
        return self.double.post(self.member_id, channel, text, mentions=mentions,
                                reply_to=thread, files=files)

    def shows(self, channel: str) -> list[Shown]:
        shown = []
        for m in self.double.history(channel):
            files: tuple[tuple[str, bytes], ...] = ()
            content = m.get("content") or {}
            if m["msg_type"] in ("file", "image"):
                key = str(content.get("file_key") or content.get("image_key"))
                files = ((self.double.file_name(key), self.double.file_content(key)),)
            text = str(m["text"])
            for mark in m.get("mentions") or []:  # "@_user_1" as members see it: "@echo"
                text = text.replace(mark["key"], f"@{mark['name']}")
            root = m.get("root_id") or ""
            shown.append(Shown(m["message_id"], m["sender_id"], text,
                               root if root != m["message_id"] else "", files))
        return shown

    def reactions(self, channel: str, message_id: str) -> dict[str, frozenset[str]]:
        names = {"GLANCE": "eyes", "DONE": "white_check_mark", "THUMBSDOWN": "x"}
        return {names.get(emoji, emoji): frozenset(users)
                for emoji, users in self.double.reactions(message_id).items() if users}

    def click(self, channel: str, message_id: str, name: str, value: str = "") -> None:
        # Feishu/Lark shows a button only on an app's card: a click elsewhere cannot be made.
        try:
            self.double.click(self.member_id, message_id, name=name)
        except LookupError:
            return

    def mention(self) -> str:
        return "@echo"

    def drop(self) -> None:
        assert self.double.drop_sockets(self.app) >= 1

    def fail_next_post(self, *, landed: bool) -> None:
        if landed:
            self.double.fail_after_store("POST /open-apis/im/v1/messages")
        else:
            self.double.fail("POST /open-apis/im/v1/messages", code=1, status=500)

    def close(self) -> None:
        self.double.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


#: A harness maker per platform name.
HARNESSES: dict[str, Callable[[], Harness]] = {"memory": MemoryHarness, "fabric": FabricHarness,
                                               "slack": SlackHarness, "lark": LarkHarness}
