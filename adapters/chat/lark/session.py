"""A Feishu/Lark app's login: its tenant token and who its bot is, as the chat port's Session.

The tenant token comes from lark-oapi's cache (:mod:`adapters.chat.lark.api`);
a login fetches it (``POST /open-apis/auth/v3/tenant_access_token/internal``)
and asks ``GET /open-apis/bot/v3/info`` for the bot's ``open_id`` (its own
messages carry it; mentions name it). An app's tokens reach one tenant: that
tenant is the connection's space, named ``tenant`` in bindings by default.
"""

from __future__ import annotations

import time

import attrs
import requests
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.token.manager import TokenManager

from adapters.chat.lark.api import LarkApi, evict_token
from adapters.chat.lark.config import LarkIdentity
from bridge.errors import LoginRefused, RetryLater, Unauthorized
from bridge.secrets import register_secret

#: The space name of an app's tenant in bindings (``[[bindings]] space``).
TENANT = "tenant"


@attrs.frozen
class LarkAccess:
    """The app's access to its tenant (:class:`bridge.platform.Access`).

    Attributes:
        token: The tenant token at login (never logged; calls take the cached one).
        user_id: The bot's ``open_id`` (``ou_…``).
        issued_at: Epoch seconds of the login.
        app_id: The app id (``cli_…``).
        app_secret: The app secret (never logged).
        domain: The open platform origin the app talks to.
        app_name: The bot's name.
    """

    token: str = attrs.field(repr=False)
    user_id: str
    issued_at: float
    app_id: str
    app_secret: str = attrs.field(repr=False)
    domain: str
    app_name: str = ""

    def api(self) -> LarkApi:
        """REST calls as this app."""
        return LarkApi(self.domain, self.app_id, self.app_secret)


@attrs.frozen
class LarkSession:
    """One login of a Feishu/Lark app (:class:`bridge.platform.Session`).

    Attributes:
        user_name: The bot's name.
        issued_at: Epoch seconds of the login.
        access_: The access to the app's tenant.
    """

    user_name: str
    issued_at: float
    access_: LarkAccess

    def access(self, space: str) -> LarkAccess | None:
        """The access when ``space`` is the app's tenant (``tenant``)."""
        return self.access_ if space == TENANT else None

    def holds(self, token: str) -> bool:
        """Whether ``token`` is this login's tenant token."""
        return token == self.access_.token


def login(domain: str, identity: LarkIdentity) -> LarkSession:
    """Fetch the app's tenant token and its bot's identity.

    Args:
        domain: The open platform origin (no trailing ``/``).
        identity: The app's id and secret.

    Raises:
        bridge.errors.LoginRefused: the platform refused the app id or secret (a
            rotated secret), or the app has no bot.
        bridge.errors.RetryLater: the platform could not be reached.
    """
    app_id = identity.app_id
    api = LarkApi(domain, app_id, identity.app_secret.reveal())
    evict_token(app_id)  # a login always checks the secret, never a cached token
    try:
        token = TokenManager.get_self_tenant_token(api.client.config)
    except ObtainAccessTokenException as exc:
        raise LoginRefused(f"Feishu/Lark refused app {app_id} "
                           f"with the secret from {identity.app_secret.source} "
                           f"(code {exc.code}: {exc.msg})") from None
    except (requests.RequestException, OSError) as exc:
        raise RetryLater(f"Feishu/Lark token endpoint at {domain} unreachable "
                         f"({type(exc).__name__})") from None
    except ValueError:  # not JSON: a proxy's or gateway's error page
        raise RetryLater(f"Feishu/Lark token endpoint at {domain} answered something that "
                         "is not JSON") from None
    register_secret(token, token=True)  # a tenant token never reaches a log line
    try:
        answer = api.call("GET", "/open-apis/bot/v3/info", what="bot info")
    except Unauthorized as exc:
        raise LoginRefused(str(exc)) from None
    bot = answer.get("bot") if isinstance(answer.get("bot"), dict) else {}
    assert isinstance(bot, dict)
    open_id = str(bot.get("open_id", ""))
    if not open_id:
        raise LoginRefused(f"app {app_id} has no bot (enable the "
                           "bot capability in the "
                           "developer console)")
    now = time.time()
    name = str(bot.get("app_name", ""))
    return LarkSession(name, now, LarkAccess(token, open_id, now, app_id,
                                             identity.app_secret.reveal(), domain, name))
