"""The Feishu/Lark adapter on the local Lark double, for the adapter's unit tests.

:class:`LarkWorld` starts a :class:`~adapters.chat.lark.double.LarkDouble` on
loopback with one app (``echo``, which gets every group message, as an app with
``im:message.group_msg`` does) and two members, and gives the real adapter
(:class:`~adapters.chat.lark.platform.LarkPlatform`) logged in as the app, with
intakes driven by :class:`~tests.contract.host.TestHost`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.chat.lark.client import LarkClient
from adapters.chat.lark.config import LarkIdentity, LarkSettings
from adapters.chat.lark.double import LarkDouble
from adapters.chat.lark.platform import LarkPlatform
from adapters.chat.lark.session import TENANT, LarkAccess
from bridge.config import AgentSettings, Binding
from bridge.model import ConnectionKey
from bridge.secrets import Secret
from tests.contract.host import TestHost

#: lark-oapi uses requests, which reads these: loopback must go direct.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                   "all_proxy")
#: Route names of the double (``LarkDouble.fail`` and ``calls``).
SEND = "POST /open-apis/im/v1/messages"
REPLY = "POST /open-apis/im/v1/messages/:message_id/reply"
TOKEN = "POST /open-apis/auth/v3/tenant_access_token/internal"


def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the proxy variables for the test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class LarkWorld:
    """A started double, its ``echo`` app, members ``alice`` and ``bob``, the platform.

    Each world makes its own app, so lark-oapi's process-wide token cache (keyed by
    app id) never mixes tests.

    Args:
        state_dir: The bridge's state dir (the button key file goes there).
    """

    def __init__(self, state_dir: Path) -> None:
        self.double = LarkDouble()
        self.double.start()
        self.hosts: list[TestHost] = []
        self.app = self.double.add_app("echo", group_messages=True)
        self.alice = self.double.add_user("alice")
        self.bob = self.double.add_user("bob")
        self.platform = LarkPlatform(LarkSettings(domain=self.double.domain),
                                     catch_up_window_s=600.0, state_dir=state_dir,
                                     retry_s=0.05)
        self.agent = AgentSettings(name="echo", kind="echo", identities={"lark": LarkIdentity(
            self.app.app_id, Secret(self.app.app_secret))})
        self.connection = ConnectionKey("lark", "echo", TENANT)

    def access(self) -> LarkAccess:
        """A fresh login of the app to its tenant."""
        access = self.platform.login(self.agent).access(TENANT)
        assert access is not None
        return access

    def client(self) -> LarkClient:
        """The app's REST client (buttons signed by the platform's signer)."""
        return self.platform.client(self.access())

    def host(self) -> TestHost:
        """An intake of the app (every chat bound, a conversation per thread), connected."""
        bindings = [Binding(agent="echo", space=TENANT, platform="lark", scope="thread")]
        host = TestHost(self.platform, self.agent, TENANT, bindings)
        self.hosts.append(host)
        return host.start()

    def texts(self, chat_id: str) -> list[tuple[str, str]]:
        """``(msg_type, text)`` of each message in the chat, oldest first."""
        return [(m["msg_type"], m["text"]) for m in self.double.history(chat_id)]

    def close(self) -> None:
        """Stop the intakes (checking they raised nothing) and the double."""
        try:
            for host in self.hosts:
                host.stop()
            for host in self.hosts:
                assert not host.errors, host.errors
                assert not host.unknown, host.unknown
        finally:
            self.double.stop()


def button_value(double: LarkDouble, message_id: str) -> dict[str, Any]:
    """The callback value of the first button on an app's card message."""
    card = double.message(message_id)["card"]
    assert isinstance(card, dict), f"{message_id} is no card"
    for element in card["body"]["elements"]:
        if element.get("tag") == "button":
            value: dict[str, Any] = element["behaviors"][0]["value"]
            return value
    raise AssertionError(f"no button on {message_id}")
