"""A chat command is marked done together with its answer, never before it.

Before, the scope marked a command ``done`` in one transaction and queued its
answer in the next: a crash between the two lost the answer for good (the
journal no longer replayed the command). The crash is made here by a
``BaseException`` from the store's connection while the answer is written:
pykka then stops every actor without any failure handling, like a killed
process. A second bridge on the same state dir must answer the command.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild
from bridge.store import Store, open_store
from tests.support import Member, start_bridge, wait_until, write_config


class Crash(BaseException):
    """Stands for the process dying at this point."""


class CrashOnAnswer:
    """A connection that dies when a command's answer goes into the outbox.

    Args:
        db: The store's real connection (everything else passes through).
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.crashed = False

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if "INTO outbox" in sql and any(str(p).startswith("reply:") for p in params):
            self.crashed = True
            raise Crash("the process dies while the answer is written")
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def journal_state(store: Store, message_id: str) -> str | None:
    """The journal state of a message."""
    with store._tx() as db:
        row = db.execute("SELECT state FROM inbound WHERE message_id = ?",
                         (message_id,)).fetchone()
    return None if row is None else str(row[0])


def scopes_alive() -> bool:
    return any(ref.is_alive() for ref in pykka.ActorRegistry.get_all()
               if ref.actor_class.__name__ == "Scope")


def test_crash_while_answering_a_command_keeps_it_open(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        apps: list[BridgeApp]) -> None:
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05)
    first = start_bridge(config, apps=apps)
    assert isinstance(first.store, Store)
    dying = CrashOnAnswer(first.store._db)
    first.store._db = dying  # type: ignore[assignment]
    alice = members("alice")
    message_id = str(alice.post("general", "/help")["messageId"])
    wait_until(lambda: dying.crashed, what="the crash while answering /help")
    wait_until(lambda: not scopes_alive(), what="the actors to stop")
    first.stop()
    store = open_store(config.bridge.state_dir)
    try:
        state = journal_state(store, message_id)
    finally:
        store.close()
    assert state == "received"  # not done: the next start replays it
    assert not alice.messages_from("echo", "general")
    second = start_bridge(config, apps=apps)  # replays the journal
    answer = alice.wait_reply("echo", "general", lambda c: c.startswith("echo commands:"))
    assert alice.messages_from("echo", "general") == [answer]
    assert second.store is not None
    assert journal_state(second.store, message_id) == "done"
