"""Scripted stand-ins for the model endpoints the coding-agent CLIs call."""
