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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from bridge.engage import EngageRule
from bridge.names import listed
from bridge.policy import (
    AccessPolicy,
)
from bridge.secrets import Secret

if TYPE_CHECKING:
    from bridge.config_reader import Reader

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
#: Scope grains of a binding: one conversation per channel or per thread.
SCOPE_GRAINS = ("channel", "thread")
#: The largest file (bytes) the bridge fetches or uploads unless ``max_file_bytes`` says
#: otherwise: 20 MiB.
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
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
        receipts: Whether members' messages get receipts (reactions) where the
            platform has reactions: :attr:`receipt_accepted` when a run takes
            them, then :attr:`receipt_answered` or :attr:`receipt_failed`.
        receipt_accepted: The platform's reaction name for "taken into a run".
        receipt_answered: The reaction name for "answered".
        receipt_failed: The reaction name for "the run failed or was stopped".
        max_file_bytes: The largest file (bytes) fetched from a member's message
            or uploaded from a run's outbox folder, where the platform takes files.
        answer_file_after_pieces: An answer that renders into more pieces than
            this is posted as its first piece plus the whole answer uploaded as
            ``answer.md``, where the platform takes files.
        actor_threads: Worker threads shared by the conversations' actors (scopes
            and deliveries; 1 to 256). A delivery's post holds one while it
            waits for the platform, so this bounds the posts in flight.
    """

    state_dir: Path
    debounce_s: float = 0.3
    log_level: str = "INFO"
    catch_up_window_s: float = 600.0
    scope_idle_s: float = 600.0
    max_answer_chars: int = 32_000
    retention_days: float = 14.0
    receipts: bool = True
    receipt_accepted: str = "eyes"
    receipt_answered: str = "white_check_mark"
    receipt_failed: str = "x"
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    answer_file_after_pieces: int = 4
    actor_threads: int = 8

    @property
    def retention_s(self) -> float:
        """``retention_days`` in seconds."""
        return self.retention_days * 86_400.0


@attrs.frozen
class Aliases:
    """Older spellings a platform still accepts in config files (each means the new one).

    Attributes:
        tables: Top-level tables that mean the platform's ``[platforms.NAME]``.
        identity_keys: Keys directly in ``[agents.NAME]`` that mean the keys of the
            platform's identity table ``[agents.NAME.PLATFORM]``.
        space_keys: Keys of a ``[[bindings]]`` entry that mean ``space``.
        engage_modes: Older engage mode names, each to the mode it means.
    """

    tables: tuple[str, ...] = ()
    identity_keys: tuple[str, ...] = ()
    space_keys: tuple[str, ...] = ()
    engage_modes: Mapping[str, str] = attrs.field(factory=dict)


class PlatformSchema(Protocol):
    """What a chat platform declares about its part of the config file.

    The generic reader (:mod:`bridge.config_reader`) reads the tables every
    platform shares the shape of and hands each platform's own tables to its
    schema; the composition passes the schemas of every platform it knows to
    :func:`load_config`. Settings and identities are the platform's own
    (frozen) classes; the core only stores them by platform name.

    Attributes:
        name: The platform's name: ``[platforms.NAME]``, ``[agents.A.NAME]`` and a
            binding's ``platform``.
        has_table: Whether the platform has a settings table ``[platforms.NAME]``
            (an in-memory platform for tests has none).
        identity_keys: The keys of its identity table ``[agents.A.NAME]``, in the
            order error messages list them; empty when it has no such table (then
            its identities are given in code, and a binding on it needs none).
        default_scope: The grain of a binding that names none (one of :data:`SCOPE_GRAINS`).
        missing_space: What a binding on this platform without ``space`` is told
            (after ``missing: ``); empty when ``space`` is optional.
        default_space: The space of a binding that names none, where ``space`` is
            optional (Slack: the app's one workspace).
        aliases: The older spellings it accepts (:class:`Aliases`).
        extra_tables: Other top-level tables it owns (e.g. a dev server's), read
            with :meth:`read_extra` into :attr:`Config.extras`.
    """

    @property
    def name(self) -> str: ...
    @property
    def has_table(self) -> bool: ...
    @property
    def identity_keys(self) -> tuple[str, ...]: ...
    @property
    def default_scope(self) -> str: ...
    @property
    def missing_space(self) -> str: ...
    @property
    def default_space(self) -> str: ...
    @property
    def aliases(self) -> Aliases: ...
    @property
    def extra_tables(self) -> tuple[str, ...]: ...

    def read_settings(self, reader: Reader, table: Mapping[str, Any] | None,
                      prefix: str) -> object:
        """The platform's settings from its table (dotted name ``prefix``).

        Args:
            reader: The file's reader: its helpers check keys and types, resolve
                secrets and raise :class:`ConfigError` naming file, line and key.
            table: The table; None when a binding names the platform but the
                file has no table (``reader.index`` is that binding's index).
            prefix: The table's dotted name (``platforms.NAME`` or an older alias).

        Returns:
            The settings object.

        Raises:
            ConfigError: a bad key; or no table when the platform cannot do
                without one (the message says what to add).
        """
        ...

    def read_identity(self, reader: Reader, table: Mapping[str, Any], prefix: str) -> object:
        """An agent's identity from ``[agents.A.NAME]`` (or its aliased keys).

        Args:
            reader: The file's reader.
            table: The identity's keys (an older form: only its aliased keys).
            prefix: Where those keys are, dotted (``agents.A.NAME`` or ``agents.A``).

        Returns:
            The identity object.

        Raises:
            ConfigError: a bad, missing or unknown key.
        """
        ...

    def read_extra(self, reader: Reader, name: str, table: Mapping[str, Any]) -> object:
        """One of its :attr:`extra_tables`, present in the file, validated.

        Raises:
            ConfigError: a bad or unknown key.
        """
        ...


@attrs.frozen
class AgentSettings:
    """One ``[agents.NAME]`` table.

    Attributes:
        name: The table's name.
        kind: One of :data:`AGENT_KINDS`.
        identities: Its identity on each platform, by platform name (each an object
            of that platform's schema, :meth:`PlatformSchema.read_identity`).
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
    identities: Mapping[str, object] = attrs.field(factory=dict)
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

    def identity(self, platform: str) -> object | None:
        """The agent's identity on ``platform`` (a platform's name), or None."""
        return self.identities.get(platform)


@attrs.frozen
class Binding:
    """One ``[[bindings]]`` entry: which agent listens where.

    Attributes:
        agent: Agent name (a key of ``[agents]``).
        space: The platform's workspace the channels are in (required or not,
            and its older key names, as the platform's schema says).
        channels: Channel ids or names; ``*`` means every channel the agent can see.
            A name matches only the channel it was resolved (and pinned) to
            (:mod:`bridge.names`).
        exclude_channels: Channel ids or names left out even when ``channels`` covers them
            (by id or by the channel's current name: fails closed).
        engage: When the agent engages in these channels (:class:`bridge.engage.EngageRule`).
        platform: The chat platform's name (a schema's, :class:`PlatformSchema`);
            a config file's binding always has one (the first schema's when it
            names none); empty only in a binding built in code without one.
        scope: The conversation grain, one of :data:`SCOPE_GRAINS`; a config
            file's binding that names none gets its platform's default.
    """

    agent: str
    space: str
    channels: tuple[str, ...] = ("*",)
    exclude_channels: tuple[str, ...] = ()
    engage: EngageRule = attrs.field(factory=EngageRule)
    platform: str = ""
    scope: str = attrs.field(default=SCOPE_GRAINS[0], validator=attrs.validators.in_(SCOPE_GRAINS))

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
        platforms: The settings of each platform the config uses (its table is
            present, or a binding names it), by name, in the schemas' order; each
            an object of that platform's schema (:meth:`PlatformSchema.read_settings`).
        agents: Agents by name.
        bindings: Bindings in file order.
        extras: The other top-level tables the platforms own that are present
            (:attr:`PlatformSchema.extra_tables`), by table name.
    """

    path: Path
    bridge: BridgeSettings
    platforms: Mapping[str, object]
    agents: Mapping[str, AgentSettings]
    bindings: tuple[Binding, ...]
    extras: Mapping[str, object] = attrs.field(factory=dict)

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


def load_config(path: str | Path | None, schemas: Sequence[PlatformSchema]) -> Config:
    """Read and validate a config file.

    The composition (:func:`bridge.cli.compose.load_config`) calls this with the
    schemas of every platform it knows.

    Args:
        path: The TOML file; None means the embedded default ``conf/bridge.toml``.
        schemas: The platforms' schemas; the first is a binding's default platform.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: naming the file, line and key of the first problem found.
    """
    from bridge.config_reader import Reader  # the reader needs the classes above

    file, text, data = read_toml(path)
    return Reader(file, text, schemas, data).config(data)


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
