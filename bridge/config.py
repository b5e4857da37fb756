"""Configuration: a TOML file validated into frozen attrs classes.

A bad file raises :class:`ConfigError` whose message names the file, the line
and the dotted key, e.g. ``conf/bridge.toml:12: agents.echo.kind: must be one
of echo, command (got 'ech')``. Relative paths resolve against the folder of
the config file. Secrets are references (``env:NAME``, ``file:PATH``) resolved
when the config is loaded, and never shown.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bridge.engage import EngageRule
from bridge.names import listed
from bridge.policy import (
    AccessPolicy,
)
from bridge.secrets import Secret

#: Agent kinds this version can run.
AGENT_KINDS = ("echo", "command", "codex", "claude")
#: Sandbox modes of the coding agents (Codex's names; Claude Code maps them to permission modes).
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
#: Claude Code's ``--permission-mode`` values.
CLAUDE_PERMISSION_MODES = ("default", "acceptEdits", "plan", "dontAsk", "auto",
                           "bypassPermissions")
#: The permission mode a Claude agent gets from its sandbox when none is configured.
#: ``bypassPermissions`` is refused by Claude Code when it runs as root (see ``doctor``).
CLAUDE_MODE_FOR_SANDBOX = {"read-only": "default", "workspace-write": "acceptEdits",
                           "danger-full-access": "bypassPermissions"}
#: Chat platforms a binding may name (``platform = "..."``); the first is the default.
#: ``memory`` is the in-memory platform (:mod:`adapters.chat.memory`) for tests and
#: experiments: it has no settings table, its identity is the agent's Fabric-style
#: ``api_key`` (a credential its server knows), and the composition does not build it
#: (a test hands :class:`actors.app.BridgeApp` a ``MemoryPlatform`` on its own server).
PLATFORMS = ("fabric", "slack", "lark", "memory")
#: Scope grains of a binding: one conversation per channel or per thread.
SCOPE_GRAINS = ("channel", "thread")
#: The grain a binding gets when it names none: Fabric has no threads; on Slack
#: and Feishu/Lark conversations live in threads (topics).
DEFAULT_SCOPE = {"fabric": "channel", "slack": "thread", "lark": "thread", "memory": "channel"}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "bridge.toml"


class ConfigError(ValueError):
    """The configuration is invalid.

    Args:
        file: The config file.
        key: Dotted key that is wrong (empty for a syntax error).
        problem: What is wrong and what is expected.
        line: 1-based line of the key in the file, when it can be found.
    """

    def __init__(self, file: Path, key: str, problem: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")
        self.file = file
        self.key = key
        self.line = line


@attrs.frozen
class BridgeSettings:
    """The ``[bridge]`` table.

    Attributes:
        state_dir: Absolute folder for the lock, status file and (later) the state store.
        debounce_s: Debounce window in seconds (a burst within it becomes one run).
        log_level: Python logging level name.
        catch_up_window_s: Messages fetched after an outage that are older than
            this (seconds) are kept as context only and start no run.
        scope_idle_s: A scope idle this long (seconds) is stopped; its next message
            rebuilds it from the state store.
        max_answer_chars: Longest answer posted in the channel (characters); a
            longer one is cut with a note (it would flood the channel otherwise).
        retention_days: Finished messages, delivered answer pieces and ended runs
            older than this (days; fractions allowed) are pruned from the state
            store. At least ``catch_up_window_s``: a message inside the window
            can be fetched again, and its journal row is what marks it as seen.
    """

    state_dir: Path
    debounce_s: float = 0.3
    log_level: str = "INFO"
    catch_up_window_s: float = 600.0
    scope_idle_s: float = 600.0
    max_answer_chars: int = 32_000
    retention_days: float = 14.0

    @property
    def retention_s(self) -> float:
        """``retention_days`` in seconds."""
        return self.retention_days * 86_400.0


@attrs.frozen
class DevGuildSettings:
    """The ``[devguild]`` table: when present, the dev guild runs in-process.

    Attributes:
        host: Interface to listen on (loopback by default).
        center_port: Center HTTP port (0 lets the OS choose).
        guild_port: Guild HTTP + socket.io port (0 lets the OS choose).
        seed: Seed file with users and channels; None for the seed packaged
            with the bridge (``adapters/chat/fabric/devguild/seed.toml``).
        token_ttl_s: Lifetime of issued tokens, in seconds.
    """

    host: str = "127.0.0.1"
    center_port: int = 7001
    guild_port: int = 7002
    seed: Path | None = None
    token_ttl_s: float = 900.0


@attrs.frozen
class FabricSettings:
    """The ``[platforms.fabric]`` table (the older ``[fabric]`` means the same).

    Attributes:
        center_url: Center API base URL, e.g. ``http://127.0.0.1:7001/api``;
            empty only in the stand-in of a config without Fabric
            (:attr:`Config.fabric`).
        content_limit: Maximum characters per posted message.
        resync_s: Seconds between channel list resyncs.
    """

    center_url: str = ""
    content_limit: int = 8000
    resync_s: float = 60.0


@attrs.frozen
class SlackSettings:
    """The ``[platforms.slack]`` table.

    Attributes:
        api_url: Web API base URL, ending in ``/`` (a local test server in tests).
    """

    api_url: str = "https://slack.com/api/"


@attrs.frozen
class LarkSettings:
    """The ``[platforms.lark]`` table.

    Attributes:
        domain: Open platform origin, no trailing ``/``: ``https://open.feishu.cn``
            (Feishu) or ``https://open.larksuite.com`` (Lark).
    """

    domain: str = "https://open.feishu.cn"


@attrs.frozen
class Platforms:
    """The ``[platforms.NAME]`` tables; None for a platform the config does not use.

    A platform is present when its table is, or when a binding names it (then
    with its defaults).

    Attributes:
        fabric: Fabric's settings.
        slack: Slack's settings.
        lark: Feishu/Lark's settings.
    """

    fabric: FabricSettings | None = None
    slack: SlackSettings | None = None
    lark: LarkSettings | None = None

    def names(self) -> tuple[str, ...]:
        """The platforms present, in :data:`PLATFORMS` order (``memory`` has no table)."""
        return tuple(name for name in PLATFORMS if getattr(self, name, None) is not None)


@attrs.frozen
class FabricIdentity:
    """``[agents.NAME.fabric]``: the agent's Fabric user.

    Attributes:
        api_key: Its Center API key.
    """

    api_key: Secret


@attrs.frozen
class SlackIdentity:
    """``[agents.NAME.slack]``: the agent's Slack app.

    Attributes:
        bot_token: The bot token (``xoxb-``), for the Web API.
        app_token: The app-level token (``xapp-``), for Socket Mode.
    """

    bot_token: Secret
    app_token: Secret


@attrs.frozen
class LarkIdentity:
    """``[agents.NAME.lark]``: the agent's Feishu/Lark app.

    Attributes:
        app_id: The app id (``cli_``...).
        app_secret: The app secret.
    """

    app_id: Secret
    app_secret: Secret


@attrs.frozen
class AgentSettings:
    """One ``[agents.NAME]`` table.

    Attributes:
        name: The table's name.
        kind: One of :data:`AGENT_KINDS`.
        fabric: Its Fabric identity, or None.
        slack: Its Slack identity, or None.
        lark: Its Feishu/Lark identity, or None.
        command: argv for ``kind = "command"`` (prompt on stdin, answer on stdout).
        workspace: Working directory of runs (default ``<state_dir>-workspaces/<name>``,
            beside the state dir, never inside it).
        timeout_s: A run is stopped after this many seconds.
        stop_grace_s: Seconds between SIGTERM and SIGKILL when a run is stopped.
        max_output_bytes: Output kept from an agent process; the rest is cut with a note.
        model_api_key: codex/claude: the model API key given to the child
            (``CODEX_API_KEY`` / ``ANTHROPIC_API_KEY``); None leaves the CLI's own login.
        sandbox: codex/claude: one of :data:`SANDBOX_MODES`.
        idle_timeout_s: codex/claude: a run whose child writes nothing for this
            many seconds is stopped and fails.
        binary: codex/claude: the CLI, an absolute path or a name looked up on PATH.
        extra_args: codex/claude: appended to the CLI's arguments.
        env: codex/claude: extra environment of the child, values resolved like secrets.
        codex_home: codex: ``CODEX_HOME`` (default ``<state_dir>/codex-home/<name>``).
        permission_mode: claude: ``--permission-mode`` (default from ``sandbox``,
            see :data:`CLAUDE_MODE_FOR_SANDBOX`).
        allowed_tools: claude: ``--allowedTools`` entries, e.g. ``Bash(pytest:*)``.
        model_base_url: claude: ``ANTHROPIC_BASE_URL`` (empty: the CLI's default).
        config_dir: claude: ``CLAUDE_CONFIG_DIR`` (default ``<state_dir>/claude-home/<name>``).
        access: Who may talk to the agent, where (:class:`bridge.policy.AccessPolicy`).
        workspaces: Workspace aliases (``/cd ALIAS``): (alias, absolute path) pairs.
        workspace_roots: Real paths every workspace must be in (empty: anywhere narrow).
    """

    name: str
    kind: str
    fabric: FabricIdentity | None = None
    slack: SlackIdentity | None = None
    lark: LarkIdentity | None = None
    command: tuple[str, ...] = ()
    workspace: Path | None = None
    timeout_s: float = 1800.0
    stop_grace_s: float = 3.0
    max_output_bytes: int = 1_000_000
    model_api_key: Secret | None = None
    sandbox: str = "workspace-write"
    idle_timeout_s: float = 300.0
    binary: str = ""
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, Secret], ...] = ()
    codex_home: Path | None = None
    permission_mode: str = ""
    allowed_tools: tuple[str, ...] = ()
    model_base_url: str = ""
    config_dir: Path | None = None
    access: AccessPolicy = attrs.field(factory=AccessPolicy)
    workspaces: tuple[tuple[str, Path], ...] = ()
    workspace_roots: tuple[Path, ...] = ()

    @property
    def api_key(self) -> Secret:
        """The Fabric identity's API key.

        Raises:
            LookupError: when the agent has no Fabric identity.
        """
        if self.fabric is None:
            raise LookupError(f"agent {self.name} has no Fabric identity "
                              f"([agents.{self.name}.fabric])")
        return self.fabric.api_key

    def identity(self, platform: str) -> FabricIdentity | SlackIdentity | LarkIdentity | None:
        """The agent's identity on ``platform`` (one of :data:`PLATFORMS`), or None.

        On ``memory`` it is the Fabric identity: the in-memory server knows its ``api_key``.
        """
        if platform not in PLATFORMS:
            return None
        return self.fabric if platform == "memory" else getattr(self, platform)


@attrs.frozen
class Binding:
    """One ``[[bindings]]`` entry: which agent listens where.

    Attributes:
        agent: Agent name (a key of ``[agents]``).
        space: The platform's workspace the channels are in (Fabric: the guild
            node id, the TOML key ``guild``).
        channels: Channel ids or names; ``*`` means every channel the agent can see.
            A name matches only the channel it was resolved (and pinned) to
            (:mod:`bridge.names`).
        exclude_channels: Channel ids or names left out even when ``channels`` covers them
            (by id or by the channel's current name: fails closed).
        engage: When the agent engages in these channels (:class:`bridge.engage.EngageRule`).
        platform: The chat platform, one of :data:`PLATFORMS`.
        scope: The conversation grain, one of :data:`SCOPE_GRAINS`; default
            from :data:`DEFAULT_SCOPE` for the platform.
    """

    agent: str
    space: str
    channels: tuple[str, ...] = ("*",)
    exclude_channels: tuple[str, ...] = ()
    engage: EngageRule = attrs.field(factory=EngageRule)
    platform: str = attrs.field(default=PLATFORMS[0], validator=attrs.validators.in_(PLATFORMS))
    scope: str = attrs.field(
        default=attrs.Factory(lambda self: DEFAULT_SCOPE.get(self.platform, "channel"),
                              takes_self=True),
        validator=attrs.validators.in_(SCOPE_GRAINS))

    def matches(self, channel_id: str, channel_name: str,
                names: Mapping[str, str] | None = None) -> bool:
        """Return True when this binding covers the channel.

        Args:
            channel_id: The channel's id.
            channel_name: Its current name (only exclusions look at it).
            names: Case-folded channel name to id, as resolved by the connection
                (:attr:`bridge.names.ResolvedNames.channels`); a name entry
                matches only through it.
        """
        if channel_id in self.exclude_channels or channel_name in self.exclude_channels:
            return False
        return "*" in self.channels or listed(self.channels, channel_id, names or {})


@attrs.frozen
class Config:
    """The whole validated configuration.

    Attributes:
        path: The file it was read from.
        bridge: ``[bridge]``.
        devguild: ``[devguild]`` or None.
        platforms: ``[platforms.NAME]``, each None when the config does not use it.
        agents: Agents by name.
        bindings: Bindings in file order.
    """

    path: Path
    bridge: BridgeSettings
    devguild: DevGuildSettings | None
    platforms: Platforms
    agents: Mapping[str, AgentSettings]
    bindings: tuple[Binding, ...]

    @property
    def fabric(self) -> FabricSettings:
        """Fabric's settings (``platforms.fabric``).

        A config without Fabric gets Fabric's defaults with no Center URL, so
        that code not yet platform-neutral keeps reading its limits.
        """
        return self.platforms.fabric or FabricSettings()

    def binding_for(self, agent: str, space: str, channel_id: str, channel_name: str,
                    names: Mapping[str, str] | None = None, *,
                    platform: str | None = None) -> Binding | None:
        """The first binding (in file order) of ``agent`` that covers the channel.

        ``names`` is the connection's resolved channel names (see :meth:`Binding.matches`);
        ``platform`` limits the search to one platform's bindings (None: any).
        """
        return next((b for b in self.bindings if (b.agent, b.space) == (agent, space) and
                     platform in (None, b.platform) and
                     b.matches(channel_id, channel_name, names)), None)

    def bindings_of(self, platform: str, agent: str, space: str) -> list[Binding]:
        """The bindings of ``agent`` on one platform's ``space``, in file order."""
        return [b for b in self.bindings if (b.platform, b.agent, b.space) == (
            platform, agent, space)]

    def with_center_url(self, center_url: str) -> Config:
        """Return a copy that talks to another Center (e.g. a dev guild on a chosen port)."""
        fabric = attrs.evolve(self.fabric, center_url=center_url)
        return attrs.evolve(self, platforms=attrs.evolve(self.platforms, fabric=fabric))


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file.

    Args:
        path: The TOML file; None means the embedded default ``conf/bridge.toml``.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: naming the file, line and key of the first problem found.
    """
    from bridge.config_reader import Reader  # the reader needs the classes above

    file, text, data = read_toml(path)
    return Reader(file, text).config(data)


def read_toml(path: str | Path | None) -> tuple[Path, str, dict[str, Any]]:
    """The resolved file, its text and its parsed TOML; ConfigError when unreadable."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    file = file.expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(file, "", f"not valid TOML: {exc}", line) from None
    return file, text, data
