"""Central's side of the downlink: incident notices to gateways over RabbitMQ.

::

    notifier = AmqpGatewayNotifier("amqp://central:secret@broker:5672/%2F")
    IncidentDaemon(service, work_root, gateway_notifier=notifier)   # calls notifier(body)
    notifier.close()

``notifier_from_settings(settings, config_path)`` builds one when central's
``[amqp] url`` is configured and returns None for the embedded default. The
message format is :mod:`firmware_shim.downlink_format`. Errors::

    CentralError
    └── IncidentError
        └── NoticeUndelivered     the broker did not take a notice; it stays queued
"""

from central.downlink._notifier import (
    AmqpGatewayNotifier,
    NoticeUndelivered,
    notifier_from_settings,
)

__all__ = ["AmqpGatewayNotifier", "NoticeUndelivered", "notifier_from_settings"]
