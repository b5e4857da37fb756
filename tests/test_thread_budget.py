"""Threads do not grow with the number of agent identities.

Author lookups of every Fabric connection run as coroutines on the process's
chat loop, and the credentials actors (one per identity) run on the shared
actor pool: ten identities cost no lookup thread and no credentials thread.
Closing one connection's author book drops its lookups only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from actors.app import BridgeApp
from actors.credentials import Credentials
from adapters.chat.fabric import aiopost, authors
from adapters.chat.fabric.authors import AuthorBook
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.events import AuthorResolved
from adapters.chat.fabric.rest import GuildAccess
from adapters.chat.ioloop import IoLoop
from bridge.cli.compose import load_config
from bridge.ops.bench import agent_names, bench_seed, config_text
from tests.support import WAIT_S, Member, start_bridge, wait_until

#: Agent identities of the bridge under test.
AGENTS = 10


def names_with(prefix: str) -> list[str]:
    """Names of the live threads that start with ``prefix``."""
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def guild() -> Iterator[DevGuild]:
    """The dev guild with ``AGENTS`` echo agents (the bench's seed)."""
    with DevGuild(bench_seed(AGENTS)) as running:
        yield running


def test_ten_identities_add_no_lookup_or_credentials_threads(
        tmp_path: Path, guild: DevGuild, monkeypatch: pytest.MonkeyPatch) -> None:
    ran_on: list[str] = []
    real_fetch = aiopost.fetch_user

    async def fetch(access: GuildAccess, user_id: str) -> tuple[str, str] | None:
        ran_on.append(threading.current_thread().name)
        return await real_fetch(access, user_id)

    monkeypatch.setattr(authors, "fetch_user", fetch)
    echo_key = guild.api_key("echo")
    path = tmp_path / "bridge.toml"
    path.write_text(config_text(guild.center_url, tmp_path / "var", AGENTS, echo_key),
                    encoding="utf-8")
    credentials_before = names_with("Credentials")
    app: BridgeApp | None = None
    alice = Member(guild, "alice")
    try:
        app = start_bridge(load_config(path))
        alice.post("general", "hello")
        # Each answer needs alice looked up by that agent's own connection first.
        for name in agent_names(AGENTS):
            alice.wait_reply(name, "general", lambda c: "hello" in c, WAIT_S * 2)
        # Each connection looked up alice (and the other agents, whose answers it
        # saw), every lookup on the chat loop's thread.
        assert len(ran_on) >= AGENTS
        assert set(ran_on) == {IoLoop.shared().thread.name}
        running = [ref for ref in pykka.ActorRegistry.get_by_class(Credentials)
                   if ref.is_alive()]
        assert len(running) == AGENTS
        assert names_with("Credentials") == credentials_before == []
    finally:
        alice.close()
        if app is not None:
            app.stop()


# -- one book closed, the others go on --------------------------------------------


class GatedUsers:
    """Stands in for :func:`adapters.chat.fabric.aiopost.fetch_user` on a test loop:
    answers once :meth:`open` is called; records where each lookup ran and ends."""

    def __init__(self, io: IoLoop) -> None:
        self.io = io
        self.gate = io.run(self._event(), WAIT_S)
        self.threads: set[str] = set()
        self.ended = 0

    @staticmethod
    async def _event() -> asyncio.Event:
        return asyncio.Event()

    async def fetch(self, access: GuildAccess, user_id: str) -> tuple[str, str]:
        self.threads.add(threading.current_thread().name)
        try:
            await self.gate.wait()
            return (f"name of {user_id} for {access.user_id}", "human")
        finally:
            self.ended += 1

    def open(self) -> None:
        self.io.call_soon(self.gate.set)


def access_for(user_id: str) -> GuildAccess:
    return GuildAccess(guild="dev", endpoint="http://127.0.0.1:9", token=f"t-{user_id}",
                       user_id=user_id, user_name=user_id, issued_at=0.0)


@pytest.fixture
def users(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedUsers]:
    """Lookups on a loop of the test's own, answered by :class:`GatedUsers` (gate shut)."""
    io = IoLoop(name="test-authors-loop")
    gated = GatedUsers(io)
    monkeypatch.setattr(authors, "fetch_user", gated.fetch)
    try:
        yield gated
    finally:
        gated.open()
        io.loop.call_soon_threadsafe(io.loop.stop)
        io.thread.join(WAIT_S)
        io.loop.close()


def test_closing_one_book_drops_its_lookups_and_keeps_the_others(users: GatedUsers) -> None:
    told_a: list[object] = []
    told_b: list[object] = []
    book_a = AuthorBook("a@dev", told_a.append, io=users.io)
    book_b = AuthorBook("b@dev", told_b.append, io=users.io)
    book_a.look_up("u1", access_for("agent-a"))  # each waits at the gate
    book_a.look_up("u2", access_for("agent-a"))
    book_b.look_up("u1", access_for("agent-b"))
    book_a.close()
    users.open()
    wait_until(lambda: told_b, what="book b's lookup told")
    wait_until(lambda: users.ended == 3, what="every lookup over (book a's cancelled)")
    assert told_a == []
    assert told_b == [AuthorResolved("u1", ("name of u1 for agent-b", "human"))]
    book_b.look_up("u3", access_for("agent-b"))  # the loop goes on for book b
    wait_until(lambda: len(told_b) == 2, what="book b's second lookup told")
    book_a.look_up("u4", access_for("agent-a"))  # a closed book starts nothing
    users.io.run(asyncio.sleep(0), WAIT_S)  # a lookup started just now (gate open) is over
    assert users.ended == 4 and told_a == []
    # Every lookup ran on the loop's own thread: none started a thread.
    assert users.threads == {users.io.thread.name}


def test_books_without_a_loop_look_up_on_the_process_s_chat_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ran_on: list[str] = []

    async def fetch(access: GuildAccess, user_id: str) -> tuple[str, str]:
        ran_on.append(threading.current_thread().name)
        return (f"name of {user_id} for {access.user_id}", "human")

    monkeypatch.setattr(authors, "fetch_user", fetch)
    told: list[object] = []
    books = [AuthorBook(f"{n}@dev", told.append) for n in ("a", "b")]
    for n, book in zip(("a", "b"), books, strict=True):
        book.look_up("u1", access_for(f"agent-{n}"))
    wait_until(lambda: len(told) == 2, what="both lookups told")
    assert ran_on == [IoLoop.shared().thread.name] * 2
    assert sorted(told, key=repr) == [  # each with its own connection's access
        AuthorResolved("u1", ("name of u1 for agent-a", "human")),
        AuthorResolved("u1", ("name of u1 for agent-b", "human"))]
    books[0].close()
    books[1].look_up("u2", access_for("agent-b"))  # closing a book left the loop up
    wait_until(lambda: len(told) == 3, what="the lookup after the other book closed")
    books[1].close()
