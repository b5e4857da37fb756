"""What Slack shows for a run: mrkdwn answers in pieces, the status message and its blocks.

Slack's message ``text`` is *mrkdwn*, not CommonMark (docs.slack.dev
messaging/formatting-message-text): ``*bold*``, ``_italic_``, ``~strike~``,
``<url|label>``, ``<@U…>``; ``&``, ``<`` and ``>`` are control characters sent as
``&amp;``, ``&lt;`` and ``&gt;``. Agents write CommonMark, so answers go through
:func:`to_mrkdwn` first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markdown_to_mrkdwn import SlackMarkdownConverter

from bridge.agent import PlanItem
from bridge.chunking import split_markdown, split_message, with_footer
from bridge.model import Control
from bridge.run_status import footer_line, format_duration, shorten
from bridge.run_view import RunView, plan_window

#: Splits an answer into pieces that keep code fences balanced (the shared splitter).
split_answer = split_markdown

#: Characters per message text: Slack truncates ``text`` over 40,000 characters and
#: advises at most 4,000 (docs.slack.dev changelog 2018-04, "truncating really long
#: messages"); a margin under that.
SLACK_TEXT_CHARS = 3900
#: Characters of mrkdwn in one ``section`` block's text (docs.slack.dev
#: reference/block-kit/blocks/section-block: ``text`` "maximum length is 3000").
SECTION_TEXT_CHARS = 3000
#: Blocks in one message (docs.slack.dev reference/block-kit/blocks: "up to 50 blocks").
MAX_BLOCKS = 50
#: Characters of an idempotency key (:meth:`bridge.platform.ChatClient.post`).
MAX_KEY_CHARS = 200
#: ``metadata.event_type`` of the answer pieces the bridge posts.
PIECE_EVENT = "bridge_piece"
#: Plan items shown in the status message (the others are counted).
MAX_PLAN_ITEMS = 12

#: Step states as shown (Slack emoji codes).
STEP_MARKS = {"running": ":hourglass_flowing_sand:", "done": ":white_check_mark:",
              "failed": ":x:"}

_FENCE_OPEN = re.compile(r"^ {0,3}(?P<run>`{3,}|~{3,})(?P<info>.*)$")
_INLINE_CODE = re.compile(r"(?<!`)(?P<run>`+)(?P<code>[^`].*?)(?<!`)(?P=run)(?!`)")
#: What Slack parses inside ``<…>`` and the bridge lets through: user and channel
#: mentions, user groups, dates and links (not ``<!here>``/``<!channel>`` broadcasts).
_SLACK_TOKEN = re.compile(
    r"<(?:[@#][A-Z0-9]+|!subteam\^[A-Z0-9]+|!date\^[^<>\n]+"
    r"|(?:https?|mailto):[^\s<>|]+)(?:\|[^<>\n]*)?>")
#: A lone ``*`` between spaces (``n * m``): the library would read it as italics.
_LONE_STAR = re.compile(r"(?<=\S )\*(?= )")
_QUOTE_PREFIX = re.compile(r"^(?:[ \t]*>)+")
_SAVED = re.compile("\ue000(\\d+)\ue001")


def escape(text: str) -> str:
    """``text`` with Slack's control characters ``&``, ``<``, ``>`` as entities.

    Source: docs.slack.dev messaging/formatting-message-text, "Escaping text".
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """CommonMark-ish Markdown (what agents write) as Slack mrkdwn.

    The formatting is converted by ``markdown_to_mrkdwn`` (bold, italics, strike,
    links, headings as bold lines, lists, tables). Around it this adds what the
    library misses:

    - Code fences (```` ``` ```` or ``~~~``, any info string, unclosed ones too)
      and inline code spans keep their text unconverted. Fences are written
      bare: Slack shows a language tag as the block's first line
      (integrations/slack#404).
    - ``&``, ``<`` and ``>`` are escaped everywhere, code included (Slack decodes
      the entities in the whole text, so a ``<!channel>`` in code stays inert),
      except in mentions and links already in Slack's ``<…>`` form and in
      leading ``>`` quote markers.
    - A lone ``*`` between spaces (``n * m``) stays an asterisk.

    Args:
        markdown: The agent's text, any length.

    Returns:
        The mrkdwn text, with leading and trailing whitespace removed.
    """
    saved: list[str] = []

    def save(text: str) -> str:
        saved.append(text)
        return f"\ue000{len(saved) - 1}\ue001"

    lines: list[str] = []
    source = markdown.split("\n")
    index = 0
    while index < len(source):
        opening = _FENCE_OPEN.match(source[index])
        if opening and not (opening["run"][0] == "`" and "`" in opening["info"]):
            run = opening["run"]
            close = re.compile(rf"^ {{0,3}}{re.escape(run[0])}{{{len(run)},}}\s*$")
            end = next((i for i in range(index + 1, len(source)) if close.match(source[i])),
                       len(source))
            body = [escape(line) for line in source[index + 1:end]]
            lines.append(save("\n".join(["```", *body, "```"])))
            index = end + 1
            continue
        lines.append(_protect_line(source[index], save))
        index += 1
    converted = SlackMarkdownConverter().convert("\n".join(lines))
    return _SAVED.sub(lambda m: saved[int(m[1])], converted).strip()


