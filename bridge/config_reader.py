"""Reading a parsed config file into :class:`bridge.config.Config`, key by key.

Every problem raises :class:`bridge.config.ConfigError` naming the file, the
line and the dotted key; the reader knows the file's text to find the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from bridge.config import (
    AGENT_KINDS,
    CLAUDE_MODE_FOR_SANDBOX,
    CLAUDE_PERMISSION_MODES,
    DEFAULT_MAX_FILE_BYTES,
    SANDBOX_MODES,
    SCOPE_GRAINS,
    AgentSettings,
    Binding,
    BridgeSettings,
    Config,
    ConfigError,
    PlatformSchema,
)
from bridge.engage import (
    DEFAULT_STICKY_S,
    ENGAGE_MODES,
    IGNORED_MODES,
    EngageRule,
    pattern_problem,
)
from bridge.policy import (
    DEFAULT_MAX_RUNS_PER_HOUR,
    DEFAULT_REFUSAL,
    SENDER_SCOPES,
    AccessPolicy,
    WorkspaceError,
    check_workspace,
)
from bridge.secrets import Secret, SecretError, resolve_reference, resolve_secret

#: Most worker threads ``[bridge] actor_threads`` may ask for.
MAX_ACTOR_THREADS = 256
#: Access and workspace policy keys every agent accepts (see :mod:`bridge.policy`).
_POLICY_KEYS = {"allowed_users", "admins", "allowed_channels", "sender_scope", "allow_bots",
                "max_runs_per_hour", "refusal", "workspaces", "workspace_roots"}
#: Keys of one ``[[bindings]]`` entry (besides the older names of ``space`` the
#: platforms declare).
_BINDING_KEYS = {"agent", "platform", "space", "scope", "channels", "exclude_channels",
                 "engage", "engage_pattern", "sticky_s", "ignored"}
#: Keys of an ``[agents.NAME]`` table (besides the platforms' identity tables and
#: the older identity keys they declare).
_AGENT_KEYS = {"kind", "workspace", "timeout_s", "stop_grace_s", "max_output_bytes",
               *_POLICY_KEYS}
#: A workspace alias name.
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CODING_KEYS = {"model_api_key", "sandbox", "idle_timeout_s", "binary", "extra_args", "env"}
_KIND_KEYS = {
    "echo": set(),
    "command": {"command"},
    "codex": _CODING_KEYS | {"codex_home"},
    "claude": _CODING_KEYS | {"permission_mode", "allowed_tools", "model_base_url",
                              "config_dir"},
}


def default_workspace(bridge: BridgeSettings, agent: str) -> Path:
    """The workspace of an agent without one: ``<state_dir>-workspaces/<agent>``.

    A sibling of the state dir, never inside it: a run's child processes can
    read whatever its workspace's neighbours hold, and the state dir holds the
    state store (messages, sessions, answers).

    Args:
        bridge: The ``[bridge]`` settings (their ``state_dir``, already resolved).
        agent: The agent's name (the key of its ``[agents.NAME]`` table).

    Returns:
        The workspace folder (not created here).
    """
    state = bridge.state_dir
    return state.parent / f"{state.name}-workspaces" / agent

class Reader:
    """Validates one parsed file; knows the text so errors can name lines.

    Args:
        file: The config file (for messages and relative paths).
        text: Its text (to find the line of a key).
        schemas: The platforms' schemas (:class:`bridge.config.PlatformSchema`);
            the first is a binding's default platform.
        data: The parsed file (a schema may look at another top-level table).
    """

    def __init__(self, file: Path, text: str, schemas: Sequence[PlatformSchema] = (),
                 data: Mapping[str, Any] | None = None) -> None:
        self.file = file
        self.base = file.parent
        self.lines = text.splitlines()
        self.schemas = {schema.name: schema for schema in schemas}
        self.data: Mapping[str, Any] = data or {}
        self.index = 0  # which [[bindings]] entry is being read, for line numbers

    def fail(self, key: str, problem: str, index: int = 0) -> ConfigError:
        return ConfigError(self.file, key, problem, self.line_of(key, index or self.index))

    def _headers(self, table: list[str]) -> list[int]:
        header = re.compile(
            r"^\s*\[\[?\s*" + r"\s*\.\s*".join(map(re.escape, table)) + r"\s*\]\]?\s*(#.*)?$")
        return [i for i, line in enumerate(self.lines) if header.match(line)]

    def line_of(self, key: str, index: int = 0) -> int | None:
        """Best-effort 1-based line of a dotted key.

        Args:
            key: Dotted key, e.g. ``agents.echo.kind`` or ``bindings.agent``.
            index: Which occurrence of an array-of-tables header (``[[bindings]]``) to use.

        Returns:
            The key's line; the line of its table's header when the key itself
            is absent; None when neither is in the file.
        """
        parts = key.split(".")
        own = self._headers(parts)
        if own:
            return own[min(index, len(own) - 1)] + 1
        table, name = parts[:-1], parts[-1]
        if table:
            headers = self._headers(table)
            if not headers:
                return None
            start = headers[min(index, len(headers) - 1)]
            first = start + 1
        else:
            start, first = -1, 0
        pattern = re.compile(r"^\s*" + re.escape(name) + r"\s*=")
        for i in range(first, len(self.lines)):
            if self.lines[i].lstrip().startswith("["):
                break
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if table else None

    def table(self, data: Mapping[str, Any], key: str, *, required: bool) -> dict[str, Any] | None:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None:
            if required:
                raise self.fail(key, "missing table")
            return None
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        return value

    def check_keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for name in table:
            if name not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.fail(f"{prefix}.{name}", f"unknown key (known keys: {known})")

    def get(
        self, table: Mapping[str, Any], prefix: str, name: str, kind: type | tuple[type, ...],
        default: Any = attrs.NOTHING,
    ) -> Any:
        key = f"{prefix}.{name}"
        if name not in table:
            if default is attrs.NOTHING:
                raise self.fail(key, "missing")
            return default
        value = table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_names(kinds)}, got {type(value).__name__}")
        return value

    def positive(self, table: Mapping[str, Any], prefix: str, name: str, default: float) -> float:
        value = float(self.get(table, prefix, name, (int, float), default))
        if value < 0:
            raise self.fail(f"{prefix}.{name}", f"must be zero or more, got {value}")
        return value

    def at_least(self, table: Mapping[str, Any], prefix: str, name: str, default: int,
                 minimum: int) -> int:
        value = int(self.get(table, prefix, name, int, default))
        if value < minimum:
            raise self.fail(f"{prefix}.{name}", f"must be at least {minimum}, got {value}")
        return value

    def port(self, table: Mapping[str, Any], prefix: str, name: str, default: int) -> int:
        value = int(self.get(table, prefix, name, int, default))
        if not 0 <= value <= 65535:
            raise self.fail(f"{prefix}.{name}", f"must be a port number 0-65535, got {value}")
        return value

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base / path).resolve()

    def strings(self, table: Mapping[str, Any], prefix: str, name: str) -> tuple[str, ...]:
        value = self.get(table, prefix, name, list, [])
        if not all(isinstance(item, str) for item in value):
            raise self.fail(f"{prefix}.{name}", "must be a list of strings")
        return tuple(value)

    def known_tables(self, data: Mapping[str, Any]) -> None:
        """Refuse a top-level table this version does not know (a typo, usually).

        Args:
            data: The parsed file (top-level table name to value).

        Raises:
            ConfigError: naming the first unknown table and its line.
        """
        schemas = self.schemas.values()
        known = ("bridge", *(t for s in schemas for t in s.extra_tables), "platforms",
                 *(t for s in schemas for t in s.aliases.tables), "agents", "bindings")
        for name in data:
            if name not in known:
                raise self.fail(name, f"unknown table (known: {', '.join(known)})")
        tables = [s.name for s in schemas if s.has_table]
        for name in self.table(data, "platforms", required=False) or {}:
            if name not in tables:
                raise self.fail(f"platforms.{name}",
                                f"unknown platform (known: {', '.join(tables)})")

    def config(self, data: Mapping[str, Any]) -> Config:
        """Read the whole file into a :class:`Config` (what ``bridge start`` needs).

        At least one ``[agents.NAME]`` and one ``[[bindings]]`` entry are required;
        a platform's table is optional (its defaults apply when a binding names
        it) unless its schema says it cannot do without one.

        Args:
            data: The parsed file (top-level table name to value).

        Returns:
            The validated config, relative paths resolved against the file's folder.

        Raises:
            ConfigError: at the first bad, missing or unknown key, naming the
                file, its line and the dotted key.
        """
        self.known_tables(data)
        bridge = self.bridge(self.table(data, "bridge", required=False) or {})
        extras = self.extras(data)
        platforms = self.platforms(data)
        agents_table = self.table(data, "agents", required=True) or {}
        if not agents_table:
            raise self.fail("agents", "define at least one agent, e.g. [agents.echo]")
        agents = {name: self.agent(name, table, bridge) for name, table in agents_table.items()}
        bindings = self.bindings(data.get("bindings", []), agents)
        return Config(self.file, bridge, self.used(platforms, bindings), agents, bindings,
                      extras)

    def extras(self, data: Mapping[str, Any]) -> dict[str, object]:
        """The platforms' other top-level tables present in the file, each validated.

        Raises:
            ConfigError: at the first bad or unknown key.
        """
        found: dict[str, object] = {}
        for schema in self.schemas.values():
            for name in schema.extra_tables:
                table = self.table(data, name, required=False)
                if table is not None:
                    found[name] = schema.read_extra(self, name, table)
        return found

    def platforms(self, data: Mapping[str, Any]) -> dict[str, object]:
        """The settings of each platform whose table is in the file (or an older alias of it).

        Args:
            data: The parsed file.

        Returns:
            Settings by platform name, in the schemas' order.

        Raises:
            ConfigError: at the first bad or unknown key, or when a platform's
                table is given both ways (new and older name).
        """
        found: dict[str, object] = {}
        for schema in self.schemas.values():
            table, prefix = self.settings_table(data, schema)
            if table is not None:
                found[schema.name] = schema.read_settings(self, table, prefix)
        return found

    def used(self, platforms: Mapping[str, object],
             bindings: tuple[Binding, ...]) -> dict[str, object]:
        """``platforms`` with defaults for each platform a binding names but no table sets.

        Raises:
            ConfigError: when a platform cannot do without its table (its schema
                says what to add; at the first binding on it).
        """
        needed = {b.platform: index for index, b in reversed(list(enumerate(bindings)))}
        found = dict(platforms)
        for name, schema in self.schemas.items():
            if schema.has_table and name in needed and name not in found:
                self.index = needed[name]
                found[name] = schema.read_settings(self, None, f"platforms.{name}")
        self.index = 0
        return {name: found[name] for name in self.schemas if name in found}

    def settings_table(self, data: Mapping[str, Any],
                       schema: PlatformSchema) -> tuple[dict[str, Any] | None, str]:
        """A platform's table and its dotted name: ``[platforms.NAME]`` or an older alias.

        Raises:
            ConfigError: when both are present (at the alias).
        """
        prefix = f"platforms.{schema.name}"
        new = self.table(self.table(data, "platforms", required=False) or {}, prefix,
                         required=False)
        for alias in schema.aliases.tables:
            old = self.table(data, alias, required=False)
            if old is None:
                continue
            if new is not None:
                raise self.fail(alias, f"both [{alias}] and [{prefix}] are set: keep "
                                       f"[{prefix}] (move these keys there) and remove "
                                       f"[{alias}], its older name")
            return old, alias
        return new, prefix

    def bridge(self, table: Mapping[str, Any]) -> BridgeSettings:
        self.check_keys(table, "bridge", {"state_dir", "debounce_s", "log_level",
                                          "catch_up_window_s", "scope_idle_s",
                                          "max_answer_chars", "retention_days",
                                          "receipts", "receipt_accepted", "receipt_answered",
                                          "receipt_failed", "max_file_bytes",
                                          "answer_file_after_pieces", "actor_threads"})
        level = str(self.get(table, "bridge", "log_level", str, "INFO")).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise self.fail("bridge.log_level", f"must be debug, info, warning or error, got "
                                                f"{level.lower()!r}")
        return BridgeSettings(
            state_dir=self.path(self.get(table, "bridge", "state_dir", str, "var")),
            debounce_s=self.positive(table, "bridge", "debounce_s", 0.3),
            log_level=level,
            catch_up_window_s=self.positive(table, "bridge", "catch_up_window_s", 600.0),
            scope_idle_s=self.positive(table, "bridge", "scope_idle_s", 600.0),
            max_answer_chars=self.at_least(table, "bridge", "max_answer_chars", 32_000, 100),
            retention_days=self.retention_days(table),
            receipts=bool(self.get(table, "bridge", "receipts", bool, True)),
            receipt_accepted=self.reaction(table, "receipt_accepted", "eyes"),
            receipt_answered=self.reaction(table, "receipt_answered", "white_check_mark"),
            receipt_failed=self.reaction(table, "receipt_failed", "x"),
            max_file_bytes=self.at_least(table, "bridge", "max_file_bytes",
                                         DEFAULT_MAX_FILE_BYTES, 1),
            answer_file_after_pieces=self.at_least(table, "bridge", "answer_file_after_pieces",
                                                   4, 1),
            actor_threads=self.actor_threads(table),
        )

    def actor_threads(self, table: Mapping[str, Any]) -> int:
        """Read ``bridge.actor_threads`` (default 8).

        Raises:
            ConfigError: when it is not a whole number from 1 to :data:`MAX_ACTOR_THREADS`.
        """
        value = self.at_least(table, "bridge", "actor_threads", 8, 1)
        if value > MAX_ACTOR_THREADS:
            raise self.fail("bridge.actor_threads", f"must be at most {MAX_ACTOR_THREADS} "
                                                    f"(threads shared by all conversations), "
                                                    f"got {value}")
        return value

    def reaction(self, table: Mapping[str, Any], name: str, default: str) -> str:
        """A receipt's reaction name in ``[bridge]`` (``eyes``, not ``:eyes:``).

        Raises:
            ConfigError: when it is not a string, is empty, or holds whitespace or colons.
        """
        value = str(self.get(table, "bridge", name, str, default))
        if not value.strip():
            raise self.fail(f"bridge.{name}", "must be a reaction name, e.g. "
                                              f"{default!r} (got an empty string)")
        if any(char.isspace() or char == ":" for char in value):
            raise self.fail(f"bridge.{name}", "must be a reaction name without spaces or "
                                              f"colons, e.g. {default!r} (got {value!r})")
        return value

    def retention_days(self, table: Mapping[str, Any]) -> float:
        """Read ``bridge.retention_days`` (default 14 days; fractions of a day allowed).

        Args:
            table: The ``[bridge]`` table.

        Returns:
            The retention in days (86,400 seconds each).

        Raises:
            ConfigError: when it is not a finite number above 0, or covers less
                than ``bridge.catch_up_window_s`` (seconds; messages inside the
                catch-up window must still be in the store).
        """
        days = float(self.get(table, "bridge", "retention_days", (int, float), 14.0))
        if not days > 0 or days == float("inf"):
            raise self.fail("bridge.retention_days", f"must be a number of days above 0, "
                                                     f"got {days:g}")
        window_s = self.positive(table, "bridge", "catch_up_window_s", 600.0)
        if days * 86_400 + 1e-6 < window_s:  # (a margin for the float product)
            raise self.fail("bridge.retention_days",
                            f"must cover catch_up_window_s ({window_s:g} s = "
                            f"{window_s / 86_400:.6g} days), got {days:g}")
        return days

    def url(self, table: Mapping[str, Any], prefix: str, name: str, default: Any) -> str:
        """An ``http://`` or ``https://`` URL."""
        url: str = self.get(table, prefix, name, str, default)
        if not re.match(r"^https?://", url):
            raise self.fail(f"{prefix}.{name}", f"must start with http:// or https://, got "
                                                f"{url!r}")
        return url

    def secret(self, table: Mapping[str, Any], prefix: str, name: str, *,
               literal: bool) -> Secret:
        """A secret reference, resolved; ``literal``: a plain value is accepted too."""
        ref = self.get(table, prefix, name, str)
        if not literal and not ref.startswith(("env:", "file:")):
            raise self.fail(f"{prefix}.{name}", "must be a reference, env:NAME or file:PATH "
                                                "(a secret written here is in every copy of "
                                                "this file)")
        try:
            return resolve_secret(ref, self.base)
        except SecretError as exc:
            raise self.fail(f"{prefix}.{name}", str(exc)) from None

    def reference(self, table: Mapping[str, Any], prefix: str, name: str) -> str:
        """A value given literally or as ``env:NAME``/``file:PATH``, resolved; not a
        secret (it is not redacted), e.g. an app id."""
        ref = self.get(table, prefix, name, str)
        try:
            return resolve_reference(ref, self.base)[0]
        except SecretError as exc:
            raise self.fail(f"{prefix}.{name}", str(exc)) from None

    def identities(self, name: str, table: Mapping[str, Any]) -> dict[str, object]:
        """The agent's identities (``[agents.NAME.PLATFORM]``), by platform name.

        A platform's older identity keys directly in the agent's table (its
        :attr:`bridge.config.Aliases.identity_keys`) are its identity too.

        Raises:
            ConfigError: at a bad key, when an identity is given both ways, or
                when the agent has no identity at all.
        """
        prefix = f"agents.{name}"
        values: dict[str, object] = {}
        for platform, schema in self.schemas.items():
            sub = (self.table(table, f"{prefix}.{platform}", required=False)
                   if schema.identity_keys else None)
            if sub is not None:
                values[platform] = schema.read_identity(self, sub, f"{prefix}.{platform}")
            old = {key: table[key] for key in schema.aliases.identity_keys if key in table}
            if not old:
                continue
            if sub is not None:
                key = next(iter(old))
                raise self.fail(f"{prefix}.{key}",
                                f"{key} is set twice, here and in [{prefix}.{platform}]: "
                                f"keep {key} in [{prefix}.{platform}] and remove this line")
            values[platform] = schema.read_identity(self, old, prefix)
        if not values:
            ways = [f"[{prefix}.{s.name}] {' and '.join(s.identity_keys)}"
                    for s in self.schemas.values() if s.identity_keys]
            listed = ", ".join(ways[:-1]) + f", or {ways[-1]}" if len(ways) > 1 else "".join(ways)
            first = next(iter(self.schemas.values()))
            key = (first.aliases.identity_keys or first.identity_keys or ("identity",))[0]
            raise self.fail(f"{prefix}.{key}",
                            f"missing: the agent needs an identity on a platform: {listed}")
        return values

    def agent(self, name: str, table: Any, bridge: BridgeSettings) -> AgentSettings:
        prefix = f"agents.{name}"
        if not isinstance(table, dict):
            raise self.fail(prefix, f"must be a table, got {type(table).__name__}")
        own = {*_AGENT_KEYS, *(s.name for s in self.schemas.values() if s.identity_keys),
               *(k for s in self.schemas.values() for k in s.aliases.identity_keys)}
        every = own.union(*_KIND_KEYS.values())
        self.check_keys(table, prefix, every)
        kind = self.get(table, prefix, "kind", str)
        if kind not in AGENT_KINDS:
            raise self.fail(f"{prefix}.kind",
                            f"must be one of {', '.join(AGENT_KINDS)} (got {kind!r})")
        for key in table:
            if key not in own | _KIND_KEYS[kind]:
                kinds = [k for k in AGENT_KINDS if key in _KIND_KEYS[k]]
                raise self.fail(f"{prefix}.{key}", f"applies only to kind {' or '.join(kinds)}, "
                                                   f"not {kind!r}")
        identities = self.identities(name, table)
        command = self.strings(table, prefix, "command")
        if kind == "command" and not command:
            raise self.fail(f"{prefix}.command",
                            "kind = \"command\" needs command = [\"program\", \"arg\", ...]")
        workspace = self.get(table, prefix, "workspace", str, "")
        timeout = self.positive(table, prefix, "timeout_s", 1800.0)
        if timeout <= 0:
            raise self.fail(f"{prefix}.timeout_s", "must be more than zero")
        return AgentSettings(
            name=name,
            kind=kind,
            identities=identities,
            command=command,
            workspace=self.path(workspace) if workspace else default_workspace(bridge, name),
            timeout_s=timeout,
            stop_grace_s=self.positive(table, prefix, "stop_grace_s", 3.0),
            max_output_bytes=self.at_least(table, prefix, "max_output_bytes", 1_000_000, 1),
            **self.policy(prefix, table, bridge, name),
            **(self.coding_agent(name, kind, table, bridge) if kind in ("codex", "claude")
               else {}),
        )

    def coding_agent(self, name: str, kind: str, table: Mapping[str, Any],
                     bridge: BridgeSettings) -> dict[str, Any]:
        """The codex/claude keys of one agent table, as AgentSettings fields."""
        prefix = f"agents.{name}"
        values: dict[str, Any] = {}
        ref = self.get(table, prefix, "model_api_key", str, "")
        if ref:
            try:
                values["model_api_key"] = resolve_secret(ref, self.base)
            except SecretError as exc:
                raise self.fail(f"{prefix}.model_api_key", str(exc)) from None
        sandbox = self.get(table, prefix, "sandbox", str, "workspace-write")
        if sandbox not in SANDBOX_MODES:
            raise self.fail(f"{prefix}.sandbox",
                            f"must be one of {', '.join(SANDBOX_MODES)} (got {sandbox!r})")
        values["sandbox"] = sandbox
        idle = self.positive(table, prefix, "idle_timeout_s", 300.0)
        if idle <= 0:
            raise self.fail(f"{prefix}.idle_timeout_s", "must be more than zero")
        values["idle_timeout_s"] = idle
        binary = self.get(table, prefix, "binary", str, kind)
        if not binary.strip():
            raise self.fail(f"{prefix}.binary", "must not be empty")
        values["binary"] = str(self.path(binary)) if "/" in binary else binary
        values["extra_args"] = self.strings(table, prefix, "extra_args")
        values["env"] = self.env(table, prefix)
        if kind == "codex":
            home = self.get(table, prefix, "codex_home", str, "")
            values["codex_home"] = (self.path(home) if home
                                    else bridge.state_dir / "codex-home" / name)
            return values
        mode = self.get(table, prefix, "permission_mode", str, "")
        if mode and mode not in CLAUDE_PERMISSION_MODES:
            raise self.fail(f"{prefix}.permission_mode",
                            f"must be one of {', '.join(CLAUDE_PERMISSION_MODES)} (got {mode!r})")
        values["permission_mode"] = mode or CLAUDE_MODE_FOR_SANDBOX[sandbox]
        values["allowed_tools"] = self.strings(table, prefix, "allowed_tools")
        url = self.get(table, prefix, "model_base_url", str, "")
        if url and not re.match(r"^https?://", url):
            raise self.fail(f"{prefix}.model_base_url",
                            f"must start with http:// or https://, got {url!r}")
        values["model_base_url"] = url.rstrip("/")
        config_dir = self.get(table, prefix, "config_dir", str, "")
        values["config_dir"] = (self.path(config_dir) if config_dir
                                else bridge.state_dir / "claude-home" / name)
        return values

    def env(self, table: Mapping[str, Any], prefix: str) -> tuple[tuple[str, Secret], ...]:
        """The ``env`` table: names to values, each resolved like a secret reference."""
        value = self.get(table, prefix, "env", dict, {})
        result = []
        for name, ref in value.items():
            key = f"{prefix}.env.{name}"
            line = self.line_of(key) or self.line_of(f"{prefix}.env")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ConfigError(self.file, key, "not a valid environment variable name", line)
            if not isinstance(ref, str):
                raise ConfigError(self.file, key,
                                  f"must be a string, got {type(ref).__name__}", line)
            try:
                result.append((name, resolve_secret(ref, self.base)))
            except SecretError as exc:
                raise ConfigError(self.file, key, str(exc), line) from None
        return tuple(result)

    def policy(self, prefix: str, table: Mapping[str, Any], bridge: BridgeSettings,
               name: str) -> dict[str, Any]:
        """The access and workspace keys of one agent table, as AgentSettings fields."""
        scope = self.get(table, prefix, "sender_scope", str, "all")
        if scope not in SENDER_SCOPES:
            raise self.fail(f"{prefix}.sender_scope",
                            f"must be one of {', '.join(SENDER_SCOPES)} (got {scope!r})")
        allowed = self.strings(table, prefix, "allowed_users")
        admins = self.strings(table, prefix, "admins")
        if scope == "known" and not allowed and not admins:
            raise self.fail(f"{prefix}.sender_scope",
                            'sender_scope = "known" needs allowed_users or admins (nobody '
                            "could use the agent)")
        access = AccessPolicy(
            allowed_users=allowed,
            admins=admins,
            allowed_channels=self.strings(table, prefix, "allowed_channels"),
            sender_scope=scope,
            allow_bots=bool(self.get(table, prefix, "allow_bots", bool, False)),
            max_runs_per_hour=self.at_least(table, prefix, "max_runs_per_hour",
                                            DEFAULT_MAX_RUNS_PER_HOUR, 0),
            refusal=self.get(table, prefix, "refusal", str, DEFAULT_REFUSAL).strip(),
        )
        roots = tuple(self.path(root) for root in self.strings(table, prefix, "workspace_roots"))
        for root in roots:
            if str(root) == "/" or not root.is_absolute():
                raise self.fail(f"{prefix}.workspace_roots",
                                f"{root} is not a useful root (name the folders that hold "
                                "workspaces)")
        configured = self.get(table, prefix, "workspace", str, "")
        workspace = self.path(configured) if configured else default_workspace(bridge, name)
        try:
            check_workspace(workspace, roots)
        except WorkspaceError as exc:
            raise self.fail(f"{prefix}.workspace", str(exc)) from None
        aliases = []
        for alias, value in self.get(table, prefix, "workspaces", dict, {}).items():
            key = f"{prefix}.workspaces.{alias}"
            line = self.line_of(key) or self.line_of(f"{prefix}.workspaces")
            if not _ALIAS.fullmatch(alias) or alias == "default":
                raise ConfigError(self.file, key, "not a valid alias (letters, digits, _ . -; "
                                  "'default' is reserved for the agent's workspace)", line)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(self.file, key, "must be a non-empty path string", line)
            path = self.path(value)
            try:
                check_workspace(path, roots)  # again at /cd and at each run: links can move
            except WorkspaceError as exc:
                raise ConfigError(self.file, key, str(exc), line) from None
            aliases.append((alias, path))
        return {"access": access, "workspaces": tuple(aliases), "workspace_roots": roots}

    def engage_rule(self, table: Mapping[str, Any], prefix: str,
                    aliases: Mapping[str, str]) -> EngageRule:
        """The engage keys of one ``[[bindings]]`` entry (``aliases``: its platform's
        older engage mode names)."""
        mode = self.get(table, prefix, "engage", str, "addressed")
        mode = aliases.get(mode, mode)
        if mode not in ENGAGE_MODES:
            raise self.fail(f"{prefix}.engage",
                            f"must be one of {', '.join(ENGAGE_MODES)} (got {mode!r})")
        ignored = self.get(table, prefix, "ignored", str, "accumulate")
        if ignored not in IGNORED_MODES:
            raise self.fail(f"{prefix}.ignored",
                            f"must be one of {', '.join(IGNORED_MODES)} (got {ignored!r})")
        pattern = self.get(table, prefix, "engage_pattern", str, "")
        if mode == "pattern":
            if not pattern:
                raise ConfigError(self.file, f"{prefix}.engage_pattern",
                                  'engage = "pattern" needs engage_pattern (a regex; "." '
                                  "means always)", self.line_of(f"{prefix}.engage", self.index))
            problem = pattern_problem(pattern)  # invalid, or backtracks without end
            if problem:
                raise self.fail(f"{prefix}.engage_pattern", problem)
        elif pattern:
            raise self.fail(f"{prefix}.engage_pattern",
                            f'applies only to engage = "pattern", not {mode!r}')
        if "sticky_s" in table and mode != "mention-sticky":
            raise self.fail(f"{prefix}.sticky_s",
                            f'applies only to engage = "mention-sticky", not {mode!r}')
        sticky = self.positive(table, prefix, "sticky_s", DEFAULT_STICKY_S)
        if sticky <= 0:
            raise self.fail(f"{prefix}.sticky_s", "must be more than zero")
        return EngageRule(mode, pattern, sticky, ignored)

    def bindings(self, value: Any, agents: Mapping[str, AgentSettings]) -> tuple[Binding, ...]:
        if not isinstance(value, list):
            raise self.fail("bindings", "must be an array of tables: [[bindings]]")
        result = []
        for index, table in enumerate(value):
            prefix = "bindings"
            self.index = index
            if not isinstance(table, dict):
                raise self.fail(prefix, f"entry {index + 1} must be a table")
            self.check_keys(table, prefix, _BINDING_KEYS | set(self.space_aliases()))
            agent = self.get(table, prefix, "agent", str)
            if agent not in agents:
                raise self.fail(f"{prefix}.agent",
                                f"binding {index + 1} names agent {agent!r}, which is not "
                                f"defined (agents: {', '.join(sorted(agents))})")
            names = list(self.schemas)
            platform = self.get(table, prefix, "platform", str, names[0] if names else "")
            if platform not in self.schemas:
                raise self.fail(f"{prefix}.platform", f"must be one of {', '.join(names)} "
                                                      f"(got {platform!r})")
            schema = self.schemas[platform]
            if schema.identity_keys and agents[agent].identity(platform) is None:
                add = f"[agents.{agent}.{platform}] with {' and '.join(schema.identity_keys)}"
                raise self.fail(f"{prefix}.platform" if "platform" in table else f"{prefix}.agent",
                                f"binding {index + 1} puts agent {agent!r} on {platform}, where "
                                f"it has no identity: add {add}")
            scope = self.get(table, prefix, "scope", str, schema.default_scope)
            if scope not in SCOPE_GRAINS:
                raise self.fail(f"{prefix}.scope", f"must be one of {', '.join(SCOPE_GRAINS)} "
                                                   f"(got {scope!r})")
            channels = self.strings(table, prefix, "channels") or ("*",)
            result.append(Binding(agent, self.space(table, prefix, schema), channels,
                                  self.strings(table, prefix, "exclude_channels"),
                                  self.engage_rule(table, prefix, schema.aliases.engage_modes),
                                  platform, scope))
        self.index = 0
        if not result:
            raise self.fail("bindings", "define at least one [[bindings]] entry")
        return tuple(result)

    def space_aliases(self) -> dict[str, str]:
        """The older names of a binding's ``space``, each to the platform that declares it."""
        return {key: s.name for s in self.schemas.values() for key in s.aliases.space_keys}

    def space(self, table: Mapping[str, Any], prefix: str, schema: PlatformSchema) -> str:
        """A binding's ``space`` (or an older name of it), required when the platform says so."""
        for key, owner in self.space_aliases().items():
            if key not in table:
                continue
            if "space" in table:
                raise self.fail(f"{prefix}.{key}", f"set twice, as {key} and as space: keep "
                                                   f"space and remove {key}, its older name")
            if owner != schema.name:
                raise self.fail(f"{prefix}.{key}", f"applies only to platform {owner}; on "
                                                   f"{schema.name} write space")
            return str(self.get(table, prefix, key, str))
        if schema.missing_space and "space" not in table:
            raise self.fail(f"{prefix}.space", f"missing: {schema.missing_space}")
        return str(self.get(table, prefix, "space", str, schema.default_space))


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
