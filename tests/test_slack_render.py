"""Slack's rendering: Markdown to mrkdwn, answer pieces, the status message and its blocks."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.chat.slack.render import (
    MAX_KEY_CHARS,
    SECTION_TEXT_CHARS,
    SLACK_TEXT_CHARS,
    answer_metadata,
    key_of,
    render_answer,
    render_status_text,
    split_answer,
    status_blocks,
    to_mrkdwn,
)
from bridge.agent import PlanItem, Usage
from bridge.model import Control
from bridge.run_view import RunView, StepView


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* and _too_", "_italic_ and _too_"),
        ("~~gone~~", "~gone~"),
        ("see [the docs](https://example.com/a?b=1&c=2)",
         "see <https://example.com/a?b=1&amp;c=2|the docs>"),
        ("# Title\n## Sub", "*Title*\n*Sub*"),
        ("- one\n* two\n  - nested\n1. first", "• one\n• two\n  • nested\n1. first"),
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("ping <@U123ABC> in <#C0456|general>", "ping <@U123ABC> in <#C0456|general>"),
        ("<https://example.com|site> and <https://example.com>",
         "<https://example.com|site> and <https://example.com>"),
        ("<!channel> look", "&lt;!channel&gt; look"),  # no broadcast from an agent
        ("> quoted & kept", "> quoted &amp; kept"),
        ("cost is n * m * k", "cost is n * m * k"),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, expected: str) -> None:
    assert to_mrkdwn(markdown) == expected


def test_inline_code_is_left_alone_but_escaped() -> None:
    assert to_mrkdwn("run `**x** <y> & _z_` now") == "run `**x** &lt;y&gt; &amp; _z_` now"


def test_code_fence_content_is_left_alone() -> None:
    markdown = ("**before**\n\n```c++\n**not bold** _x_ [a](b)\n# not a heading\n"
                "if a < b && c:\n```\nafter")
    assert to_mrkdwn(markdown) == (
        "*before*\n\n```\n**not bold** _x_ [a](b)\n# not a heading\n"
        "if a &lt; b &amp;&amp; c:\n```\nafter")


def test_tilde_and_unclosed_fences_become_closed_backtick_fences() -> None:
    assert to_mrkdwn("~~~\n*x*\n~~~") == "```\n*x*\n```"
    assert to_mrkdwn("text\n```python\n*open*") == "text\n```\n*open*\n```"


def test_split_keeps_short_text_whole() -> None:
    assert split_answer("  one\ntwo  ", 20) == ["one\ntwo"]
    assert split_answer(" \n ", 20) == []


def test_split_closes_and_reopens_a_fence_with_its_info() -> None:
    text = "intro\n```py\n" + "\n".join(f"line {i}" for i in range(6)) + "\n```\nafter"
    pieces = split_answer(text, 30)
    assert pieces == ["intro\n```py\nline 0\nline 1\n```",
                      "```py\nline 2\nline 3\nline 4\n```",
                      "```py\nline 5\n```\nafter"]


def test_split_moves_a_lone_opening_fence_to_the_next_piece() -> None:
    pieces = split_answer("a" * 20 + "\n```\ncode line\n```", 26)
    assert pieces == ["a" * 20, "```\ncode line\n```"]


def test_split_cuts_a_long_line_at_a_space() -> None:
    pieces = split_answer("word " * 10, 16)
    assert all(len(p) <= 16 for p in pieces)
    assert " ".join(pieces).split() == ["word"] * 10


def test_split_rejects_a_tiny_limit() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        split_answer("text", 15)


_FENCE_LINE = re.compile(r"^```[\w+#.-]*$")


def _code_marks(text: str) -> list[tuple[str, bool]]:
    """Each non-space character outside fence lines, with whether it is inside a block."""
    marks: list[tuple[str, bool]] = []
    inside = False
    for line in text.split("\n"):
        if _FENCE_LINE.match(line.strip()):
            inside = not inside
            continue
        marks += [(ch, inside) for ch in line if not ch.isspace()]
    return marks


_WORDS = st.text(alphabet="ab*_<& \t", min_size=0, max_size=60)
_LINES = st.lists(st.one_of(_WORDS, st.sampled_from(["```", "```py", "  indented code"]),
                            st.text(alphabet="xy ", min_size=50, max_size=200)),
                  max_size=40)


@settings(max_examples=300, deadline=None)
@given(lines=_LINES, limit=st.integers(min_value=16, max_value=120))
def test_split_properties(lines: list[str], limit: int) -> None:
    text = "\n".join(lines)
    pieces = split_answer(text, limit)
    assert all(0 < len(piece) <= limit for piece in pieces)
    assert all(piece.count("```") % 2 == 0 for piece in pieces)  # fences balanced
    assert all(piece == piece.rstrip() and piece[0] != "\n" for piece in pieces)
    # No character lost or added, and code stays code (added fence lines aside).
    assert [m for piece in pieces for m in _code_marks(piece)] == _code_marks(text)


def test_answer_ends_with_the_footer() -> None:
    assert render_answer("**done**", "_12s_") == ["*done*\n\n_12s_"]


def test_footer_is_its_own_piece_when_it_does_not_fit() -> None:
    pieces = render_answer("x" * 30, "_12s · 1,234 tokens_", limit=32)
    assert pieces == ["x" * 30, "_12s · 1,234 tokens_"]


def test_empty_answer_is_its_footer() -> None:
    assert render_answer("", "_3s_") == ["_3s_"]
    assert render_answer("", "") == []


def test_long_answer_pieces_fit_the_message_limit() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(100))
    pieces = render_answer(text, "_1m05s_")
    assert len(pieces) > 1
    assert all(len(piece) <= SLACK_TEXT_CHARS for piece in pieces)
    assert pieces[-1].endswith("\n\n_1m05s_")


def _view(**changes: Any) -> RunView:
    """A working run with plan, steps, a notice and usage, with ``changes`` applied."""
    view = RunView(
        "r1", "coder", "working", 65.0,
        steps=(StepView("s1", "pytest -q", "failed", "exit 1"),
               StepView("s2", "edit a<b>.py", "done"), StepView("s3", "grep foo", "running")),
        earlier_steps=4,
        plan=(PlanItem("find the bug", done=True), PlanItem("fix it", active=True),
              PlanItem("run tests")),
        notice="retrying after a 429", usage=Usage(1000, 234, cost_usd=0.0123))
    return attrs.evolve(view, **changes)


def test_status_text_shows_header_plan_steps_and_notice() -> None:
    lines = render_status_text(_view()).split("\n")
    assert lines == [
        "*coder* · working · 1m05s",
        "☑ find the bug", "▶ fix it", "☐ run tests",
        "_… 4 earlier steps_",
        ":x: pytest -q (exit 1)",
        ":white_check_mark: edit a&lt;b&gt;.py",
        ":hourglass_flowing_sand: grep foo",
        ":information_source: retrying after a 429",
    ]


def test_final_status_shows_usage() -> None:
    header = render_status_text(_view(state="done", final=True)).split("\n")[0]
    assert header == "*coder* · done · 1m05s · 1,234 tokens · $0.0123"
    working = render_status_text(_view()).split("\n")[0]
    assert "tokens" not in working


def test_final_status_closes_the_steps_still_running() -> None:
    stopped = render_status_text(_view(state="failed: stopped by ana", final=True))
    assert ":x: grep foo" in stopped.split("\n")
    done = render_status_text(_view(state="done", final=True))
    assert ":white_check_mark: grep foo" in done.split("\n")
    assert ":hourglass_flowing_sand:" not in stopped + done


def test_status_text_stays_under_the_limit() -> None:
    text = render_status_text(_view(state="failed: " + "&" * 5000))
    assert len(text) <= SLACK_TEXT_CHARS
    assert text.endswith("&amp;…")


def test_status_blocks_with_a_stop_button() -> None:
    blocks = status_blocks("*coder* · working", [Control("stop", "Stop", "run-1")])
    assert blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*coder* · working"}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": "stop",
             "text": {"type": "plain_text", "text": "Stop"},
             "style": "danger", "value": "run-1"}]},
    ]


def test_status_blocks_split_long_text_and_drop_the_button_when_done() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(40))
    blocks = status_blocks(text, [])
    assert len(blocks) == 2
    assert all(b["type"] == "section" for b in blocks)
    assert all(len(b["text"]["text"]) <= SECTION_TEXT_CHARS for b in blocks)
    assert "\n".join(b["text"]["text"] for b in blocks) == text


def test_metadata_round_trip() -> None:
    metadata = answer_metadata("r1:0")
    assert metadata == {"event_type": "bridge_piece", "event_payload": {"key": "r1:0"}}
    assert key_of({"ts": "1.2", "metadata": metadata}) == "r1:0"


@pytest.mark.parametrize("message", [
    {"ts": "1.2"},
    {"metadata": {"event_type": "other", "event_payload": {"key": "r1:0"}}},
    {"metadata": {"event_type": "bridge_piece", "event_payload": {"key": 3}}},
    {"metadata": {"event_type": "bridge_piece"}},
    {"metadata": "bridge_piece"},
])
def test_key_of_other_messages_is_none(message: dict[str, object]) -> None:
    assert key_of(message) is None


def test_metadata_key_length_is_checked() -> None:
    assert answer_metadata("k" * MAX_KEY_CHARS)["event_payload"]["key"] == "k" * MAX_KEY_CHARS
    with pytest.raises(ValueError, match="1 to 200"):
        answer_metadata("k" * (MAX_KEY_CHARS + 1))
    with pytest.raises(ValueError, match="1 to 200"):
        answer_metadata("")
