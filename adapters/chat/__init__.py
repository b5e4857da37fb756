"""Chat platform adapters: Fabric (later Slack and Lark)."""
