"""Local RabbitMQ and Cassandra servers for development, tests and CI.

Run through ``packaging/services/pulsegate-services``; state lives under
``<repo>/.state/services/<server>/``. Module map:

- ``_cli``: the commands (install, start, stop, restart, status, reset, rabbitmqctl).
- ``_server``: the life cycle shared by every server (pid file, lock, reuse, waits).
- ``_rabbitmq``, ``_cassandra``: how each server is configured, launched and probed.
- ``_apt``: the one-off install of Debian packages without an init system.
- ``_process``: /proc, signals, ports and locks.

Errors: ``ServicesError`` (one line, printed without a stack trace).
"""

from ._cassandra import Cassandra
from ._cli import SERVER_NAMES, main
from ._errors import ServicesError
from ._layout import Layout, default_layout
from ._rabbitmq import RabbitMQ
from ._server import ManagedServer, ServerState

__all__ = [
    "SERVER_NAMES",
    "Cassandra",
    "Layout",
    "ManagedServer",
    "RabbitMQ",
    "ServerState",
    "ServicesError",
    "default_layout",
    "main",
]
