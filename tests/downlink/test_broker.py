"""Central's notifier and the gateway's downlink consumer against the real RabbitMQ."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from prometheus_client import CollectorRegistry

from central.downlink import AmqpGatewayNotifier, NoticeUndelivered
from central.incidents import IncidentError
from downlink.downlink_harness import notice_body, wait_for
from downlink.tcp_cut import TcpCut
from firmware_shim.amqp_topology import DEAD_LETTER_EXCHANGE
from firmware_shim.downlink_format import (
    EXCHANGE,
    MAX_SUMMARY_CHARS,
    IncidentNotice,
    declare_downlink,
    encode_notice,
    queue_name,
)
from gateway.downlink import Downlink
from gateway.uplink import UplinkSettings

pytestmark = pytest.mark.servers


class Collector:
    """The daemon's side of the downlink, reduced to recording what it was handed."""

    def __init__(self, fail_first: int = 0) -> None:
        self.notices: list[IncidentNotice] = []
        self.calls = 0
        self._fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, notice: IncidentNotice) -> None:
        with self._lock:
            self.calls += 1
            if self.calls <= self._fail_first:
                raise RuntimeError("handler bug")
            self.notices.append(notice)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in n.to_body().items() if k != "version"} for n in self.notices]


@pytest.fixture
def make_downlink(amqp_url: str) -> Iterator[Callable[..., Downlink]]:
    made: list[Downlink] = []

    def make(gateway_id: str, on_notice: Callable[[IncidentNotice], None], url: str | None = None) -> Downlink:
        settings = UplinkSettings(enabled=True, amqp_url=url or amqp_url, backoff_min_s=0.1, backoff_max_s=1.0)
        downlink = Downlink(settings, gateway_id=gateway_id, on_notice=on_notice, registry=CollectorRegistry())
        made.append(downlink)
        return downlink

    yield make
    for downlink in made:
        downlink.stop()


@pytest.fixture
def notifier(amqp_url: str) -> Iterator[AmqpGatewayNotifier]:
    made = AmqpGatewayNotifier(amqp_url)
    yield made
    made.close()


def queue_depth(url: str, gateway_id: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue_name(gateway_id), passive=True).method.message_count
    finally:
        connection.close()


def test_a_notice_for_a_gateway_never_seen_is_held_and_delivered_when_it_starts(
    amqp_url: str, gateway_id: str, notifier: AmqpGatewayNotifier, make_downlink: Callable[..., Downlink]
) -> None:
    raised = notice_body(gateway_id)
    resolved = {**raised, "state": "resolved", "at": "2030-01-01T00:00:00.000Z"}
    notifier(raised)
    notifier(resolved)
    assert wait_for(lambda: queue_depth(amqp_url, gateway_id) == 2, 10, "two notices held")

    collector = Collector()
    downlink = make_downlink(gateway_id, collector)
    downlink.start()
    wait_for(lambda: len(collector.notices) == 2, 20, "both notices delivered")
    assert collector.bodies() == [raised, resolved]
    wait_for(lambda: queue_depth(amqp_url, gateway_id) == 0, 10, "both notices acked")
    status = downlink.status()
    assert status["state"] == "connected"
    assert status["queue"] == f"pulsegate.downlink.{gateway_id}"
    assert status["notices"] == {"handled": 2, "duplicate": 0, "rejected": 0, "failed": 0}
    assert status["last_notice"]["state"] == "resolved"


