"""Policy fingerprints: a session is only resumed under the policy it was made under."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bridge.config import AgentSettings


def policy_fingerprint(scope_key: str, agent: AgentSettings, workspace: Path) -> str:
    """A short hash of what a session's safety depends on.

    Covers the scope, the workspace's real path, the agent identity and kind,
    the sandbox, network access and permission settings, the extra CLI
    arguments, and the access policy (who may talk to the agent, where). A
    session made under one fingerprint is never resumed under another.

    Args:
        scope_key: The conversation.
        agent: The agent's settings.
        workspace: The workspace the run uses.

    Returns:
        16 hex characters.
    """
    parts = {
        "scope": scope_key,
        "workspace": os.path.realpath(workspace),
        "agent": agent.name,
        "kind": agent.kind,
        "sandbox": agent.sandbox,
        "permission_mode": agent.permission_mode,
        "allowed_tools": list(agent.allowed_tools),
        "extra_args": list(agent.extra_args),
        "network": network_access(agent),
        "access": agent.access.fingerprint(),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
    return digest[:16]


def network_access(agent: AgentSettings) -> bool:
    """Whether the agent's runs may reach the network, as far as the config says.

    ``danger-full-access`` has no sandbox; Codex's ``workspace-write`` sandbox
    opens the network when ``sandbox_workspace_write.network_access=true`` is
    among the extra arguments.
    """
    return agent.sandbox == "danger-full-access" or any(
        "network_access=true" in arg.replace(" ", "") for arg in agent.extra_args)
