"""Agent kind ``codex``: the OpenAI Codex CLI, ``codex exec --json``.

A run is ``codex exec --json --skip-git-repo-check --cd WS --sandbox MODE
[--image=IMG ...] [extra_args] -`` with the prompt on stdin (closed after it);
a follow-up adds ``resume THREAD_ID`` before the ``-``. The child gets
``CODEX_HOME`` (isolated per agent, created) and ``CODEX_API_KEY`` when a model
key is configured, plus the configured ``env``; nothing else of the bridge's
environment but :data:`adapters.agents.childenv.BASE_ENV`.

:class:`CodexTranslator` maps the JSON lines to typed events:

- ``thread.started`` -> SessionStarted(thread_id)
- ``item.*`` for ``command_execution``, ``file_change``, ``mcp_tool_call``,
  ``web_search`` -> ToolStarted / ToolFinished (a step seen only completed gets both)
- ``agent_message`` (completed) -> TextDelta; the last one is the answer
- ``todo_list`` -> Plan; ``error`` item and top-level ``error`` -> Notice (not fatal)
- ``turn.completed`` -> Usage, then RunDone(answer, thread id)
- ``turn.failed`` -> RunFailed(error message)
- ``reasoning``, ``turn.started`` and anything unknown -> nothing
"""

from __future__ import annotations

import json
import shlex
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

#: Item types shown as tool steps.
TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")
_SHELLS = {"bash", "sh", "zsh", "dash"}


def command_title(command: Any) -> str:
    """The command a ``command_execution`` ran, without a ``bash -lc`` wrapper, on one line."""
    if isinstance(command, list):
        argv = [str(part) for part in command]
    else:
        text = str(command or "")
        try:
            argv = shlex.split(text)
        except ValueError:
            return shorten(text)
    if len(argv) == 3 and Path(argv[0]).name in _SHELLS and argv[1] in ("-c", "-lc"):
        return shorten(argv[2])
    return shorten(" ".join(argv))


