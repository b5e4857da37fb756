"""bridge: lets members of a chat guild talk to coding agents.

The ``bridge`` package is the domain: configuration, messages, scope logic,
prompt building, chunking, the board, the TUI and the dev guild. It has no
actors of its own; those live in ``actors``. Platform wire formats live in
``adapters``.
"""

__version__ = "0.1.0"
