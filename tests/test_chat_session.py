"""``bridge chat``'s session: its live output does not hold up the process's socket loop."""

from __future__ import annotations

import io
from collections.abc import Callable

from adapters.chat.fabric.chat import ChatSession
from adapters.chat.fabric.devguild import DevGuild
from adapters.chat.fabric.rest import FabricCenter
from tests.support import Member, wait_until


def test_a_slow_author_lookup_holds_only_the_chat_s_printing(
        devguild: DevGuild, members: Callable[[str], Member]) -> None:
    out = io.StringIO()
    session = ChatSession(FabricCenter(devguild.center_url), devguild.api_key("alice"), "dev",
                          "general", out)
    other = members("echo")  # another socket of this process, on the same I/O loop
    bob = members("bob")
    devguild.hold_user_lookups(devguild.user_id("bob"))
    try:
        session.connect()
        bob.post("general", "first while bob's name is held")
        bob.post("general", "second while bob's name is held")
        # The chat waits on bob's name; the loop goes on delivering to the other socket.
        wait_until(lambda: sum("while bob's name is held" in str(m.get("content"))
                               for m in other.seen) == 2, what="both posts at the other socket")
        assert "held" not in out.getvalue()
        devguild.hold_user_lookups(devguild.user_id("bob"), held=False)
        wait_until(lambda: "second while" in out.getvalue(), what="both printed by the chat")
    finally:
        devguild.hold_user_lookups(devguild.user_id("bob"), held=False)
        session.close()
    lines = [line for line in out.getvalue().splitlines() if "while bob's name" in line]
    assert [line.split("bob: ", 1)[1] for line in lines] == [
        "first while bob's name is held", "second while bob's name is held"]
