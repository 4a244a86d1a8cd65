"""The uplink against the real RabbitMQ that pulsegate-services runs."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections import Counter
from typing import Any

import pika
import pytest
from prometheus_client import CollectorRegistry

from firmware_shim.uplink_format import CONTENT_TYPE, EXCHANGE, FORMAT
from gateway.uplink import uplink_status_from_file
from gateway_uplink.outbox_files import OutboxFile, make_record
from gateway_uplink.uplink_harness import SITE, ReadBack, services, wait_for

pytestmark = pytest.mark.servers


def keys(records: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(r["device_id"], str(r["boot_id"]), r["seq"]) for r in records]


def test_every_row_arrives_once_and_leaves_the_outbox(outbox: OutboxFile, read_back: ReadBack, make_uplink) -> None:
    """Mixed v1/v2 rows arrive exactly once, grouped by writer schema, with the contract's properties."""
    boot_a, ids_a = outbox.insert_device("tracker-a", 700, version=2)
    boot_b, ids_b = outbox.insert_device("tracker-b", 150, version=1)
    boot_c, ids_c = outbox.insert_device("tracker-c", 120, version=2, first_seq=40)
    expected = (
        [("tracker-a", boot_a, s) for s in range(1, 701)]
        + [("tracker-b", boot_b, s) for s in range(1, 151)]
        + [("tracker-c", boot_c, s) for s in range(40, 160)]
    )
    registry = CollectorRegistry()
    uplink = make_uplink(read_back.gateway_id, registry=registry, batch_max_records=300)
    uplink.start()
    wait_for(lambda: outbox.count() == 0, what="the outbox to empty")
    wait_for(lambda: uplink.status()["confirmed_records_total"] == 970, what="970 confirms")
    messages = read_back.messages()

    records = read_back.records(messages)
    assert sorted(keys(records)) == sorted(expected)
    assert len(records) == len(set(keys(records))) == 970
    for props, body in messages:
        assert props.content_type == CONTENT_TYPE
        assert props.delivery_mode == 2
        assert props.headers["pulsegate-format"] == FORMAT
        assert props.headers["gateway-id"] == read_back.gateway_id
        assert props.headers["site"] == SITE
        in_message = list(read_back.records([(props, body)]))
        assert props.headers["record-count"] == len(in_message) <= 300
        assert len({r["device_id"] == "tracker-b" for r in in_message}) == 1, "one writer schema per message"
        first, last = props.message_id.removeprefix(f"{read_back.gateway_id}:").split("-")
        assert int(first) <= int(last)
    # The v1 records resolve to the v2 reader with v2's defaults.
    assert all(r["rr_intervals_ms"] == [] for r in records if r["device_id"] == "tracker-b")
    assert registry.get_sample_value("pulsegate_gateway_uplink_records_published_total") == 970
    assert registry.get_sample_value("pulsegate_gateway_uplink_records_confirmed_total") == 970
    assert registry.get_sample_value("pulsegate_gateway_uplink_connected") == 1
    assert registry.get_sample_value("pulsegate_gateway_uplink_publish_seconds_count") == len(messages)


