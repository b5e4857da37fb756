"""Tests of bridge.config: the default file, path resolution and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import DEFAULT_CONFIG, Binding, ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
[bridge]
state_dir = "state"
debounce_s = 0.5

[fabric]
center_url = "http://127.0.0.1:7001/api/"

[agents.echo]
kind = "echo"
api_key = "fak_test_key_1234"

[[bindings]]
agent = "echo"
guild = "dev"
channels = ["general", "c-1"]
"""


def write(tmp_path: Path, text: str, name: str = "bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of ``text`` that contains ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def test_default_config_loads() -> None:
    config = load_config()
    assert config.path == DEFAULT_CONFIG.resolve()
    assert config.bridge.state_dir == REPO / "var"
    assert config.bridge.debounce_s == 0.3
    assert config.bridge.log_level == "INFO"
    assert config.devguild is not None
    assert (config.devguild.center_port, config.devguild.guild_port) == (7001, 7002)
    assert config.devguild.host == "127.0.0.1"
    assert config.devguild.seed is None  # the packaged seed
    assert config.fabric.center_url == "http://127.0.0.1:7001/api"
    assert set(config.agents) == {"echo"}
    echo = config.agents["echo"]
    assert echo.kind == "echo"
    assert echo.api_key.reveal() == "fak_dev_echo"
    assert echo.workspace == REPO / "var-workspaces" / "echo"
    assert config.bindings == (Binding("echo", "dev", ("*",)),)


def test_good_file_values_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    config = load_config(write(sub, GOOD))
    assert config.bridge.state_dir == sub / "state"
    assert config.bridge.debounce_s == 0.5
    assert config.devguild is None
    assert config.fabric.center_url == "http://127.0.0.1:7001/api"
    assert config.agents["echo"].workspace == sub / "state-workspaces" / "echo"
    assert config.bindings[0].channels == ("general", "c-1")


def test_relative_paths_resolve_against_config_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (sub / "key.txt").write_text("fak_from_file_xyz\n", encoding="utf-8")
    text = GOOD.replace('state_dir = "state"', 'state_dir = "../var"').replace(
        'api_key = "fak_test_key_1234"',
        'api_key = "file:key.txt"\nworkspace = "ws/echo"',
    ) + '\n[devguild]\nseed = "seed.toml"\n'
    path = write(sub, text)
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.bridge.state_dir == tmp_path / "a" / "var"
    assert config.agents["echo"].api_key.reveal() == "fak_from_file_xyz"
    assert config.agents["echo"].workspace == sub / "ws" / "echo"
    assert config.devguild is not None
    assert config.devguild.seed == sub / "seed.toml"
    assert (config.devguild.center_port, config.devguild.guild_port) == (7001, 7002)


def test_with_center_url_returns_changed_copy(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    other = config.with_center_url("http://127.0.0.1:9999/api")
    assert other.fabric.center_url == "http://127.0.0.1:9999/api"
    assert config.fabric.center_url == "http://127.0.0.1:7001/api"
    assert other.agents == config.agents


# Each case: (replace this, with this, needle on the offending line or None, key in message,
# words the problem must mention).
ERROR_CASES = [
    pytest.param('kind = "echo"', 'kind = "ech"', 'kind = "ech"', "agents.echo.kind",
                 ["echo, command", "'ech'"], id="unknown-agent-kind"),
    pytest.param("debounce_s = 0.5", 'debounce_s = "fast"', "debounce_s", "bridge.debounce_s",
                 ["number", "str"], id="wrong-type"),
    pytest.param("debounce_s = 0.5", "debounce_s = true", "debounce_s", "bridge.debounce_s",
                 ["boolean"], id="bool-for-number"),
    pytest.param("debounce_s = 0.5", "debounce_s = -1", "debounce_s", "bridge.debounce_s",
                 ["zero or more"], id="negative"),
    pytest.param("debounce_s = 0.5", "debounce_s = 0.5\ncolour = 1", "colour", "bridge.colour",
                 ["unknown key"], id="unknown-key-bridge"),
    pytest.param('kind = "echo"', 'kind = "echo"\nmodel = "x"', "model", "agents.echo.model",
                 ["unknown key"], id="unknown-key-agent"),
    pytest.param('agent = "echo"', 'agent = "nobody"', 'agent = "nobody"', "bindings.agent",
                 ["'nobody'", "not defined"], id="binding-undefined-agent"),
    pytest.param('kind = "echo"', 'kind = "command"', None, "agents.echo.command",
                 ["command = ["], id="command-without-command"),
    pytest.param('center_url = "http://127.0.0.1:7001/api/"', 'center_url = "ftp://x"',
                 "center_url", "fabric.center_url", ["http://"], id="bad-url"),
    pytest.param("[bridge]", "[bridges]", "[bridges]", "bridges", ["unknown table"],
                 id="unknown-table"),
]


@pytest.mark.parametrize(("old", "new", "needle", "key", "words"), ERROR_CASES)
def test_config_errors_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, needle: str | None, key: str, words: list[str]
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert f": {key}: " in message
    assert info.value.key == key
    if needle is not None:
        line = line_of(text, needle)
        assert f"{path}:{line}: " in message
        assert info.value.line == line
    for word in words:
        assert word in message


def test_command_without_command_points_at_agent_table(tmp_path: Path) -> None:
    text = GOOD.replace('kind = "echo"', 'kind = "command"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # No command line exists, so the best line is the agent's table header.
    assert info.value.line == line_of(text, "[agents.echo]")


def test_missing_fabric_table(tmp_path: Path) -> None:
    text = GOOD.replace("[fabric]\ncenter_url = \"http://127.0.0.1:7001/api/\"\n", "")
    assert "[fabric]" not in text
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert info.value.key == "fabric"
    assert "fabric: missing table" in str(info.value)


def test_missing_agents_and_bindings(tmp_path: Path) -> None:
    no_bindings = GOOD.split("[[bindings]]")[0]
    with pytest.raises(ConfigError, match=r"bindings: define at least one"):
        load_config(write(tmp_path, no_bindings))
    empty_agents = no_bindings.split("[agents.echo]")[0] + "[agents]\n"
    with pytest.raises(ConfigError, match=r"agents: define at least one agent"):
        load_config(write(tmp_path, empty_agents, "b.toml"))


def test_bad_toml_syntax_names_line(tmp_path: Path) -> None:
    text = GOOD.replace("debounce_s = 0.5", "debounce_s = = 0.5")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = line_of(text, "debounce_s = =")
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: not valid TOML")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_unset_env_secret_names_variable_but_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_VAR_XYZ", raising=False)
    text = GOOD + '\n[agents.second]\nkind = "echo"\napi_key = "env:UNSET_VAR_XYZ"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "UNSET_VAR_XYZ" in message
    assert info.value.key == "agents.second.api_key"
    assert f"{path}:{line_of(text, 'env:UNSET_VAR_XYZ')}: " in message
    # The other agent's literal key was resolved first; it must not leak into the error.
    assert "fak_test_key_1234" not in message


def test_env_secret_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_KEY_VAR", "fak_secret_from_env")
    text = GOOD.replace('"fak_test_key_1234"', '"env:BRIDGE_TEST_KEY_VAR"')
    config = load_config(write(tmp_path, text))
    key = config.agents["echo"].api_key
    assert key.reveal() == "fak_secret_from_env"
    assert "fak_secret_from_env" not in repr(config)


def test_command_agent_settings(tmp_path: Path) -> None:
    text = GOOD.replace(
        'kind = "echo"',
        'kind = "command"\ncommand = ["python3", "-c", "pass"]\ntimeout_s = 5\n'
        "stop_grace_s = 0.5\nmax_output_bytes = 1000",
    )
    agent = load_config(write(tmp_path, text)).agents["echo"]
    assert agent.command == ("python3", "-c", "pass")
    assert (agent.timeout_s, agent.stop_grace_s, agent.max_output_bytes) == (5.0, 0.5, 1000)


def test_command_must_be_list_of_strings(tmp_path: Path) -> None:
    text = GOOD.replace('kind = "echo"', 'kind = "command"\ncommand = ["python3", 3]')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"agents\.echo\.command: must be a list of strings"):
        load_config(path)


def test_devguild_port_out_of_range(tmp_path: Path) -> None:
    text = GOOD + "\n[devguild]\ncenter_port = 70000\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "devguild.center_port"
    assert info.value.line == line_of(text, "center_port")


def test_binding_error_names_line_of_the_bad_binding(tmp_path: Path) -> None:
    text = GOOD + '\n[[bindings]]\nagent = "ghost"\nguild = "dev"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "binding 2" in str(info.value)
    assert info.value.key == "bindings.agent"


def test_binding_error_line_points_at_second_binding(tmp_path: Path) -> None:
    text = GOOD + '\n[[bindings]]\nagent = "ghost"\nguild = "dev"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == line_of(text, 'agent = "ghost"')


def test_negative_max_output_bytes_rejected(tmp_path: Path) -> None:
    text = GOOD.replace('kind = "echo"', 'kind = "echo"\nmax_output_bytes = -5')
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("channels", "channel_id", "channel_name", "expected"),
    [
        (("*",), "c-9", "anything", True),
        (("c-1",), "c-1", "general", True),
        (("general",), "c-1", "general", True),
        (("general",), "c-2", "random", False),
        (("c-1", "random"), "c-2", "random", True),
        ((), "c-1", "general", False),
        (("general",), "c-3", "general", False),   # another channel named general
        (("Random",), "c-2", "random", True),      # names are case-insensitive
    ],
)
def test_binding_matches(
    channels: tuple[str, ...], channel_id: str, channel_name: str, expected: bool
) -> None:
    resolved = {"general": "c-1", "random": "c-2"}   # names pinned by the connection
    assert Binding("echo", "dev", channels).matches(channel_id, channel_name, resolved) is (
        expected)