def test_malformed_and_misaddressed_notices_are_dead_lettered(
    amqp_url: str, gateway_id: str, make_downlink: Callable[..., Downlink], caplog: pytest.LogCaptureFixture
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_downlink(channel, gateway_id)
    dead = f"downlink-test-dead.{gateway_id}"
    channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dead, DEAD_LETTER_EXCHANGE, f"downlink.{gateway_id}")
    good = notice_body(gateway_id)
    for message_id, body in (
        ("garbage-1", b"{not json"),
        ("elsewhere-1", encode_notice(notice_body("gw-someone-else"))),
        ("good-1", encode_notice(good)),
    ):
        channel.basic_publish(EXCHANGE, gateway_id, body, pika.BasicProperties(message_id=message_id, delivery_mode=2))

    collector = Collector()
    with caplog.at_level(logging.WARNING, logger="gateway.downlink"):
        downlink = make_downlink(gateway_id, collector)
        downlink.start()
        wait_for(lambda: downlink.status()["notices"]["rejected"] == 2 and collector.notices, 20, "all three settled")
    assert collector.bodies() == [good]

    def dead_letters() -> list[tuple[str, str]]:
        taken = []
        while True:
            method, props, _body = channel.basic_get(dead, auto_ack=True)
            if method is None:
                return taken
            taken.append((props.message_id, props.headers["x-death"][0]["reason"]))

    found: list[tuple[str, str]] = []
    wait_for(lambda: found.extend(dead_letters()) or len(found) == 2, 10, "two dead letters")
    assert sorted(found) == [("elsewhere-1", "rejected"), ("garbage-1", "rejected")]
    channel.queue_delete(dead)
    connection.close()
    rejections = [r.getMessage() for r in caplog.records if "rejected notice" in r.getMessage()]
    assert len(rejections) == 2
    assert "'garbage-1' (dead-lettered): notice body is not JSON" in rejections[0]
    assert "'elsewhere-1' (dead-lettered): it is addressed to gateway 'gw-someone-else'" in rejections[1]


def test_a_notice_the_handler_fails_on_comes_back_and_is_acked_after_success(
    amqp_url: str, gateway_id: str, notifier: AmqpGatewayNotifier, make_downlink: Callable[..., Downlink]
) -> None:
    body = notice_body(gateway_id)
    notifier(body)
    collector = Collector(fail_first=1)
    downlink = make_downlink(gateway_id, collector)
    downlink.start()
    wait_for(lambda: collector.notices, 20, "the retried notice")
    assert collector.calls == 2
    assert collector.bodies() == [body]
    assert downlink.status()["notices"] == {"handled": 1, "duplicate": 0, "rejected": 0, "failed": 1}
    wait_for(lambda: queue_depth(amqp_url, gateway_id) == 0, 10, "the notice acked")


def test_a_republished_notice_is_acked_without_handling_it_twice(
    gateway_id: str, notifier: AmqpGatewayNotifier, make_downlink: Callable[..., Downlink]
) -> None:
    # Central publishes again when it crashed between the confirm and marking the notice done.
    body = notice_body(gateway_id)
    notifier(body)
    notifier(body)
    collector = Collector()
    downlink = make_downlink(gateway_id, collector)
    downlink.start()
    wait_for(lambda: downlink.status()["notices"]["duplicate"] == 1, 20, "the duplicate settled")
    assert collector.bodies() == [body]


def test_a_long_summary_is_shortened_by_central_not_refused(
    gateway_id: str, notifier: AmqpGatewayNotifier, make_downlink: Callable[..., Downlink]
) -> None:
    body = notice_body(gateway_id, summary="word " * 200)
    notifier(body)
    collector = Collector()
    make_downlink(gateway_id, collector).start()
    wait_for(lambda: collector.notices, 20, "the notice")
    summary = collector.notices[0].summary
    assert len(summary) == MAX_SUMMARY_CHARS
    assert summary == ("word " * 200)[: MAX_SUMMARY_CHARS - 1] + "…"


