"""The example config in conf/ stays valid as the schema changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.compose import load_config

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_example_agents_config_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CODER_FABRIC_KEY", "CODEX_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, f"test-value-for-{name.lower()}")
    key = tmp_path / "reviewer.key"
    key.write_text("reviewer-secret-value\n")
    text = (CONF / "example-agents.toml").read_text().replace(
        "/etc/bridge/reviewer.key", str(key)).replace("/srv/work", str(tmp_path / "work"))
    (tmp_path / "work" / "repo").mkdir(parents=True)
    (tmp_path / "work" / "docs").mkdir()
    path = tmp_path / "example.toml"
    path.write_text(text)
    config = load_config(path)
    assert {a.kind for a in config.agents.values()} == {"codex", "claude"}
    assert config.agents["reviewer"].permission_mode == "default"
    assert [b.engage.mode for b in config.bindings] == ["addressed", "mention-sticky"]


def test_example_platforms_config_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {"CODEX_API_KEY": "test-codex-key", "CODER_FABRIC_KEY": "fak_test_coder",
              "CODER_SLACK_BOT_TOKEN": "xoxb-test-coder", "CODER_SLACK_APP_TOKEN": "xapp-test-c",
              "CODER_LARK_APP_ID": "cli_test_coder", "CODER_LARK_APP_SECRET": "test-lark-secret"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    text = (CONF / "example-platforms.toml").read_text().replace("/srv/work",
                                                                 str(tmp_path / "work"))
    (tmp_path / "work" / "repo").mkdir(parents=True)
    path = tmp_path / "example.toml"
    path.write_text(text)
    config = load_config(path)
    assert tuple(config.platforms) == ("fabric", "slack", "lark")
    coder = config.agents["coder"]
    assert all(coder.identity(name) is not None for name in ("fabric", "slack", "lark"))
    assert [(b.platform, b.space, b.scope) for b in config.bindings] == [
        ("fabric", "main", "channel"), ("slack", "workspace", "thread"),
        ("lark", "tenant", "thread")]


def test_default_config_uses_the_platform_tables() -> None:
    config = load_config()
    assert tuple(config.platforms) == ("fabric",)
    assert config.agents["echo"].identity("fabric") is not None
    assert [(b.platform, b.space, b.scope) for b in config.bindings] == [
        ("fabric", "dev", "channel")]
