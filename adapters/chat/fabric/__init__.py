"""Fabric: the chat platform of Fabric guilds (REST, realtime socket, rules, dev guild)."""
