"""Chat platform adapters: Fabric, the in-memory platform; Slack and Lark (config only)."""
