"""Attack: rights given by a *name* in the config reach whoever carries that name.

Fabric promises unique ids, not unique names: any member may create a private
channel called ``general`` (and add the agent to it), and two members may
share a display name. Access rules and bindings must match by id; a name in
the config is resolved to one id when the channel or user list loads, pinned,
and refused when several carry it (:mod:`bridge.names`).
"""

from __future__ import annotations

import datetime
import logging
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild, load_seed
from adapters.chat.fabric.devguild.seed import Seed, SeedUser
from adapters.chat.fabric.rest import FabricCenter, FabricGuild
from bridge.config import Config
from bridge.model import Inbound, ScopeKey
from bridge.names import NOT_UNIQUE, NameProblem, listed, resolve_names
from bridge.ops.doctor import Check, run_checks
from bridge.store import DB_FILE, Store
from tests.support import Member, start_bridge, wait_until, write_config

ECHO = textwrap.dedent("""
    [agents.echo]
    kind = "echo"
    api_key = "fak_dev_echo"
""")
BIND_GENERAL = textwrap.dedent("""
    [[bindings]]
    agent = "echo"
    guild = "dev"
    channels = ["general"]
""")
#: A member whose display name is alice's (another account, another id).
MALLORY_KEY = "fak_dev_mallory"


# -- the resolver ----------------------------------------------------------------

CHANNELS = {"c-1": "general", "c-2": "work", "c-3": "General", "c-4": "ops"}


def test_unique_name_resolves_and_ids_match_as_written() -> None:
    resolved, problems = resolve_names(["work", "OPS", "c-1", "*"], CHANNELS)
    assert resolved == {"work": "c-2", "ops": "c-4"}
    assert problems == []


def test_name_carried_by_two_channels_is_refused_with_both_ids() -> None:
    resolved, problems = resolve_names(["general"], CHANNELS)   # "general" and "General"
    assert resolved == {}
    assert problems == [NameProblem("general", "ambiguous", ("c-1", "c-3"))]
    assert "c-1, c-3" in problems[0].describe("channel")


def test_unknown_name_matches_nothing() -> None:
    assert resolve_names(["random"], CHANNELS) == ({}, [NameProblem("random", "unknown")])


def test_an_id_wins_over_a_channel_named_like_it() -> None:
    known = {"c-1": "general", "c-9": "c-1"}      # someone named a channel after c-1's id
    assert resolve_names(["c-1"], known) == ({}, [])
    assert listed(["c-1"], "c-1", {}) and not listed(["c-1"], "c-9", {})


def test_pinned_name_keeps_its_id_when_a_second_one_appears() -> None:
    pinned, _ = resolve_names(["work"], {"c-2": "work"})
    later = {"c-2": "work", "c-5": "work"}
    resolved, problems = resolve_names(["work"], later, pinned)
    assert resolved == {"work": "c-2"}
    assert problems == [NameProblem("work", "second", ("c-5",), "c-2")]
    # Without the pin the same list is ambiguous: the name matches neither.
    assert resolve_names(["work"], later)[0] == {}


def test_pin_holds_when_the_pinned_channel_is_renamed_or_gone() -> None:
    pinned = {"work": "c-2"}
    assert resolve_names(["work"], {"c-2": "old-work", "c-5": "work"}, pinned)[0] == pinned
    assert resolve_names(["work"], {}, pinned)[0] == pinned


def test_listed_matches_ids_and_resolved_names_only() -> None:
    resolved = {"general": "c-1"}
    assert listed(["general"], "c-1", resolved)
    assert not listed(["general"], "c-3", resolved)      # another channel named general
    assert not listed(["general"], "c-1", {})             # unresolved: matches nothing
    assert listed(["C-1"], "c-1", {})                     # ids compare case-insensitively
    assert not listed(["general"], "", resolved)


# -- over the dev guild ------------------------------------------------------------


def with_mallory(seed: Seed) -> Seed:
    """``seed`` plus ``mallory``, shown as "alice", a member of every channel."""
    mallory = SeedUser(name="mallory", kind="human", api_key=MALLORY_KEY, display_name="alice")
    channels = tuple(attrs.evolve(c, members=(*c.members, "mallory")) for c in seed.channels)
    return attrs.evolve(seed, users=(*seed.users, mallory), channels=channels)


@pytest.fixture
def twin_guild() -> Iterator[DevGuild]:
    """The dev guild with a second member shown as ``alice``."""
    guild = DevGuild(with_mallory(load_seed()), center_port=0, guild_port=0)
    guild.start()
    try:
        yield guild
    finally:
        guild.stop()


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def started() -> Iterator[Callable[[Config], BridgeApp]]:
    """Factory of a started bridge, waiting until echo is connected; stopped at the end."""
    apps: list[BridgeApp] = []

    def start(config: Config) -> BridgeApp:
        return start_bridge(config, apps=apps)

    yield start
    for app in apps:
        app.stop()


def echo_said(guild: DevGuild, channel_id: str) -> list[str]:
    echo = guild.user_id("echo")
    return [m["content"] for m in guild.state.messages(channel_id)
            if m["authorUserId"] == echo]


def copy_of_general(guild: DevGuild, member: Member) -> str:
    """``member`` creates a private channel named ``general`` with echo in it; its id."""
    created = member.rest.create_channel("general", "general", public=False,
                                         members=[guild.user_id("echo")])
    return str(created["id"])


