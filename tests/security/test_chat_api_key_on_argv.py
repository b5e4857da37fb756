"""API key on the command line: ``bin/bridge chat --api-key KEY`` showed the key to every user.

Any user of the machine reads another process's arguments (``ps``,
``/proc/<pid>/cmdline``), so a key given as ``--api-key fak_...`` leaked. The
option now takes ``env:NAME``, ``file:PATH`` or ``-`` (standard input) and
refuses anything else, without repeating it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.chat.fabric.chat import read_api_key
from adapters.chat.fabric.devguild import DevGuild
from bridge.secrets import SecretError
from tests.support import write_config

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = [sys.executable, str(ROOT / "bin" / "bridge")]


def chat(config: Path, *args: str, stdin: str = "",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, "chat", "-c", str(config), "--history", "0", *args],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False,
                          env=env)


def contents_by(guild: DevGuild, user: str) -> list[str]:
    return [m["content"] for m in guild.state.messages(guild.channel_id("general"))
            if m["authorUserId"] == guild.user_id(user)]


def test_literal_key_on_argv_is_refused_without_being_repeated(tmp_path: Path,
                                                               devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url).path
    result = chat(config, "--as", "bob", "--api-key", "fak_dev_bob", "general",
                  stdin="posted with a key on argv\n")
    assert result.returncode == 1
    assert "not the key itself" in result.stderr
    assert "fak_dev_bob" not in result.stderr + result.stdout
    assert contents_by(devguild, "bob") == []


def test_key_from_stdin_then_the_lines_to_post(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url).path
    result = chat(config, "--as", "bob", "--api-key", "-", "general",
                  stdin="fak_dev_bob\nhello from stdin\n")
    assert result.returncode == 0, result.stderr
    assert contents_by(devguild, "bob") == ["hello from stdin"]
    assert "fak_dev_bob" not in result.stderr + result.stdout


def test_key_from_env_and_file_references(tmp_path: Path, devguild: DevGuild) -> None:
    config = write_config(tmp_path, devguild.center_url).path
    env = {**os.environ, "CHAT_TEST_KEY": "fak_dev_bob"}
    assert chat(config, "--as", "bob", "--api-key", "env:CHAT_TEST_KEY", "general",
                stdin="from env\n", env=env).returncode == 0
    (tmp_path / "bob.key").write_text("fak_dev_bob\n", encoding="utf-8")
    assert chat(config, "--as", "bob", "--api-key", f"file:{tmp_path / 'bob.key'}", "general",
                stdin="from file\n").returncode == 0
    assert contents_by(devguild, "bob") == ["from env", "from file"]


def test_read_api_key() -> None:
    stdin = io.StringIO("fak_from_stdin_1\nfirst line to post\n")
    assert read_api_key("-", stdin).reveal() == "fak_from_stdin_1"
    assert stdin.read() == "first line to post\n"  # the rest is left for posting
    with pytest.raises(SecretError, match="no key on standard input"):
        read_api_key("-", io.StringIO(""))
    with pytest.raises(SecretError, match="not the key itself") as refused:
        read_api_key("fak_literal_key_9", io.StringIO())
    assert "fak_literal_key_9" not in str(refused.value)
    with pytest.raises(SecretError, match="CHAT_TEST_UNSET_KEY"):
        read_api_key("env:CHAT_TEST_UNSET_KEY", io.StringIO())


def test_help_documents_the_references() -> None:
    result = subprocess.run([*BRIDGE, "chat", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "env:NAME" in text and "file:PATH" in text and "- (standard input" in text
