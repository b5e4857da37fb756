"""The chat port's contract: the same tests on every platform (see harness.py).

Each test acts as a member would (through the harness) and as the runtime
does (through the platform, its client and an intake driven by a TestHost),
and checks what the other side sees. What a platform may lack (reactions,
files, buttons) is tested as its limits declare it: it works when they say
yes, and the client's call raises :class:`Unsupported` when they say no.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from bridge.errors import Forbidden, LoginRefused, RetryLater, TooLarge
from bridge.model import Action, Attachment, ConnectionKey, Control, Inbound, Target
from bridge.platform import Access, ChatClient, Unsupported
from bridge.run_view import RunView, StepView
from bridge.secrets import Secret
from tests.contract.conftest import OpenHost
from tests.contract.harness import Harness, Shown
from tests.contract.host import TestHost


def _client(harness: Harness) -> tuple[ChatClient, Access]:
    access = harness.platform.login(harness.agent).access(harness.space)
    assert access is not None
    return harness.platform.client(access), access


def _once(host: TestHost, content: str) -> Inbound:
    calls = host.calls_with(content)
    assert len(calls) == 1, f"{content!r} reached accept() {len(calls)} times"
    return calls[0]


def _shown(harness: Harness, channel: str, message_id: str) -> Shown:
    found = [shown for shown in harness.shows(channel) if shown.id == message_id]
    assert len(found) == 1, f"{message_id} shown {len(found)} times"
    return found[0]


def test_login(harness: Harness) -> None:
    session = harness.platform.login(harness.agent)
    access = session.access(harness.space)
    assert access is not None
    assert access.token and access.user_id and access.issued_at > 0
    assert session.holds(access.token)
    assert not session.holds(access.token + "x")
    assert session.access("no-such-space") is None


def test_login_refused(harness: Harness) -> None:
    with pytest.raises(LoginRefused):
        harness.platform.login(harness.refused)


def test_post_and_update(harness: Harness) -> None:
    channel = harness.make_channel("posts")
    client, access = _client(harness)
    message_id = client.post(Target(channel), "hello from the agent", idempotency_key="k-1")
    assert message_id
    assert _shown(harness, channel, message_id) == Shown(message_id, access.user_id,
                                                         "hello from the agent")
    client.update(Target(channel), message_id, "hello, edited")
    assert _shown(harness, channel, message_id).text == "hello, edited"
    client.set_busy(True)
    client.set_busy(False)


def test_find_posted_by_key_never_by_text(harness: Harness) -> None:
    channel = harness.make_channel("landed")
    client, _ = _client(harness)
    target = Target(channel)
    harness.post(channel, "the same words")  # a member's message with the same text
    first = client.post(target, "the same words", idempotency_key="piece-1")
    second = client.post(target, "the same words", idempotency_key="piece-2")
    assert first != second
    if harness.platform.limits.idempotent_sends:
        # The platform dedupes by key: sending again is the answer to "did it land?".
        assert client.post(target, "the same words", idempotency_key="piece-1") == first
        assert client.post(target, "other words", idempotency_key="piece-2") == second
        assert [s.id for s in harness.shows(channel)][1:] == [first, second]
        return
    assert client.find_posted(target, "piece-1") == first
    assert client.find_posted(target, "piece-2") == second
    assert client.find_posted(target, "piece-3") is None


@pytest.mark.parametrize("landed", [True, False])
def test_an_ambiguous_failure_is_answered_by_find_posted(harness: Harness, landed: bool) -> None:
    channel = harness.make_channel("faults")
    client, access = _client(harness)
    target = Target(channel)
    harness.fail_next_post(landed=landed)
    with pytest.raises(RetryLater) as failure:
        client.post(target, "did it land?", idempotency_key="piece-x")
    assert failure.value.ambiguous
    if harness.platform.limits.idempotent_sends:
        # "Not found" is allowed; the retry with the same key must be one message either way.
        assert client.find_posted(target, "piece-x") is None
        again = client.post(target, "did it land?", idempotency_key="piece-x")
        mine = [s for s in harness.shows(channel) if s.author_id == access.user_id]
        assert [s.id for s in mine] == [again]
        return
    found = client.find_posted(target, "piece-x")
    mine = [s for s in harness.shows(channel) if s.author_id == access.user_id]
    if landed:
        assert found is not None and [s.id for s in mine] == [found]
    else:
        assert found is None and mine == []


def test_threads(harness: Harness, open_host: OpenHost) -> None:
    if not harness.platform.limits.threads:
        pytest.skip(f"{harness.platform.name} has no threads")
    channel = harness.make_channel("threads")
    host = open_host()
    root = harness.post(channel, "a topic")
    harness.post(channel, f"{harness.mention()} in the topic", thread=root)
    reply = host.wait_accepted(f"{harness.mention()} in the topic")
    assert reply.thread == root and reply.addressed
    assert host.wait_accepted("a topic").thread == ""
    client, access = _client(harness)
    answer = client.post(Target(channel, root), "the answer", idempotency_key="t-1")
    assert _shown(harness, channel, answer) == Shown(answer, access.user_id, "the answer", root)
    if harness.platform.limits.idempotent_sends:
        assert client.post(Target(channel, root), "the answer", idempotency_key="t-1") == answer
    else:
        assert client.find_posted(Target(channel, root), "t-1") == answer
        assert client.find_posted(Target(channel), "t-1") is None


def test_member_messages_reach_accept_once_addressed_by_the_rules(
        harness: Harness, open_host: OpenHost) -> None:
    channel = harness.make_channel("talk")
    direct = harness.make_channel("dm", direct=True)
    host = open_host()
    client, _ = _client(harness)
    harness.post(channel, "plain words")
    harness.post(channel, f"{harness.mention()} please look")
    harness.post(direct, "a direct word")
    client.post(Target(channel), "the agent speaks", idempotency_key="own-1")
    client.post(Target(direct), "the agent speaks directly", idempotency_key="own-2")
    harness.post(channel, "last in the channel")
    harness.post(direct, "last in the dm")
    host.wait_accepted("last in the channel")
    host.wait_accepted("last in the dm")

    plain = _once(host, "plain words")
    assert (plain.addressed, plain.mentioned, plain.is_direct) == (False, False, False)
    mentioned = _once(host, f"{harness.mention()} please look")
    assert (mentioned.addressed, mentioned.mentioned, mentioned.is_direct) == (True, True, False)
    dm = _once(host, "a direct word")
    assert (dm.addressed, dm.is_direct) == (True, True)
    for inbound in (plain, mentioned, dm):
        assert inbound.platform == harness.platform.name
        assert (inbound.agent, inbound.space) == (harness.agent.name, harness.space)
        assert inbound.author_id == harness.member_id and not inbound.catch_up
        assert inbound.channel_id == (direct if inbound is dm else channel)
    assert plain.seq < mentioned.seq
    assert host.calls_with("the agent speaks") == []
    assert host.calls_with("the agent speaks directly") == []
    last = _once(host, "last in the channel")
    assert host.saved[channel] == (last.cursor, last.seq)


def test_messages_posted_while_closed_are_caught_up_once(
        harness: Harness, open_host: OpenHost) -> None:
    channel = harness.make_channel("outage")
    client, _ = _client(harness)
    first = open_host()
    harness.post(channel, "before")
    first.wait_accepted("before")
    first.stop()
    harness.post(channel, "while away 1")
    client.post(Target(channel), "the agent, while away", idempotency_key="own-away")
    harness.post(channel, f"{harness.mention()} while away 2")

    second = open_host(first.saved)
    second.wait_accepted(f"{harness.mention()} while away 2")
    harness.post(channel, "live again")
    second.wait_accepted("live again")
    assert second.calls_with("before") == []
    assert second.calls_with("the agent, while away") == []
    away = [_once(second, "while away 1"), _once(second, f"{harness.mention()} while away 2")]
    assert all(inbound.catch_up for inbound in away)
    assert away[1].addressed and not away[0].addressed
    assert not _once(second, "live again").catch_up
    assert second.contents() == ["while away 1", f"{harness.mention()} while away 2",
                                 "live again"]


def test_a_dropped_connection_reconnects_and_catches_up(
        harness: Harness, open_host: OpenHost) -> None:
    channel = harness.make_channel("drops")
    host = open_host()
    harness.post(channel, "one")
    host.wait_accepted("one")
    harness.drop()
    harness.post(channel, "two")
    host.wait(lambda: host.status.reconnects >= 1 and host.status.state == "connected",
              "the intake to reconnect")
    harness.post(channel, "three")
    host.wait_accepted("three")
    assert [inbound.content for inbound in host.calls] == ["one", "two", "three"]


def test_limits_and_rendering(harness: Harness) -> None:
    platform = harness.platform
    limit = platform.limits.text_chars
    assert limit > 0 and platform.limits.edit_interval_s >= 0
    words = [f"word{i}" for i in range(limit // 2)]  # about three pieces
    footer = "— 1m05s · 1,234 tokens"
    pieces = platform.render_answer(" ".join(words), footer)
    assert len(pieces) >= 3
    assert all(0 < len(piece) <= limit for piece in pieces)
    assert " ".join(pieces).split() == words + footer.split()
    assert pieces[-1].endswith(footer)

    view = RunView(run_id="r1", agent=harness.agent.name, state="working", elapsed_s=65.0,
                   steps=tuple(StepView(f"s{i}", f"step {i} " + "x" * 70, "done")
                               for i in range(12)))
    status = platform.render_status(view)
    assert harness.agent.name in status and 0 < len(status) <= limit

    channel = harness.make_channel("pieces")
    client, _ = _client(harness)
    for number, piece in enumerate([*pieces, status]):
        client.post(Target(channel), piece, idempotency_key=f"piece-{number}")
    assert [s.text for s in harness.shows(channel)] == [*pieces, status]


def test_delete_removes_the_identity_s_message_only(harness: Harness) -> None:
    channel = harness.make_channel("deletes")
    client, _ = _client(harness)
    target = Target(channel)
    gone = client.post(target, "soon gone", idempotency_key="d-1")
    kept = client.post(target, "stays", idempotency_key="d-2")
    members = harness.post(channel, "a member's words")
    client.delete(target, gone)
    assert [s.id for s in harness.shows(channel)] == [kept, members]
    if harness.platform.limits.idempotent_sends:
        assert client.post(target, "stays", idempotency_key="d-2") == kept
    else:
        assert client.find_posted(target, "d-2") == kept
    with pytest.raises(Forbidden):
        client.delete(target, members)
    assert [s.id for s in harness.shows(channel)] == [kept, members]


def test_reactions(harness: Harness) -> None:
    channel = harness.make_channel("receipts")
    client, access = _client(harness)
    target = Target(channel)
    asked = harness.post(channel, "react to me")
    if not harness.platform.limits.reactions:
        with pytest.raises(Unsupported):
            client.react(target, asked, "eyes")
        return
    client.react(target, asked, "eyes")
    client.react(target, asked, "eyes")  # adding twice is one reaction
    client.react(target, asked, "white_check_mark")
    assert harness.reactions(channel, asked) == {"eyes": {access.user_id},
                                                 "white_check_mark": {access.user_id}}
    client.react(target, asked, "eyes", on=False)
    client.react(target, asked, "eyes", on=False)  # removing one that is gone is no error
    assert harness.reactions(channel, asked) == {"white_check_mark": {access.user_id}}
    client.react(target, asked, "white_check_mark", on=False)
    assert harness.reactions(channel, asked) == {}


def test_an_uploaded_file_is_seen_by_members(harness: Harness, tmp_path: Path) -> None:
    channel = harness.make_channel("uploads")
    client, access = _client(harness)
    target = Target(channel)
    path = tmp_path / "answer.md"
    content = "# The answer\n\nlong enough to go up as a file ✓\n".encode()
    path.write_bytes(content)
    if not harness.platform.limits.files:
        with pytest.raises(Unsupported):
            client.upload(target, path, title="the answer", idempotency_key="f-1")
        return
    posted = client.upload(target, path, title="the answer", idempotency_key="f-1")
    caption = "the answer" if harness.file_captions else ""
    assert _shown(harness, channel, posted) == Shown(posted, access.user_id, caption,
                                                     files=(("answer.md", content),))
    if harness.platform.limits.idempotent_sends:
        assert client.upload(target, path, title="the answer", idempotency_key="f-1") == posted
        assert [s.id for s in harness.shows(channel)] == [posted]
    else:
        assert client.find_posted(target, "f-1") == posted


def test_a_member_s_file_is_fetched_byte_for_byte(harness: Harness, open_host: OpenHost,
                                                  tmp_path: Path) -> None:
    client, _ = _client(harness)
    if not harness.platform.limits.files:
        with pytest.raises(Unsupported):
            client.fetch(Attachment("notes.txt", 5, "text/plain", "any"), tmp_path / "notes.txt",
                         max_bytes=1000)
        return
    channel = harness.make_channel("files-in")
    host = open_host()
    content = bytes(range(256)) * 40  # every byte value, 10,240 bytes
    harness.post(channel, "see the file", files={"data.bin": content})
    [attachment] = host.wait_accepted("see the file").attachments
    size = len(content) if harness.file_sizes else 0  # 0: the platform did not say
    assert (attachment.name, attachment.size_bytes) == ("data.bin", size)
    fetched = client.fetch(attachment, tmp_path / "data.bin", max_bytes=len(content))
    assert fetched == tmp_path / "data.bin" and fetched.read_bytes() == content
    with pytest.raises(TooLarge):
        client.fetch(attachment, tmp_path / "too-big.bin", max_bytes=len(content) - 1)
    assert not (tmp_path / "too-big.bin").exists()


def test_a_click_on_the_identity_s_control_reaches_act(harness: Harness,
                                                       open_host: OpenHost) -> None:
    if not harness.platform.limits.buttons:
        pytest.skip(f"{harness.platform.name} has no buttons (the port has no call to refuse)")
    channel = harness.make_channel("controls")
    host = open_host()
    client, _ = _client(harness)
    members = harness.post(channel, "a member's message")
    host.wait_accepted("a member's message")
    status = client.post(Target(channel), "a run's status", idempotency_key="s-1",
                         controls=(Control("stop", "Stop", "run-1",
                                           for_users=(harness.member_id,)),))
    harness.click(channel, members, "stop", "run-0")  # not the identity's: never handed on
    harness.click(channel, status, "stop", "run-1")
    [action] = host.wait(lambda: list(host.actions), "the click handed to act()")
    scope = ConnectionKey(harness.platform.name, harness.agent.name, harness.space).scope(channel)
    assert (action.scope, action.user_id, action.name, action.value) == (
        scope, harness.member_id, "stop", "run-1")
    assert isinstance(action, Action) and action.user_name
    harness.post(channel, "after the clicks")
    host.wait_accepted("after the clicks")
    assert len(host.actions) == 1


def test_checks_for_doctor(harness: Harness) -> None:
    platform, bindings = harness.platform, harness.bindings()
    found = platform.checks(harness.agent, bindings, timeout_s=3.0)
    assert found and [c.level for c in found] == ["ok"] * len(found), found
    assert harness.agent.name in found[0].message  # the login comes first, naming the agent

    refused = platform.checks(harness.refused, bindings, timeout_s=3.0)
    assert [c.level for c in refused] == ["fail"]
    assert harness.refused.name in refused[0].message

    elsewhere = platform.checks(harness.agent, [attrs.evolve(bindings[0], space="no-such")],
                                timeout_s=3.0)
    assert [c.level for c in elsewhere] == ["ok", "fail"]
    assert "no-such" in elsewhere[1].message
    for check in [*found, *refused, *elsewhere]:
        for agent in (harness.agent, harness.refused):
            for identity in agent.identities.values():  # the credential's secrets
                for secret in attrs.astuple(cast(Any, identity), recurse=False):
                    if isinstance(secret, Secret):  # not identifiers such as an app id
                        assert secret.reveal() not in check.message
