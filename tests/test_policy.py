"""Access rules, budgets and workspace rules of bridge.policy; policy fingerprints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from adapters.chat.fabric.config import FabricIdentity
from bridge.config import AgentSettings
from bridge.model import Inbound
from bridge.names import ResolvedNames
from bridge.policy import (
    AccessPolicy,
    HourlyBudget,
    OncePerWindow,
    WorkspaceError,
    check_workspace,
    classify_sender,
    is_bot,
)
from bridge.secrets import Secret
from bridge.sessions import policy_fingerprint


def msg(author: str = "ann", *, author_id: str = "", channel: str = "general",
        channel_id: str = "c-general", bot: bool = False) -> Inbound:
    return Inbound(platform="fabric", agent="coder", space="dev", channel_id=channel_id,
                   channel_name=channel, message_id="m-1", seq=1,
                   author_id=author_id or f"u-{author}", author_name=author, content="hi",
                   author_is_bot=bot)


EVERYONE = AccessPolicy()
LISTED = AccessPolicy(allowed_users=("ann", "u-bob"), admins=("root-user",))
KNOWN = AccessPolicy(allowed_users=("ann",), admins=("boss",), sender_scope="known")
ADMINS_ONLY = AccessPolicy(admins=("boss",), sender_scope="known")
CHANNELS = AccessPolicy(allowed_channels=("general", "c-ops"))
BOTS = AccessPolicy(allow_bots=True)
#: The names above, as a connection resolved them (rules match by id only).
NAMES = ResolvedNames(channels={"general": "c-general"},
                      users={"ann": "u-ann", "boss": "u-boss"})


@pytest.mark.parametrize(("policy", "message", "kind"), [
    (EVERYONE, msg("ann"), "allowed"),
    (EVERYONE, msg("helper", bot=True), "bot"),
    (EVERYONE, msg("coder"), "bot"),                   # the agent itself
    (EVERYONE, msg("other-agent"), "bot"),             # another agent of this bridge
    (BOTS, msg("helper", bot=True), "allowed"),
    (BOTS, msg("coder"), "allowed"),
    (LISTED, msg("ann"), "allowed"),
    (LISTED, msg("ann", author_id="u-mallory"), "refused"),  # ann's name, another id
    (KNOWN, msg("boss", author_id="u-boss2"), "refused"),
    (LISTED, msg("bob"), "allowed"),                   # listed by id
    (LISTED, msg("carol"), "refused"),
    (LISTED, msg("someone", author_id="root-user"), "admin"),
    (KNOWN, msg("ann"), "allowed"),
    (KNOWN, msg("boss"), "admin"),
    (KNOWN, msg("carol"), "refused"),
    (ADMINS_ONLY, msg("ann"), "refused"),
    (ADMINS_ONLY, msg("boss"), "admin"),
    (CHANNELS, msg("ann"), "allowed"),
    (CHANNELS, msg("ann", channel="ops", channel_id="c-ops"), "allowed"),
    (CHANNELS, msg("ann", channel="random", channel_id="c-random"), "channel"),
    (CHANNELS, msg("ann", channel="general", channel_id="c-private"), "channel"),  # same name
    (CHANNELS, msg("helper", bot=True, channel="random", channel_id="c-random"), "channel"),
    (AccessPolicy(admins=("helper",)), msg("helper", bot=True), "bot"),
])
def test_classify_sender(policy: AccessPolicy, message: Inbound, kind: str) -> None:
    sender = classify_sender(policy, message, "coder", bot_names=("coder", "other-agent"),
                             names=NAMES)
    assert sender.kind == kind
    assert sender.allowed == (kind in ("admin", "allowed"))
    assert sender.visible == (kind != "channel")


@pytest.mark.parametrize(("message", "expected"), [
    (msg("ann"), False),
    (msg("ann", bot=True), True),
    (msg("Coder"), True),
    (msg("x", author_id="helper"), True),
])
def test_is_bot(message: Inbound, expected: bool) -> None:
    assert is_bot(message, "coder", ("helper",)) is expected


@pytest.mark.parametrize(("limit", "times", "expected"), [
    (2, [0, 1, 2], [True, True, False]),
    (2, [0, 1, 3600, 3601], [True, True, True, True]),
    (2, [0, 1, 3599, 3600], [True, True, False, True]),
    (0, [0, 0, 0, 0], [True, True, True, True]),
    (1, [0, 10, 3600], [True, False, True]),
])
def test_hourly_budget(limit: int, times: list[float], expected: list[bool]) -> None:
    budget = HourlyBudget(limit)
    assert [budget.take(t) for t in times] == expected


@pytest.mark.parametrize(("events", "expected"), [
    ([("a", 0), ("a", 1), ("b", 2)], [True, False, True]),
    ([("a", 0), ("a", 3599), ("a", 3600)], [True, False, True]),
    ([("a", 0), ("a", 3600), ("a", 3601)], [True, True, False]),
])
def test_once_per_window(events: list[tuple[str, float]], expected: list[bool]) -> None:
    once = OncePerWindow()
    assert [once.first(key, now) for key, now in events] == expected


def test_once_per_window_forgets_oldest_keys() -> None:
    once = OncePerWindow(size=2)
    assert [once.first(k, 0) for k in "abc"] == [True, True, True]
    assert once.first("a", 1) is True   # forgotten: said again
    assert once.first("c", 1) is False


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """roots/ with a project, a symlink into it and a symlink out to /etc."""
    roots = tmp_path / "roots"
    (roots / "project").mkdir(parents=True)
    (roots / "link").symlink_to(roots / "project")
    (roots / "escape").symlink_to("/etc")
    (tmp_path / "home" / "ann").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


@pytest.mark.parametrize(("path", "roots", "error"), [
    ("/", (), "too broad"),
    ("/tmp", (), "too broad"),
    ("/tmp/", (), "too broad"),
    ("/tmp/../etc", (), "too broad"),
    ("/etc", (), "too broad"),
    ("/usr", (), "too broad"),
    ("/var", (), "too broad"),
    ("/home", (), "too broad"),
    ("/root", (), "too broad"),
    ("/proc", (), "too broad"),
    ("/etc/nginx", (), "inside the system folder /etc"),
    ("/usr/lib/python3", (), "inside the system folder /usr/lib"),
    ("/proc/1", (), "inside the system folder /proc"),
    ("relative/path", (), "not an absolute path"),
    ("{t}/home/ann", (), "home folder"),
    ("{t}/roots/escape", ("{t}/roots",), "too broad"),
    ("{t}/elsewhere", ("{t}/roots",), "outside workspace_roots"),
    ("{t}/roots-sibling", ("{t}/roots",), "outside workspace_roots"),
    ("{t}/roots/project", ("{t}/roots",), None),
    ("{t}/roots", ("{t}/roots",), None),
    ("{t}/roots/link", ("{t}/roots",), None),
    ("{t}/roots/new/deeper", ("{t}/roots",), None),
    ("{t}/elsewhere", (), None),
    ("/usr/local/src/app", (), None),
    ("/var/lib/bridge/work", (), None),
])
def test_check_workspace(tree: Path, path: str, roots: tuple[str, ...],
                         error: str | None) -> None:
    homes = frozenset({str(tree / "home" / "ann")})
    given = path.format(t=tree)
    if error is None:
        real = check_workspace(given, [r.format(t=tree) for r in roots], homes=homes)
        assert real == Path(os.path.realpath(given))
    else:
        with pytest.raises(WorkspaceError, match=error):
            check_workspace(given, [r.format(t=tree) for r in roots], homes=homes)


def test_the_real_home_folder_is_refused() -> None:
    with pytest.raises(WorkspaceError, match=r"home folder|too broad"):
        check_workspace(os.path.expanduser("~"))


AGENT = AgentSettings(name="coder", kind="codex",
                      identities={"fabric": FabricIdentity(Secret("fak_test_fp_key"))},
                      workspace=Path("/srv/work/a"))


@pytest.mark.parametrize("change", [
    {"access": AccessPolicy(allowed_users=("ann",))},
    {"access": AccessPolicy(admins=("ann",))},
    {"access": AccessPolicy(allowed_channels=("general",))},
    {"access": AccessPolicy(sender_scope="known", admins=("ann",))},
    {"access": AccessPolicy(allow_bots=True)},
    {"sandbox": "danger-full-access"},
    {"extra_args": ("-c", "sandbox_workspace_write.network_access=true")},
    {"name": "other"},
    {"kind": "claude"},
])
def test_fingerprint_covers_policy(change: dict[str, Any]) -> None:
    base = policy_fingerprint("fabric:coder:dev:c", AGENT, Path("/srv/work/a"))
    assert policy_fingerprint("fabric:coder:dev:c", attrs.evolve(AGENT, **change),
                              Path("/srv/work/a")) != base


def test_fingerprint_ignores_what_does_not_matter() -> None:
    base = policy_fingerprint("fabric:coder:dev:c", AGENT, Path("/srv/work/a"))
    same = attrs.evolve(AGENT, timeout_s=5.0, access=AccessPolicy(
        refusal="", max_runs_per_hour=3, allowed_users=()))
    assert policy_fingerprint("fabric:coder:dev:c", same, Path("/srv/work/a")) == base
    assert policy_fingerprint("fabric:coder:dev:c", AGENT, Path("/srv/work/b")) != base
    assert policy_fingerprint("fabric:coder:dev:d", AGENT, Path("/srv/work/a")) != base
