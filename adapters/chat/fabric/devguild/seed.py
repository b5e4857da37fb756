"""The dev guild's seed: users and channels that exist when the guild starts.

The seed is TOML, loaded with :mod:`tomllib` into frozen attrs classes. The
default seed is package data (``adapters/chat/fabric/devguild/seed.toml``, read through
:mod:`importlib.resources`, so an installed copy finds it too). User and
channel ids are uuid5 values derived from their names, so they are stable
across restarts; a seed may also give explicit ids.
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
import uuid
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

from adapters.chat.fabric.rules import X_TYPES

#: Namespace for the dev guild's uuid5 ids.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "devguild.bridge.local")
#: Kinds a seeded user may have.
USER_KINDS = ("human", "agent")
#: The packaged seed: a resource of this package (listed in setup.cfg ``package_data``).
PACKAGED_SEED = "seed.toml"


def derived_id(kind: str, name: str) -> str:
    """Return the stable uuid5 id of a seeded user or channel.

    Args:
        kind: ``"user"`` or ``"channel"``.
        name: The user's or channel's name.

    Returns:
        A uuid string, the same on every run.
    """
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{name}"))


def _user_id(user: SeedUser) -> str:
    return derived_id("user", user.name)


def _email(user: SeedUser) -> str:
    return f"{user.name}@{'agents' if user.kind == 'agent' else 'humans'}.local"


def _channel_id(channel: SeedChannel) -> str:
    return derived_id("channel", channel.name)


def dev_api_key(name: str) -> str:
    """The dev guild's key of a seeded user without one: ``fak_dev_<name>``.

    Public by design (the dev guild runs on loopback for trying the bridge and
    for tests); a seed that needs private keys gives ``api_key`` per user.
    """
    return f"fak_dev_{name}"


@attrs.frozen
class SeedUser:
    """One seeded user.

    Attributes:
        name: Login name, e.g. ``"alice"``.
        kind: ``"human"`` or ``"agent"``.
        api_key: The key accepted by ``POST /auth/agent/login``; defaults to
            :func:`dev_api_key` of the name (the dev guild's public dev keys).
        email: Defaults to ``NAME@agents.local`` or ``NAME@humans.local``.
        id: Defaults to :func:`derived_id` of the name.
        display_name: The name the guild shows (``/users``, sessions, mentions);
            empty for ``name``. Unlike ``name`` (the seed's handle, unique), it
            may repeat another user's: Fabric does not promise unique names.
    """

    name: str
    kind: str
    api_key: str = attrs.field(default=attrs.Factory(
        lambda self: dev_api_key(self.name), takes_self=True))
    email: str = attrs.field(default=attrs.Factory(_email, takes_self=True))
    id: str = attrs.field(default=attrs.Factory(_user_id, takes_self=True))
    display_name: str = ""


@attrs.frozen
class SeedChannel:
    """One seeded channel.

    Attributes:
        name: Channel name, e.g. ``"general"``.
        x_type: One of :data:`adapters.chat.fabric.rules.X_TYPES`.
        is_public: Whether non-members can see and join it.
        members: Names of the member users.
        purpose: Free text.
        wake: Names of the users in the wake list (``triage``, ``custom``).
        id: Defaults to :func:`derived_id` of the name.
    """

    name: str
    x_type: str
    is_public: bool = True
    members: tuple[str, ...] = ()
    purpose: str = ""
    wake: tuple[str, ...] = ()
    id: str = attrs.field(default=attrs.Factory(_channel_id, takes_self=True))


@attrs.frozen
class Seed:
    """The whole seed of one dev guild.

    Attributes:
        node_id: The guild's node id, e.g. ``"dev"``.
        name: Display name, e.g. ``"Dev Guild"``.
        users: Seeded users.
        channels: Seeded channels.
        purpose: Free text shown in the guild list.
    """

    node_id: str
    name: str
    users: tuple[SeedUser, ...]
    channels: tuple[SeedChannel, ...]
    purpose: str = ""


def validate_seed(seed: Seed, source: str = "seed") -> None:
    """Check cross references and uniqueness in a seed.

    Args:
        seed: The seed to check.
        source: Where it came from, named in errors (a file path or ``"seed"``).

    Raises:
        ValueError: Naming ``source`` and the offending key.
    """
    names: set[str] = set()
    for i, user in enumerate(seed.users):
        key = f"users[{i}]"
        if user.kind not in USER_KINDS:
            raise ValueError(
                f"{source}: {key}.kind: must be one of {USER_KINDS}, not {user.kind!r}"
            )
        for attr in ("name", "id", "api_key"):
            if not getattr(user, attr):
                raise ValueError(f"{source}: {key}.{attr}: must not be empty")
        if user.name in names:
            raise ValueError(f"{source}: {key}.name: duplicate user {user.name!r}")
        names.add(user.name)
    for attr in ("id", "api_key"):
        values = [getattr(u, attr) for u in seed.users]
        if len(set(values)) != len(values):
            raise ValueError(f"{source}: users: duplicate {attr}")
    ids = [c.id for c in seed.channels]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: channels: duplicate id")
    for i, channel in enumerate(seed.channels):
        key = f"channels[{i}]"
        if channel.x_type not in X_TYPES:
            raise ValueError(f"{source}: {key}.x_type: must be one of {X_TYPES}")
        for attr in ("members", "wake"):
            for name in getattr(channel, attr):
                if name not in names:
                    raise ValueError(f"{source}: {key}.{attr}: unknown user {name!r}")


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None or not isinstance(value, kind):
        raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _names(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _get(table, key, list, where, [])
    if not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}.{key}: expected a list of user names")
    return tuple(value)


def _optional(table: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    return {key: _get(table, key, str, where)} if key in table else {}


def parse_seed(data: Mapping[str, Any], source: str = "seed") -> Seed:
    """Build a :class:`Seed` from parsed TOML.

    Args:
        data: ``{"guild": {...}, "users": [...], "channels": [...]}``.
        source: Named in errors.

    Returns:
        The validated seed.

    Raises:
        ValueError: Naming ``source`` and the key with bad data.
    """
    guild = _get(data, "guild", dict, source, {})
    users = []
    for i, table in enumerate(_get(data, "users", list, source, [])):
        where = f"{source}: users[{i}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table")
        users.append(
            SeedUser(
                name=_get(table, "name", str, where),
                kind=_get(table, "kind", str, where),
                **_optional(table, "api_key", where),
                **_optional(table, "email", where),
                **_optional(table, "id", where),
                **_optional(table, "display_name", where),
            )
        )
    channels = []
    for i, table in enumerate(_get(data, "channels", list, source, [])):
        where = f"{source}: channels[{i}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table")
        channels.append(
            SeedChannel(
                name=_get(table, "name", str, where),
                x_type=_get(table, "x_type", str, where),
                is_public=_get(table, "public", bool, where, True),
                members=_names(table, "members", where),
                purpose=_get(table, "purpose", str, where, ""),
                wake=_names(table, "wake", where),
                **_optional(table, "id", where),
            )
        )
    seed = Seed(
        node_id=_get(guild, "node_id", str, f"{source}: guild", "dev"),
        name=_get(guild, "name", str, f"{source}: guild", "Dev Guild"),
        purpose=_get(guild, "purpose", str, f"{source}: guild", ""),
        users=tuple(users),
        channels=tuple(channels),
    )
    validate_seed(seed, source)
    return seed


def load_seed(path: str | os.PathLike[str] | None = None) -> Seed:
    """Load a seed TOML file.

    Args:
        path: The file; None for the packaged seed (:data:`PACKAGED_SEED`).

    Returns:
        The validated seed.

    Raises:
        OSError: If the file cannot be read.
        ValueError: If it is not TOML or holds bad data (the message names the
            file and the key).
    """
    source: Traversable
    if path is None:
        package = __package__ or "adapters.chat.fabric.devguild"
        source = importlib.resources.files(package) / PACKAGED_SEED
        name = f"{source} (the packaged seed)"
    else:
        source = Path(path)
        name = str(source)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: not valid TOML: {exc}") from exc
    return parse_seed(data, name)
