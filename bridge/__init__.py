"""bridge: lets members of team chats talk to coding agents.

The ``bridge`` package is the core: the model and its keys, the chat and agent
ports, configuration, scope logic, prompt building, chunking, the board and
the state store. It runs no threads and speaks to no platform; the runtime
lives in ``actors``, platform wire formats and agent CLIs in ``adapters``. Its
``ops`` package (operator tools), ``compose`` and ``cli`` are the exception:
they put the layers together.
"""

__version__ = "0.1.0"
