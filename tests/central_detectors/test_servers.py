"""The detectors and fleet health on the real Cassandra, and the dead-letter check on the real RabbitMQ.

These fail, not skip, when the servers cannot be started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from server_harness import services

from central.detectors import Detectors
from central.fleet import build_fleet_report
from central.settings import CentralSettings, load_settings
from central.store import TelemetryStore, open_store
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE, declare_topology

from .conftest import FakeClock, incidents_of, write_config
from .streams import US, Tracker, every_second

pytestmark = pytest.mark.servers

@pytest.fixture
def cassandra_settings(tmp_path: Path) -> Iterator[CentralSettings]:
    services("start", "cassandra")
    keyspace = f"pg_detect_{uuid.uuid4().hex[:10]}"
    path = write_config(
        tmp_path / "central.toml",
        tmp_path / "state",
        store={"backend": "cassandra"},
        cassandra={"keyspace": keyspace},
        detectors={"metrics_address": "", "dead_letter": "off"},
    )
    yield load_settings(path)
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042, protocol_version=5)
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        cluster.shutdown()


@pytest.fixture
def cassandra_store(cassandra_settings: CentralSettings) -> Iterator[TelemetryStore]:
    store = open_store(cassandra_settings)
    store.init_schema()
    yield store
    store.close()


def test_heart_rate_and_gap_on_cassandra(
    cassandra_settings: CentralSettings, cassandra_store: TelemetryStore, clock: FakeClock
) -> None:
    cassandra_settings.detectors.enabled = ["heart_rate_out_of_band", "ledger_gap"]
    # The grace runs from when the rows were stored (the real clock); a slow
    # first write to a fresh keyspace must not eat into the 301 s below.
    cassandra_settings.detectors.gap_grace_s = 200.0
    tracker = Tracker(cassandra_store, "TR-CASS")
    t = clock.now_us - 300 * US
    tracker.send(every_second(t, 30, heart_rate_bpm=190), received_us=t + 30 * US)  # spans 29 s
    gap = tracker.rows([(t + 40 * US, {}), (t + 41 * US, {})], received_us=t + 41 * US)
    cassandra_store.write(gap[1:])  # seq 31 never arrives
    detectors = Detectors.open(cassandra_settings, clock)
    try:
        assert detectors.run_pass() == []
        tracker.send(every_second(t + 50 * US, 31, heart_rate_bpm=190), received_us=t + 81 * US)
        clock.advance(301)
        actions = sorted((a.verb, a.kind, a.priority) for a in detectors.run_pass())
        assert actions == [
            ("raised", "heart_rate_out_of_band", "P1"),
            ("raised", "ledger_gap", "P3"),
        ]
        assert detectors.run_pass() == []
        (gap_incident,) = incidents_of(detectors, "ledger_gap")
        assert gap_incident.details["missing_ranges"] == {tracker.boot_id: [[31, 31]]}

        report = build_fleet_report(
            cassandra_settings, detectors.reader, detectors.store, detectors.service, clock()
        )
        doc = report.as_json()
        assert doc["summary"]["devices"] == 1 and doc["summary"]["gateways"] == 1
        assert doc["gateways"][0]["records_missing"] == 1
        assert doc["devices"][0]["device_id"] == "TR-CASS"
        # Read from inside the sample UDT (sample.battery_pct): the rows' 80 %.
        assert doc["devices"][0]["battery_pct"] == 80
        assert doc["incidents"]["by_priority"]["P1"] == 1
    finally:
        detectors.close()


def test_a_gym_that_syncs_years_late_is_seen_on_cassandra(
    cassandra_settings: CentralSettings, cassandra_store: TelemetryStore, clock: FakeClock
) -> None:
    """Samples from December 2012, written now: fleet, arrivals and detectors find them by receive time."""
    cassandra_settings.detectors.enabled = ["heart_rate_out_of_band"]
    tracker = Tracker(cassandra_store, "TR-LATE")
    taken_us = 1_356_000_000 * US  # 2012-12-20T10:40:00Z
    received_us = clock.now_us - 5 * US
    # A minute above the band: past heart_rate_fire_after_s (30 s) in sample time.
    tracker.send(every_second(taken_us, 61, heart_rate_bpm=190), received_us=received_us)
    detectors = Detectors.open(cassandra_settings, clock)
    try:
        arrivals = detectors.reader.arrivals(clock.now_us - 60 * US, clock.now_us + 1)
        assert [(a.device_id, a.received_us, a.records, a.oldest_sample_us, a.newest_sample_us)
                for a in arrivals] == [("TR-LATE", received_us, 61, taken_us, taken_us + 60 * US)]
        assert [a.kind for a in detectors.run_pass()] == ["heart_rate_out_of_band"]
        assert len(incidents_of(detectors, "heart_rate_out_of_band")) == 1
        doc = build_fleet_report(
            cassandra_settings, detectors.reader, detectors.store, detectors.service, clock()
        ).as_json()
        (device,) = doc["devices"]
        assert (device["device_id"], device["battery_pct"]) == ("TR-LATE", 80)
    finally:
        detectors.close()


def test_dead_letter_depth_raises_grows_and_resolves(
    settings: CentralSettings, store: TelemetryStore, clock: FakeClock, amqp_url: str
) -> None:
    settings.amqp.url = amqp_url
    settings.detectors.enabled, settings.detectors.dead_letter = ["dead_letter"], "on"
    detectors = Detectors.open(settings, clock)
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp.url))
    try:
        assert detectors.run_pass() == []  # no queue yet: nothing dead-lettered
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()

        def dead_letter(count: int) -> None:
            for n in range(count):
                channel.basic_publish(
                    "",
                    DEAD_LETTER_QUEUE,
                    f"poison {n}".encode(),
                    pika.BasicProperties(delivery_mode=2),
                )

        dead_letter(2)
        assert [(a.verb, a.subject, a.priority) for a in detectors.run_pass()] == [
            ("raised", f"queue:{DEAD_LETTER_QUEUE}", "P3")
        ]
        assert detectors.run_pass() == []  # unchanged depth
        dead_letter(1)
        assert [a.verb for a in detectors.run_pass()] == ["repeated"]
        assert incidents_of(detectors, "dead_letter")[0].details["depth"] == 3
        channel.queue_purge(DEAD_LETTER_QUEUE)
        assert [a.verb for a in detectors.run_pass()] == ["resolved"]
    finally:
        connection.close()
        detectors.close()