def test_nacked_rows_stay_in_the_outbox_and_are_retried(
    broker: str, outbox: OutboxFile, read_back: ReadBack, make_uplink
) -> None:
    """A queue that rejects publishes makes the broker nack: those rows stay until a later confirm."""
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    channel = connection.channel()
    full_queue = f"uplink-test-full.{read_back.gateway_id}"
    channel.queue_declare(full_queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.queue_bind(full_queue, EXCHANGE, f"telemetry.{SITE}.{read_back.gateway_id}")
    try:
        boot, _ids = outbox.insert_device("tracker-n", 400)
        uplink = make_uplink(read_back.gateway_id, batch_max_records=100, max_in_flight_messages=1, retry_delay_s=0.2)
        uplink.start()
        # The first message fills the 1-message queue; every later one is nacked.
        wait_for(lambda: uplink.status()["nacked_records_total"] >= 100, what="a nack")
        status = uplink.status()
        assert status["confirmed_records_total"] == 100
        assert outbox.count() == 300, "nacked rows must stay in the outbox"
        assert "nacked" in status["last_error"]

        channel.queue_delete(full_queue)  # room again: the retries now go through
        wait_for(lambda: outbox.count() == 0, what="the retried rows to be confirmed")
    finally:
        channel.queue_delete(full_queue)
        connection.close()
    records = read_back.records(read_back.messages())
    assert set(keys(records)) == {("tracker-n", boot, s) for s in range(1, 401)}
    assert uplink.status()["confirmed_records_total"] == 400


def test_live_records_go_out_ahead_of_the_backlog(outbox: OutboxFile, read_back: ReadBack, make_uplink) -> None:
    """Rows that arrive after the connection are published before the older backlog."""
    outbox.insert_device("tracker-old", 3000)
    uplink = make_uplink(read_back.gateway_id, batch_max_records=250, max_in_flight_messages=1)
    uplink.pause()  # connect, take the watermark, publish nothing yet
    uplink.start()
    wait_for(lambda: uplink.status()["backlog_records"] == 3000 and _connected(uplink), what="the connection")
    live_boot, _ = outbox.insert_device("tracker-live", 20)
    uplink.resume()
    wait_for(lambda: outbox.count() == 0, what="the outbox to empty")

    messages = read_back.messages()
    order = [r["device_id"] for r in read_back.records(messages[:1])]
    assert order == ["tracker-live"] * 20, "the live message must be the first one out"
    assert [r["seq"] for r in read_back.records(messages[1:])] == list(range(1, 3001)), "backlog oldest first"


def _connected(uplink) -> bool:
    # "state" says paused; "connected" still tells whether the session is up.
    return uplink.status()["connected"]


def test_live_records_overtake_a_draining_backlog(outbox: OutboxFile, read_back: ReadBack, make_uplink) -> None:
    """Live records inserted mid-drain are confirmed while most of the backlog still waits."""
    outbox.insert_device("tracker-old", 20_000)
    uplink = make_uplink(read_back.gateway_id, batch_max_records=100, max_in_flight_messages=1)
    uplink.start()
    wait_for(lambda: uplink.status()["confirmed_records_total"] >= 500, what="the drain to start")
    live_boot, live_ids = outbox.insert_device("tracker-live", 5)
    live_left = lambda: outbox.db.execute(  # noqa: E731
        f"SELECT count(*) FROM outbox WHERE id IN ({','.join(map(str, live_ids))})").fetchone()[0]
    wait_for(lambda: live_left() == 0, what="the live rows to be confirmed")
    assert outbox.count() > 5000, "the live rows should not wait for the backlog"
    wait_for(lambda: outbox.count() == 0, timeout_s=120, what="the backlog to drain")
    records = read_back.records(read_back.messages())
    assert Counter(r["device_id"] for r in records) == {"tracker-old": 20_000, "tracker-live": 5}


def test_pause_stops_publishing_and_resume_continues(outbox: OutboxFile, read_back: ReadBack, make_uplink) -> None:
    outbox.insert_device("tracker-p", 200)
    uplink = make_uplink(read_back.gateway_id)
    uplink.pause()
    uplink.start()
    wait_for(lambda: _connected(uplink), what="the connection")
    outbox.insert_device("tracker-q", 10)
    uplink.sync_now()
    threading.Event().wait(0.5)  # several poll intervals: nothing may go out
    assert uplink.status()["state"] == "paused"
    assert uplink.status()["published_records_total"] == 0
    assert outbox.count() == 210
    assert read_back.messages() == []

    uplink.resume()
    wait_for(lambda: outbox.count() == 0, what="the outbox to empty after resume")
    assert uplink.status()["state"] == "connected"
    assert len(read_back.records(read_back.messages())) == 210


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_broker_backs_off_and_reports_down(outbox: OutboxFile, make_uplink, caplog) -> None:
    """A closed port: status says down with the cause, one WARNING, retries at DEBUG, clean stop."""
    outbox.insert_device("tracker-d", 50)
    port = _closed_port()
    uplink = make_uplink("gw-unreachable", url=f"amqp://guest:guest@127.0.0.1:{port}/", backoff_min_s=0.05, backoff_max_s=0.2)
    with caplog.at_level(logging.DEBUG, logger="gateway.uplink"):
        uplink.start()
        wait_for(lambda: sum("attempt" in r.message for r in caplog.records) >= 3, what="three failed attempts")
        status = uplink.status()
        uplink.stop()
    assert status["state"] == "down"
    assert "refused" in status["last_error"].lower()
    assert status["broker"] == f"amqp://127.0.0.1:{port}/%2F", "no credentials in the status"
    assert status["backlog_records"] == 50
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.message for r in warnings]
    assert "gw-unreachable" in warnings[0].message and "refused" in warnings[0].message.lower()
    assert outbox.count() == 50
    offline = uplink_status_from_file(outbox.path)
    assert offline["running"] is False and offline["backlog_records"] == 50
    assert "refused" in offline["last_error"].lower()
    assert offline["gateway_id"] == "gw-unreachable"


def test_broker_restart_mid_drain_loses_nothing(broker: str, outbox: OutboxFile, read_back: ReadBack, make_uplink, caplog) -> None:
    """Stop and start the broker while records stream in: all arrive at least once, the outbox empties."""
    expected: set[tuple[str, str, int]] = set()
    boot, _ = outbox.insert_device("tracker-r", 3000)
    expected |= {("tracker-r", boot, s) for s in range(1, 3001)}
    stop_feeding = threading.Event()
    live_boot = str(uuid.uuid4())

    def feed() -> None:  # the serial ingest keeps committing through the outage
        seq = 0
        while not stop_feeding.wait(0.05):
            batch = [(make_record("tracker-live", live_boot, seq + i), 2) for i in range(1, 21)]
            outbox.insert(batch)
            seq += 20
            expected.update(("tracker-live", live_boot, s) for s in range(seq - 19, seq + 1))

    uplink = make_uplink(read_back.gateway_id, batch_max_records=50, max_in_flight_messages=1,
                         backoff_min_s=0.2, backoff_max_s=1.0)
    feeder = threading.Thread(target=feed)
    with caplog.at_level(logging.INFO, logger="gateway.uplink"):
        uplink.start()
        feeder.start()
        try:
            wait_for(lambda: uplink.status()["confirmed_records_total"] >= 200, what="the drain to start")
            services("stop", "rabbitmq")
            wait_for(lambda: uplink.status()["state"] == "down", what="the uplink to notice")
            assert outbox.count() > 0
            services("start", "rabbitmq")
            wait_for(lambda: uplink.status()["state"] == "connected", timeout_s=60, what="the reconnect")
        finally:
            stop_feeding.set()
            feeder.join()
        wait_for(lambda: outbox.count() == 0, timeout_s=60, what="the outbox to empty")
    received = keys(read_back.records(read_back.messages()))
    assert set(received) == expected, "every record arrives at least once"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("gateway.uplink")]
    assert len(warnings) == 1 and read_back.gateway_id in warnings[0].message
    assert any("is back on broker" in r.message for r in caplog.records)
