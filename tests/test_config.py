"""Tests of bridge.config: the default file, path resolution and error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.chat.fabric.config import (
    FabricSchema,
    FabricSettings,
    devguild_settings,
    fabric_identity,
    fabric_settings,
    with_center_url,
)
from adapters.chat.fabric.devguild.config import load_devguild_config
from adapters.chat.lark.config import LarkIdentity, LarkSchema, LarkSettings
from adapters.chat.slack.config import SlackIdentity, SlackSchema, SlackSettings
from bridge.cli.compose import SCHEMAS, load_config
from bridge.config import (
    DEFAULT_CONFIG,
    Binding,
    ConfigError,
)
from bridge.secrets import Secret

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
    devguild = devguild_settings(config)
    assert devguild is not None
    assert (devguild.center_port, devguild.guild_port) == (7001, 7002)
    assert devguild.host == "127.0.0.1"
    assert devguild.seed is None  # the packaged seed
    assert fabric_settings(config).center_url == "http://127.0.0.1:7001/api"
    assert set(config.agents) == {"echo"}
    echo = config.agents["echo"]
    assert echo.kind == "echo"
    assert fabric_identity(echo).api_key.reveal() == "fak_dev_echo"
    assert echo.workspace == REPO / "var-workspaces" / "echo"
    assert config.bindings == (Binding("echo", "dev", ("*",), platform="fabric"),)


def test_good_file_values_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    config = load_config(write(sub, GOOD))
    assert config.bridge.state_dir == sub / "state"
    assert config.bridge.debounce_s == 0.5
    assert devguild_settings(config) is None
    assert fabric_settings(config).center_url == "http://127.0.0.1:7001/api"
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
    assert fabric_identity(config.agents["echo"]).api_key.reveal() == "fak_from_file_xyz"
    assert config.agents["echo"].workspace == sub / "ws" / "echo"
    devguild = devguild_settings(config)
    assert devguild is not None
    assert devguild.seed == sub / "seed.toml"
    assert (devguild.center_port, devguild.guild_port) == (7001, 7002)


def test_with_center_url_returns_changed_copy(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    other = with_center_url(config, "http://127.0.0.1:9999/api")
    assert fabric_settings(other).center_url == "http://127.0.0.1:9999/api"
    assert fabric_settings(config).center_url == "http://127.0.0.1:7001/api"
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


def test_receipt_and_file_keys(tmp_path: Path) -> None:
    defaults = load_config(write(tmp_path, GOOD)).bridge
    assert (defaults.receipts, defaults.receipt_accepted, defaults.receipt_answered,
            defaults.receipt_failed) == (True, "eyes", "white_check_mark", "x")
    assert (defaults.max_file_bytes, defaults.answer_file_after_pieces) == (20_971_520, 4)
    text = GOOD.replace("debounce_s = 0.5", textwrap.dedent("""\
        debounce_s = 0.5
        receipts = false
        receipt_accepted = "hourglass"
        receipt_answered = "heavy_check_mark"
        receipt_failed = "warning"
        max_file_bytes = 1024
        answer_file_after_pieces = 2"""))
    bridge = load_config(write(tmp_path, text)).bridge
    assert (bridge.receipts, bridge.receipt_accepted, bridge.receipt_answered,
            bridge.receipt_failed) == (False, "hourglass", "heavy_check_mark", "warning")
    assert (bridge.max_file_bytes, bridge.answer_file_after_pieces) == (1024, 2)


RECEIPT_AND_FILE_ERRORS = [
    # (new line after debounce_s, key in the message, words in the message)
    ('receipt_accepted = ""', "bridge.receipt_accepted", "empty string"),
    ('receipt_answered = "  "', "bridge.receipt_answered", "empty string"),
    ('receipt_failed = ":x:"', "bridge.receipt_failed", "without spaces or colons"),
    ('receipt_accepted = "two words"', "bridge.receipt_accepted", "without spaces or colons"),
    ("receipt_failed = 3", "bridge.receipt_failed", "must be a string"),
    ('receipts = "yes"', "bridge.receipts", "must be true or false"),
    ("max_file_bytes = 0", "bridge.max_file_bytes", "at least 1"),
    ("max_file_bytes = 1.5", "bridge.max_file_bytes", "must be an integer"),
    ("answer_file_after_pieces = 0", "bridge.answer_file_after_pieces", "at least 1"),
]


@pytest.mark.parametrize(("line", "key", "words"), RECEIPT_AND_FILE_ERRORS)
def test_receipt_and_file_key_errors_name_file_line_and_key(tmp_path: Path, line: str,
                                                            key: str, words: str) -> None:
    text = GOOD.replace("debounce_s = 0.5", f"debounce_s = 0.5\n{line}")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(text, line)}: {key}: "), message
    assert words in message, message


def test_actor_threads(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).bridge.actor_threads == 8
    text = GOOD.replace("debounce_s = 0.5", "debounce_s = 0.5\nactor_threads = 3")
    assert load_config(write(tmp_path, text)).bridge.actor_threads == 3


@pytest.mark.parametrize(("line", "words"), [
    ("actor_threads = 0", "must be at least 1, got 0"),
    ("actor_threads = 257", "must be at most 256"),
    ("actor_threads = 2.5", "must be an integer"),
    ('actor_threads = "8"', "must be an integer"),
])
def test_actor_threads_errors_name_file_line_and_key(tmp_path: Path, line: str,
                                                     words: str) -> None:
    text = GOOD.replace("debounce_s = 0.5", f"debounce_s = 0.5\n{line}")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(text, line)}: bridge.actor_threads: "), message
    assert words in message, message


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
    assert info.value.key == "platforms.fabric"   # the table's name since [platforms.NAME]
    assert "fabric: missing table" in str(info.value)
    assert 'add [platforms.fabric] with center_url = "https://HOST/api"' in str(info.value)
    assert info.value.line == line_of(text, "[[bindings]]")  # the binding that needs it


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
    key = fabric_identity(config.agents["echo"]).api_key
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
    assert (engage.mode, engage.sticky_s, engage.ignored) == ("addressed", 600.0, "accumulate")


POLICY_ERRORS = [
    # (old, new, needle for the line, key, words in the message)
    ('channels = ["general", "c-1"]', 'channels = ["general"]\nengage = "always"',
     'engage = "always"', "bindings.engage", "must be one of addressed, mention"),
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


# -- platforms, identities per platform, binding platform/space/scope ---------------------

NEW_FORM = """\
[bridge]
state_dir = "state"

