"""Threads do not grow with the number of agent identities.

Author lookups of every Fabric connection share one process-wide pool, and the
credentials actors (one per identity) run on the shared actor pool: ten
identities cost no lookup threads beyond that pool's size and no credentials
thread. Closing one connection's author book drops its lookups only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.app import BridgeApp
from actors.credentials import Credentials
from adapters.chat.fabric import authors
from adapters.chat.fabric.authors import AUTHOR_LOOKUP_THREADS, AuthorBook
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.events import AuthorResolved
from adapters.chat.fabric.rest import GuildAccess
from bridge.cli.compose import load_config
from bridge.ops.bench import agent_names, bench_seed, config_text
from tests.support import WAIT_S, Member, start_bridge, wait_until

#: Agent identities of the bridge under test (more than the lookup pool's threads).
AGENTS = 10


def names_with(prefix: str) -> list[str]:
    """Names of the live threads that start with ``prefix``."""
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def guild() -> Iterator[DevGuild]:
    """The dev guild with ``AGENTS`` echo agents (the bench's seed)."""
    with DevGuild(bench_seed(AGENTS)) as running:
        yield running


def test_ten_identities_add_no_lookup_or_credentials_threads(tmp_path: Path,
                                                             guild: DevGuild) -> None:
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
        lookup_threads = names_with(authors.AUTHOR_LOOKUP_THREAD_PREFIX)
        assert 1 <= len(lookup_threads) <= AUTHOR_LOOKUP_THREADS, lookup_threads
        running = [ref for ref in pykka.ActorRegistry.get_by_class(Credentials)
                   if ref.is_alive()]
        assert len(running) == AGENTS
        assert names_with("Credentials") == credentials_before == []
    finally:
        alice.close()
        if app is not None:
            app.stop()


# -- one book closed, the shared pool goes on ------------------------------------


class FakeGuild:
    """Stands in for :class:`FabricGuild`: answers ``user`` once ``gate`` is set."""

    gate = threading.Event()

    def __init__(self, access: GuildAccess, session: Any) -> None:
        self.access = access

    def user(self, user_id: str) -> tuple[str, str]:
        assert FakeGuild.gate.wait(WAIT_S)
        return (f"name of {user_id} for {self.access.user_id}", "human")


def access_for(user_id: str) -> GuildAccess:
    return GuildAccess(guild="dev", endpoint="http://127.0.0.1:9", token=f"t-{user_id}",
                       user_id=user_id, user_name=user_id, issued_at=0.0)


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadPoolExecutor]:
    """A one-thread lookup pool with :class:`FakeGuild` behind it (gate closed)."""
    monkeypatch.setattr(authors, "FabricGuild", FakeGuild)
    FakeGuild.gate.clear()
    pool = ThreadPoolExecutor(1, thread_name_prefix="test-authors")
    try:
        yield pool
    finally:
        FakeGuild.gate.set()
        pool.shutdown(wait=True)


def test_closing_one_book_drops_its_lookups_and_keeps_the_shared_pool(
        one_thread: ThreadPoolExecutor) -> None:
    told_a: list[object] = []
    told_b: list[object] = []
    book_a = AuthorBook("a@dev", told_a.append, pool=one_thread)
    book_b = AuthorBook("b@dev", told_b.append, pool=one_thread)
    book_a.look_up("u1", access_for("agent-a"))  # runs, waits at the gate
    book_a.look_up("u2", access_for("agent-a"))  # waits in line
    book_b.look_up("u1", access_for("agent-b"))  # waits in line
    book_a.close()
    FakeGuild.gate.set()
    wait_until(lambda: told_b, what="book b's lookup told")
    one_thread.submit(lambda: None).result(WAIT_S)  # every earlier lookup is over
    assert told_a == []
    assert told_b == [AuthorResolved("u1", ("name of u1 for agent-b", "human"))]
    book_b.look_up("u3", access_for("agent-b"))  # the pool was not shut down
    wait_until(lambda: len(told_b) == 2, what="book b's second lookup told")
    book_a.look_up("u4", access_for("agent-a"))  # a closed book starts nothing
    one_thread.submit(lambda: None).result(WAIT_S)
    assert told_a == []


def test_books_without_a_pool_share_the_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authors, "FabricGuild", FakeGuild)
    FakeGuild.gate.set()
    told: list[object] = []
    books = [AuthorBook(f"{n}@dev", told.append) for n in ("a", "b")]
    for n, book in zip(("a", "b"), books, strict=True):
        book.look_up("u1", access_for(f"agent-{n}"))
    wait_until(lambda: len(told) == 2, what="both lookups told")
    assert books[0].pool is books[1].pool is authors.lookup_pool()
    assert sorted(told, key=repr) == [  # each with its own connection's access
        AuthorResolved("u1", ("name of u1 for agent-a", "human")),
        AuthorResolved("u1", ("name of u1 for agent-b", "human"))]
    books[0].close()
    books[1].look_up("u2", access_for("agent-b"))  # closing a book left the pool up
    wait_until(lambda: len(told) == 3, what="the lookup after the other book closed")
    books[1].close()


def test_idle_lookup_threads_end_and_a_new_lookup_starts_them_again() -> None:
    prefix = "test-idle-authors"
    pool = authors.LookupPool(2, prefix, idle_s=0.2)
    first = pool.submit(lambda: "first")
    assert first.result(WAIT_S) == "first"
    assert names_with(prefix)
    wait_until(lambda: not names_with(prefix), WAIT_S, "the idle lookup threads to end")
    assert not pool.alive()
    assert pool.submit(lambda: "again").result(WAIT_S) == "again"
    assert pool.alive() and names_with(prefix)
