"""``bridge doctor``: check a config against the machine it will run on.

:func:`run_checks` returns one :class:`Check` per finding, each with a one-line
message that says what is wrong and how to fix it (or what is fine). It looks at:

- the config file and the state dir (exists and writable, or creatable);
- whether a bridge runs on that state dir (for information);
- the state store: opened with :class:`~bridge.store.Store`, which runs the same
  integrity and schema checks as ``bridge start``; a missing database is fine
  (it is created on first start) and is never created here; its size in bytes
  (database and WAL) and its row counts per table and state;
- each chat platform the bindings use: its own checks
  (:meth:`bridge.platform.ChatPlatform.checks`) for each agent bound on it (and
  each agent bound nowhere that has an identity there), built by the composition
  (:mod:`bridge.cli.compose`). On Fabric (:mod:`adapters.chat.fabric.checks`): a Center
  login with the agent's API key; each bound guild: the session has it, its channel
  list answers, the bound channel names or ids exist; each channel or user *name* in
  the bindings and access rules: the id it resolves to, or that it is ambiguous.
  Fabric's checks are skipped when the config has ``[devguild]`` and no bridge runs,
  because the dev guild only exists while the bridge does. A platform this version
  cannot build fails, one line per agent;
- the agents: the CLI of ``codex``/``claude`` agents (found, executable,
  ``--version``), ``command[0]`` of command agents, settings that cannot work
  (Claude Code's ``bypassPermissions`` as root) or are risky
  (``danger-full-access``), a missing ``model_api_key``, and the folders the
  agent writes to, and whether a folder the agent's runs work in (workspace,
  ``workspaces``, ``workspace_roots``) lies inside the state dir or holds it.

Like :mod:`bridge.cli`, this module sits at the composition level: it builds the
platforms as the bridge does and uses the Claude adapter's permission rule, so that
doctor and the bridge can never disagree. Nothing here prints or returns a secret: every
message goes through :func:`bridge.secrets.redact`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs

from adapters.agents.claude import permission_problem
from adapters.chat.fabric.config import devguild_settings
from bridge.cli import compose
from bridge.config import AgentSettings, Config
from bridge.platform import ChatPlatform
from bridge.sanitize import terminal_safe
from bridge.secrets import redact
from bridge.statefiles import StatusError, running_pid
from bridge.store import DB_FILE, Store, StoreError, StoreStats

Level = Literal["ok", "warn", "fail"]
#: A platform's level (:class:`bridge.platform.PlatformCheck`) as doctor's; unknown ones fail.
_LEVELS: dict[str, Level] = {"ok": "ok", "warn": "warn", "fail": "fail"}

#: How to install each coding agent's CLI.
INSTALL_HINTS = {"codex": "npm install -g @openai/codex",
                 "claude": "npm install -g @anthropic-ai/claude-code"}
#: Environment variables that give each coding CLI a model key besides ``model_api_key``.
_KEY_VARS = {"codex": {"CODEX_API_KEY", "OPENAI_API_KEY"},
             "claude": {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"}}


@attrs.frozen
class Check:
    """One finding of :func:`run_checks`.

    Attributes:
        name: What was checked, e.g. ``state store`` or ``agent coder binary``.
        ok: False only for level ``fail`` (a warning does not fail doctor).
        level: ``ok``, ``warn`` (works, but look at it) or ``fail`` (cannot work).
        message: One line: what is wrong and how to fix it, or what is fine.
    """

    name: str
    ok: bool
    level: Level
    message: str

    @classmethod
    def make(cls, name: str, level: Level, message: str) -> Check:
        """A check whose ``ok`` follows ``level``; the message is redacted and terminal-safe."""
        return cls(name, level != "fail", level, terminal_safe(redact(message)))


def passed(name: str, message: str) -> Check:
    """An ``ok`` finding."""
    return Check.make(name, "ok", message)


def warning(name: str, message: str) -> Check:
    """A ``warn`` finding."""
    return Check.make(name, "warn", message)


def failure(name: str, message: str) -> Check:
    """A ``fail`` finding."""
    return Check.make(name, "fail", message)


def run_checks(config: Config, *, timeout_s: float = 3.0) -> list[Check]:
    """Run every check on a loaded config.

    Args:
        config: The validated configuration.
        timeout_s: Limit for each network request and each ``--version`` run.

    Returns:
        The findings in a stable order: config, state, network, agents.
    """
    checks = [passed("config", f"config {config.path} loaded ({len(config.agents)} agent(s), "
                               f"{len(config.bindings)} binding(s))")]
    checks.append(_state_dir(config))
    running, check = _running(config)
    checks.append(check)
    checks.extend(_store(config))
    checks.extend(_network(config, running=running, timeout_s=timeout_s))
    for agent in config.agents.values():
        checks.extend(_agent(config, agent, timeout_s))
    return checks


# --------------------------------------------------------------------------- state


def _creatable(path: Path) -> tuple[bool, str]:
    """Whether ``path`` is a writable folder or can be created; with the reason when not."""
    if path.exists():
        if not path.is_dir():
            return False, f"{path} exists but is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return False, f"{path} is not writable by this user"
        return True, f"{path} exists and is writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return False, f"{path} cannot be created ({parent} is not a folder)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return False, f"{path} cannot be created ({parent} is not writable by this user)"
    return True, f"{path} does not exist yet and can be created"


def _state_dir(config: Config) -> Check:
    fine, detail = _creatable(config.bridge.state_dir)
    if fine:
        return passed("state dir", f"state dir {detail}")
    return failure("state dir", f"state dir {detail}; fix its permissions or set "
                                f"[bridge] state_dir to a writable folder")


def _running(config: Config) -> tuple[bool, Check]:
    state_dir = config.bridge.state_dir
    try:
        pid = running_pid(state_dir)
    except (StatusError, OSError) as exc:
        return False, warning("bridge", f"cannot tell whether a bridge runs on {state_dir} "
                                        f"({exc}); check the lock file's permissions")
    if pid is None:
        return False, passed("bridge", f"no bridge is running on state dir {state_dir}")
    return True, passed("bridge", f"a bridge is running on state dir {state_dir} (pid {pid})")


def _store(config: Config) -> list[Check]:
    path = config.bridge.state_dir / DB_FILE
    if not path.exists():
        return [passed("state store", f"no state store yet at {path} (created on first start)")]
    try:
        store = Store(path)
    except StoreError as exc:
        return [failure("state store", str(exc))]
    except OSError as exc:
        return [failure("state store", f"state store {path} cannot be opened ({exc}); fix the "
                                       f"permissions of the file and its folder")]
    try:
        version = store.schema_version
        try:
            stats: StoreStats | str = store.stats()
        except StoreError as exc:
            stats = str(exc)
    finally:
        store.close()
    checks = [passed("state store", f"state store {path} passes its integrity check "
                                    f"(schema version {version})")]
    if isinstance(stats, str):
        checks.append(warning("store size", f"cannot count the store's rows: {stats}"))
    else:
        counts = "; ".join(f"{table} " + (", ".join(f"{state} {n}" for state, n in
                                                     sorted(rows.items())) or "empty")
                           for table, rows in stats.rows.items())
        checks.append(passed("store size", f"state store {stats.total_bytes} bytes (db "
                                           f"{stats.db_bytes}, wal {stats.wal_bytes}), "
                                           f"retention {config.bridge.retention_days:g} days; "
                                           f"rows: {counts}"))
    return checks


# --------------------------------------------------------------------------- network


def _network(config: Config, *, running: bool, timeout_s: float) -> Iterator[Check]:
    """Each platform's checks, per agent, for every platform the bindings use.

    The agents checked on a platform are those bound on it, and those bound
    nowhere that have an identity there (their login is still checked). A
    platform this version cannot build gives one ``fail`` per such agent.
    """
    for name in sorted({b.platform for b in config.bindings}):
        if name == "fabric" and (skipped := _devguild_skip(config, running=running)):
            yield skipped
            continue
        try:
            platform: ChatPlatform | None = compose.platform(config, name)
            problem = ""
        except ValueError as exc:
            platform, problem = None, str(exc)
        for agent in config.agents.values():
            bound = [b for b in config.bindings if (b.agent, b.platform) == (agent.name, name)]
            unbound = not any(b.agent == agent.name for b in config.bindings)
            if not bound and not (unbound and agent.identity(name) is not None):
                continue
            if platform is None:
                yield failure(f"platform {name} ({agent.name})",
                              f"agent {agent.name}: {problem}; its bindings there cannot run: "
                              "bind the agent on a supported platform instead")
                continue
            for found in platform.checks(agent, bound, timeout_s=timeout_s):
                yield Check.make(found.name, _LEVELS.get(found.level, "fail"), found.message)


def _devguild_skip(config: Config, *, running: bool) -> Check | None:
    """The line that replaces Fabric's checks when they cannot reach the dev guild, or None."""
    devguild = devguild_settings(config)
    if devguild is not None and not running:
        return passed("center", "network checks skipped: the [devguild] table starts the dev "
                                "guild with the bridge; run doctor again while "
                                f"'bin/bridge start -c {config.path}' runs to check Center "
                                "and the guilds")
    if devguild is not None and devguild.center_port == 0:
        return passed("center", "network checks skipped: the running bridge's dev guild "
                                "listens on an OS-chosen port (devguild.center_port = 0)")
    return None


