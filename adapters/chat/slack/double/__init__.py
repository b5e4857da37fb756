"""A local Slack for tests and development: the Web API and Socket Mode on loopback.

slack-sdk runs against it unmodified::

    with SlackDouble() as slack:
        app = slack.add_app("bridge")
        alice = slack.add_user("alice")
        general = slack.add_channel("general", [alice, app])
        web = WebClient(token=app.bot_token, base_url=slack.api_url)
        socket = SocketModeClient(app_token=app.app_token,
                                  web_client=WebClient(base_url=slack.api_url))

Load tools that must not read whole histories watch it instead:
``observe(observer)`` is called on every message posted or changed, and
``observe_acks(observer)`` on every Socket Mode ack (``bridge bench --platform
slack`` times answers and acks with them).

Run one by hand with ``python -m adapters.chat.slack.double --port P``.
"""

from adapters.chat.slack.double.hub import Delivery
from adapters.chat.slack.double.model import SlackApp, SlackError
from adapters.chat.slack.double.server import SlackDouble
from adapters.chat.slack.double.state import Workspace

__all__ = ["Delivery", "SlackApp", "SlackDouble", "SlackError", "Workspace"]
