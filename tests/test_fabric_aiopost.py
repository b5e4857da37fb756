"""Fabric posts and author lookups on the chat loop with aiohttp
(adapters.chat.fabric.aiopost).

A small aiohttp server on 127.0.0.1 answers as a guild would (a created
message, 429 with Retry-After, 503, 401, 400, a body that is not JSON); the
post is sent with the real client through a loop of the test's own, and each
answer must come back as the typed result or error a ``requests`` call gave.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from adapters.chat.fabric import aiopost
from adapters.chat.fabric.aiopost import fetch_user, proxy_for, send_on_loop
from adapters.chat.fabric.client import FabricClient
from adapters.chat.fabric.rest import GuildAccess, message_nonce, post_request
from adapters.chat.ioloop import IoLoop
from bridge.errors import BadRequest, ChatError, Conflict, RetryLater, Unauthorized
from bridge.model import Target

TOKEN = "guild-token-for-tests"


class Guild:
    """The answers, by channel id, and what the guild received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []

    async def post(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        self.received.append((channel, request.headers.get("Authorization", ""),
                              await request.json()))
        if channel == "ok":
            return web.json_response({"messageId": "m-1", "seq": 7})
        if channel == "slow":
            return web.json_response({"error": "slow down"}, status=429,
                                     headers={"Retry-After": "7"})
        if channel == "down":
            return web.json_response({"error": "restarting"}, status=503)
        if channel == "denied":
            return web.json_response({"error": "bad token"}, status=401)
        if channel == "notjson":
            return web.Response(text="hello")
        return web.json_response({"error": "no such channel"}, status=400)

    async def user(self, request: web.Request) -> web.StreamResponse:
        self.received.append((f"users/{request.match_info['id']}",
                              request.headers.get("Authorization", ""), {}))
        user_id = request.match_info["id"]
        if user_id == "u-ann":
            return web.json_response({"id": user_id, "name": "ann", "kind": "human"})
        if user_id == "u-denied":
            return web.json_response({"error": "bad token"}, status=401)
        if user_id == "u-dribble":  # a byte at a time, each well within the read timeout
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for byte in b'{"name": "slow", "kind": "human"}':
                await response.write(bytes([byte]))
                await asyncio.sleep(0.1)
            await response.write_eof()
            return response
        return web.json_response({"error": "no such user"}, status=404)

    async def edit(self, request: web.Request) -> web.StreamResponse:
        self.received.append((f"{request.match_info['channel']}/{request.match_info['id']}",
                              request.headers.get("Authorization", ""), await request.json()))
        if request.match_info["id"] == "gone":
            return web.json_response({"error": "deleted"}, status=409)
        return web.json_response({"messageId": request.match_info["id"]})


@pytest.fixture
def guild() -> Iterator[tuple[Guild, GuildAccess, IoLoop]]:
    io = IoLoop(name="test-aiopost")
    state = Guild()
    app = web.Application()
    app.router.add_post("/api/channels/{channel}/messages", state.post)
    app.router.add_patch("/api/channels/{channel}/messages/{id}", state.edit)
    app.router.add_get("/api/users/{id}", state.user)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    port = io.run(start(), 10.0)
    access = GuildAccess(guild="dev", endpoint=f"http://127.0.0.1:{port}", token=TOKEN,
                         user_id="u-agent", user_name="agent", issued_at=0.0)
    try:
        yield state, access, io
    finally:
        io.run(runner.cleanup(), 10.0)


def test_a_post_lands_with_the_token_and_the_nonce(
        guild: tuple[Guild, GuildAccess, IoLoop]) -> None:
    state, access, io = guild
    answer = send_on_loop(access, post_request("ok", "hello", idempotency_key="k-1"), io)
    assert answer == {"messageId": "m-1", "seq": 7}
    assert state.received == [("ok", f"Bearer {TOKEN}",
                               {"content": "hello", "nonce": message_nonce("k-1")})]


def test_the_client_posts_through_the_loop(guild: tuple[Guild, GuildAccess, IoLoop]) -> None:
    state, access, _io = guild
    assert FabricClient(access).post(Target("ok"), "hi", idempotency_key="k-2") == "m-1"
    assert state.received[-1][2]["content"] == "hi"


def test_the_client_edits_through_the_loop(guild: tuple[Guild, GuildAccess, IoLoop]) -> None:
    state, access, _io = guild
    FabricClient(access).update(Target("c1"), "m-9", "new text")
    assert state.received[-1] == ("c1/m-9", f"Bearer {TOKEN}", {"content": "new text"})
    with pytest.raises(Conflict):
        FabricClient(access).update(Target("c1"), "gone", "too late")


@pytest.mark.parametrize(("channel", "error", "ambiguous", "retry_after_s"), [
    ("slow", RetryLater, False, 7.0),
    ("down", RetryLater, True, None),
    ("denied", Unauthorized, None, None),
    ("nowhere", BadRequest, None, None),
])
def test_answers_are_typed_as_for_a_requests_call(
        guild: tuple[Guild, GuildAccess, IoLoop], channel: str, error: type[ChatError],
        ambiguous: bool | None, retry_after_s: float | None) -> None:
    _state, access, io = guild
    with pytest.raises(error) as raised:
        send_on_loop(access, post_request(channel, "x", idempotency_key="k"), io)
    assert raised.type is error
    assert TOKEN not in str(raised.value)
    if isinstance(raised.value, RetryLater):
        assert raised.value.ambiguous is ambiguous
        assert raised.value.retry_after_s == retry_after_s


def test_a_body_that_is_not_json_is_an_error(guild: tuple[Guild, GuildAccess, IoLoop]) -> None:
    _state, access, io = guild
    with pytest.raises(ChatError, match="non-JSON"):
        send_on_loop(access, post_request("notjson", "x", idempotency_key="k"), io)


def test_an_author_is_looked_up_on_the_loop(guild: tuple[Guild, GuildAccess, IoLoop]) -> None:
    state, access, io = guild
    assert io.run(fetch_user(access, "u-ann"), 10.0) == ("ann", "human")
    assert io.run(fetch_user(access, "u-nobody"), 10.0) is None  # 404: unknown
    with pytest.raises(Unauthorized):
        io.run(fetch_user(access, "u-denied"), 10.0)
    assert [(path, auth) for path, auth, _ in state.received] == [
        (f"users/{u}", f"Bearer {TOKEN}") for u in ("u-ann", "u-nobody", "u-denied")]


def test_a_lookup_that_dribbles_ends_within_its_whole_time_limit(
        guild: tuple[Guild, GuildAccess, IoLoop], monkeypatch: pytest.MonkeyPatch) -> None:
    _state, access, io = guild
    monkeypatch.setattr(aiopost, "WAIT_S", 0.5)  # the body takes 3.3 s, 0.1 s a byte
    # RetryLater, not the TimeoutError of io.run's own (longer) wait.
    with pytest.raises(RetryLater, match="no answer within"):
        io.run(fetch_user(access, "u-dribble"), 30.0)


def test_an_unreachable_guild_may_have_got_the_post() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    access = GuildAccess(guild="dev", endpoint=f"http://127.0.0.1:{port}", token=TOKEN,
                         user_id="u", user_name="u", issued_at=0.0)
    with pytest.raises(RetryLater, match="unreachable") as raised:
        send_on_loop(access, post_request("ok", "x", idempotency_key="k"))
    assert raised.value.ambiguous is True
    # A lookup changes nothing: unreachable is plainly "try again".
    with pytest.raises(RetryLater, match="unreachable") as looked_up:
        IoLoop.shared().run(fetch_user(access, "u-ann"), 30.0)
    assert looked_up.value.ambiguous is False


def test_proxies_come_from_the_environment_once_per_endpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_for.cache_clear()
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "guild.internal")
    try:
        assert proxy_for("https://guild.example") == "http://proxy.example:3128"
        assert proxy_for("https://guild.internal") is None
        assert proxy_for("http://guild.example") is None  # no HTTP_PROXY set
    finally:
        proxy_for.cache_clear()
