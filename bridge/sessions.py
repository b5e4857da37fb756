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
    the sandbox and permission settings, and the extra CLI arguments. A session
    made under one fingerprint is never resumed under another.

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
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
    return digest[:16]