def test_private_channel_named_like_an_allowed_channel_gets_no_answer(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        started: Callable[[Config], BridgeApp], captured: pytest.LogCaptureFixture) -> None:
    app = started(write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                               agents=ECHO + 'allowed_channels = ["general"]\n'))
    bob = members("bob")
    copy = copy_of_general(devguild, bob)
    wait_until(lambda: (row := app.board.connection("echo", "dev")) and row.channels == 5,
               what="echo joined the copy (bound by '*')")
    bob.rest.post(copy, "answer me in the copy")
    copy_scope = str(ScopeKey("fabric", "echo", "dev", copy))

    def settled() -> bool:
        row, store = app.board.scope(copy_scope), app.store
        return bool(row and row.received == 1 and row.state == "idle" and store and
                    not store.outbox_counts(copy_scope).get("pending"))

    wait_until(settled, what="the copy's message handled")
    bob.post("general", "answer me in general")
    bob.wait_reply("echo", "general", lambda c: c == "answer me in general")
    assert echo_said(devguild, copy) == []
    assert f"another channel named 'general' appeared ({copy})" in captured.text


def test_private_channel_named_like_a_bound_channel_is_not_joined(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member],
        started: Callable[[Config], BridgeApp], captured: pytest.LogCaptureFixture) -> None:
    app = started(write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                               bindings=BIND_GENERAL))
    row = app.board.connection("echo", "dev")
    assert row is not None and row.channels == 1
    bob = members("bob")
    copy = copy_of_general(devguild, bob)
    wait_until(lambda: "another channel named 'general' appeared" in captured.text or (
        (row := app.board.connection("echo", "dev")) and row.channels == 2),
        what="echo's resync after it was added to the copy")
    row = app.board.connection("echo", "dev")
    assert row is not None and row.channels == 1, "the copy was bound by its name"
    bob.rest.post(copy, "answer me in the copy")
    bob.post("general", "answer me in general")
    bob.wait_reply("echo", "general", lambda c: c == "answer me in general")
    assert echo_said(devguild, copy) == []
    assert app.store is not None
    assert app.store.open_inbound(str(ScopeKey("fabric", "echo", "dev", copy))) == []


def test_member_with_an_admins_display_name_gets_no_admin_rights(
        tmp_path: Path, twin_guild: DevGuild, started: Callable[[Config], BridgeApp],
        captured: pytest.LogCaptureFixture) -> None:
    started(write_config(tmp_path, twin_guild.center_url, debounce_s=0.05,
                         agents=ECHO + 'admins = ["alice"]\n'))
    session = FabricCenter(twin_guild.center_url).login(MALLORY_KEY)
    assert session.user_name == "alice"
    mallory = FabricGuild(session.guilds["dev"])
    general = twin_guild.channel_id("general")
    mallory.post(general, "/timeout 5")
    wait_until(lambda: echo_said(twin_guild, general), what="echo's reply to /timeout")
    assert echo_said(twin_guild, general) == ["/timeout: admins only"]
    alice, mallory_id = twin_guild.user_id("alice"), session.user_id
    assert alice != mallory_id
    assert (f"user name 'alice' is carried by 2 users ({', '.join(sorted([alice, mallory_id]))})"
            in captured.text)
    assert NOT_UNIQUE in captured.text


def test_open_message_recovered_at_start_waits_for_the_names(
        tmp_path: Path, devguild: DevGuild, started: Callable[[Config], BridgeApp]) -> None:
    """Not an attack: judging by id must not drop work left open by a crash because the
    scope came back before the connection had resolved ``general`` and ``alice``."""
    config = write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                          agents=ECHO + 'allowed_channels = ["general"]\nadmins = ["alice"]\n'
                          'allowed_users = ["alice"]\n')
    general = devguild.channel_id("general")
    store = Store(config.bridge.state_dir / DB_FILE)
    try:
        store.record_inbound(Inbound(
            platform="fabric", agent="echo", space="dev", channel_id=general,
            channel_name="general", message_id="m-left-open", seq=1,
            author_id=devguild.user_id("alice"), author_name="alice",
            content="left open by a crash", addressed=True,
            created_at=datetime.datetime.now(datetime.UTC).isoformat()), advance_cursor=False)
    finally:
        store.close()
    devguild.set_delay(0.5)   # the recovered scope is back well before the channel list
    started(config)
    devguild.set_delay(0)
    wait_until(lambda: "left open by a crash" in echo_said(devguild, general),
               what="the recovered message answered")


# -- doctor ------------------------------------------------------------------------


def named(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, f"expected one check named {name!r} in {checks}"
    return found[0]


def test_doctor_shows_what_each_name_resolves_to_and_warns_when_ambiguous(
        tmp_path: Path, twin_guild: DevGuild) -> None:
    config = write_config(tmp_path, twin_guild.center_url, bindings=BIND_GENERAL,
                          agents=ECHO + 'admins = ["alice"]\nallowed_users = ["bob"]\n')
    general, bob = twin_guild.channel_id("general"), twin_guild.user_id("bob")
    checks = run_checks(config)
    channel = named(checks, "channel name 'general' (echo@dev)")
    assert channel.level == "ok" and f"resolves to id {general}" in channel.message
    assert NOT_UNIQUE in channel.message
    assert f"resolves to id {bob}" in named(checks, "user name 'bob' (echo@dev)").message
    admin = named(checks, "user name 'alice' (echo@dev)")
    assert admin.level == "warn" and "carried by 2 users" in admin.message
    assert NOT_UNIQUE in admin.message

    copy = copy_of_general(twin_guild, Member(twin_guild, "bob"))
    channel = named(run_checks(config), "channel name 'general' (echo@dev)")
    assert channel.level == "warn"
    assert ", ".join(sorted([general, copy])) in channel.message
