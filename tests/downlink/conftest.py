"""Fixtures of the downlink tests: the real broker, a vhost of their own, per-test gateway ids."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from server_harness import rabbitmqctl, services

from downlink.downlink_harness import create_vhost, new_gateway_id, vhost_url
from firmware_shim.downlink_format import queue_name

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def _vhost() -> Iterator[str]:
    """One vhost for the session: the uplink's telemetry and every dead letter stay out of the shared one.

    One per session rather than the root conftest's one per test: each vhost
    costs about ten seconds of rabbitmqctl, and per-test gateway ids already
    keep the tests apart.
    """
    services("start", "rabbitmq")
    vhost = create_vhost()
    yield vhost
    try:
        rabbitmqctl("delete_vhost", vhost)
    except AssertionError as exc:  # the broker may be down after another suite's restart test
        logger.warning("could not delete test vhost %s: %s", vhost, exc)


@pytest.fixture
def amqp_url(_vhost: str) -> str:
    """The broker URL of the session's vhost (overrides the root conftest's), broker checked up.

    The test fails if the broker cannot start; it needs no Cassandra.

    Checked per test, not per session: other suites stop and restart the
    shared broker, and `start` on a running broker returns at once.
    """
    services("start", "rabbitmq")
    return vhost_url(_vhost)


@pytest.fixture
def gateway_id(amqp_url: str) -> Iterator[str]:
    """A gateway id no other test uses; its downlink queue is deleted afterwards."""
    gateway = new_gateway_id()
    yield gateway
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(queue_name(gateway))
        connection.close()
    except pika.exceptions.AMQPError as exc:
        logger.warning("could not delete test queue %s: %s", queue_name(gateway), exc)