def test_binding_never_matches_an_unresolved_name() -> None:
    assert not Binding("echo", "dev", ("general",)).matches("c-1", "general")


# -- bindings: exclude_channels and engage; agents: access and workspaces ----------------

@pytest.mark.parametrize(("channels", "exclude", "channel_id", "channel_name", "expected"), [
    (("*",), ("random",), "c-2", "random", False),
    (("*",), ("c-2",), "c-2", "random", False),
    (("*",), ("random",), "c-1", "general", True),
    (("general",), ("general",), "c-1", "general", False),
])
def test_binding_exclude_channels(channels: tuple[str, ...], exclude: tuple[str, ...],
                                  channel_id: str, channel_name: str, expected: bool) -> None:
    assert Binding("echo", "dev", channels, exclude).matches(channel_id, channel_name) is (
        expected)


POLICY = GOOD.replace('api_key = "fak_test_key_1234"\n', """api_key = "fak_test_key_1234"
allowed_users = ["alice", "u-2"]
admins = ["root-user"]
allowed_channels = ["general"]
sender_scope = "known"
allow_bots = true
max_runs_per_hour = 5
refusal = ""
workspace_roots = ["roots"]
workspace = "roots/main"
workspaces = { backend = "roots/backend", docs = "roots/docs" }
""") + """exclude_channels = ["random"]
engage = "mention-sticky"
sticky_s = 120
ignored = "drop"

[[bindings]]
agent = "echo"
guild = "dev"
channels = ["ops"]
engage = "pattern"
engage_pattern = "^!deploy"
"""


