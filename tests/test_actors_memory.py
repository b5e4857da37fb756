"""The whole actor tree (:class:`actors.app.BridgeApp`) on the in-memory platform.

As errbot's test backend is used: the runtime runs exactly as in production
(gateway, scope, runner, delivery, credentials, the state store), against a
:class:`MemoryPlatform` whose server the test acts on as a member. No sockets.
"""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import actors.runner
from actors.app import BridgeApp
from adapters.agents import build_agent
from adapters.chat.memory import MemoryPlatform, MemoryServer, mention
from adapters.chat.memory.config import MemoryIdentity
from adapters.chat.memory.server import Message
from bridge.agent import Agent, AgentEvent, RunContext, SessionStarted
from bridge.board import Board, RunRow
from bridge.cli.compose import bridge_app, load_config
from bridge.config import (
    AgentSettings,
    Binding,
    BridgeSettings,
    Config,
)
from bridge.errors import RetryLater
from bridge.model import ConnectionKey, ScopeKey, Target
from bridge.policy import AccessPolicy
from bridge.prompt import CONTEXT_HEADER, MESSAGES_HEADER, Prompt
from bridge.secrets import Secret
from bridge.store import Store
from tests.support import GATED_AGENT, wait_until

#: The identity's credential on the server (the agent's Fabric-style ``api_key``).
KEY = "memory-key-echo"


@attrs.define
class Chat:
    """A server with a member (ann), the agent's identity (echo), a DM and a channel."""

    server: MemoryServer
    platform: MemoryPlatform
    ann: str
    echo: str
    space: str
    dm: str
    general: str

    def post(self, channel: str, text: str) -> Message:
        """Post ``text`` as ann."""
        return self.server.post(channel, self.ann, text)

    def by_echo(self, channel: str) -> list[Message]:
        """What echo posted in ``channel``, oldest first."""
        return [m for m in self.server.history(channel, self.ann) if m.author == self.echo]

    def answers(self, channel: str) -> list[str]:
        """The texts echo posted in ``channel``."""
        return [m.text for m in self.by_echo(channel)]

    def scope(self, channel: str) -> str:
        """The printed scope key of echo's conversation in ``channel``."""
        return str(ScopeKey("memory", "echo", self.space, channel))


@pytest.fixture
def chat() -> Chat:
    server = MemoryServer(text_chars=16_000)
    ann = server.add_user("ann")
    echo = server.add_user("echo", credential=KEY, bot=True)
    space = server.add_space("team", [ann, echo])
    dm = server.add_channel(space, "dm-ann-echo", [ann, echo], direct=True)
    general = server.add_channel(space, "general", [ann, echo])
    # first_sight=0: a channel without a stored cursor starts at its end, so what
    # an intake catches up after a restart comes from the cursors in the state dir.
    platform = MemoryPlatform(server, edit_interval_s=1.0, first_sight=0, retry_s=0.05,
                              retry_max_s=0.5)
    return Chat(server, platform, ann, echo, space, dm, general)


def agent(kind: str = "echo", command: tuple[str, ...] = (),
          workspace: Path | None = None) -> AgentSettings:
    """The ``echo`` agent (of any kind), its identity the server's credential."""
    return AgentSettings(name="echo", kind=kind,
                         identities={"memory": MemoryIdentity(Secret(KEY))},
                         command=command, workspace=workspace)


def config_for(tmp_path: Path, chat: Chat, settings: AgentSettings | None = None) -> Config:
    """A config with one binding of echo on the memory platform, every channel of the space."""
    return Config(path=tmp_path / "bridge.toml",
                  bridge=BridgeSettings(state_dir=tmp_path / "var", debounce_s=0.05,
                                        log_level="DEBUG"),
                  platforms={},
                  agents={"echo": settings or agent()},
                  bindings=(Binding("echo", chat.space, platform="memory"),))


def start(config: Config, chat: Chat, apps: list[BridgeApp],
          agents: Callable[[AgentSettings], Agent] = build_agent) -> BridgeApp:
    """Start the app on the chat's platform (its agents made by ``agents``) and wait until
    echo is connected."""
    app = BridgeApp(config, Board(), platforms=lambda _: {"memory": chat.platform},
                    agents=agents)
    apps.append(app)
    app.start()

    def connected() -> bool:
        row = app.board.connection("echo", chat.space)
        return row is not None and row.state == "connected"

    wait_until(connected, what="echo connected")
    return app