[platforms.fabric]
center_url = "http://127.0.0.1:7001/api/"
content_limit = 4000

[agents.echo]
kind = "echo"

[agents.echo.fabric]
api_key = "fak_test_key_1234"

[[bindings]]
agent = "echo"
space = "dev"
"""

#: An agent with a Slack and a Feishu/Lark identity (values from the environment).
MULTI = """\
[bridge]
state_dir = "state"

[agents.bot]
kind = "echo"

[agents.bot.slack]
bot_token = "env:TEST_SLACK_BOT"
app_token = "env:TEST_SLACK_APP"

[agents.bot.lark]
app_id = "cli_test_app"
app_secret = "env:TEST_LARK_SECRET"

[[bindings]]
agent = "bot"
platform = "slack"
channels = ["C123"]

[[bindings]]
agent = "bot"
platform = "lark"
"""

SLACK_BOT = "xoxb-test-bot-token-value"
SLACK_APP = "xapp-test-app-token-value"
LARK_SECRET = "lark-test-app-secret-value"


@pytest.fixture
def platform_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_BOT", SLACK_BOT)
    monkeypatch.setenv("TEST_SLACK_APP", SLACK_APP)
    monkeypatch.setenv("TEST_LARK_SECRET", LARK_SECRET)


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    return info.value


def test_new_form_platform_table_identity_and_space(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NEW_FORM))
    assert tuple(config.platforms) == ("fabric",)
    assert config.platforms["fabric"] == FabricSettings("http://127.0.0.1:7001/api", 4000, 60.0)
    assert fabric_settings(config) is config.platforms["fabric"]
    assert (config.platforms.get("slack"), config.platforms.get("lark")) == (None, None)
    echo = config.agents["echo"]
    assert fabric_identity(echo).api_key.reveal() == "fak_test_key_1234"
    assert fabric_identity(echo) is echo.identity("fabric")
    assert (echo.identity("slack"), echo.identity("lark")) == (None, None)
    assert config.bindings == (Binding("echo", "dev", ("*",), platform="fabric",
                                       scope="channel"),)


def test_old_form_means_the_same_as_the_new_form(tmp_path: Path) -> None:
    old = load_config(write(tmp_path, GOOD, "old.toml"))
    new = load_config(write(tmp_path, GOOD.replace("[fabric]", "[platforms.fabric]").replace(
        'api_key = "fak_test_key_1234"', '\n[agents.echo.fabric]\napi_key = "fak_test_key_1234"'
    ).replace('guild = "dev"', 'space = "dev"').replace("[[bindings]]", "\n[[bindings]]"),
        "new.toml"))
    assert old.platforms == new.platforms
    assert old.agents["echo"] == new.agents["echo"]
    assert fabric_identity(old.agents["echo"]) == fabric_identity(new.agents["echo"])
    assert old.bindings == new.bindings
    assert old.bindings[0].space == "dev"


def test_fabric_table_given_both_ways_is_an_error(tmp_path: Path) -> None:
    text = NEW_FORM + '\n[fabric]\ncenter_url = "http://127.0.0.1:7001/api"\n'
    error = error_for(tmp_path, text)
    assert error.key == "fabric"
    assert error.line == line_of(text, "[fabric]")
    assert "keep [platforms.fabric]" in str(error) and "remove [fabric]" in str(error)


@pytest.mark.parametrize(("old", "new", "needle", "key", "words"), [
    ('center_url = "http://127.0.0.1:7001/api/"', 'center_url = "ws://x"', "center_url",
     "platforms.fabric.center_url", "http://"),
    ("content_limit = 4000", "content_limit = 50", "content_limit",
     "platforms.fabric.content_limit", "at least 100"),
    ("content_limit = 4000", "content_limit = 4000\nresync = 5", "resync",
     "platforms.fabric.resync", "unknown key"),
    ("[platforms.fabric]", "[platforms.teams]\nx = 1\n\n[platforms.fabric]", "[platforms.teams]",
     "platforms.teams", "unknown platform (known: fabric, slack, lark)"),
])
def test_platform_table_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str,
                                                      needle: str, key: str, words: str) -> None:
    text = NEW_FORM.replace(old, new)
    assert text != NEW_FORM
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == (key, line_of(text, needle))
    assert words in str(error)


def test_fabric_defaults_to_the_dev_guild_center_without_a_table(tmp_path: Path) -> None:
    text = NEW_FORM.replace('[platforms.fabric]\ncenter_url = "http://127.0.0.1:7001/api/"\n'
                            "content_limit = 4000\n", "[devguild]\ncenter_port = 7101\n")
    assert "platforms" not in text
    config = load_config(write(tmp_path, text))
    assert config.platforms["fabric"] == FabricSettings("http://127.0.0.1:7101/api", 8000, 60.0)
    assert fabric_settings(config) == config.platforms["fabric"]
    # A Fabric table without center_url gets the dev guild's Center too.
    with_table = text + "\n[platforms.fabric]\nresync_s = 30\n"
    fabric = load_config(write(tmp_path, with_table)).platforms["fabric"]
    assert fabric == FabricSettings("http://127.0.0.1:7101/api", 8000, 30.0)


def test_fabric_table_without_center_url_nor_devguild(tmp_path: Path) -> None:
    text = NEW_FORM.replace('center_url = "http://127.0.0.1:7001/api/"\n', "")
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == ("platforms.fabric.center_url",
                                       line_of(text, "[platforms.fabric]"))
    assert "missing" in str(error)


def test_slack_and_lark_identities_and_defaults(tmp_path: Path, platform_env: None) -> None:
    config = load_config(write(tmp_path, MULTI))
    assert config.platforms == {"slack": SlackSettings("https://slack.com/api/"),
                                "lark": LarkSettings("https://open.feishu.cn")}
    assert tuple(config.platforms) == ("slack", "lark")
    bot = config.agents["bot"]
    assert bot.identity("fabric") is None
    slack_identity = bot.identity("slack")
    assert slack_identity == SlackIdentity(Secret(SLACK_BOT), Secret(SLACK_APP))
    assert isinstance(slack_identity, SlackIdentity)
    assert slack_identity.bot_token.source == "env:TEST_SLACK_BOT"
    assert bot.identity("lark") == LarkIdentity("cli_test_app", Secret(LARK_SECRET))
    assert bot.identities["slack"] is slack_identity and bot.identity("fabric") is None
    with pytest.raises(LookupError, match=r"\[agents\.bot\.fabric\]"):
        fabric_identity(bot)
    for secret in (SLACK_BOT, SLACK_APP, LARK_SECRET):
        assert secret not in repr(config)
    slack, lark = config.bindings
    assert (slack.platform, slack.space, slack.channels, slack.scope) == (
        "slack", "workspace", ("C123",), "thread")
    assert (lark.platform, lark.space, lark.channels, lark.scope) == ("lark", "tenant", ("*",),
                                                                   "thread")
    # No Fabric anywhere: asking for its settings says what to add.
    assert "fabric" not in config.platforms
    with pytest.raises(LookupError, match=r"add \[platforms\.fabric\] with center_url"):
        fabric_settings(config)
    assert FabricSettings() == FabricSettings("", 8000, 60.0)  # the defaults, no Center


def test_slack_and_lark_tables(tmp_path: Path, platform_env: None) -> None:
    text = MULTI + ('\n[platforms.slack]\napi_url = "http://127.0.0.1:7300/api"\n'
                    '\n[platforms.lark]\ndomain = "https://open.larksuite.com/"\n')
    config = load_config(write(tmp_path, text))
    assert config.platforms["slack"] == SlackSettings("http://127.0.0.1:7300/api/")
    assert config.platforms["lark"] == LarkSettings("https://open.larksuite.com")
    bad = text.replace('api_url = "http://127.0.0.1:7300/api"', 'api_url = "slack.com"')
    error = error_for(tmp_path, bad)
    assert (error.key, error.line) == ("platforms.slack.api_url", line_of(bad, "api_url"))
    bad = text.replace("domain =", "region = \"cn\"\ndomain =")
    error = error_for(tmp_path, bad)
    assert (error.key, error.line) == ("platforms.lark.region", line_of(bad, "region"))
    named = text.replace('api_url = "http://127.0.0.1:7300/api"',
                         'api_url = "http://127.0.0.1:7300/api"\nslash_command = "/coder"')
    assert load_config(write(tmp_path, named)).platforms["slack"] == SlackSettings(
        "http://127.0.0.1:7300/api/", "/coder")
    bad = named.replace('"/coder"', '"coder stop"')
    error = error_for(tmp_path, bad)
    assert (error.key, error.line) == ("platforms.slack.slash_command",
                                       line_of(bad, "slash_command"))
    assert "'coder stop' is not a slash command" in str(error)


def test_a_table_without_bindings_is_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NEW_FORM + "\n[platforms.slack]\n"))
    assert tuple(config.platforms) == ("fabric", "slack")
    assert config.platforms["slack"] == SlackSettings()


@pytest.mark.parametrize(("old", "new", "needle", "key", "words"), [
    ('bot_token = "env:TEST_SLACK_BOT"', f'bot_token = "{SLACK_BOT}"', "bot_token =",
     "agents.bot.slack.bot_token", "must be a reference, env:NAME or file:PATH"),
    ('app_secret = "env:TEST_LARK_SECRET"', f'app_secret = "{LARK_SECRET}"', "app_secret",
     "agents.bot.lark.app_secret", "must be a reference"),
    ('bot_token = "env:TEST_SLACK_BOT"', 'bot_token = "env:TEST_SLACK_APP"', "bot_token =",
     "agents.bot.slack.bot_token", "starting xoxb-; the one from env:TEST_SLACK_APP is not"),
    ('app_token = "env:TEST_SLACK_APP"', 'app_token = "env:TEST_SLACK_BOT"', "app_token =",
     "agents.bot.slack.app_token", "starting xapp-"),
    ('app_token = "env:TEST_SLACK_APP"\n', "", "[agents.bot.slack]",
     "agents.bot.slack.app_token", "missing"),
    ('app_token = "env:TEST_SLACK_APP"', 'app_token = "env:TEST_SLACK_APP"\nsigning = "x"',
     "signing", "agents.bot.slack.signing", "unknown key (known keys: app_token, bot_token)"),
    ('app_secret = "env:TEST_LARK_SECRET"', 'app_secret = "env:TEST_UNSET_LARK_VAR"',
     "app_secret", "agents.bot.lark.app_secret", "TEST_UNSET_LARK_VAR is not set"),
    ('[agents.bot.lark]', "[agents.bot.lark.x]", "[agents.bot.lark.x]",
     "agents.bot.lark.x", "unknown key"),
])
def test_identity_errors(tmp_path: Path, platform_env: None, old: str, new: str, needle: str,
                         key: str, words: str) -> None:
    text = MULTI.replace(old, new)
    assert text != MULTI
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == (key, line_of(text, needle)), str(error)
    assert words in str(error)
    for secret in (SLACK_BOT, SLACK_APP, LARK_SECRET):
        assert secret not in str(error)


def test_fabric_key_given_both_ways_is_an_error(tmp_path: Path) -> None:
    text = NEW_FORM.replace('kind = "echo"\n', 'kind = "echo"\napi_key = "fak_other_key_99"\n')
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == ("agents.echo.api_key", line_of(text, "fak_other_key_99"))
    assert "set twice, here and in [agents.echo.fabric]" in str(error)
    assert "keep api_key in [agents.echo.fabric] and remove this line" in str(error)
    assert "fak_other_key_99" not in str(error)


def test_agent_without_any_identity(tmp_path: Path) -> None:
    text = NEW_FORM.replace('\n[agents.echo.fabric]\napi_key = "fak_test_key_1234"\n', "")
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == ("agents.echo.api_key", line_of(text, "[agents.echo]"))
    assert "[agents.echo.fabric] api_key, [agents.echo.slack] bot_token and app_token" in str(
        error)


def test_binding_on_a_platform_where_the_agent_has_no_identity(tmp_path: Path,
                                                              platform_env: None) -> None:
    text = NEW_FORM + '\n[[bindings]]\nagent = "echo"\nplatform = "slack"\n'
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == ("bindings.platform", line_of(text, 'platform = "slack"'))
    assert ("binding 2 puts agent 'echo' on slack, where it has no identity: add "
            "[agents.echo.slack] with bot_token and app_token") in str(error)
    # The platform left at its default (fabric): the error points at the agent.
    text = MULTI + '\n[[bindings]]\nagent = "bot"\nspace = "dev"\n'
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == ("bindings.agent", _last_line_of(text, 'agent = "bot"'))
    assert "add [agents.bot.fabric] with api_key" in str(error)


@pytest.mark.parametrize(("binding", "platform", "space", "scope"), [
    ('space = "dev"', "fabric", "dev", "channel"),
    ('guild = "dev"', "fabric", "dev", "channel"),
    ('platform = "fabric"\nspace = "dev"\nscope = "thread"', "fabric", "dev", "thread"),
    ('platform = "slack"', "slack", "workspace", "thread"),
    ('platform = "slack"\nspace = "T0001"\nscope = "channel"', "slack", "T0001", "channel"),
    ('platform = "lark"', "lark", "tenant", "thread"),
    ('platform = "lark"\nscope = "channel"', "lark", "tenant", "channel"),
])
def test_binding_platform_space_and_scope(tmp_path: Path, platform_env: None, binding: str,
                                          platform: str, space: str, scope: str) -> None:
    text = (MULTI.split("[[bindings]]")[0] + '[agents.bot.fabric]\napi_key = "fak_k_123456"\n'
            f'\n[devguild]\n\n[[bindings]]\nagent = "bot"\n{binding}\n')
    config = load_config(write(tmp_path, text))
    assert config.bindings == (Binding("bot", space, ("*",), platform=platform, scope=scope),)
    assert tuple(config.platforms) == (platform,)


def test_binding_defaults_in_code() -> None:
    """Each platform's default grain is its schema's; the platforms are the composition's."""
    assert Binding("a", "dev").scope == "channel"
    assert FabricSchema().default_scope == "channel"
    assert SlackSchema().default_scope == "thread"
    assert LarkSchema().default_scope == "thread"
    assert [s.name for s in SCHEMAS] == ["fabric", "slack", "lark", "memory"]
    assert "teams" not in {s.name for s in SCHEMAS}  # a binding on it: test_binding_errors
    with pytest.raises(ValueError):
        Binding("a", "dev", scope="guild")