def test_policy_and_engage_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, POLICY))
    echo = config.agents["echo"]
    access = echo.access
    assert (access.allowed_users, access.admins, access.allowed_channels) == (
        ("alice", "u-2"), ("root-user",), ("general",))
    assert (access.sender_scope, access.allow_bots, access.max_runs_per_hour,
            access.refusal) == ("known", True, 5, "")
    roots = tmp_path / "roots"
    assert echo.workspace_roots == (roots,)
    assert echo.workspaces == (("backend", roots / "backend"), ("docs", roots / "docs"))
    first, second = config.bindings
    assert first.exclude_channels == ("random",)
    assert (first.engage.mode, first.engage.sticky_s, first.engage.ignored) == (
        "mention-sticky", 120.0, "drop")
    assert (second.engage.mode, second.engage.pattern) == ("pattern", "^!deploy")
    assert config.binding_for("echo", "dev", "c-1", "general") == first
    assert config.binding_for("echo", "dev", "c-9", "ops", {"ops": "c-9"}) == second
    assert config.binding_for("echo", "dev", "c-7", "ops", {"ops": "c-9"}) is None  # not by name
    assert config.binding_for("echo", "dev", "c-8", "random") is None
    assert config.binding_for("other", "dev", "c-1", "general") is None


def test_policy_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    access = config.agents["echo"].access
    assert (access.allowed_users, access.admins, access.allowed_channels) == ((), (), ())
    assert (access.sender_scope, access.allow_bots, access.max_runs_per_hour) == (
        "all", False, 60)
    assert access.refusal
    assert config.agents["echo"].workspaces == ()
    engage = config.bindings[0].engage
    assert (engage.mode, engage.sticky_s, engage.ignored) == ("wakeup", 600.0, "accumulate")


