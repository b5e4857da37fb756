"""The Feishu/Lark adapter's pure parts: reading event payloads, rendering answers and
cards, naming the refusals (no platform, no sockets)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from adapters.chat.lark import render
from adapters.chat.lark.api import as_chat_error, grant_url
from adapters.chat.lark.client import uuid_of
from adapters.chat.lark.events import (
    CardClick,
    LarkFile,
    Mention,
    click_of,
    content_of,
    mentions_of,
    message_of_event,
    message_of_item,
)
from bridge.errors import (
    BadRequest,
    ChatError,
    Forbidden,
    NotFound,
    RetryLater,
    TooLarge,
    Unauthorized,
)

ECHO = Mention("@_user_1", "ou_bot", "echo")


# -- content -----------------------------------------------------------------------------


@pytest.mark.parametrize("msg_type, content, expected", [
    ("text", {"text": "@_user_1 look at this"}, ("@echo look at this", ())),
    ("text", {"text": "@_user_2 and @_user_1"}, ("@someone and @echo", ())),
    ("post", {"zh_cn": {"title": "Title", "content": [
        [{"tag": "text", "text": "hi "}, {"tag": "at", "user_name": "bob"}],
        [{"tag": "md", "text": "**bold**"}, {"tag": "a", "text": " link", "href": "x"}],
        [{"tag": "img", "image_key": "img_1"}],
        [{"tag": "media", "file_key": "file_1", "file_name": "a.pdf"}]]}},
     ("Title\nhi @bob\n**bold** link",
      (LarkFile("img_1", "img_1.png", "image"), LarkFile("file_1", "a.pdf", "file")))),
    ("image", {"image_key": "img_2"}, ("", (LarkFile("img_2", "img_2.png", "image"),))),
    ("file", {"file_key": "file_2", "file_name": "notes.txt"},
     ("", (LarkFile("file_2", "notes.txt", "file"),))),
    ("file", {"file_key": "file_3"}, ("", (LarkFile("file_3", "file_3", "file"),))),
    ("sticker", {"file_key": "sticker_1"}, ("[sticker]", ())),
    ("merge_forward", {}, ("[merge_forward]", ())),
    ("", {}, ("[message]", ())),
])
def test_content_of_each_type(msg_type: str, content: dict[str, Any],
                              expected: tuple[str, tuple[LarkFile, ...]]) -> None:
    assert content_of(msg_type, json.dumps(content), (ECHO,), "om_1") == expected


@pytest.mark.parametrize("msg_type, content", [
    ("text", "{not json"),
    ("text", "[1, 2]"),
    ("text", '{"text": 5}'),
    ("post", '{"content": 5}'),
    ("post", '{"content": "not a list"}'),
    ("post", '{"zh_cn": {"content": [[5, "x", {"tag": "text", "text": 7}]]}}'),
    ("post", '{"content": [[{"tag": "img", "image_key": 3}, {"tag": "media"}]]}'),
    ("image", '{"image_key": null}'),
    ("file", '"just text"'),
])
def test_malformed_content_is_a_note_or_nothing_never_a_crash(msg_type: str,
                                                              content: str) -> None:
    text, files = content_of(msg_type, content, ())
    assert files == ()
    assert text in ("", f"[{msg_type}: unreadable content]")


def test_mentions_without_a_key_or_an_id_are_left_out() -> None:
    raw = [{"key": "@_user_1", "id": {"open_id": "ou_1"}, "name": "a"}, 5,
           {"key": "@_user_2", "id": "ou_2"}, {"key": "", "id": "ou_3"}, {"key": "@_user_4"}]
    assert mentions_of(raw) == (Mention("@_user_1", "ou_1", "a"), Mention("@_user_2", "ou_2", ""))
    assert mentions_of("not a list") == ()


# -- events and listings ---------------------------------------------------------------------


def _event(**message: Any) -> dict[str, Any]:
    body = {"message_id": "om_1", "chat_id": "oc_1", "chat_type": "group",
            "message_type": "text", "content": json.dumps({"text": "@_user_1 hi"}),
            "create_time": "1700000000123", "root_id": "om_0", "parent_id": "om_0",
            "thread_id": "omt_1", "mentions": [{"key": "@_user_1", "name": "echo",
                                                "id": {"open_id": "ou_bot"}}]}
    return {"sender": {"sender_id": {"open_id": "ou_alice"}, "sender_type": "user"},
            "message": {**body, **message}}


def test_message_of_event_reads_the_ids_the_text_and_the_thread() -> None:
    message = message_of_event(_event())
    assert message is not None
    assert (message.message_id, message.chat_id, message.chat_type, message.sender_id,
            message.sender_type) == ("om_1", "oc_1", "group", "ou_alice", "user")
    assert (message.text, message.create_ms) == ("@echo hi", 1700000000123)
    assert (message.thread_root, message.thread_id) == ("om_0", "omt_1")
    assert message.mentions_of("ou_bot") and not message.mentions_of("ou_alice")
    topic_start = message_of_event(_event(root_id="", parent_id=""))
    assert topic_start is not None and topic_start.thread_root == "om_1"
    top_level = message_of_event(_event(root_id="", parent_id="", thread_id=""))
    assert top_level is not None and top_level.thread_root == ""


@pytest.mark.parametrize("event", [
    {},
    {"message": ["om_1"]},
    {"message": "om_1"},
    _event(message_id=""),
    _event(chat_id=None),
    _event(message_id=5),
    {"message": _event()["message"]},  # no sender
    {**_event(), "sender": {"sender_id": {"open_id": ""}, "sender_type": "user"}},
    {**_event(), "sender": "ou_alice"},
])
def test_message_of_event_without_its_ids_is_none(event: dict[str, Any]) -> None:
    assert message_of_event(event) is None


def test_message_of_event_with_odd_fields_is_read_safely() -> None:
    message = message_of_event(_event(create_time="soon", mentions="x", content=5,
                                      message_type=["text"], root_id=7))
    assert message is not None
    assert (message.create_ms, message.mentions, message.text, message.root_id) == (
        0, (), "[message]", "")


def test_message_of_item_reads_a_listing_and_skips_recalled_ones() -> None:
    item = {"message_id": "om_2", "chat_id": "oc_1", "msg_type": "text",
            "body": {"content": json.dumps({"text": "hello"})}, "create_time": "5",
            "sender": {"id": "cli_app", "id_type": "app_id", "sender_type": "app"}}
    message = message_of_item(item, "group")
    assert message is not None
    assert (message.sender_id, message.sender_type, message.text, message.chat_type) == (
        "cli_app", "app", "hello", "group")
    assert message_of_item({**item, "deleted": True}) is None
    assert message_of_item({**item, "chat_id": ""}) is None
    assert message_of_item({**item, "sender": {}}) is None
    assert message_of_item({**item, "body": "x"}) is not None


def test_click_of_needs_an_operator_a_value_object_and_a_message() -> None:
    event = {"operator": {"open_id": "ou_alice"}, "action": {"value": {"a": "stop"}},
             "context": {"open_message_id": "om_1", "open_chat_id": "oc_1"}}
    assert click_of(event) == CardClick("ou_alice", {"a": "stop"}, "om_1", "oc_1")
    assert click_of({**event, "operator": {}}) is None
    assert click_of({**event, "action": {"value": "stop"}}) is None
    assert click_of({**event, "context": {"open_chat_id": "oc_1"}}) is None
    assert click_of({}) is None


# -- rendering -------------------------------------------------------------------------------


def test_render_answer_pieces_fit_and_keep_every_paragraph() -> None:
    paragraphs = [f"paragraph {n}: " + "word " * 150 for n in range(60)]
    paragraphs.insert(30, "```py\n" + "print('x')\n" * 300 + "```")
    text = "\n\n".join(paragraphs)
    pieces = render.render_answer(text, "— 1m05s · 1,234 tokens")
    assert len(pieces) > 3
    assert all(len(piece) <= render.LARK_TEXT_CHARS for piece in pieces)
    joined = "\n".join(pieces)
    for n in range(60):
        assert len(re.findall(rf"paragraph {n}:", joined)) == 1
    assert pieces[-1].endswith("\n\n— 1m05s · 1,234 tokens")
    assert joined.count("print('x')") == 300


def test_render_answer_footer_alone_when_the_last_piece_is_full() -> None:
    full = "x" * render.LARK_TEXT_CHARS
    assert render.render_answer(full, "— 5s") == [full, "— 5s"]
    assert render.render_answer("", "— 5s") == ["— 5s"]
    assert render.render_answer("short", "  ") == ["short"]
    assert render.render_answer("", "") == []


def test_card_has_the_markdown_then_its_buttons() -> None:
    stop = render.button("Stop", {"a": "stop", "r": "run-1"}, name="stop")
    card = render.card("**working**", buttons=[stop], streaming=True, summary="s" * 150)
    assert card["schema"] == "2.0"
    assert card["config"] == {"update_multi": True, "streaming_mode": True,
                              "summary": {"content": "s" * 100}}
    markdown, button = card["body"]["elements"]
    assert markdown == {"tag": "markdown", "element_id": render.STATUS_ELEMENT,
                        "content": "**working**"}
    assert button["tag"] == "button" and button["name"] == "stop"
    assert button["text"] == {"tag": "plain_text", "content": "Stop"}
    assert button["behaviors"] == [{"type": "callback", "value": {"a": "stop", "r": "run-1"}}]
    assert json.loads(render.card_content(card)) == card
    plain = render.card("done")
    assert plain["config"] == {"update_multi": True} and len(plain["body"]["elements"]) == 1


def test_the_fallback_forms_read_back_as_the_same_text() -> None:
    answer = '**Done** — 完成 "all"\n- one `C:\\tmp`'
    assert content_of("post", render.post_content(answer), ()) == (answer, ())
    assert content_of("text", render.text_content(answer), ()) == (answer, ())
    assert json.loads(render.card_ref_content("card_1")) == {"type": "card",
                                                             "data": {"card_id": "card_1"}}


def test_uuid_of_is_short_stable_and_per_key() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", uuid_of("piece-1"))
    assert uuid_of("piece-1") == uuid_of("piece-1") != uuid_of("piece-2")


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status, code, kind", [
    (400, 99991663, Unauthorized), (400, 99991661, Unauthorized),
    (400, 99991672, Forbidden), (400, 230027, Forbidden), (403, 0, Forbidden),
    (400, 230002, NotFound), (404, 0, NotFound),
    (400, 230025, TooLarge), (400, 230099, TooLarge),
    (500, 1, RetryLater), (200, 230052, RetryLater),
    (400, 230001, BadRequest), (400, 12345, BadRequest),
])
def test_as_chat_error_names_each_refusal(status: int, code: int,
                                          kind: type[ChatError]) -> None:
    error = as_chat_error("send to oc_1", status, code, "why", {})
    assert type(error) is kind
    assert "send to oc_1" in str(error) and str(code) in str(error)


def test_a_rate_limit_carries_the_platform_s_delay() -> None:
    limited = as_chat_error("send", 429, 99991400, "slow down", {"X-Ogw-Ratelimit-Reset": "7"})
    assert isinstance(limited, RetryLater) and limited.retry_after_s == 7.0
    per_chat = as_chat_error("send", 200, 230020, "slow down", {})  # one chat: no app pause
    assert isinstance(per_chat, RetryLater) and per_chat.retry_after_s is None
    server = as_chat_error("send", 502, 0, "", {}, ambiguous=True)
    assert isinstance(server, RetryLater) and server.ambiguous


def test_grant_url_reads_the_url_with_every_scope() -> None:
    url = ("https://open.feishu.cn/app/cli_1/auth?q=im:message,im:message:send_as_bot"
           "&op_from=openapi&token_type=tenant")
    msg = "Access denied. [im:message, im:message:send_as_bot]" + "\u3002" * 300 + f"\uff1a{url}"
    assert grant_url(as_chat_error("send", 400, 99991672, msg, {})) == url
    assert grant_url(Forbidden(f"see {url}.")) == url
    assert grant_url(Forbidden("no permission, see https://open.feishu.cn/document")) == ""
    assert grant_url(NotFound("gone")) == ""