# --------------------------------------------------------------------------- agents


def _agent(config: Config, agent: AgentSettings, timeout_s: float) -> Iterator[Check]:
    if not any(b.agent == agent.name for b in config.bindings):
        yield warning(f"agent {agent.name}", f"agent {agent.name} has no [[bindings]] entry, so "
                                             "it hears nothing; bind it to a guild or remove it")
    if agent.kind == "command":
        yield _command(agent)
    elif agent.kind in ("codex", "claude"):
        yield _binary(agent, timeout_s)
        yield from _coding_settings(agent)
    if agent.kind != "echo" and agent.workspace is not None:
        yield _folder(agent, "workspace", agent.workspace, "workspace")
    if agent.kind != "echo":
        yield from _near_state_dir(config, agent)
    if agent.kind == "codex" and agent.codex_home is not None:
        yield _folder(agent, "CODEX_HOME", agent.codex_home, "codex_home")
    if agent.kind == "claude" and agent.config_dir is not None:
        yield _folder(agent, "CLAUDE_CONFIG_DIR", agent.config_dir, "config_dir")


def _near_state_dir(config: Config, agent: AgentSettings) -> Iterator[Check]:
    """Warn when a folder a run may work in lies inside the state dir or holds it.

    A run executes as the bridge's user, so from such a folder it can read (and
    write) ``bridge.db`` with every message, session and pending answer; the
    state dir's 0700/0600 modes only keep other users out. Looks at the
    workspace, each ``workspaces`` alias and each ``workspace_roots`` entry,
    compared as real paths.
    """
    state = os.path.realpath(config.bridge.state_dir)
    places = [("workspace", agent.workspace)] if agent.workspace is not None else []
    places += [(f"workspaces.{alias}", path) for alias, path in agent.workspaces]
    places += [("workspace_roots", root) for root in agent.workspace_roots]
    for key, path in places:
        real = os.path.realpath(path)
        if real == state or real.startswith(state + "/"):
            where = "lies inside"
        elif state.startswith(real.rstrip("/") + "/"):
            where = "holds"
        else:
            continue
        yield warning(f"agent {agent.name} {key} near state dir",
                      f"agent {agent.name}: {key} {path} {where} the state dir {state}, so "
                      f"its runs can read the state store (messages, sessions, answers); "
                      f"set {key} in [agents.{agent.name}] to a folder outside "
                      f"the state dir, or move [bridge] state_dir")