POLICY_ERRORS = [
    # (old, new, needle for the line, key, words in the message)
    ('channels = ["general", "c-1"]', 'channels = ["general"]\nengage = "always"',
     'engage = "always"', "bindings.engage", "must be one of wakeup, mention"),
    ('channels = ["general", "c-1"]', 'engage = "pattern"', 'engage = "pattern"',
     "bindings.engage_pattern", "needs engage_pattern"),
    ('channels = ["general", "c-1"]', 'engage = "pattern"\nengage_pattern = "(unclosed"',
     "engage_pattern", "bindings.engage_pattern", "not a valid regular expression"),
    ('channels = ["general", "c-1"]', 'engage_pattern = "x"', "engage_pattern",
     "bindings.engage_pattern", 'applies only to engage = "pattern"'),
    ('channels = ["general", "c-1"]', 'sticky_s = 5', "sticky_s", "bindings.sticky_s",
     'applies only to engage = "mention-sticky"'),
    ('channels = ["general", "c-1"]', 'engage = "mention-sticky"\nsticky_s = 0', "sticky_s",
     "bindings.sticky_s", "more than zero"),
    ('channels = ["general", "c-1"]', 'ignored = "keep"', "ignored", "bindings.ignored",
     "must be one of accumulate, drop"),
    ('channels = ["general", "c-1"]', 'exclude_channels = "random"', "exclude_channels",
     "bindings.exclude_channels", "must be a list"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nsender_scope = "some"',
     "sender_scope", "agents.echo.sender_scope", "must be one of all, known"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nsender_scope = "known"',
     "sender_scope", "agents.echo.sender_scope", "needs allowed_users or admins"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nallowed_users = "ann"',
     "allowed_users", "agents.echo.allowed_users", "must be a list"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nallow_bots = "yes"',
     "allow_bots", "agents.echo.allow_bots", "must be true or false"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nmax_runs_per_hour = -1', "max_runs_per_hour",
     "agents.echo.max_runs_per_hour", "at least 0"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nworkspace = "/etc"',
     'workspace = "/etc"', "agents.echo.workspace", "too broad"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nworkspace = "/tmp"',
     'workspace = "/tmp"', "agents.echo.workspace", "too broad"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspace_roots = ["roots"]\nworkspace = "elsewhere"',
     'workspace = "elsewhere"', "agents.echo.workspace", "outside workspace_roots"),
    ('api_key = "fak_test_key_1234"', 'api_key = "fak_test_key_1234"\nworkspace_roots = ["/"]',
     "workspace_roots", "agents.echo.workspace_roots", "not a useful root"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspaces = { root = "/" }', "workspaces",
     "agents.echo.workspaces.root", "too broad"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspaces = { sys = "/etc/app" }', "workspaces",
     "agents.echo.workspaces.sys", "inside the system folder /etc"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspace_roots = ["roots"]\n'
     'workspace = "roots/main"\nworkspaces = { out = "other/x" }', "workspaces",
     "agents.echo.workspaces.out", "outside workspace_roots"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspaces = { default = "ws" }', "workspaces",
     "agents.echo.workspaces.default", "reserved"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\nworkspaces = { "a b" = "ws" }', "workspaces",
     "agents.echo.workspaces.a b", "not a valid alias"),
    ('api_key = "fak_test_key_1234"',
     'api_key = "fak_test_key_1234"\n\n[agents.echo.workspaces]\nx = 3', "x = 3",
     "agents.echo.workspaces.x", "must be a non-empty path string"),
]


@pytest.mark.parametrize(("old", "new", "needle", "key", "words"), POLICY_ERRORS)
def test_policy_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, needle: str,
                                              key: str, words: str) -> None:
    text = GOOD.replace(old, new)
    assert text != GOOD
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(text, needle)}: {key}: "), message
    assert words in message, message