def store_of(app: BridgeApp) -> Store:
    assert app.store is not None
    return app.store


def test_a_direct_message_is_answered_exactly_once(tmp_path: Path, chat: Chat,
                                                   apps: list[BridgeApp]) -> None:
    app = start(config_for(tmp_path, chat), chat, apps)
    asked = chat.post(chat.dm, "hello there")
    wait_until(lambda: chat.by_echo(chat.dm), what="echo's answer")
    answer = chat.by_echo(chat.dm)[0]
    assert (answer.text, answer.thread, answer.position) == ("hello there", "", asked.position + 1)
    assert answer.key.endswith(":0")  # the run's first piece
    # Pieces are posted in order: a second post of the first answer would come
    # before the answer to the next message.
    chat.post(chat.dm, "and again")
    wait_until(lambda: len(chat.by_echo(chat.dm)) >= 2, what="the second answer")
    assert chat.answers(chat.dm) == ["hello there", "and again"]
    store = store_of(app)
    assert store.pending_pieces(chat.scope(chat.dm)) == []
    assert store.count_inbound(chat.scope(chat.dm)) == {"done": 2}


class ResultlessRun:
    """An agent whose every run ends without a result (no terminal event)."""

    pid = None

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def start(self, prompt: Prompt, context: RunContext) -> ResultlessRun:
        return self

    def events(self) -> Iterator[AgentEvent]:
        yield SessionStarted("s-1")

    def stop(self) -> None:
        self.stopped.set()


def test_an_agent_that_ends_without_a_result_fails_the_run(tmp_path: Path, chat: Chat,
                                                          apps: list[BridgeApp]) -> None:
    agent_run = ResultlessRun()
    start(config_for(tmp_path, chat), chat, apps, agents=lambda _: agent_run)
    chat.post(chat.dm, "hello")
    wait_until(lambda: chat.answers(chat.dm) == [
        "⚠ echo: run failed: the agent ended without a result"], what="the failed run")
    assert agent_run.stopped.is_set()
    chat.post(chat.dm, "again")  # the scope is free
    wait_until(lambda: len(chat.answers(chat.dm)) == 2, what="the second run's answer")


def test_a_plain_channel_message_is_context_for_the_next_prompt(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp]) -> None:
    cat = agent("command", (sys.executable, "-c", "import sys; print(sys.stdin.read())"))
    app = start(config_for(tmp_path, chat, cat), chat, apps)
    chat.post(chat.general, "the build is red since noon")  # not addressed: context only
    store = store_of(app)
    scope = chat.scope(chat.general)
    # Stored once as the space's message; no journal row (it cannot engage echo).
    wait_until(lambda: len(store.context(ScopeKey.parse(scope), since=0.0,
                                         exclude_author="")) == 1,
               what="the plain message stored")
    assert store.count_inbound(scope) == {}
    assert not any(s.key == scope for s in app.board.snapshot().scopes)  # no conversation yet
    chat.post(chat.general, f"{mention(chat.echo)} what is going on?")
    prompt = wait_until(lambda: chat.answers(chat.general), what="the prompt echoed")
    assert len(prompt) == 1  # the plain message started no run of its own
    lines = prompt[0].split("</bridge-context>\n", 1)[1].strip().split("\n")
    assert [lines[0], lines[2], len(lines)] == [CONTEXT_HEADER, MESSAGES_HEADER, 4]
    context, asked = json.loads(lines[1]), json.loads(lines[3])
    assert (context["author_id"], context["text"]) == (chat.ann, "the build is red since noon")
    assert (asked["author_id"], asked["text"]) == (chat.ann,
                                                   f"{mention(chat.echo)} what is going on?")


