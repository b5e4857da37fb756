"""Doctor's lines for a Feishu/Lark app: its tenant token and bot, its permissions, the
bound chats.

- The app id and secret with the token endpoint, and the bot with
  ``GET bot/v3/info`` (:func:`adapters.chat.lark.session.login`).
- Each binding: its space is the app's tenant, and the bot reads its chats
  (``GET im/v1/chats`` for ``"*"``, ``GET im/v1/chats/:chat_id`` for each named
  one). A refusal for a missing permission (``99991672``) carries the developer
  console URL that grants it, which the line repeats; an ok line lists the
  permissions the bridge uses (:data:`PERMISSIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.chat.lark.api import LarkApi, grant_url
from adapters.chat.lark.config import LarkIdentity
from adapters.chat.lark.session import LarkSession, login
from bridge.config import AgentSettings, Binding
from bridge.errors import ChatError, Forbidden, LoginRefused
from bridge.platform import PlatformCheck

#: The app permissions the bridge needs (docs "scope list"), as the README lists them.
PERMISSIONS = ("im:message", "im:message:send_as_bot", "im:message.p2p_msg:readonly",
               "im:message.group_at_msg:readonly", "im:chat:readonly", "im:resource",
               "cardkit:card:write", "contact:user.base:readonly")


def lark_checks(domain: str, agent: AgentSettings, bindings: Sequence[Binding], *,
                timeout_s: float) -> list[PlatformCheck]:
    """The agent's app: one line for its token and bot, then one per binding (its chats
    read, or the missing permission named with the console URL that grants it).

    Args:
        domain: The open platform origin.
        agent: The agent whose app is checked.
        bindings: The agent's Feishu/Lark bindings.
        timeout_s: Longest wait for one call (seconds; the client's own is 10 s).
    """
    name = f"lark app ({agent.name})"
    identity = agent.identities.get("lark")
    if not isinstance(identity, LarkIdentity):
        return [PlatformCheck(name, "fail", f"agent {agent.name} has no [agents.{agent.name}"
                                            ".lark] app_id and app_secret")]
    try:
        session = login(domain, identity)
    except LoginRefused as exc:
        return [PlatformCheck(name, "fail", f"agent {agent.name}: {exc}; copy the app id "
                                            "and secret from the "
                                            "developer console's Credentials page")]
    except ChatError as exc:
        return [PlatformCheck(name, "fail", f"agent {agent.name}: Feishu/Lark at {domain} "
                                            f"not reached ({exc})")]
    access = session.access_
    found = [PlatformCheck(name, "ok", f"agent {agent.name}: app {access.app_id}, bot "
                                       f"{session.user_name or access.user_id}; tenant token "
                                       "issued")]
    api = access.api()
    for binding in bindings:
        found.append(_binding(api, agent, session, binding))
    return found


def _binding(api: LarkApi, agent: AgentSettings, session: LarkSession,
             binding: Binding) -> PlatformCheck:
    name = f"lark {binding.space} ({agent.name})"
    if session.access(binding.space) is None:
        return PlatformCheck(name, "fail", f"binding space {binding.space!r} is not agent "
                                           f"{agent.name}'s Feishu/Lark tenant (write space = "
                                           "\"tenant\")")
    absent: list[str] = []
    for chat in binding.channels:
        try:
            if chat == "*":
                api.call("GET", "/open-apis/im/v1/chats", what="chats",
                         query=[("page_size", "1")])
            else:
                api.call("GET", "/open-apis/im/v1/chats/:chat_id", what=f"chat {chat}",
                         paths={"chat_id": chat})
        except Forbidden as exc:
            url = grant_url(exc)
            if url:  # a missing permission: the console page that grants it
                return PlatformCheck(name, "fail", f"agent {agent.name}: a permission is "
                                                   f"missing ({exc}); grant it at {url} and "
                                                   "publish a new app version")
            absent.append(f"{chat} ({exc})")
        except ChatError as exc:
            absent.append(f"{chat} ({exc})")
    if absent:
        return PlatformCheck(name, "fail", f"agent {agent.name}'s bot cannot read bound "
                                           f"chat(s) {', '.join(absent)}: add the bot to them "
                                           "or fix the binding")
    listed = ", ".join(binding.channels) or "none"
    return PlatformCheck(name, "ok", f"agent {agent.name}'s bot reads the bound chats "
                                     f"({listed}); the app also needs "
                                     f"{', '.join(PERMISSIONS)}")
