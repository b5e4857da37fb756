"""The engage gate: does a message start (or join) a run, or is it context?"""

from __future__ import annotations

from bridge.messages import Inbound

#: Channel types where every message engages (Fabric plugins: any message in a dm).
ALWAYS_ENGAGE_X_TYPES = frozenset({"dm"})


def engages(message: Inbound) -> bool:
    """Return True when the message should engage the agent.

    The rule of Fabric's own plugins: engage on ``wakeup`` or on any message
    in a ``dm``; every other message is kept as context for the next prompt.

    Args:
        message: The accepted message.
    """
    if message.stale:
        return False
    return message.wakeup or message.x_type in ALWAYS_ENGAGE_X_TYPES
