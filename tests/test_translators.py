"""The codex and claude translators on recorded JSON lines and on synthetic ones.

The ``tests/fixtures/*.jsonl`` files are stdout of the real CLIs (versions in
``tests/fakes/clis.py``) run against the scripted model endpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.agents.claude import ClaudeTranslator, tool_title
from adapters.agents.codex import CodexTranslator, command_title
from adapters.agents.jsonl import short_path, shorten
from bridge.agent import (
    AgentEvent,
    Notice,
    Plan,
    PlanItem,
    RunDone,
    RunFailed,
    SessionStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()
            if line.strip()]


def translate(translator: CodexTranslator | ClaudeTranslator,
              events: list[dict[str, Any]]) -> list[AgentEvent]:
    out: list[AgentEvent] = []
    for event in events:
        out += translator.feed(event)
    return out


# --- codex ---------------------------------------------------------------------------------

def test_codex_recorded_shell_run() -> None:
    recorded = lines("codex_shell.jsonl")
    thread = recorded[0]["thread_id"]
    events = translate(CodexTranslator(), recorded)
    assert events == [
        SessionStarted(thread),
        Notice("codex: Model metadata for `fake-model` not found. Defaulting to fallback "
               "metadata; this can degrade performance and cause issues."),
        ToolStarted("item_1", "echo tool-out-7"),
        ToolFinished("item_1", True, "exit 0"),
        TextDelta("Done."),
        Usage(input_tokens=240, output_tokens=60),
        RunDone("Done.", thread),
    ]


def test_codex_recorded_failed_turn_gives_the_api_message() -> None:
    recorded = lines("codex_failed.jsonl")
    events = translate(CodexTranslator(), recorded)
    assert events[-1] == RunFailed("scripted bad request", recorded[0]["thread_id"])
    # the top-level error before it is a notice, not the end
    assert Notice("codex: scripted bad request") in events[:-1]


def test_codex_ignores_unknown_events_items_and_fields() -> None:
    events = translate(CodexTranslator(), [
        {"type": "thread.started", "thread_id": "t-1", "extra": {"nested": [1, 2]}},
        {"type": "session.configured", "model": "x"},
        {"type": "item.completed", "item": {"id": "r1", "type": "reasoning", "text": "hmm"}},
        {"type": "item.completed", "item": {"id": "z", "type": "hologram", "beam": 3}},
        {"type": "item.started", "item": "not an object"},
        {"type": "item.completed"},
        {"type": 42},
        {"no_type": True},
        {"type": "item.completed", "item": {"id": "m", "type": "agent_message", "text": "hi",
                                            "new_field": "ignored"}},
        {"type": "turn.completed", "usage": {"input_tokens": 5, "output_tokens": 2,
                                             "brand_new_tokens": 9}},
    ])
    assert events == [SessionStarted("t-1"), TextDelta("hi"),
                      Usage(input_tokens=5, output_tokens=2), RunDone("hi", "t-1")]


def test_codex_last_agent_message_is_the_answer_and_tools_pair_up() -> None:
    events = translate(CodexTranslator(Path("/w")), [
        {"type": "thread.started", "thread_id": "t"},
        {"type": "item.completed", "item": {"id": "a", "type": "agent_message",
                                            "text": "Looking at the tests first."}},
        {"type": "item.started", "item": {"id": "c", "type": "command_execution",
                                          "command": "bash -lc 'pytest -x'",
                                          "status": "in_progress"}},
        {"type": "item.updated", "item": {"id": "c", "type": "command_execution",
                                          "command": "bash -lc 'pytest -x'"}},
        {"type": "item.completed", "item": {"id": "c", "type": "command_execution",
                                            "command": "bash -lc 'pytest -x'", "exit_code": 1,
                                            "status": "failed"}},
        {"type": "item.completed", "item": {"id": "f", "type": "file_change", "status":
                                            "completed", "changes": [
                                                {"path": "/w/src/app.py", "kind": "update"},
                                                {"path": "/w/tests/test_app.py",
                                                 "kind": "add"}]}},
        {"type": "item.started", "item": {"id": "m", "type": "mcp_tool_call", "server": "gh",
                                          "tool": "search", "status": "in_progress"}},
        {"type": "item.completed", "item": {"id": "m", "type": "mcp_tool_call", "server": "gh",
                                            "tool": "search", "status": "failed",
                                            "error": {"message": "rate limited"}}},
        {"type": "item.completed", "item": {"id": "w", "type": "web_search",
                                            "query": "pytest fixtures"}},
        {"type": "item.completed", "item": {"id": "b", "type": "agent_message",
                                            "text": "Fixed: the test passes now."}},
        {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 50,
                                             "output_tokens": 10}},
    ])
    assert events == [
        SessionStarted("t"),
        TextDelta("Looking at the tests first."),
        ToolStarted("c", "pytest -x"),
        ToolFinished("c", False, "exit 1"),
        ToolStarted("f", "edit src/app.py, tests/test_app.py"),
        ToolFinished("f", True, ""),
        ToolStarted("m", "gh.search"),
        ToolFinished("m", False, "rate limited"),
        ToolStarted("w", "search: pytest fixtures"),
        ToolFinished("w", True, ""),
        TextDelta("Fixed: the test passes now."),
        Usage(input_tokens=100, output_tokens=10),
        RunDone("Fixed: the test passes now.", "t"),
    ]


def test_codex_plan_notices_and_nothing_after_the_end() -> None:
    events = translate(CodexTranslator(), [
        {"type": "item.started", "item": {"id": "p", "type": "todo_list", "items": [
            {"text": "read the code", "completed": True},
            {"text": "fix the bug", "completed": False}]}},
        {"type": "error", "message": "Reconnecting... 2/5"},
        {"type": "item.completed", "item": {"id": "e", "type": "error",
                                            "message": "command output truncated"}},
        {"type": "turn.failed", "error": {"message": "stream disconnected"}},
        {"type": "turn.completed", "usage": {}},
        {"type": "item.completed", "item": {"id": "x", "type": "agent_message", "text": "late"}},
    ])
    assert events == [
        Plan((PlanItem("read the code", done=True), PlanItem("fix the bug"))),
        Notice("codex: Reconnecting... 2/5"),
        Notice("codex: command output truncated"),
        RunFailed("stream disconnected", None),
    ]


def test_codex_old_item_type_field_and_declined_command() -> None:
    events = translate(CodexTranslator(), [
        {"type": "item.completed", "item": {"id": "1", "item_type": "command_execution",
                                            "command": ["ls", "-la"], "status": "declined"}},
        {"type": "item.completed", "item": {"id": "2", "item_type": "assistant_message",
                                            "text": "ok"}},
    ])
    assert events == [ToolStarted("1", "ls -la"), ToolFinished("1", False, "declined"),
                      TextDelta("ok")]


@pytest.mark.parametrize(("command", "title"), [
    ("/bin/bash -lc 'echo hello'", "echo hello"),
    ("bash -c \"cd src && make\"", "cd src && make"),
    (["/usr/bin/zsh", "-lc", "ls\n-la"], "ls -la"),
    ("python3 -m pytest", "python3 -m pytest"),
    ("echo 'unbalanced", "echo 'unbalanced"),
    ("x" * 200, "x" * 79 + "…"),
])
def test_command_title(command: Any, title: str) -> None:
    assert command_title(command) == title


# --- claude --------------------------------------------------------------------------------

def test_claude_recorded_shell_run() -> None:
    recorded = lines("claude_shell.jsonl")
    session = recorded[0]["session_id"]
    tool_id = recorded[1]["message"]["content"][0]["id"]
    events = translate(ClaudeTranslator(), recorded)
    assert events == [
        SessionStarted(session),
        ToolStarted(tool_id, "echo tool-out-7"),
        ToolFinished(tool_id, True, ""),
        TextDelta("Done."),
        Usage(input_tokens=240, output_tokens=60, cost_usd=recorded[-1]["total_cost_usd"],
              turns=2),
        RunDone("Done.", session),
    ]
    assert recorded[-1]["total_cost_usd"] > 0


def test_claude_recorded_api_error_fails_with_its_text() -> None:
    recorded = lines("claude_failed.jsonl")
    events = translate(ClaudeTranslator(), recorded)
    assert events[-1] == RunFailed("API Error: 400 scripted bad request",
                                   recorded[0]["session_id"])
    assert isinstance(events[-2], Usage)


def test_claude_ignores_unknown_events_blocks_and_fields() -> None:
    events = translate(ClaudeTranslator(), [
        {"type": "system", "subtype": "init", "session_id": "s-1", "brand_new": {"a": 1}},
        {"type": "system", "subtype": "hook_started", "session_id": "s-1"},
        {"type": "stream_event", "event": {"type": "content_block_delta"}},
        {"type": "rate_limit_event", "info": {}},
        {"type": "assistant", "message": {"content": [
            {"type": "thinking", "thinking": "let me think"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "image_gen", "prompt": "??"},
            "not a block",
            {"type": "text", "text": "Hello!", "citations": None}]}},
        {"type": "assistant", "message": "not an object"},
        {"type": "user", "message": {"content": "plain prompt text"}},
        {"type": "user", "message": {"content": [{"type": "tool_result",
                                                  "tool_use_id": "unknown", "content": "x"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "Hello!",
         "session_id": "s-1", "total_cost_usd": 0.5, "num_turns": 1, "whatever": [],
         "usage": {"input_tokens": 3, "cache_read_input_tokens": 4,
                   "cache_creation_input_tokens": 5, "output_tokens": 6}},
    ])
    assert events == [SessionStarted("s-1"), TextDelta("Hello!"),
                      Usage(input_tokens=12, output_tokens=6, cost_usd=0.5, turns=1),
                      RunDone("Hello!", "s-1")]


def test_claude_tools_plan_retry_and_errors() -> None:
    events = translate(ClaudeTranslator(Path("/w")), [
        {"type": "system", "subtype": "init", "session_id": "s"},
        {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10,
         "error_status": 529, "error": "overloaded"},
        {"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": "t1", "name": "TodoWrite", "input": {"todos": [
                {"content": "Run tests", "status": "completed"},
                {"content": "Fix bug", "status": "in_progress"},
                {"content": "Re-run", "status": "pending"}]}},
            {"type": "tool_use", "id": "t2", "name": "Read",
             "input": {"file_path": "/w/src/app.py"}},
            {"type": "tool_use", "id": "t3", "name": "Bash",
             "input": {"command": "pytest -q\n  tests/", "description": "run"}},
            {"type": "tool_use", "id": "t4", "name": "mcp__gh__search", "input": {"q": "bug"}},
        ]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "..."},
            {"type": "tool_result", "tool_use_id": "t3", "is_error": True,
             "content": "Claude requested permissions to use Bash"}]}},
        {"type": "result", "subtype": "error_max_turns", "is_error": True,
         "session_id": "s", "errors": ["max turns reached", "second"]},
        {"type": "result", "subtype": "success", "result": "late"},
    ])
    assert events == [
        SessionStarted("s"),
        Notice("claude: API retry 1/10 overloaded"),
        Plan((PlanItem("Run tests", done=True), PlanItem("Fix bug", active=True),
              PlanItem("Re-run"))),
        ToolStarted("t2", "read src/app.py"),
        ToolStarted("t3", "pytest -q tests/"),
        ToolStarted("t4", "mcp__gh__search bug"),
        ToolFinished("t2", True, ""),
        ToolFinished("t3", False, "error"),
        Usage(),
        RunFailed("max turns reached; second", "s"),
    ]


def test_claude_result_without_text_names_the_subtype() -> None:
    events = translate(ClaudeTranslator(), [
        {"type": "result", "subtype": "error_during_execution", "is_error": True}])
    assert events[-1] == RunFailed("claude ended with error_during_execution", None)


@pytest.mark.parametrize(("name", "tool_input", "title"), [
    ("Bash", {"command": "ls"}, "ls"),
    ("Edit", {"file_path": "/w/a/b.py", "old_string": "x"}, "edit a/b.py"),
    ("Write", {"file_path": "/elsewhere/c.txt"}, "write /elsewhere/c.txt"),
    ("Grep", {"pattern": "TODO", "path": "src"}, "grep TODO"),
    ("WebFetch", {"url": "https://example.org"}, "webfetch https://example.org"),
    ("Mystery", None, "Mystery"),
])
def test_claude_tool_titles(name: str, tool_input: Any, title: str) -> None:
    assert tool_title(name, tool_input, Path("/w")) == title


# --- shared --------------------------------------------------------------------------------

def test_short_path_cuts_the_front() -> None:
    assert short_path("/w/x.py", Path("/w")) == "x.py"
    long = "/very/" + "deep/" * 20 + "file.py"
    cut = short_path(long, None, 30)
    assert len(cut) == 30 and cut.startswith("…") and cut.endswith("file.py")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
event_types = st.sampled_from(["thread.started", "item.started", "item.updated",
                               "item.completed", "turn.completed", "turn.failed", "error",
                               "system", "assistant", "user", "result", "other"])


@given(st.lists(st.builds(lambda kind, body: {**body, "type": kind}, event_types,
                          st.dictionaries(st.sampled_from(
                              ["item", "message", "usage", "error", "thread_id", "session_id",
                               "subtype", "result", "is_error", "text", "content"]),
                              json_values, max_size=5)), max_size=12))
def test_translators_never_raise_and_end_at_most_once(events: list[dict[str, Any]]) -> None:
    for translator in (CodexTranslator(), ClaudeTranslator()):
        out = translate(translator, events)
        terminals = [e for e in out if isinstance(e, RunDone | RunFailed)]
        assert len(terminals) <= 1
        if terminals:
            assert out[-1] is terminals[0]
        for event in out:
            if isinstance(event, ToolStarted):
                assert "\n" not in event.title and len(event.title) <= 80


def test_shorten_collapses_whitespace() -> None:
    assert shorten("a\n  b\tc") == "a b c"
