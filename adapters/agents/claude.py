"""Agent kind ``claude``: the Claude Code CLI, ``claude -p --output-format stream-json``.

A run is ``claude -p --output-format stream-json --verbose [--allowedTools T ...]
--permission-mode MODE [--resume SESSION_ID] [extra_args]`` in the workspace,
with the prompt on stdin (closed after it). The child gets ``CLAUDE_CONFIG_DIR``
(isolated per agent, created), ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``
when configured, ``DISABLE_AUTOUPDATER=1`` and
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (no self-update, telemetry or
error reporting from a server; the agent's ``env`` may override them), plus the
configured ``env``.

Permission mode: ``permission_mode`` when set, else from ``sandbox``
(read-only -> ``default``: reads only, everything else is denied since ``-p``
cannot ask; workspace-write -> ``acceptEdits``: file edits and file-editing
shell commands such as ``touch`` inside the workspace, other commands only
through ``allowed_tools`` such as ``Bash(pytest:*)``; danger-full-access ->
``bypassPermissions``, which Claude Code refuses as root; see
:func:`permission_problem`).

:class:`ClaudeTranslator` maps the JSON lines to typed events:

- ``system``/``init`` -> SessionStarted(session_id); ``system``/``api_retry`` -> Notice
- ``assistant`` blocks: ``text`` -> TextDelta, ``tool_use`` -> ToolStarted (TodoWrite -> Plan),
  ``thinking`` -> nothing
- ``user`` blocks: ``tool_result`` -> ToolFinished(ok = not is_error)
- ``result`` -> Usage, then RunDone(result, session_id) on success, else RunFailed
- anything unknown -> nothing
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.agents.childenv import child_env
from adapters.agents.jsonl import JsonlRun, session_event, short_path, shorten
from bridge.agent import (
    AgentEvent,
    Notice,
    Plan,
    PlanItem,
    RunContext,
    RunDone,
    RunFailed,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from bridge.config import AgentSettings
from bridge.prompt import Prompt

#: Tools whose input names a file, and the verb shown for them.
_FILE_TOOLS = {"Read": "read", "Write": "write", "Edit": "edit", "MultiEdit": "edit",
               "NotebookEdit": "edit"}


def permission_problem(settings: AgentSettings, euid: int | None = None) -> str | None:
    """Why the agent's permission mode cannot work here, or None.

    Args:
        settings: A ``claude`` agent.
        euid: Effective user id to check for (default: this process's).
    """
    euid = os.geteuid() if euid is None else euid
    names = {name for name, _ in settings.env}
    if settings.permission_mode == "bypassPermissions" and euid == 0 and "IS_SANDBOX" not in names:
        return (f"agent {settings.name}: permission mode bypassPermissions (sandbox = "
                f"\"{settings.sandbox}\") is refused by Claude Code when running as root; "
                f"use permission_mode = \"acceptEdits\" with allowed_tools, or run as another user")
    return None


def tool_title(name: str, tool_input: Any, cwd: Path | None = None) -> str:
    """A short title for a ``tool_use`` block: the command, the file, the pattern."""
    data = tool_input if isinstance(tool_input, Mapping) else {}
    if name == "Bash":
        return shorten(str(data.get("command", "")) or "Bash")
    if name in _FILE_TOOLS:
        path = data.get("file_path") or data.get("notebook_path") or ""
        return shorten(f"{_FILE_TOOLS[name]} {short_path(str(path), cwd)}")
    keys = {"Glob": "pattern", "Grep": "pattern", "WebFetch": "url", "WebSearch": "query",
            "Task": "description", "Agent": "description"}
    if name in keys and data.get(keys[name]):
        return shorten(f"{name.lower()} {data[keys[name]]}")
    first = next((v for v in data.values() if isinstance(v, str) and v), "")
    return shorten(f"{name} {first}".strip())


class ClaudeTranslator:
    """Translates ``claude -p --output-format stream-json --verbose`` lines.

    Args:
        cwd: The run's workspace, to show file paths relative to it.
    """

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd
        self._session: str | None = None
        self._plans: set[str] = set()
        self._started: set[str] = set()
        self._done = False

    @property
    def session_id(self) -> str | None:
        """The session id, once seen."""
        return self._session

    def feed(self, event: Mapping[str, Any]) -> list[AgentEvent]:
        """Return the events for one JSON object."""
        if self._done:
            return []
        kind = event.get("type")
        events: list[AgentEvent] = []
        session = event.get("session_id")
        if isinstance(session, str) and session and kind in ("system", "result"):
            events += session_event(session, self._session)
            self._session = session
        if kind == "system":
            if event.get("subtype") == "api_retry":
                attempt, most = event.get("attempt", "?"), event.get("max_retries", "?")
                why = event.get("error") or event.get("error_status") or ""
                events.append(Notice(shorten(f"claude: API retry {attempt}/{most} {why}", 300)))
            return events
        message = event.get("message")
        blocks = message.get("content") if isinstance(message, Mapping) else None
        if kind == "assistant" and isinstance(blocks, list):
            for block in blocks:
                if isinstance(block, Mapping):
                    events += self._assistant_block(block)
            return events
        if kind == "user" and isinstance(blocks, list):
            for block in blocks:
                if isinstance(block, Mapping) and block.get("type") == "tool_result":
                    step = str(block.get("tool_use_id") or "")
                    if step in self._started:
                        self._started.discard(step)
                        error = bool(block.get("is_error"))
                        events.append(ToolFinished(step, not error, "error" if error else ""))
            return events
        if kind == "result":
            self._done = True
            return events + self._result(event)
        return events

    def _assistant_block(self, block: Mapping[str, Any]) -> list[AgentEvent]:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind != "tool_use":
            return []
        name = str(block.get("name") or "tool")
        step = str(block.get("id") or f"tool-{len(self._started) + len(self._plans)}")
        tool_input = block.get("input")
        if name == "TodoWrite" and isinstance(tool_input, Mapping):
            self._plans.add(step)
            todos = tool_input.get("todos")
            items = tuple(
                PlanItem(shorten(str(t.get("content", "")), 120),
                         done=t.get("status") == "completed",
                         active=t.get("status") == "in_progress")
                for t in (todos if isinstance(todos, list) else []) if isinstance(t, Mapping))
            return [Plan(items)]
        self._started.add(step)
        return [ToolStarted(step, tool_title(name, tool_input, self.cwd))]

    def _result(self, event: Mapping[str, Any]) -> list[AgentEvent]:
        usage = event.get("usage") if isinstance(event.get("usage"), Mapping) else {}
        assert isinstance(usage, Mapping)
        cost = event.get("total_cost_usd")
        turns = event.get("num_turns")
        events: list[AgentEvent] = [Usage(
            input_tokens=sum(_int(usage.get(k)) for k in (
                "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            turns=_int(turns))]
        result = event.get("result")
        if event.get("subtype") == "success" and not event.get("is_error"):
            events.append(RunDone(result if isinstance(result, str) else "", self._session))
            return events
        errors = event.get("errors")
        if isinstance(result, str) and result.strip():
            reason = result
        elif isinstance(errors, list) and errors:
            reason = "; ".join(str(e) for e in errors)
        else:
            reason = f"claude ended with {event.get('subtype') or 'an error'}"
        events.append(RunFailed(shorten(reason, 300), self._session))
        return events


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ClaudeAgent:
    """Runs the Claude Code CLI per run.

    Args:
        settings: The agent's table (kind ``claude``).
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def argv(self, context: RunContext) -> list[str]:
        """The command line of one run (the prompt goes on stdin)."""
        s = self.settings
        argv = [s.binary or "claude", "-p", "--output-format", "stream-json", "--verbose"]
        if s.allowed_tools:
            argv += ["--allowedTools", *s.allowed_tools]
        argv += ["--permission-mode", s.permission_mode or "acceptEdits"]
        if context.session_id:
            argv += ["--resume", context.session_id]
        return [*argv, *s.extra_args]

    def env(self) -> dict[str, str]:
        """The child's environment (contains the model key: never log it)."""
        s = self.settings
        extra = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        if s.config_dir is not None:
            extra["CLAUDE_CONFIG_DIR"] = str(s.config_dir)
        if s.model_api_key is not None:
            extra["ANTHROPIC_API_KEY"] = s.model_api_key.reveal()
        if s.model_base_url:
            extra["ANTHROPIC_BASE_URL"] = s.model_base_url
        extra.update((name, value.reveal()) for name, value in s.env)
        return child_env(extra)

    def start(self, prompt: Prompt, context: RunContext) -> JsonlRun:
        """Start ``claude -p`` in the run's workspace.

        Raises:
            OSError: when the binary cannot be started or the config folder cannot be created.
        """
        s = self.settings
        if s.config_dir is not None:
            s.config_dir.mkdir(parents=True, exist_ok=True)
        return JsonlRun("claude", self.argv(context), prompt.render(), context.workspace,
                        self.env(), ClaudeTranslator(context.workspace),
                        grace_s=s.stop_grace_s, idle_timeout_s=s.idle_timeout_s,
                        max_answer_chars=s.max_output_bytes, run_id=context.run_id,
                        on_spawn=context.on_spawn)
