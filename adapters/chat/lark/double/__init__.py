"""A local Feishu/Lark open platform for tests: the open API and the long connection on loopback.

lark-oapi runs against it unmodified::

    with LarkDouble() as lark_double:
        app = lark_double.add_app("bridge")
        alice = lark_double.add_user("alice")
        dm = lark_double.add_p2p(alice, app)
        client = lark.Client.builder().app_id(app.app_id).app_secret(app.app_secret) \\
            .domain(lark_double.domain).build()
        ws = lark.ws.Client(app.app_id, app.app_secret, event_handler=h,
                            domain=lark_double.domain)

Load tools watch it with ``observe(observer)``: called on every message an
app sends or changes, and ``observe_acks(observer)``: called on every event ack
(``bridge bench --platform lark`` times answers and acks with them).

Run one by hand with ``python -m adapters.chat.lark.double --port P``.
"""

from adapters.chat.lark.double.hub import Delivery
from adapters.chat.lark.double.model import DEFAULT_SCOPES, LarkApp, LarkError, text_of
from adapters.chat.lark.double.server import LarkDouble
from adapters.chat.lark.double.state import Tenant

__all__ = ["DEFAULT_SCOPES", "Delivery", "LarkApp", "LarkDouble", "LarkError", "Tenant",
           "text_of"]
