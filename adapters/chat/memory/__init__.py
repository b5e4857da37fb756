"""The in-memory chat platform: a server held in memory and the chat port on it.

``server`` (spaces, channels, threads, members, messages, fault switches),
``client`` (a login session and outbound calls), ``intake`` (the connection's
intake), ``render`` (plain text under the limit) and ``platform`` (the port).
"""

from adapters.chat.memory.intake import mention
from adapters.chat.memory.platform import MemoryPlatform
from adapters.chat.memory.server import MemoryServer

__all__ = ["MemoryPlatform", "MemoryServer", "mention"]
