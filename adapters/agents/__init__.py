"""Agent kinds: echo, command, codex and claude."""

from __future__ import annotations

import os
import shutil

from adapters.agents.claude import ClaudeAgent, permission_problem
from adapters.agents.codex import CodexAgent
from adapters.agents.command import CommandAgent
from adapters.agents.echo import EchoAgent
from bridge.agent import Agent
from bridge.config import AgentSettings


def build_agent(settings: AgentSettings) -> Agent:
    """Return the agent implementation for one ``[agents.NAME]`` table.

    Raises:
        ValueError: for a kind this version cannot run.
    """
    if settings.kind == "echo":
        return EchoAgent()
    if settings.kind == "command":
        return CommandAgent(
            settings.command,
            stop_grace_s=settings.stop_grace_s,
            max_output_bytes=settings.max_output_bytes,
        )
    if settings.kind == "codex":
        return CodexAgent(settings)
    if settings.kind == "claude":
        return ClaudeAgent(settings)
    raise ValueError(f"agent {settings.name}: unknown kind {settings.kind!r}")


def agent_problems(settings: AgentSettings) -> list[str]:
    """What would stop this agent from running here (for ``doctor``); empty when fine.

    Checks that a codex/claude binary can be found and is executable, and that
    a claude permission mode is one Claude Code accepts for this user.
    """
    problems: list[str] = []
    if settings.kind in ("codex", "claude"):
        binary = settings.binary or settings.kind
        if "/" in binary:
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                problems.append(f"agent {settings.name}: binary {binary} is not an executable "
                                f"file")
        elif shutil.which(binary) is None:
            problems.append(f"agent {settings.name}: binary {binary!r} is not on PATH")
    if settings.kind == "claude":
        problem = permission_problem(settings)
        if problem:
            problems.append(problem)
    return problems


__all__ = ["ClaudeAgent", "CodexAgent", "CommandAgent", "EchoAgent", "agent_problems",
           "build_agent"]