def _protect_line(line: str, save: Callable[[str], str]) -> str:
    """One line outside code fences: code spans, Slack tokens and lone stars saved, rest escaped."""
    line = _INLINE_CODE.sub(lambda m: save(f"`{escape(_span_text(m))}`"), line)
    line = _SLACK_TOKEN.sub(lambda m: save(m[0]), line)
    line = _LONE_STAR.sub(lambda m: save("*"), line)
    quote = _QUOTE_PREFIX.match(line)
    prefix = quote[0] if quote else ""
    return prefix + escape(line[len(prefix):])


def _span_text(match: re.Match[str]) -> str:
    """An inline code span's text (CommonMark strips one space each side of ``` `` x `` ```)."""
    code = match["code"]
    if len(match["run"]) > 1 and code.startswith(" ") and code.endswith(" ") and code.strip():
        code = code[1:-1]
    return code


def render_answer(text: str, footer: str, limit: int = SLACK_TEXT_CHARS) -> list[str]:
    """An answer as mrkdwn pieces of at most ``limit`` characters, the footer after it.

    The footer ends the last piece after a blank line when it fits there; else it
    is a piece of its own. An empty answer is its footer alone.

    Args:
        text: The agent's answer in Markdown (may be empty).
        footer: One line, already mrkdwn (e.g. ``_12s · 1,234 tokens_``), or empty.
        limit: Most characters per piece.

    Returns:
        The pieces in posting order; empty only when both are empty.
    """
    return with_footer(split_answer(to_mrkdwn(text), limit), footer, limit)


def summary_line(view: RunView) -> str:
    """``state · elapsed``, with tokens and cost on the final view when reported.

    Returns:
        Plain text, e.g. ``working · 1m05s`` or ``done · 42s · 1,234 tokens · $0.0123``.
    """
    if view.final and view.usage is not None:
        return f"{view.state} · {footer_line(view).removeprefix('— ')}"
    return f"{view.state} · {format_duration(view.elapsed_s)}"


