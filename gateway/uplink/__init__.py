"""The gateway's uplink: its SQLite outbox, drained to RabbitMQ with publisher confirms.

::

    uplink = Uplink(settings, outbox_path=state_dir / "gateway.sqlite", gateway_id="gw-1", site="berlin")
    uplink.start()          # its own thread and connection
    uplink.status()         # the status JSON's "uplink" key
    uplink.stop()

``uplink_status_from_file`` gives the same dict from the outbox file when the
daemon is not running. Errors: ``UplinkConfigError`` (bad TLS files) and
``UplinkStoreError`` (not an outbox file) are ``GatewayError`` subclasses.
"""

from gateway.uplink._connection import UplinkConfigError
from gateway.uplink._metrics import UplinkMetrics
from gateway.uplink._outbox_queue import UplinkStoreError
from gateway.uplink._status import STATES, uplink_status_from_file
from gateway.uplink._uplink import Uplink
from gateway.uplink.settings import UplinkSettings

__all__ = [
    "STATES",
    "Uplink",
    "UplinkConfigError",
    "UplinkMetrics",
    "UplinkSettings",
    "UplinkStoreError",
    "uplink_status_from_file",
]
