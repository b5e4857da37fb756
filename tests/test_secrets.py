"""Tests of bridge.secrets: resolving references, hiding values, redacting logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from bridge.secrets import (
    MAX_TOKENS,
    REDACTED,
    RedactingFilter,
    Secret,
    SecretError,
    redact,
    register_secret,
    resolve_secret,
)


class Collect(logging.Handler):
    """A handler that keeps each formatted record."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SECRET_TEST", "fak_env_value_1")
    secret = resolve_secret("env:BRIDGE_SECRET_TEST")
    assert secret.reveal() == "fak_env_value_1"
    assert secret.source == "env:BRIDGE_SECRET_TEST"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_env_reference_unset_or_empty(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("BRIDGE_SECRET_UNSET", raising=False)
    else:
        monkeypatch.setenv("BRIDGE_SECRET_UNSET", value)
    with pytest.raises(SecretError, match="BRIDGE_SECRET_UNSET"):
        resolve_secret("env:BRIDGE_SECRET_UNSET")


def test_file_reference_absolute_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("  fak_file_value_2\n\n", encoding="utf-8")
    secret = resolve_secret(f"file:{path}")
    assert secret.reveal() == "fak_file_value_2"
    assert secret.source == f"file:{path}"


def test_file_reference_relative_to_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "key").write_text("fak_relative_3", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # "key" does not exist in the cwd
    assert resolve_secret("file:key", tmp_path / "conf").reveal() == "fak_relative_3"
    with pytest.raises(SecretError):
        resolve_secret("file:key", tmp_path)


def test_file_reference_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_secret("file:nope", tmp_path)
    (tmp_path / "empty").write_text(" \n", encoding="utf-8")
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret("file:empty", tmp_path)


def test_literal_reference() -> None:
    secret = resolve_secret("fak_literal_value_4")
    assert secret.reveal() == "fak_literal_value_4"
    assert secret.source == "inline"


def test_repr_and_str_never_show_value() -> None:
    secret = Secret("fak_hidden_value_5", "env:X")
    assert "fak_hidden_value_5" not in repr(secret)
    assert "fak_hidden_value_5" not in str(secret)
    assert "fak_hidden_value_5" not in f"{secret!r} {[secret]} {secret}"
    assert repr(secret) == "Secret(env:X)"


def test_equality_by_value() -> None:
    assert Secret("fak_same_6", "a") == Secret("fak_same_6", "b")
    assert Secret("fak_same_6") != Secret("fak_other_6")
    assert len({Secret("fak_same_6"), Secret("fak_same_6")}) == 1


def test_redact_registered_values() -> None:
    Secret("fak_redact_me_7")
    register_secret("tok_registered_8")
    text = "a fak_redact_me_7 b tok_registered_8 c fak_redact_me_7"
    assert redact(text) == f"a {REDACTED} b {REDACTED} c {REDACTED}"
    assert redact("nothing here") == "nothing here"


def test_short_values_are_not_redacted() -> None:
    register_secret("abc")
    assert redact("abc abcd") == "abc abcd"


def test_longest_secret_redacted_first() -> None:
    register_secret("overlap_secret")
    register_secret("overlap_secret_longer")
    assert redact("x overlap_secret_longer y") == f"x {REDACTED} y"


def make_logger(name: str) -> tuple[logging.Logger, Collect]:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Collect()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers = [handler]
    return logger, handler


def test_filter_redacts_message_args() -> None:
    secret = resolve_secret("fak_in_args_9")
    logger, handler = make_logger("test_secrets.args")
    logger.info("key=%s count=%d", secret.reveal(), 3)
    assert handler.texts == [f"INFO key={REDACTED} count=3"]
    assert "fak_in_args_9" not in handler.texts[0]


def test_filter_redacts_exception_text() -> None:
    secret = resolve_secret("fak_in_exception_10")
    logger, handler = make_logger("test_secrets.exc")
    try:
        raise RuntimeError(f"login failed with {secret.reveal()}")
    except RuntimeError:
        logger.exception("failed for %s", secret.reveal())
    assert len(handler.texts) == 1
    text = handler.texts[0]
    assert "fak_in_exception_10" not in text
    assert text.count(REDACTED) == 2
    assert "RuntimeError: login failed with ***" in text


def test_filter_redacts_explicit_exc_info_tuple() -> None:
    secret = resolve_secret("fak_exc_info_11")
    logger, handler = make_logger("test_secrets.excinfo")
    try:
        raise ValueError(secret.reveal())
    except ValueError:
        info = sys.exc_info()
    logger.error("plain message", exc_info=info)
    text = handler.texts[0]
    assert "fak_exc_info_11" not in text
    assert "ValueError: ***" in text


def test_filter_keeps_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "hello world"


def test_tokens_are_bounded_but_lasting_secrets_stay() -> None:
    register_secret("lasting-secret-value-1")
    first = "token-000000-abcdef"
    register_secret(first, token=True)
    assert redact(f"a {first} b") == "a *** b"
    for i in range(1, MAX_TOKENS + 1):
        register_secret(f"token-{i:06d}-abcdef", token=True)
    assert redact(first) == first  # the oldest token was forgotten
    assert redact(f"token-{MAX_TOKENS:06d}-abcdef") == "***"
    assert redact("x lasting-secret-value-1 y") == "x *** y"