@pytest.mark.parametrize(("binding", "needle", "key", "words"), [
    ('platform = "teams"', 'platform = "teams"', "bindings.platform",
     "must be one of fabric, slack, lark, memory (got 'teams')"),
    ('space = "dev"\nscope = "topic"', 'scope = "topic"', "bindings.scope",
     "must be one of channel, thread (got 'topic')"),
    ('channels = ["*"]', "[[bindings]]", "bindings.space",
     'missing: the Fabric guild, e.g. space = "dev"'),
    ('space = "dev"\nguild = "dev"', 'guild = "dev"', "bindings.guild",
     "keep space and remove guild"),
    ('platform = "slack"\nguild = "T1"', 'guild = "T1"', "bindings.guild",
     "applies only to platform fabric; on slack write space"),
    ('space = 7', "space = 7", "bindings.space", "must be a string"),
])
def test_binding_errors(tmp_path: Path, platform_env: None, binding: str, needle: str, key: str,
                        words: str) -> None:
    text = (MULTI.split("[[bindings]]")[0] + '[agents.bot.fabric]\napi_key = "fak_k_123456"\n'
            f'\n[[bindings]]\nagent = "bot"\nplatform = "lark"\n'
            f'\n[[bindings]]\nagent = "bot"\n{binding}\n')
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == (key, _last_line_of(text, needle)), str(error)
    assert words in str(error)


