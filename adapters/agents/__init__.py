"""Agent kinds: echo and command (later codex and claude)."""

from __future__ import annotations

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
    raise ValueError(f"agent {settings.name}: unknown kind {settings.kind!r}")


__all__ = ["CommandAgent", "EchoAgent", "build_agent"]