def _folder(agent: AgentSettings, what: str, path: Path, key: str) -> Check:
    name = f"agent {agent.name} {what}"
    fine, detail = _creatable(path)
    if fine:
        return passed(name, f"agent {agent.name}: {what} {detail}")
    return failure(name, f"agent {agent.name}: {what} {detail}; fix the permissions or set "
                         f"{key} = \"/a/writable/folder\" in [agents.{agent.name}]")


def _resolve(program: str, cwd: Path | None = None) -> str | None:
    """The executable ``program`` names (a path, or a name on PATH), or None."""
    if "/" in program:
        path = Path(program).expanduser()
        if not path.is_absolute() and cwd is not None:
            path = cwd / path
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program)


def _command(agent: AgentSettings) -> Check:
    name = f"agent {agent.name} command"
    program = agent.command[0]
    found = _resolve(program, agent.workspace)
    if found is None:
        where = "is not an executable file" if "/" in program else "is not found on PATH"
        return failure(name, f"agent {agent.name}: command {program!r} {where}; install it or "
                             f"set command = [\"/path/to/program\", ...] in [agents.{agent.name}]")
    return passed(name, f"agent {agent.name}: command {program!r} resolves to {found}")


def _binary(agent: AgentSettings, timeout_s: float) -> Check:
    name = f"agent {agent.name} binary"
    program = agent.binary or agent.kind
    found = _resolve(program)
    fix = (f"install it ({INSTALL_HINTS[agent.kind]}) or set binary = \"/path/to/{agent.kind}\" "
           f"in [agents.{agent.name}]")
    if found is None:
        where = "is not an executable file" if "/" in program else "not found on PATH"
        return failure(name, f"agent {agent.name}: binary {program!r} {where}; {fix}")
    try:
        result = subprocess.run([found, "--version"], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, errors="replace",
                                timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return warning(name, f"agent {agent.name}: {found} --version did not answer within "
                             f"{timeout_s:g}s; check that it runs from a shell")
    except OSError as exc:
        return failure(name, f"agent {agent.name}: {found} cannot be run ({exc.strerror or exc}); "
                             f"{fix}")
    output = (result.stdout.strip() or result.stderr.strip()).splitlines()
    if result.returncode != 0:
        tail = output[-1][:200] if output else "no output"
        return failure(name, f"agent {agent.name}: {found} --version exited with "
                             f"{result.returncode} ({tail}); reinstall it "
                             f"({INSTALL_HINTS[agent.kind]})")
    version = output[0][:120] if output else "no version printed"
    return passed(name, f"agent {agent.name}: {found} ({version})")


def _coding_settings(agent: AgentSettings) -> Iterator[Check]:
    section = f"[agents.{agent.name}]"
    if agent.kind == "claude":
        name = f"agent {agent.name} permissions"
        if permission_problem(agent) is not None:
            origin = (f"from sandbox = \"{agent.sandbox}\""
                      if agent.sandbox == "danger-full-access" else "permission_mode")
            yield failure(name, f"agent {agent.name}: permission mode bypassPermissions "
                                f"({origin}) is refused by Claude Code when run as root; set "
                                f"sandbox = \"workspace-write\" / permission_mode = "
                                f"\"acceptEdits\" (with allowed_tools) in {section}, or run the "
                                "bridge as a non-root user")
        else:
            yield passed(name, f"agent {agent.name}: permission mode {agent.permission_mode} "
                               f"(sandbox = \"{agent.sandbox}\")")
    elif agent.sandbox == "danger-full-access":
        yield warning(f"agent {agent.name} sandbox",
                      f"agent {agent.name}: sandbox = \"danger-full-access\" lets Codex run any "
                      f"command without a sandbox; use sandbox = \"workspace-write\" in "
                      f"{section} unless this host is a throwaway container")
    env_names = {name for name, _ in agent.env}
    if agent.model_api_key is None and not env_names & _KEY_VARS[agent.kind]:
        if agent.kind == "codex":
            home, var, login = agent.codex_home, "CODEX_API_KEY", "codex login"
            home_var = "CODEX_HOME"
        else:
            home, var, login = agent.config_dir, "ANTHROPIC_API_KEY", "claude, then /login"
            home_var = "CLAUDE_CONFIG_DIR"
        yield warning(f"agent {agent.name} model key",
                      f"agent {agent.name}: no model_api_key, so the CLI's own login is used "
                      f"(log in once with: {home_var}={home} {login}); or set "
                      f"model_api_key = \"env:{var}\" in {section}")


# --------------------------------------------------------------------------- output


#: Marks per level, and their ASCII fallbacks for terminals that cannot show them.
MARKS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_MARKS: dict[str, str] = {"ok": "ok", "warn": "!", "fail": "X"}


def format_check(check: Check, marks: dict[str, str] | None = None) -> str:
    """One output line: the mark, then the message."""
    return f"{(marks or MARKS)[check.level]} {check.message}"


def summary(checks: list[Check]) -> str:
    """The closing line: counts per level."""
    fails = sum(c.level == "fail" for c in checks)
    warns = sum(c.level == "warn" for c in checks)
    oks = len(checks) - fails - warns
    verdict = "problems found" if fails else "no problems found"
    return f"doctor: {verdict} ({oks} ok, {warns} warning(s), {fails} failure(s))"