def test_the_downlink_comes_back_after_a_network_cut(
    amqp_url: str, gateway_id: str, notifier: AmqpGatewayNotifier, make_downlink: Callable[..., Downlink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cut = TcpCut()
    vhost_path = amqp_url.rsplit("/", 1)[1]
    collector = Collector()
    with caplog.at_level(logging.INFO, logger="gateway.downlink"):
        downlink = make_downlink(gateway_id, collector, url=f"amqp://guest:guest@127.0.0.1:{cut.port}/{vhost_path}")
        downlink.start()
        wait_for(lambda: downlink.status()["state"] == "connected", 20, "connected through the forwarder")
        before = notice_body(gateway_id)
        notifier(before)
        wait_for(lambda: len(collector.notices) == 1, 20, "the notice before the cut")

        cut.cut()
        wait_for(lambda: downlink.status()["state"] == "down", 20, "the downlink to notice the cut")
        assert downlink.status()["last_error"]
        during = notice_body(gateway_id, priority="P4")
        notifier(during)  # central is not cut off: the broker holds it
        cut.restore()
        wait_for(lambda: len(collector.notices) == 2, 30, "the notice sent during the cut")
    assert collector.bodies() == [before, during]
    assert downlink.status()["state"] == "connected"
    downs = [r for r in caplog.records if r.levelno == logging.WARNING and "is down" in r.getMessage()]
    assert len(downs) == 1, [r.getMessage() for r in downs]
    assert any("is back on broker" in r.getMessage() for r in caplog.records)


def test_the_notifier_reconnects_when_its_idle_connection_was_cut(
    amqp_url: str, gateway_id: str, make_downlink: Callable[..., Downlink]
) -> None:
    cut = TcpCut()
    vhost_path = amqp_url.rsplit("/", 1)[1]
    notifier = AmqpGatewayNotifier(f"amqp://guest:guest@127.0.0.1:{cut.port}/{vhost_path}")
    try:
        first, second = notice_body(gateway_id), notice_body(gateway_id)
        notifier(first)
        cut.cut()
        cut.restore()
        notifier(second)  # the old connection is dead: one fresh one, no error
    finally:
        notifier.close()
        cut.cut()
    collector = Collector()
    make_downlink(gateway_id, collector).start()
    wait_for(lambda: len(collector.notices) == 2, 20, "both notices")
    assert collector.bodies() == [first, second]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_broker_is_reported_once_and_the_notice_kept(caplog: pytest.LogCaptureFixture) -> None:
    notifier = AmqpGatewayNotifier(f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F", connect_timeout_s=2)
    body = notice_body("gym-12")
    with caplog.at_level(logging.DEBUG, logger="central.downlink"):
        for _ in range(3):
            with pytest.raises(NoticeUndelivered) as raised:
                notifier(body)
    assert isinstance(raised.value, IncidentError)  # the incident daemon logs it as one line and retries
    assert str(raised.value).startswith(f"notice for incident {body['incident_id']} not delivered to gateway gym-12 via amqp://127.0.0.1:")
    assert str(raised.value).endswith("; it stays queued and is retried")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot reach broker" in warnings[0].getMessage()
    assert notifier.published_total == 0


def test_a_body_that_cannot_be_routed_is_dropped_with_an_error_not_raised(
    amqp_url: str, notifier: AmqpGatewayNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    body = notice_body("gym 12")
    with caplog.at_level(logging.ERROR, logger="central.downlink"):
        notifier(body)  # raising would stall every later notice in central's ordered outbox
    assert notifier.dropped_total == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"notice for incident {body['incident_id']} dropped, it cannot be sent to a gateway: "
        "gateway_id 'gym 12' is not a gateway id (1-64 letters, digits, '-' or '_')"
    ]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        connection.channel().queue_declare(queue_name("gym 12"), passive=True)
    connection.close()


def test_the_published_message_carries_the_contracts_properties(
    amqp_url: str, gateway_id: str, notifier: AmqpGatewayNotifier
) -> None:
    body = notice_body(gateway_id)
    notifier(body)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    method, props, wire = wait_for(
        lambda: (lambda got: got if got[0] is not None else None)(channel.basic_get(queue_name(gateway_id), auto_ack=True)),
        10, "the message",
    )
    connection.close()
    assert json.loads(wire) == {"version": 1, **body}
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.message_id == f"{body['incident_id']}:new:{body['at']}"
    assert props.headers["pulsegate-format"] == "incident-notice/1"
    assert props.timestamp is not None