def test_a_slow_run_posts_its_status_once_and_edits_it(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.runner, "STATUS_AFTER_S", 0.1)
    monkeypatch.setattr(actors.runner, "STATUS_TICK_S", 0.1)
    script = tmp_path / "gated.py"
    script.write_text(GATED_AGENT, encoding="utf-8")
    workspace = tmp_path / "ws"
    gated = agent("command", (sys.executable, str(script)), workspace=workspace)
    calls: list[tuple[str, str, float]] = []  # (call, message id or key, monotonic time)
    post, edit = chat.server.post, chat.server.edit

    def posting(channel: str, author: str, text: str, **kwargs: Any) -> Message:
        calls.append(("post", kwargs.get("key", ""), time.monotonic()))
        return post(channel, author, text, **kwargs)

    def editing(channel: str, message_id: str, author: str, text: str,
                **kwargs: Any) -> Message:
        calls.append(("edit", message_id, time.monotonic()))
        return edit(channel, message_id, author, text, **kwargs)

    monkeypatch.setattr(chat.server, "post", posting)
    monkeypatch.setattr(chat.server, "edit", editing)
    start(config_for(tmp_path, chat, gated), chat, apps)
    chat.post(chat.dm, "a long job")
    status = wait_until(lambda: next((m for m in chat.by_echo(chat.dm) if m.edited), None),
                        what="the status message edited while the run works")
    assert status.key.startswith("status:") and status.text.startswith("echo · working")
    (workspace / "gate").touch()
    wait_until(lambda: chat.by_echo(chat.dm)[0].text.startswith("echo · done"),
               what="the status message's final state")
    wait_until(lambda: len(chat.by_echo(chat.dm)) == 2, what="the answer")
    shown = chat.by_echo(chat.dm)
    assert shown[0].id == status.id and shown[0].key == status.key
    assert shown[1].text.startswith("answer to: a long job")
    assert shown[1].key == status.key.removeprefix("status:") + ":0"
    # One status post, then edits of it alone, at most one per edit interval.
    mine = [c for c in calls if c[0] == "edit" or c[1] == status.key]
    assert [c[0] for c in mine][:2] == ["post", "edit"]
    assert [c[0] for c in mine].count("post") == 1
    assert {c[1] for c in mine if c[0] == "edit"} == {status.id}
    gaps = [later[2] - earlier[2] for earlier, later in itertools.pairwise(mine)]
    assert min(gaps) >= chat.platform.limits.edit_interval_s, gaps


def test_an_answer_whose_post_landed_but_failed_is_not_posted_twice(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp]) -> None:
    app = start(config_for(tmp_path, chat), chat, apps)
    chat.server.fail_next_posts(1, landed=True, author=chat.echo)
    chat.post(chat.dm, "once please")
    store, scope = store_of(app), chat.scope(chat.dm)
    wait_until(lambda: chat.by_echo(chat.dm), what="the answer stored despite the failure")

    def retries() -> int:
        row = app.board.scope(scope)
        return row.retries if row is not None else 0

    wait_until(lambda: retries() >= 1, what="the post retried")
    wait_until(lambda: not store.pending_pieces(scope), what="the piece settled")
    [answer] = chat.by_echo(chat.dm)
    assert answer.text == "once please"
    access = chat.platform.login(agent()).access(chat.space)
    assert access is not None
    assert chat.platform.client(access).find_posted(Target(chat.dm), answer.key) == answer.id
    chat.post(chat.dm, "next")
    wait_until(lambda: len(chat.by_echo(chat.dm)) >= 2, what="the next answer")
    assert chat.answers(chat.dm) == ["once please", "next"]
    assert [m.key for m in chat.by_echo(chat.dm)].count(answer.key) == 1


def test_a_restart_catches_up_from_the_stored_cursors(tmp_path: Path, chat: Chat,
                                                      apps: list[BridgeApp]) -> None:
    config = config_for(tmp_path, chat)
    first = start(config, chat, apps)
    chat.post(chat.dm, "one")
    wait_until(lambda: chat.answers(chat.dm) == ["one"], what="the first answer")
    connection = ConnectionKey("memory", "echo", chat.space)
    wait_until(lambda: store_of(first).cursors(connection).get(chat.dm) == "2",
               what="the cursor past echo's own answer")
    first.stop()
    # Meanwhile, with no bridge running:
    two = chat.post(chat.dm, "two")
    three = chat.post(chat.general, f"{mention(chat.echo)} three")
    chat.post(chat.general, "four, context only")
    second = start(config, chat, apps)
    wait_until(lambda: chat.answers(chat.dm) == ["one", "two"], what="the DM caught up")
    wait_until(lambda: chat.answers(chat.general) == [three.text], what="the channel caught up")
    store = store_of(second)
    wait_until(lambda: store.cursors(connection) == {chat.dm: str(two.position + 1),
                                                      chat.general: str(three.position + 2)},
               what="the cursors past what was taken")
    first.stop()  # idempotent: stopping a stopped app leaves the running one alone
    # Nothing is answered twice: the next answer in each channel follows directly.
    chat.post(chat.dm, "five")
    chat.post(chat.general, f"{mention(chat.echo)} six")
    wait_until(lambda: len(chat.answers(chat.dm)) >= 3
               and len(chat.answers(chat.general)) >= 2, what="the next answers")
    assert chat.answers(chat.dm) == ["one", "two", "five"]
    assert chat.answers(chat.general) == [three.text, f"{mention(chat.echo)} six"]


