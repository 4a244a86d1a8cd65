"""RabbitMQ from Debian's rabbitmq-server package, as one node on loopback.

The broker runs as root from ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (the
``/usr/sbin`` wrapper would switch to the rabbitmq user, who cannot write the
checkout's state directory). Every path it uses comes from RABBITMQ_* variables
that point under ``.state/services/rabbitmq``, so nothing in /etc or /var is
read or written, and a fixed node name keeps the queues across restarts.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path

from ._errors import ServicesError
from ._server import ManagedServer

logger = logging.getLogger(__name__)

_SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
# The mnesia directory is named after the node: changing it loses every queue.
_NODE_NAME = "pulsegate@localhost"
_AMQP_PORT = 5672
_DISTRIBUTION_PORT = 25672
_PROBE_TIMEOUT_S = 2.0
_RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")

_EXTRA_ERL_ARGS = (
    # Erlang distribution (and epmd, through ERL_EPMD_ADDRESS) would otherwise
    # listen on every interface.
    "-kernel inet_dist_use_interface {127,0,0,1}",
    # Idle schedulers spin before sleeping; on two cores shared with a JVM and
    # the test suite, that spinning takes CPU the others need.
    "+sbwt none +sbwtdcpu none +sbwtdio none",
)

# guest/guest works only from loopback, which is the only listener anyway.
_RABBITMQ_CONF = f"""\
# Written by pulsegate-services; edits are overwritten at the next start.
listeners.tcp.default = 127.0.0.1:{_AMQP_PORT}
loopback_users.guest = true
log.console = false
log.file.level = info
# Tests restart the broker often; keep the log from growing without bound.
log.file.rotation.size = 10485760
log.file.rotation.count = 3
# The development disk may be nearly full; do not block publishers early.
disk_free_limit.absolute = 50MB
"""


class RabbitMQ(ManagedServer):
    """The local AMQP broker gateways publish to and central consumes from."""

    name = "rabbitmq"
    port = _AMQP_PORT
    # A cold boot takes about 5 s; two cores shared with a JVM can triple that.
    start_timeout_s = 90.0
    # A clean shutdown syncs quorum-queue logs; it normally takes 1-3 s.
    stop_grace_s = 30.0

    @property
    def other_ports(self) -> tuple[int, ...]:
        return (_DISTRIBUTION_PORT,)

    @property
    def address(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def prepare(self) -> None:
        if not _SERVER_SCRIPT.exists():
            raise ServicesError(
                f"{_SERVER_SCRIPT} not found; run `pulsegate-services install` as root"
            )
        for sub in ("mnesia", "logs", "erlang-home"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "rabbitmq.conf").write_text(_RABBITMQ_CONF, encoding="utf-8")
        (self.home / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        # An empty env file, so Debian's /etc/rabbitmq/rabbitmq-env.conf is not read.
        (self.home / "rabbitmq-env.conf").write_text("", encoding="utf-8")
        cookie = self.home / "erlang-home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper(), encoding="ascii")
            cookie.chmod(0o400)

    def launch_command(self) -> tuple[list[str], dict[str, str]]:
        home = self.home
        env = {
            "HOME": str(home / "erlang-home"),
            "RABBITMQ_NODENAME": _NODE_NAME,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_DISTRIBUTION_PORT),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(home / "beam.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": " ".join(_EXTRA_ERL_ARGS),
            "ERL_EPMD_ADDRESS": self.host,
        }
        return ["/bin/sh", str(_SERVER_SCRIPT)], env

    def answers(self) -> bool:
        try:
            import pika
            import pika.exceptions
        except ImportError as error:
            raise ServicesError(
                f"pika is not importable ({error}); run `make` to create .venv first"
            ) from error
        # pika logs every refused attempt at ERROR; the probe expects refusals.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        parameters = pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=_PROBE_TIMEOUT_S,
            blocked_connection_timeout=_PROBE_TIMEOUT_S,
        )
        try:
            connection = pika.BlockingConnection(parameters)
        except pika.exceptions.AMQPError:
            return False
        try:
            connection.channel().close()
        finally:
            connection.close()
        return True

    def ctl_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run ``rabbitmqctl args`` against this node.

        The CLI finds the node's Erlang cookie through HOME, which is the
        node's own home under the state directory.
        """
        env = {"HOME": str(self.home / "erlang-home"), "ERL_EPMD_ADDRESS": self.host}
        return [str(_RABBITMQCTL), "-n", _NODE_NAME, *args], env

    def wipe(self) -> None:
        """Delete the node's queues and logs (for a clean slate; the server must be stopped)."""
        shutil.rmtree(self.home / "mnesia", ignore_errors=True)
