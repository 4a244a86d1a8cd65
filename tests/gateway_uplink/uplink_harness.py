"""Helpers of the uplink tests: the service script, polling, reading a test queue back."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pika
from server_harness import (  # noqa: F401  (the uplink tests import them from here)
    services,
    wait_for,
)

from firmware_shim.uplink_format import read_message

#: Where `pulsegate-services start rabbitmq` listens (loopback only).
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SITE = "test-site"


@dataclass
class ReadBack:
    """A durable queue bound to one test gateway's routing key, read with basic.get."""

    url: str
    queue: str
    gateway_id: str

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def messages(self, settle_s: float = 10.0) -> list[tuple[pika.BasicProperties, bytes]]:
        """Take every message now in the queue, in queue order.

        basic.get can answer "empty" while a quorum queue that just restarted
        still holds messages, so keep taking until the broker also counts none.
        """
        connection, channel = self._channel()
        taken = []
        deadline = time.monotonic() + settle_s
        try:
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is not None:
                    taken.append((properties, body))
                    continue
                left = channel.queue_declare(self.queue, passive=True).method.message_count
                if left == 0 or time.monotonic() > deadline:
                    return taken
                time.sleep(0.1)
        finally:
            connection.close()

    def records(self, messages: list[tuple[pika.BasicProperties, bytes]]) -> list[dict[str, Any]]:
        return [record for _props, body in messages for record in read_message(body)]