def test_a_config_file_on_the_memory_platform_is_not_composed(tmp_path: Path) -> None:
    """The memory platform is for tests: a config file may name it, the composition
    does not build it (it has no server to talk to)."""
    path = tmp_path / "bridge.toml"
    path.write_text(textwrap.dedent("""
        [bridge]
        state_dir = "var"

        [agents.echo]
        kind = "echo"
        api_key = "memory-key-echo"

        [[bindings]]
        agent = "echo"
        platform = "memory"
        space = "S1"
    """), encoding="utf-8")
    config = load_config(path)
    assert config.bindings == (Binding("echo", "S1", platform="memory", scope="channel"),)
    assert tuple(config.platforms) == ()
    app = bridge_app(config, Board())
    with pytest.raises(ValueError, match="platform 'memory'"):
        app.start()
    assert not app.lock.held



def gated_run(tmp_path: Path, chat: Chat, apps: list[BridgeApp],
              monkeypatch: pytest.MonkeyPatch,
              admins: tuple[str, ...] = ()) -> tuple[BridgeApp, Message, RunRow]:
    """Start echo as a gated command agent (its workspace: ``tmp_path / "ws"``); ann asks
    in #general. Returns the app, the run's status message and the run (it works until
    its gate file is made, or it is stopped)."""
    monkeypatch.setattr(actors.runner, "STATUS_AFTER_S", 0.1)
    monkeypatch.setattr(actors.runner, "STATUS_TICK_S", 0.1)
    script = tmp_path / "gated.py"
    script.write_text(GATED_AGENT, encoding="utf-8")
    gated = attrs.evolve(agent("command", (sys.executable, str(script)),
                               workspace=tmp_path / "ws"), access=AccessPolicy(admins=admins))
    app = start(config_for(tmp_path, chat, gated), chat, apps)
    status, run = ask_for_a_run(app, chat, "a long job")
    return app, status, run


def ask_for_a_run(app: BridgeApp, chat: Chat, text: str) -> tuple[Message, RunRow]:
    """ann asks echo for ``text`` in #general; the run's status message, and the run."""
    chat.post(chat.general, f"{mention(chat.echo)} {text}")
    [run] = wait_until(lambda: app.board.snapshot().runs, what="the run")
    status = wait_until(lambda: next((m for m in chat.by_echo(chat.general)
                                      if m.key == f"status:{run.run_id}"), None),
                        what="the run's status message")
    [control] = status.controls  # its Stop button, for the requester (and admins)
    assert (control.name, control.label, control.value) == ("stop", "Stop", run.run_id)
    assert chat.ann in control.for_users and control.policy
    return status, run


def member(chat: Chat, name: str) -> str:
    """A new member of the space and of #general; their id."""
    user = chat.server.add_user(name)
    chat.server.join_space(chat.space, user)
    chat.server.add_member(chat.general, user)
    return user


def wait_stopped_by(app: BridgeApp, chat: Chat, status: Message, name: str) -> None:
    """Wait until the run of ``status`` ended as stopped by ``name``, as ``/stop`` shows it."""
    failed = wait_until(lambda: next((t for t in chat.answers(chat.general)
                                      if "run failed" in t), None), what="the run stopped")
    assert failed.startswith(f"⚠ echo: run failed: stopped by {name}")
    final = wait_until(lambda: next((m for m in chat.by_echo(chat.general)
                                     if m.id == status.id and m.text.startswith(
                                         f"echo · failed: stopped by {name}")), None),
                       what="the status message's final state")
    assert final.controls == ()  # the Stop button is gone
    wait_until(lambda: not app.board.snapshot().runs, what="the run gone from the board")


