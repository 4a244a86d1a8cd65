"""Fixtures for the uplink tests: real outbox files, the real broker, a queue to read back from."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from prometheus_client import CollectorRegistry

from firmware_shim.amqp_topology import declare_topology
from firmware_shim.uplink_format import EXCHANGE, routing_key
from gateway.uplink import Uplink, UplinkSettings
from gateway_uplink.outbox_files import OutboxFile
from gateway_uplink.uplink_harness import BROKER_URL, SITE, ReadBack, services


@pytest.fixture
def broker() -> str:
    """The project's RabbitMQ, started by its service script (the test fails if it cannot start).

    Per test, not per session: other suites stop and restart the shared
    broker, and `start` on a running broker returns at once.
    """
    services("start", "rabbitmq")
    return BROKER_URL


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[OutboxFile]:
    file = OutboxFile(tmp_path / "gateway.sqlite")
    yield file
    file.close()


@pytest.fixture
def read_back(broker: str) -> Iterator[ReadBack]:
    gateway_id = "gw-" + uuid.uuid4().hex[:10]
    queue = f"uplink-test.{gateway_id}"
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    channel = connection.channel()
    declare_topology(channel)
    # Quorum, like the real ingest queue, so it keeps messages across a broker restart.
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue, EXCHANGE, routing_key(SITE, gateway_id))
    connection.close()
    yield ReadBack(broker, queue, gateway_id)
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker))
        connection.channel().queue_delete(queue)
        connection.close()
    except pika.exceptions.AMQPError as exc:  # the broker may be down after a failed restart test
        logging.getLogger(__name__).warning("could not delete test queue %s: %s", queue, exc)


@pytest.fixture
def make_uplink(outbox: OutboxFile) -> Iterator[Callable[..., Uplink]]:
    """Build uplinks on the test's outbox (each with its own metrics registry); stop them afterwards."""
    made: list[Uplink] = []

    def make(gateway_id: str, url: str = BROKER_URL, registry: CollectorRegistry | None = None, **settings: Any) -> Uplink:
        uplink = Uplink(
            UplinkSettings(enabled=True, amqp_url=url, **settings),
            outbox_path=outbox.path, gateway_id=gateway_id, site=SITE,
            registry=registry or CollectorRegistry(),
        )
        made.append(uplink)
        return uplink

    yield make
    for uplink in made:
        uplink.stop()
