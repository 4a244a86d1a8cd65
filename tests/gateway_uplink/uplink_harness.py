"""Helpers of the uplink tests: the service script, polling, reading a test queue back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from firmware_shim.uplink_format import read_message

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "packaging" / "services" / "pulsegate-services"
#: Where `pulsegate-services start rabbitmq` listens (loopback only).
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SITE = "test-site"


def services(*args: str) -> str:
    """Run the project's service script; fail the test with its output unless it succeeds."""
    done = subprocess.run([str(SERVICES), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pulsegate-services {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


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
