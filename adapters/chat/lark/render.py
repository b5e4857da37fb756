"""What Feishu/Lark shows for a run: Markdown cards, the status card and its Stop button.

Answers and status are JSON 2.0 cards (docs open.feishu.cn "card JSON 2.0
structure") whose body is one ``markdown`` element: Feishu/Lark renders
CommonMark-like Markdown there (headings, lists, code blocks, links), so an
agent's answer goes in as written. When a card is refused, the same text goes
as a rich-text ``post`` with one ``md`` element, then as plain ``text`` (the
fallback chain of :class:`adapters.chat.lark.client.LarkClient`).

Sizes (docs im-v1/message/create, "content" limits): a card or post at most
30 KB of JSON, a text message 150 KB. A piece is at most
:data:`LARK_TEXT_CHARS` characters: 3 bytes per CJK character plus JSON
escaping stays under 30 KB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.agent import PlanItem
from bridge.chunking import split_markdown, with_footer
from bridge.run_status import footer_line, format_duration, shorten
from bridge.run_view import RunView, plan_window

#: Characters per card or post piece (see the module docstring).
LARK_TEXT_CHARS = 8000
#: Plan items shown in the status card (the others are counted).
MAX_PLAN_ITEMS = 12
#: The status card's Markdown element (CardKit updates address it by this id).
STATUS_ELEMENT = "status"
#: Step states as shown.
STEP_MARKS = {"running": "⏳", "done": "✅", "failed": "❌"}


def render_answer(text: str, footer: str, limit: int = LARK_TEXT_CHARS) -> list[str]:
    """An answer as Markdown pieces of at most ``limit`` characters, the footer after it.

    Args:
        text: The agent's answer in Markdown (may be empty).
        footer: One line (duration, tokens, cost), or empty.
        limit: Most characters per piece.

    Returns:
        The pieces in posting order; empty only when both are empty. The footer ends
        the last piece when it fits there; else it is a piece of its own.
    """
    return with_footer(split_markdown(text, limit), footer, limit)


def summary_line(view: RunView) -> str:
    """``state · elapsed``, with tokens and cost on the final view when reported."""
    if view.final and view.usage is not None:
        return f"{view.state} · {footer_line(view).removeprefix('— ')}"
    return f"{view.state} · {format_duration(view.elapsed_s)}"


def render_status(view: RunView) -> str:
    """The status card's Markdown, at most :data:`LARK_TEXT_CHARS` characters.

    Returns:
        Lines: ``**coder** · working · 1m05s``, the plan as ``☑``/``▶``/``☐``
        items, ``… 5 earlier steps``, one line per step with its mark
        (:data:`STEP_MARKS`) and detail, and the notice. In the final view a step
        still running is shown done when the run is ``done``, else failed.
    """
    lines = [f"**{view.agent}** · {summary_line(view)}"]
    lines += _plan_lines(view.plan)
    if view.earlier_steps:
        lines.append(f"*… {view.earlier_steps} earlier steps*")
    closed = "done" if view.state == "done" else "failed"
    for step in view.steps:
        detail = f" ({step.detail})" if step.detail else ""
        state = closed if view.final and step.state == "running" else step.state
        lines.append(f"{STEP_MARKS.get(state, '❔')} {step.title}{detail}")
    if view.notice:
        lines.append(f"💬 {view.notice}")
    text = "\n".join(lines)
    return text if len(text) <= LARK_TEXT_CHARS else text[:LARK_TEXT_CHARS - 1] + "…"


def _plan_lines(items: tuple[PlanItem, ...]) -> list[str]:
    """At most :data:`MAX_PLAN_ITEMS` items (see :func:`bridge.run_view.plan_window`)."""
    window = plan_window(items, MAX_PLAN_ITEMS)
    lines = [f"*… {window.earlier} earlier*"] if window.earlier else []
    for item in window.shown:
        box = "☑" if item.done else ("▶" if item.active else "☐")
        lines.append(f"{box} {shorten(item.text)}")
    if window.later:
        lines.append(f"*… +{window.later} more*")
    return lines


def button(label: str, value: Mapping[str, str], *, name: str = "",
           danger: bool = True) -> dict[str, Any]:
    """A card 2.0 button whose click comes back as a ``card.action.trigger`` callback
    carrying ``value`` and ``name`` (docs "card JSON 2.0 button": ``behaviors`` of type
    ``callback``; the callback's ``action.name`` is the button's ``name``)."""
    named = {"name": name} if name else {}
    return {"tag": "button", **named, "text": {"tag": "plain_text", "content": label},
            "type": "danger" if danger else "default",
            "behaviors": [{"type": "callback", "value": dict(value)}]}


def card(markdown: str, *, buttons: Sequence[dict[str, Any]] = (), streaming: bool = False,
         summary: str = "") -> dict[str, Any]:
    """A JSON 2.0 card: one Markdown element (id :data:`STATUS_ELEMENT`), then the buttons.

    Args:
        markdown: The text.
        buttons: From :func:`button`.
        streaming: Open the card in streaming mode (CardKit updates its text in place).
        summary: The chat list's preview of the card (empty: the platform's default).
    """
    config: dict[str, Any] = {"update_multi": True}
    if streaming:
        config["streaming_mode"] = True
    if summary:
        config["summary"] = {"content": summary[:100]}
    elements: list[dict[str, Any]] = [{"tag": "markdown", "element_id": STATUS_ELEMENT,
                                       "content": markdown}]
    elements += buttons
    return {"schema": "2.0", "config": config, "body": {"elements": elements}}


def post_content(markdown: str) -> str:
    """A rich-text ``post`` message's content: one paragraph with one ``md`` element."""
    return json.dumps({"zh_cn": {"title": "", "content": [[{"tag": "md", "text": markdown}]]}},
                      ensure_ascii=False)


def text_content(text: str) -> str:
    """A ``text`` message's content."""
    return json.dumps({"text": text}, ensure_ascii=False)


def card_content(card_json: Mapping[str, Any]) -> str:
    """An ``interactive`` message's content for a card sent inline."""
    return json.dumps(card_json, ensure_ascii=False)


def card_ref_content(card_id: str) -> str:
    """An ``interactive`` message's content showing a CardKit card (docs cardkit "send card")."""
    return json.dumps({"type": "card", "data": {"card_id": card_id}})