def _last_line_of(text: str, needle: str) -> int:
    """1-based line of the last line of ``text`` that contains ``needle``."""
    return max(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_binding_for_by_platform(tmp_path: Path, platform_env: None) -> None:
    text = MULTI + '\n[[bindings]]\nagent = "bot"\nplatform = "slack"\nchannels = ["C9"]\n'
    config = load_config(write(tmp_path, text))
    slack, lark, other = config.bindings
    assert config.binding_for("bot", "workspace", "C123", "") == slack
    assert config.binding_for("bot", "tenant", "C123", "", platform="lark") == lark
    assert config.binding_for("bot", "workspace", "C9", "", platform="slack") == other
    assert config.binding_for("bot", "workspace", "C9", "", platform="fabric") is None


def test_devguild_config_reads_either_fabric_table(tmp_path: Path) -> None:
    text = "[devguild]\n\n[platforms.fabric]\ncontent_limit = 500\n"
    assert load_devguild_config(write(tmp_path, text), SCHEMAS).content_limit == 500
    old = '[devguild]\n\n[fabric]\ncenter_url = "http://127.0.0.1:7001/api"\ncontent_limit = 600\n'
    assert load_devguild_config(write(tmp_path, old), SCHEMAS).content_limit == 600
    both = old + "\n[platforms.fabric]\ncontent_limit = 500\n"
    with pytest.raises(ConfigError, match=r"fabric: both \[fabric\] and \[platforms.fabric\]"):
        load_devguild_config(write(tmp_path, both), SCHEMAS)


def test_engage_wakeup_is_the_old_name_of_addressed(tmp_path: Path) -> None:
    """``engage = "wakeup"`` (configs written before the platform port) still loads."""
    text = GOOD.replace('channels = ["general", "c-1"]',
                        'channels = ["general", "c-1"]\nengage = "wakeup"')
    assert 'engage = "wakeup"' in text
    [binding] = load_config(write(tmp_path, text)).bindings
    assert binding.engage.mode == "addressed"