def test_a_stop_click_by_the_requester_stops_the_run_and_another_member_s_does_not(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bob = member(chat, "bob")
    app, status, run = gated_run(tmp_path, chat, apps, monkeypatch)  # ann asks
    # Ignored: bob neither asked for the run nor is an admin; ann's click names
    # another run; a control the bridge does not know.
    chat.server.click(chat.general, status.id, bob, "stop", run.run_id)
    chat.server.click(chat.general, status.id, chat.ann, "stop", "another-run")
    chat.server.click(chat.general, status.id, chat.ann, "frob", run.run_id)
    chat.post(chat.general, "/status")  # the scope takes it after the clicks
    reply = wait_until(lambda: next((t for t in chat.answers(chat.general)
                                     if t.startswith("echo in #general")), None),
                       what="the /status reply")
    assert f"current run: {run.run_id}" in reply
    # bob alone is told why his click did nothing; ann's clicks are not refusals.
    [(channel, author, text)] = wait_until(lambda: chat.server.notices(bob),
                                           what="bob told why")
    assert (channel, author) == (chat.general, chat.echo) and "can stop it" in text
    assert chat.server.notices(chat.ann) == []
    # So the run was not stopped: opened, it answers.
    (tmp_path / "ws" / "gate").touch()
    wait_until(lambda: any(t.startswith("answer to: ") for t in chat.answers(chat.general)),
               what="the run's answer")
    assert not any("run failed" in t for t in chat.answers(chat.general))
    wait_until(lambda: not app.board.snapshot().runs, what="the run gone from the board")

    # ann asked for the next run: her click stops it as /stop does.
    status, run = ask_for_a_run(app, chat, "another long job")
    chat.server.click(chat.general, status.id, chat.ann, "stop", run.run_id)
    wait_stopped_by(app, chat, status, "ann")
    assert sum(t.startswith("answer to: ") for t in chat.answers(chat.general)) == 1


def test_a_stop_click_by_an_admin_stops_a_run_they_did_not_ask_for(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch) -> None:
    carol = member(chat, "carol")
    app, status, run = gated_run(tmp_path, chat, apps, monkeypatch, admins=(carol,))
    chat.server.click(chat.general, status.id, carol, "stop", run.run_id)
    wait_stopped_by(app, chat, status, "carol")
    assert not any(t.startswith("answer to: ") for t in chat.answers(chat.general))


def test_credentials_keep_the_cache_warm_so_posts_never_ask(tmp_path: Path, chat: Chat,
                                                            apps: list[BridgeApp]) -> None:
    """The identity logs in at start and fills the shared cache for its space; a token
    the platform refused is replaced in the cache by a fresh login, without any ask."""
    from actors.credentials import invalidate

    app = start(config_for(tmp_path, chat), chat, apps)
    assert app.runtime is not None
    runtime = app.runtime
    connection = ConnectionKey("memory", "echo", chat.space)
    first = wait_until(lambda: runtime.credentials.get(connection), what="a cached access")
    invalidate(runtime, connection, first.token)
    fresh = wait_until(lambda: (access := runtime.credentials.get(connection)) is not None
                       and access.token != first.token and access,
                       what="a fresh access in the cache")
    assert fresh.user_id == first.user_id
    chat.post(chat.dm, "still answered")
    wait_until(lambda: chat.answers(chat.dm) == ["still answered"], what="the answer")


def test_many_live_conversations_add_no_threads(tmp_path: Path, chat: Chat,
                                                apps: list[BridgeApp]) -> None:
    """Each conversation keeps a scope and a delivery actor until it is idle for
    ``scope_idle_s``; they run on the shared actor pool, so a hundred live
    conversations cost no thread of their own (a thread each, they cost 200)."""
    dms = [chat.server.add_channel(chat.space, f"dm-{i}", [chat.ann, chat.echo], direct=True)
           for i in range(100)]
    config = config_for(tmp_path, chat)
    config = attrs.evolve(config, bridge=attrs.evolve(config.bridge, actor_threads=4))
    app = start(config, chat, apps)
    chat.post(chat.dm, "warm up")
    wait_until(lambda: chat.answers(chat.dm) == ["warm up"], what="the first answer")
    wait_until(lambda: not app.board.snapshot().runs, what="the first run to end")
    before = threading.active_count()
    for index, dm in enumerate(dms):
        chat.post(dm, f"hello {index}")
    expected = {dm: [f"hello {index}"] for index, dm in enumerate(dms)}
    wait_until(lambda: all(chat.answers(dm) == texts for dm, texts in expected.items()),
               what="an answer in each of the 100 conversations")
    live = {row.key for row in app.board.snapshot().scopes}
    assert {chat.scope(dm) for dm in dms} <= live  # every conversation is still live
    # The runners (a thread each while their run lasts) end; the pool has 4 workers.
    wait_until(lambda: threading.active_count() <= before + 4,
               what=f"at most {before + 4} threads (now {threading.active_count()})")


def test_the_identity_s_budget_sends_an_answer_before_queued_status_edits(
        tmp_path: Path, apps: list[BridgeApp], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.runner, "STATUS_AFTER_S", 0.1)
    monkeypatch.setattr(actors.runner, "STATUS_TICK_S", 0.1)
    server = MemoryServer(text_chars=16_000)
    ann = server.add_user("ann")
    echo = server.add_user("echo", credential=KEY, bot=True)
    space = server.add_space("team", [ann, echo])
    dm = server.add_channel(space, "dm-ann-echo", [ann, echo], direct=True)
    general = server.add_channel(space, "general", [ann, echo])
    # Two sends at once, then one every 30 s: far slower than the status ticks.
    platform = MemoryPlatform(server, edit_interval_s=0.1, first_sight=0, retry_s=0.05,
                              send_per_s=1 / 30, send_burst=2)
    chat = Chat(server, platform, ann, echo, space, dm, general)
    # The gated agent in general; the echo agent's answers are the DM's (a run each).
    script = tmp_path / "gated.py"
    script.write_text(GATED_AGENT.replace("answer to: ", "gated: "), encoding="utf-8")
    workspace = tmp_path / "ws"
    gated = agent("command", (sys.executable, str(script)), workspace=workspace)
    app = start(config_for(tmp_path, chat, gated), chat, apps)
    chat.post(chat.general, f"{mention(chat.echo)} a long job")
    status = wait_until(lambda: next(iter(chat.by_echo(chat.general)), None),
                        what="the run's status message")
    assert status.key.startswith("status:")  # one token spent; the other is the answers'
    # The status keeps changing (its elapsed time) but its edits wait for a token, and
    # the answer takes the one left first.
    assert app.runtime is not None
    budgets, connection = app.runtime.budgets, ConnectionKey("memory", "echo", chat.space)
    wait_until(lambda: budgets.counts(connection)[1] >= 1, what="a status edit told to wait")
    (workspace / "gate").touch()
    answer = wait_until(lambda: next((m for m in chat.by_echo(chat.general)
                                      if m.text.startswith("gated:")), None),
                        what="the run's answer, ahead of the status edits it overtook")
    assert answer.text.startswith("gated: ")
    shown = chat.by_echo(chat.general)
    assert [m.id for m in shown] == [status.id, answer.id]
    assert not shown[0].edited  # no edit was sent before the answer
    assert budgets.counts(connection)[0] == 2  # the status post and the answer


def test_a_final_status_that_fails_transiently_is_shown_after_a_retry(
        tmp_path: Path, chat: Chat, apps: list[BridgeApp],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.runner, "STATUS_AFTER_S", 0.1)
    monkeypatch.setattr(actors.runner, "STATUS_TICK_S", 0.1)
    script = tmp_path / "gated.py"
    script.write_text(GATED_AGENT, encoding="utf-8")
    workspace = tmp_path / "ws"
    gated = agent("command", (sys.executable, str(script)), workspace=workspace)
    edit = chat.server.edit
    refused: list[str] = []

    def editing(channel: str, message_id: str, author: str, text: str,
                **kwargs: Any) -> Message:
        if text.startswith("echo · done") and len(refused) < 2:
            refused.append(text)  # the platform is busy twice, then takes it
            raise RetryLater("busy", retry_after_s=0.2)
        return edit(channel, message_id, author, text, **kwargs)

    monkeypatch.setattr(chat.server, "edit", editing)
    start(config_for(tmp_path, chat, gated), chat, apps)
    chat.post(chat.dm, "a long job")
    wait_until(lambda: chat.by_echo(chat.dm), what="the run's status message")
    (workspace / "gate").touch()
    wait_until(lambda: chat.by_echo(chat.dm)[0].text.startswith("echo · done"),
               what="the final status shown after two refusals")
    assert len(refused) == 2
    assert len(chat.by_echo(chat.dm)) == 2  # the status and the answer, nothing doubled