def render_status_text(view: RunView) -> str:
    """The status message of a run as mrkdwn, at most :data:`SLACK_TEXT_CHARS` characters.

    Args:
        view: A snapshot of the run.

    Returns:
        Lines: ``*coder* · working · 1m05s``, the plan as ``☑``/``▶``/``☐`` items,
        ``_… 5 earlier steps_``, one line per step with its mark
        (:data:`STEP_MARKS`) and detail, ``:information_source: <notice>``. In
        the final view a step still ``running`` is marked done when the run is
        ``done``, else failed (a stopped run killed it), as the streamed status
        closes its tasks (:meth:`adapters.chat.slack.stream.StatusStream.final`).
    """
    lines = [f"*{escape(view.agent)}* · {escape(summary_line(view))}"]
    lines += _plan_lines(view.plan)
    if view.earlier_steps:
        lines.append(f"_… {view.earlier_steps} earlier steps_")
    closed = "done" if view.state == "done" else "failed"
    for step in view.steps:
        detail = f" ({escape(step.detail)})" if step.detail else ""
        state = closed if view.final and step.state == "running" else step.state
        mark = STEP_MARKS.get(state, ":grey_question:")
        lines.append(f"{mark} {escape(step.title)}{detail}")
    if view.notice:
        lines.append(f":information_source: {escape(view.notice)}")
    return _truncate("\n".join(lines), SLACK_TEXT_CHARS)


def _plan_lines(items: tuple[PlanItem, ...]) -> list[str]:
    """At most :data:`MAX_PLAN_ITEMS` items (see :func:`bridge.run_view.plan_window`)."""
    window = plan_window(items, MAX_PLAN_ITEMS)
    lines = [f"_… {window.earlier} earlier_"] if window.earlier else []
    for item in window.shown:
        box = "☑" if item.done else ("▶" if item.active else "☐")
        lines.append(f"{box} {escape(shorten(item.text))}")
    if window.later:
        lines.append(f"_… +{window.later} more_")
    return lines


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with ``…``, never inside an ``&…;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def status_blocks(text: str, controls: Sequence[Control]) -> list[dict[str, Any]]:
    """Block Kit for a message with buttons (a run's status with its Stop button).

    Args:
        text: mrkdwn (see :func:`render_status_text`); split over several
            ``section`` blocks of at most :data:`SECTION_TEXT_CHARS` characters.
        controls: The buttons (``action_id`` is the control's name, ``value``
            what a click reports back); a ``stop`` button is styled ``danger``.
            None: text only.

    Returns:
        ``section`` blocks, then one ``actions`` block with the buttons when
        there are any; at most :data:`MAX_BLOCKS` blocks (docs
        reference/block-kit/blocks).
    """
    room = MAX_BLOCKS - (1 if controls else 0)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": part}}
        for part in split_message(text, SECTION_TEXT_CHARS)[:room]]
    buttons: list[dict[str, Any]] = []
    for control in controls:
        button = {"type": "button", "action_id": control.name,
                  "text": {"type": "plain_text", "text": control.label},
                  "value": control.value}
        if control.name == "stop":
            button["style"] = "danger"
        buttons.append(button)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def answer_metadata(key: str) -> dict[str, Any]:
    """The ``metadata`` argument of ``chat.postMessage`` carrying a piece's idempotency key.

    Args:
        key: The piece's idempotency key (1 to :data:`MAX_KEY_CHARS` characters).

    Returns:
        ``{"event_type": "bridge_piece", "event_payload": {"key": key}}``
        (docs.slack.dev messaging/message-metadata).

    Raises:
        ValueError: when ``key`` is empty or too long.
    """
    if not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"an idempotency key has 1 to {MAX_KEY_CHARS} characters, "
                         f"got {len(key)}")
    return {"event_type": PIECE_EVENT, "event_payload": {"key": key}}


def key_of(message: Mapping[str, Any]) -> str | None:
    """The idempotency key a message from the Web API carries, if the bridge posted it.

    Args:
        message: A message as ``conversations.replies``/``.history`` return it;
            they include ``metadata`` (``{event_type, event_payload}``) only when
            called with ``include_all_metadata=true``.

    Returns:
        The key from :func:`answer_metadata`, or None.
    """
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != PIECE_EVENT:
        return None
    payload = metadata.get("event_payload")
    key = payload.get("key") if isinstance(payload, Mapping) else None
    return key if isinstance(key, str) and key else None
