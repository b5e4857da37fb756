"""Reading a parsed config file into :class:`bridge.config.Config`, key by key.

Every problem raises :class:`bridge.config.ConfigError` naming the file, the
line and the dotted key; the reader knows the file's text to find the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bridge.config import (
    AGENT_KINDS,
    CLAUDE_MODE_FOR_SANDBOX,
    CLAUDE_PERMISSION_MODES,
    DEFAULT_SCOPE,
    PLATFORMS,
    SANDBOX_MODES,
    SCOPE_GRAINS,
    AgentSettings,
    Binding,
    BridgeSettings,
    Config,
    ConfigError,
    DevGuildSettings,
    FabricIdentity,
    FabricSettings,
    LarkIdentity,
    LarkSettings,
    Platforms,
    SlackIdentity,
    SlackSettings,
)
from bridge.engage import (
    DEFAULT_STICKY_S,
    ENGAGE_MODE_ALIASES,
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
from bridge.secrets import Secret, SecretError, resolve_secret

#: Access and workspace policy keys every agent accepts (see :mod:`bridge.policy`).
_POLICY_KEYS = {"allowed_users", "admins", "allowed_channels", "sender_scope", "allow_bots",
                "max_runs_per_hour", "refusal", "workspaces", "workspace_roots"}
#: Keys of one ``[[bindings]]`` entry (``guild``: the older name of ``space``, Fabric only).
_BINDING_KEYS = {"agent", "platform", "space", "guild", "scope", "channels", "exclude_channels",
                 "engage", "engage_pattern", "sticky_s", "ignored"}
#: The keys of an agent's identity on each platform (``[agents.NAME.PLATFORM]``), its
#: class, and whether a key may hold a literal value rather than a reference (Fabric's
#: dev keys, Feishu/Lark's app id, which is no secret).
_IDENTITIES: dict[str, tuple[type, dict[str, bool]]] = {
    "fabric": (FabricIdentity, {"api_key": True}),
    "slack": (SlackIdentity, {"bot_token": False, "app_token": False}),
    "lark": (LarkIdentity, {"app_id": True, "app_secret": False}),
}
#: The platforms with a settings table (``[platforms.NAME]``; ``memory`` has none).
_TABLES = tuple(attrs.fields_dict(Platforms))
#: Keys of an ``[agents.NAME]`` table (``memory`` uses the Fabric identity, see PLATFORMS).
_AGENT_KEYS = {"kind", "api_key", "workspace", "timeout_s", "stop_grace_s", "max_output_bytes",
               *_IDENTITIES, *_POLICY_KEYS}
#: What each Slack token starts with.
_SLACK_TOKEN_PREFIX = {"bot_token": "xoxb-", "app_token": "xapp-"}
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
    """

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.base = file.parent
        self.lines = text.splitlines()
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
        known = ("bridge", "devguild", "platforms", "fabric", "agents", "bindings")
        for name in data:
            if name not in known:
                raise self.fail(name, f"unknown table (known: {', '.join(known)})")
        for name in self.table(data, "platforms", required=False) or {}:
            if name not in _TABLES:
                raise self.fail(f"platforms.{name}",
                                f"unknown platform (known: {', '.join(_TABLES)})")

    def config(self, data: Mapping[str, Any]) -> Config:
        """Read the whole file into a :class:`Config` (what ``bridge start`` needs).

        At least one ``[agents.NAME]`` and one ``[[bindings]]`` entry are required;
        a platform's table is optional (its defaults apply when a binding names
        it), except that Fabric needs ``center_url`` unless ``[devguild]`` is
        present (then its Center is the default).

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
        devguild = self.devguild(self.table(data, "devguild", required=False))
        platforms = self.platforms(data, devguild)
        agents_table = self.table(data, "agents", required=True) or {}
        if not agents_table:
            raise self.fail("agents", "define at least one agent, e.g. [agents.echo]")
        agents = {name: self.agent(name, table, bridge) for name, table in agents_table.items()}
        bindings = self.bindings(data.get("bindings", []), agents)
        return Config(self.file, bridge, devguild, self.used(platforms, bindings, devguild),
                      agents, bindings)

    def platforms(self, data: Mapping[str, Any], devguild: DevGuildSettings | None) -> Platforms:
        """The platform tables present in the file (``[fabric]`` counts as ``[platforms.fabric]``).

        Args:
            data: The parsed file.
            devguild: The ``[devguild]`` settings, whose Center is Fabric's default.

        Returns:
            The settings of each platform whose table is present, None for the others.

        Raises:
            ConfigError: at the first bad or unknown key, or when both ``[fabric]``
                and ``[platforms.fabric]`` are present.
        """
        tables = self.table(data, "platforms", required=False) or {}
        fabric, prefix = self.fabric_table(data)
        slack = self.table(tables, "platforms.slack", required=False)
        lark = self.table(tables, "platforms.lark", required=False)
        return Platforms(
            fabric=self.fabric(fabric, prefix, devguild) if fabric is not None else None,
            slack=self.slack(slack) if slack is not None else None,
            lark=self.lark(lark) if lark is not None else None,
        )

    def used(self, platforms: Platforms, bindings: tuple[Binding, ...],
             devguild: DevGuildSettings | None) -> Platforms:
        """``platforms`` with defaults for each platform a binding names but no table sets.

        Raises:
            ConfigError: when a binding is on Fabric and neither a Fabric table
                nor ``[devguild]`` says where its Center is.
        """
        for index, binding in enumerate(bindings):
            if binding.platform not in _TABLES or getattr(platforms, binding.platform) is not None:
                continue
            if binding.platform == "fabric":
                if devguild is None:
                    raise ConfigError(
                        self.file, "platforms.fabric",
                        f"missing table: binding {index + 1} is on Fabric, which needs its "
                        'Center: add [platforms.fabric] with center_url = "https://HOST/api" '
                        "(or a [devguild] table for the built-in dev guild)",
                        self.line_of("bindings", index))
                settings: Any = FabricSettings(center_url=_dev_center_url(devguild))
            else:
                settings = {"slack": SlackSettings, "lark": LarkSettings}[binding.platform]()
            platforms = attrs.evolve(platforms, **{binding.platform: settings})
        return platforms

    def fabric_table(self, data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """Fabric's table and its dotted name: ``[platforms.fabric]`` or the older ``[fabric]``.

        Raises:
            ConfigError: when both are present (at ``fabric``).
        """
        new = self.table(self.table(data, "platforms", required=False) or {},
                         "platforms.fabric", required=False)
        old = self.table(data, "fabric", required=False)
        if new is not None and old is not None:
            raise self.fail("fabric", "both [fabric] and [platforms.fabric] are set: keep "
                                      "[platforms.fabric] (move these keys there) and remove "
                                      "[fabric], its older name")
        return (new, "platforms.fabric") if new is not None else (old, "fabric")

    def bridge(self, table: Mapping[str, Any]) -> BridgeSettings:
        self.check_keys(table, "bridge", {"state_dir", "debounce_s", "log_level",
                                          "catch_up_window_s", "scope_idle_s",
                                          "max_answer_chars", "retention_days"})
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
        )

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

    def devguild(self, table: Mapping[str, Any] | None) -> DevGuildSettings | None:
        if table is None:
            return None
        self.check_keys(table, "devguild",
                        {"host", "center_port", "guild_port", "seed", "token_ttl_s"})
        ttl = self.positive(table, "devguild", "token_ttl_s", 900.0)
        if ttl <= 0:
            raise self.fail("devguild.token_ttl_s", "must be more than zero")
        seed = self.get(table, "devguild", "seed", str, "")  # "": the packaged seed
        return DevGuildSettings(
            host=self.get(table, "devguild", "host", str, "127.0.0.1"),
            center_port=self.port(table, "devguild", "center_port", 7001),
            guild_port=self.port(table, "devguild", "guild_port", 7002),
            seed=self.path(seed) if seed.strip() else None,
            token_ttl_s=ttl,
        )

    def fabric(self, table: Mapping[str, Any], prefix: str,
               devguild: DevGuildSettings | None) -> FabricSettings:
        """Fabric's table (``prefix``: ``platforms.fabric`` or ``fabric``).

        ``center_url`` defaults to the dev guild's Center when ``[devguild]`` is present.
        """
        self.check_keys(table, prefix, {"center_url", "content_limit", "resync_s"})
        default = _dev_center_url(devguild) if devguild is not None else attrs.NOTHING
        limit = self.at_least(table, prefix, "content_limit", 8000, 100)
        return FabricSettings(
            center_url=self.url(table, prefix, "center_url", default).rstrip("/"),
            content_limit=limit,
            resync_s=self.positive(table, prefix, "resync_s", 60.0) or 60.0,
        )

    def slack(self, table: Mapping[str, Any]) -> SlackSettings:
        """The ``[platforms.slack]`` table."""
        self.check_keys(table, "platforms.slack", {"api_url"})
        url = self.url(table, "platforms.slack", "api_url", SlackSettings().api_url)
        return SlackSettings(api_url=url.rstrip("/") + "/")

    def lark(self, table: Mapping[str, Any]) -> LarkSettings:
        """The ``[platforms.lark]`` table."""
        self.check_keys(table, "platforms.lark", {"domain"})
        return LarkSettings(
            domain=self.url(table, "platforms.lark", "domain", LarkSettings().domain).rstrip("/"))

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

    def identities(self, name: str, table: Mapping[str, Any]) -> dict[str, Any]:
        """The agent's identities (``[agents.NAME.PLATFORM]``), as AgentSettings fields.

        ``api_key`` directly in the agent's table is its Fabric identity (the older form).

        Raises:
            ConfigError: at a bad key, when the Fabric key is given both ways, or
                when the agent has no identity at all.
        """
        prefix = f"agents.{name}"
        values: dict[str, Any] = {}
        for platform, (cls, keys) in _IDENTITIES.items():
            sub = self.table(table, f"{prefix}.{platform}", required=False)
            if sub is None:
                continue
            where = f"{prefix}.{platform}"
            self.check_keys(sub, where, set(keys))
            secrets = {key: self.secret(sub, where, key, literal=literal)
                       for key, literal in keys.items()}
            for key, start in _SLACK_TOKEN_PREFIX.items() if platform == "slack" else ():
                if not secrets[key].reveal().startswith(start):
                    raise self.fail(f"{where}.{key}", f"must be a token starting {start}; the "
                                                      f"one from {secrets[key].source} is not")
            values[platform] = cls(**secrets)
        if "api_key" in table:
            if "fabric" in values:
                raise self.fail(f"{prefix}.api_key",
                                f"the Fabric API key is set twice, here and in [{prefix}.fabric]: "
                                f"keep api_key in [{prefix}.fabric] and remove this line")
            values["fabric"] = FabricIdentity(self.secret(table, prefix, "api_key",
                                                          literal=True))
        if not values:
            raise self.fail(f"{prefix}.api_key",
                            f"missing: the agent needs an identity on a platform: "
                            f"[{prefix}.fabric] api_key, [{prefix}.slack] bot_token and "
                            f"app_token, or [{prefix}.lark] app_id and app_secret")
        return values

    def agent(self, name: str, table: Any, bridge: BridgeSettings) -> AgentSettings:
        prefix = f"agents.{name}"
        if not isinstance(table, dict):
            raise self.fail(prefix, f"must be a table, got {type(table).__name__}")
        every = _AGENT_KEYS.union(*_KIND_KEYS.values())
        self.check_keys(table, prefix, every)
        kind = self.get(table, prefix, "kind", str)
        if kind not in AGENT_KINDS:
            raise self.fail(f"{prefix}.kind",
                            f"must be one of {', '.join(AGENT_KINDS)} (got {kind!r})")
        for key in table:
            if key not in _AGENT_KEYS | _KIND_KEYS[kind]:
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
            **identities,
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

    def engage_rule(self, table: Mapping[str, Any], prefix: str) -> EngageRule:
        """The engage keys of one ``[[bindings]]`` entry."""
        mode = self.get(table, prefix, "engage", str, "addressed")
        mode = ENGAGE_MODE_ALIASES.get(mode, mode)
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
            self.check_keys(table, prefix, _BINDING_KEYS)
            agent = self.get(table, prefix, "agent", str)
            if agent not in agents:
                raise self.fail(f"{prefix}.agent",
                                f"binding {index + 1} names agent {agent!r}, which is not "
                                f"defined (agents: {', '.join(sorted(agents))})")
            platform = self.get(table, prefix, "platform", str, PLATFORMS[0])
            if platform not in PLATFORMS:
                raise self.fail(f"{prefix}.platform", f"must be one of {', '.join(PLATFORMS)} "
                                                      f"(got {platform!r})")
            if agents[agent].identity(platform) is None:
                identity = "fabric" if platform == "memory" else platform  # see PLATFORMS
                keys = " and ".join(_IDENTITIES[identity][1])
                raise self.fail(f"{prefix}.platform" if "platform" in table else f"{prefix}.agent",
                                f"binding {index + 1} puts agent {agent!r} on {platform}, where "
                                f"it has no identity: add [agents.{agent}.{identity}] with {keys}")
            scope = self.get(table, prefix, "scope", str, DEFAULT_SCOPE[platform])
            if scope not in SCOPE_GRAINS:
                raise self.fail(f"{prefix}.scope", f"must be one of {', '.join(SCOPE_GRAINS)} "
                                                   f"(got {scope!r})")
            channels = self.strings(table, prefix, "channels") or ("*",)
            result.append(Binding(agent, self.space(table, prefix, platform), channels,
                                  self.strings(table, prefix, "exclude_channels"),
                                  self.engage_rule(table, prefix), platform, scope))
        self.index = 0
        if not result:
            raise self.fail("bindings", "define at least one [[bindings]] entry")
        return tuple(result)

    def space(self, table: Mapping[str, Any], prefix: str, platform: str) -> str:
        """A binding's ``space``: required on Fabric (its guild; ``guild`` is the older key)."""
        if "guild" in table:
            if "space" in table:
                raise self.fail(f"{prefix}.guild", "set twice, as guild and as space: keep "
                                                   "space and remove guild, its older name")
            if platform != "fabric":
                raise self.fail(f"{prefix}.guild", f"applies only to platform fabric; on "
                                                   f"{platform} write space")
            return str(self.get(table, prefix, "guild", str))
        if platform == "fabric" and "space" not in table:
            raise self.fail(f"{prefix}.space", 'missing: the Fabric guild, e.g. space = "dev"')
        return str(self.get(table, prefix, "space", str, ""))


def _dev_center_url(devguild: DevGuildSettings) -> str:
    """The Center API URL of the in-process dev guild."""
    host = f"[{devguild.host}]" if ":" in devguild.host else devguild.host
    return f"http://{host}:{devguild.center_port}/api"


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