class CodexTranslator:
    """Translates ``codex exec --json`` events (see the module docstring).

    Args:
        cwd: The run's workspace, to show file paths relative to it.
    """

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd
        self._session: str | None = None
        self.answer = ""
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._unnamed = 0
        self._done = False

    @property
    def session_id(self) -> str | None:
        """The thread id, once ``thread.started`` was seen."""
        return self._session

    def feed(self, event: Mapping[str, Any]) -> list[AgentEvent]:
        """Return the events for one JSON object."""
        if self._done:
            return []
        kind = event.get("type")
        if kind == "thread.started":
            thread = event.get("thread_id")
            found = session_event(thread if isinstance(thread, str) else None, self._session)
            if found:
                self._session = str(thread)
            return found
        if kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, Mapping):
                return self._item(str(kind).split(".")[1], item)
            return []
        if kind == "turn.completed":
            self._done = True
            usage = event.get("usage") if isinstance(event.get("usage"), Mapping) else {}
            assert isinstance(usage, Mapping)
            return [Usage(input_tokens=_int(usage.get("input_tokens")),
                          output_tokens=_int(usage.get("output_tokens"))),
                    RunDone(self.answer, self._session)]
        if kind == "turn.failed":
            self._done = True
            return [RunFailed(_error_text(event.get("error")) or "codex turn failed",
                              self._session)]
        if kind == "error":
            text = _error_text(event) or "error"
            return [Notice(shorten(f"codex: {text}", 300))]
        return []

    def _item(self, phase: str, item: Mapping[str, Any]) -> list[AgentEvent]:
        item_type = item.get("type") or item.get("item_type")
        item_id = str(item.get("id") or "")
        if item_type in TOOL_ITEMS:
            return self._tool(phase, item_id, str(item_type), item)
        if item_type in ("agent_message", "assistant_message"):
            text = item.get("text")
            if phase == "completed" and isinstance(text, str) and text:
                self.answer = text
                return [TextDelta(text)]
            return []
        if item_type == "todo_list":
            entries = item.get("items")
            if not isinstance(entries, list):
                return []
            return [Plan(tuple(PlanItem(shorten(str(e.get("text", "")), 120),
                                        done=bool(e.get("completed")))
                               for e in entries if isinstance(e, Mapping)))]
        if item_type == "error" and phase == "completed":
            return [Notice(shorten(f"codex: {item.get('message', '')}", 300))]
        return []

    def _tool(self, phase: str, item_id: str, item_type: str,
              item: Mapping[str, Any]) -> list[AgentEvent]:
        if not item_id:
            self._unnamed += 1
            item_id = f"{item_type}-{self._unnamed}"
        if item_id in self._finished:
            return []
        events: list[AgentEvent] = []
        if item_id not in self._started:
            self._started.add(item_id)
            events.append(ToolStarted(item_id, self._title(item_type, item)))
        if phase == "completed":
            self._finished.add(item_id)
            ok, detail = self._outcome(item_type, item)
            events.append(ToolFinished(item_id, ok, detail))
        return events

    def _title(self, item_type: str, item: Mapping[str, Any]) -> str:
        if item_type == "command_execution":
            return command_title(item.get("command"))
        if item_type == "file_change":
            changes = item.get("changes")
            paths = [short_path(str(c.get("path", "")), self.cwd, 40)
                     for c in (changes if isinstance(changes, list) else [])
                     if isinstance(c, Mapping)]
            return shorten("edit " + (", ".join(paths) or "files"))
        if item_type == "mcp_tool_call":
            return shorten(f"{item.get('server', '?')}.{item.get('tool', '?')}")
        return shorten(f"search: {item.get('query', '')}")

    @staticmethod
    def _outcome(item_type: str, item: Mapping[str, Any]) -> tuple[bool, str]:
        status = str(item.get("status") or "completed")
        if item_type == "command_execution":
            code = item.get("exit_code")
            ok = status == "completed" and code in (0, None)
            return ok, (f"exit {code}" if isinstance(code, int) else status)
        if item_type == "mcp_tool_call" and item.get("error"):
            return False, shorten(_error_text(item.get("error")), 80)
        return status == "completed", ("" if status == "completed" else status)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _error_text(error: Any) -> str:
    """One line from an error object or text; a JSON API error body gives its message."""
    if isinstance(error, Mapping):
        error = error.get("message") or error.get("error") or ""
    if isinstance(error, Mapping):
        return _error_text(error)
    text = str(error or "")
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, Mapping) and body.get("error"):
            return _error_text(body)
    return shorten(text, 300)


class CodexAgent:
    """Runs the Codex CLI per run.

    Args:
        settings: The agent's table (kind ``codex``).
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def argv(self, context: RunContext) -> list[str]:
        """The command line of one run (the prompt goes on stdin: the final ``-``)."""
        s = self.settings
        argv = [s.binary or "codex", "exec"]
        if not context.session_id:
            argv += [f"--image={image}" for image in context.images]
        argv += ["--json", "--skip-git-repo-check", "--cd", str(context.workspace),
                 "--sandbox", s.sandbox, *s.extra_args]
        if context.session_id:
            argv += ["resume", *(f"--image={image}" for image in context.images),
                     context.session_id]
        return [*argv, "-"]

    def env(self) -> dict[str, str]:
        """The child's environment (contains the model key: never log it)."""
        s = self.settings
        extra = {"CODEX_HOME": str(self.home())}
        if s.model_api_key is not None:
            extra["CODEX_API_KEY"] = s.model_api_key.reveal()
        extra.update((name, value.reveal()) for name, value in s.env)
        return child_env(extra)

    def home(self) -> Path:
        """The agent's CODEX_HOME."""
        return self.settings.codex_home or Path.home() / ".codex"

    def start(self, prompt: Prompt, context: RunContext) -> JsonlRun:
        """Start ``codex exec`` in the run's workspace.

        Raises:
            OSError: when the binary cannot be started or CODEX_HOME cannot be created.
        """
        self.home().mkdir(parents=True, exist_ok=True)
        s = self.settings
        return JsonlRun("codex", self.argv(context), prompt.render(), context.workspace,
                        self.env(), CodexTranslator(context.workspace),
                        grace_s=s.stop_grace_s, idle_timeout_s=s.idle_timeout_s,
                        max_answer_chars=s.max_output_bytes, run_id=context.run_id,
                        on_spawn=context.on_spawn)
