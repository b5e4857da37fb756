"""Adapters: chat platforms (``adapters.chat``) and agent kinds (``adapters.agents``)."""
