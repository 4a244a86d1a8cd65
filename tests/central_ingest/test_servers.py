"""Central ingest against the real RabbitMQ and Cassandra started by pulsegate-services.

Each test has its own virtual host and keyspace. Workers are real
``pulsegate central ingest`` subprocesses; they are killed with SIGKILL and
Cassandra is stopped under them, as happens in production.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
from cassandra.query import BatchStatement, BatchType
from server_harness import services

from central.ingest import DecodedBatch, accept_batches
from central.settings import load_settings
from central.store import StoreUnavailable, open_store, rows_from_records
from central.store._cassandra import CassandraStore, _partition_batch
from central.store._cql_values import ROW_COLUMNS, encode_row
from central_ingest.testdata import (
    PULSEGATE,
    REPO,
    T0_US,
    make_record,
    message_body,
    message_headers,
    publish,
    run_cli,
)
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE, INGEST_QUEUE
from firmware_shim.bundle_format import generate_signing_key, write_bundle, write_public_key

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Worker:
    """One real ``pulsegate central ingest`` process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*PULSEGATE, "-v", "central", "ingest", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Path], Worker]]:
    started: list[Worker] = []

    def start(config: Path) -> Worker:
        worker = Worker(config, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(30)


def _queue_depths(url: str) -> tuple[int, int]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        ingest = channel.queue_declare(INGEST_QUEUE, passive=True).method.message_count
        dead = channel.queue_declare(DEAD_LETTER_QUEUE, passive=True).method.message_count
        return ingest, dead
    finally:
        connection.close()


def _store(config: Path) -> CassandraStore:
    """The test's own view of the store; other suites restart Cassandra, so wait for it."""
    deadline = time.monotonic() + 240
    while True:
        try:
            store = open_store(load_settings(config))
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            services("start", "cassandra")
    assert isinstance(store, CassandraStore)
    return store


def _held(store: CassandraStore) -> int:
    """Records the ledger holds, or -1 while Cassandra is unreachable."""
    try:
        return sum(e.records for e in store.ledger())
    except StoreUnavailable:
        return -1


def _row_count(store: CassandraStore) -> int:
    ks = store.settings.keyspace
    return store._session.execute(f"SELECT count(*) FROM {ks}.telemetry", timeout=120).one()[0]


def _messages(
    device: str, boot: str, total: int, per_message: int, version: int = 2
) -> list[tuple[bytes, dict]]:
    out = []
    for start in range(1, total + 1, per_message):
        records = [
            make_record(device, boot, s)
            for s in range(start, min(total, start + per_message - 1) + 1)
        ]
        out.append((message_body(records, version), message_headers(len(records))))
    return out


def _db_init(config: Path) -> None:
    for _attempt in range(3):  # another suite may restart Cassandra under us
        _store(config).close()
        done = run_cli("central", "db", "init", "--config", str(config), timeout_s=300)
        if done.returncode == 0:
            return
    raise AssertionError(done.stderr)


def test_db_init_creates_the_partitioned_tables(cassandra_config: Path, keyspace: str) -> None:
    _db_init(cassandra_config)
    _db_init(cassandra_config)  # idempotent
    store = _store(cassandra_config)
    try:
        meta = store._cluster.metadata.keyspaces[keyspace]
        assert meta.replication_strategy.replication_factor == 1
        table = meta.tables["telemetry"]
        assert [c.name for c in table.partition_key] == ["device_id", "day"]
        assert [c.name for c in table.clustering_key] == ["timestamp_us", "boot_id", "seq"]
        assert [c.name for c in meta.tables["ledger_ranges"].partition_key] == [
            "device_id",
            "boot_id",
        ]
    finally:
        store.close()


@pytest.mark.parametrize("command", [["ledger"], ["fleet"], ["incidents", "list"]])
def test_reading_a_keyspace_that_is_not_there_is_one_line_and_creates_nothing(
    cassandra_config: Path, keyspace: str, command: list[str]
) -> None:
    result = run_cli("central", *command, "--config", str(cassandra_config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pulsegate: error: "), result.stderr
    assert keyspace in result.stderr
    probe = _store_settings_only(cassandra_config)
    try:
        assert keyspace not in probe._cluster.metadata.keyspaces
    finally:
        probe.close()


def _store_settings_only(config: Path) -> CassandraStore:
    """A store on the config's node, connected without its keyspace (which may not exist)."""
    settings = load_settings(config)
    settings.cassandra.keyspace = "system"
    store = open_store(settings)
    assert isinstance(store, CassandraStore)
    return store


def test_cassandra_store_upserts_idempotently_and_keeps_the_ledger(cassandra_config: Path) -> None:
    _db_init(cassandra_config)
    store = _store(cassandra_config)
    try:
        boot = str(uuid.uuid4())
        seqs = [s for s in range(1, 301) if s not in (100, 101, 250)]
        batch = DecodedBatch("gw-1", "gym-a", 2, [make_record("dev-c", boot, s) for s in seqs])
        accept_batches(store, [batch])
        accept_batches(store, [batch])  # a redelivery
        (entry,) = store.ledger("dev-c")
        assert (entry.records, entry.gaps, entry.missing) == (297, 3, ((100, 101), (250, 250)))
        assert _row_count(store) == 297
        rows = store.telemetry(
            "dev-c",
            make_record("x", boot, 1)["timestamp_us"],
            make_record("x", boot, 301)["timestamp_us"],
        )
        assert [r.seq for r in rows] == seqs
        assert rows[0].rr_intervals_ms == [800, 810] and rows[0].gateway_id == "gw-1"
        store.compact_ledger()
        assert store.ledger() == [entry]
    finally:
        store.close()


def test_packed_rows_read_back_as_written_and_as_the_driver_binds_them(
    cassandra_config: Path,
) -> None:
    """Rows packed by central (not by the driver's bind) hold exactly what they were given."""
    _db_init(cassandra_config)
    store = _store(cassandra_config)
    try:
        boot = str(uuid.uuid4())
        edge_records = [
            make_record("dev-p", boot, 1),
            make_record(
                "dev-p", boot, 2, heart_rate_bpm=None, steps=None, sport=None, rr_intervals_ms=[]
            ),
            make_record("dev-p", boot, 3, rr_intervals_ms=list(range(300, 340)), sport="vélo"),
            make_record("dev-p", boot, 4, latitude_deg=-89.123456789, distance_m=1e7 - 0.5),
        ]
        batch_rows = rows_from_records(
            edge_records, gateway_id="gw-p", site="gym-p", schema_version=2, ingested_at_us=77
        )
        insert = store._prepared("row")
        # The driver binds the nine columns and the measurements as one UDT tuple.
        as_driver_binds = [
            [*row[: len(ROW_COLUMNS)], tuple(row[len(ROW_COLUMNS) :])] for row in batch_rows
        ]
        for row, values in zip(batch_rows, as_driver_binds, strict=True):
            assert encode_row(row) == insert.bind(values).values
        batch = _partition_batch(insert, batch_rows)
        added = BatchStatement(batch_type=BatchType.UNLOGGED)
        for values in as_driver_binds:
            added.add(insert.bind(values))
        assert batch._statements_and_parameters == added._statements_and_parameters
        assert (batch.routing_key, batch.keyspace) == (added.routing_key, added.keyspace)
        store.write(batch_rows)
        read = store.telemetry("dev-p", edge_records[0]["timestamp_us"], T0_US + 10**9)
        # Row 2 lacks three measurements: null fields inside its sample cell, no tombstones.
        ks = store.settings.keyspace
        traced = store._session.execute(
            f"SELECT * FROM {ks}.telemetry WHERE device_id = 'dev-p' AND day = %s",
            (batch_rows[0].day,),
            trace=True,
        )
        events = [e.description for e in traced.get_query_trace(max_wait_sec=10).events]
        assert f"Read {len(batch_rows)} live rows and 0 tombstone cells" in events, events
        # float columns hold float32: compare with what float32 makes of each value
        expected = [
            r._replace(
                speed_m_s=_f32(r.speed_m_s),
                altitude_m=_f32(r.altitude_m),
                temperature_c=_f32(r.temperature_c),
                host_cpu_load=_f32(r.host_cpu_load),
                respiration_rate_bpm=_f32(r.respiration_rate_bpm),
            )
            for r in batch_rows
        ]
        assert read == expected
    finally:
        store.close()


def _f32(value: float | None) -> float | None:
    return None if value is None else struct.unpack(">f", struct.pack(">f", value))[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metric(port: int, name: str) -> float | None:
    """One sample from the worker's /metrics page, or None while it is absent."""
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_live_ingest_mixes_v1_and_v2_writers_and_dead_letters_poison(
    cassandra_config: Path, amqp_url: str, workers: Callable[[Path], Worker]
) -> None:
    _db_init(cassandra_config)
    port = _free_port()
    config = cassandra_config.parent / "metrics.toml"
    config.write_text(
        cassandra_config.read_text()
        .replace('metrics_address = ""', f'metrics_address = "127.0.0.1:{port}"')
        .replace("ledger_refresh_s = 0", "ledger_refresh_s = 1")
    )
    boot = str(uuid.uuid4())
    v1_fields = [
        k
        for k in make_record("x", boot, 1)
        if k not in ("rr_intervals_ms", "respiration_rate_bpm", "sport")
    ]
    v1 = [
        (
            message_body(
                [
                    {k: make_record("dev-1", boot, s)[k] for k in v1_fields}
                    for s in range(i, i + 10)
                ],
                version=1,
            ),
            {**message_headers(10), "received-at-us": time.time_ns() // 1000 - 60_000_000},
        )
        for i in range(1, 200, 10)
    ]
    v2 = _messages("dev-2", boot, 200, 10)
    poison = [
        (b"definitely not avro", message_headers(1)),
        (v2[0][0], {**message_headers(10), "pulsegate-format": "telemetry-ocf/7"}),
        (v2[1][0], message_headers(11)),
    ]
    # dev-2's seqs 51..60 never arrive: the ledger and the gap gauge must show them.
    publish(
        amqp_url,
        [
            m
            for i, pair in enumerate(zip(v1, v2, strict=True))
            for m in (pair if i != 5 else pair[:1])
        ]
        + poison,
    )
    worker = workers(config)
    store = _store(cassandra_config)
    try:
        _wait_for("390 records", lambda: _held(store) == 390, 120)
        _wait_for("empty ingest queue", lambda: _queue_depths(amqp_url) == (0, 3), 60)
        by_device = {e.device_id: e for e in store.ledger()}
        assert {d: (e.records, e.gaps) for d, e in by_device.items()} == {
            "dev-1": (200, 0),
            "dev-2": (190, 10),
        }
        assert by_device["dev-2"].missing == ((51, 60),)
        day_start = make_record("x", boot, 0)["timestamp_us"]
        v1_rows = store.telemetry("dev-1", day_start, day_start + 3_600_000_000)
        assert {r.schema_version for r in v1_rows} == {1} and v1_rows[0].sport is None
    finally:
        store.close()
    _wait_for(
        "the gap gauge", lambda: _metric(port, "pulsegate_central_ledger_gap_records") == 10, 30
    )
    assert _metric(port, "pulsegate_central_records_ingested_total") == 390
    assert _metric(port, 'pulsegate_central_dead_lettered_total{reason="not_avro"}') == 1
    assert _metric(port, 'pulsegate_central_dead_lettered_total{reason="bad_header"}') == 1
    # v1 messages say the gateway received their records at least 60 s before the publish.
    assert (_metric(port, "pulsegate_central_ingest_lag_seconds") or 0) >= 60
    assert worker.terminate() == 0

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    reasons = []
    for _ in range(3):
        _method, properties, _body = connection.channel().basic_get(
            DEAD_LETTER_QUEUE, auto_ack=True
        )
        reasons.append(properties.headers["x-pulsegate-error-reason"])
        assert properties.headers["x-pulsegate-original-routing-key"] == "telemetry.gym-a.gw-1"
        assert properties.headers["x-pulsegate-error"].startswith(
            properties.headers["x-pulsegate-error-reason"]
        )
    connection.close()
    assert sorted(reasons) == ["bad_header", "count_mismatch", "not_avro"]
    assert "dead-lettered message" in worker.log.read_text()


def test_worker_killed_mid_batch_then_restarted_ingests_everything_once(
    cassandra_config: Path, amqp_url: str, workers: Callable[[Path], Worker]
) -> None:
    _db_init(cassandra_config)
    boots = [str(uuid.uuid4()) for _ in range(4)]
    total_per_boot = 6000
    messages = [m for b in boots for m in _messages(f"dev-{b[:4]}", b, total_per_boot, 100)]
    publish(amqp_url, messages)
    store = _store(cassandra_config)
    try:
        first, second = workers(cassandra_config), workers(cassandra_config)
        # Kill both competing workers as soon as rows are landing: they hold unacked batches.
        _wait_for("the first rows", lambda: _held(store) > 0, 120)
        first.kill9()
        second.kill9()
        written_at_kill = _held(store)
        assert written_at_kill < len(boots) * total_per_boot, (
            "the kill came too late to test anything"
        )
        workers(cassandra_config)
        _wait_for("every record", lambda: _held(store) == len(boots) * total_per_boot, 300)
        _wait_for("empty queues", lambda: _queue_depths(amqp_url) == (0, 0), 60)
        assert all(e.gaps == 0 and e.held == ((1, total_per_boot),) for e in store.ledger())
        assert _row_count(store) == len(boots) * total_per_boot
    finally:
        store.close()


def test_cassandra_stopped_and_restarted_while_ingesting_loses_nothing(
    cassandra_config: Path, amqp_url: str, workers: Callable[[Path], Worker]
) -> None:
    _db_init(cassandra_config)
    boot = str(uuid.uuid4())
    messages = _messages("dev-r", boot, 12_000, 100)
    worker = workers(cassandra_config)
    publish(amqp_url, messages[:40])
    store = _store(cassandra_config)
    _wait_for("the first rows", lambda: _held(store) > 0, 120)
    store.close()

    publisher = threading.Thread(target=publish, args=(amqp_url, messages[40:]))
    publisher.start()
    services("stop", "cassandra")
    try:
        time.sleep(5)  # the worker now holds messages and retries
        assert worker.proc.poll() is None, "the worker died while Cassandra was down"
        assert _queue_depths(amqp_url)[1] == 0
    finally:
        services("start", "cassandra")
        publisher.join(120)
    store = _store(cassandra_config)
    try:
        _wait_for("every record", lambda: _held(store) == 12_000, 300)
        _wait_for("empty queues", lambda: _queue_depths(amqp_url) == (0, 0), 60)
        (entry,) = store.ledger()
        assert entry.held == ((1, 12_000),)
        assert _row_count(store) == 12_000
    finally:
        store.close()
    assert "store unavailable, holding" in worker.log.read_text()
    assert worker.terminate() == 0


def test_bundle_import_into_cassandra_twice_changes_nothing(
    tmp_path: Path, cassandra_config: Path
) -> None:
    _db_init(cassandra_config)
    key = generate_signing_key(tmp_path / "gw" / "bundle-signing.key")
    trusted = tmp_path / "state" / "trusted-keys"
    trusted.mkdir(parents=True)
    write_public_key(key.public_key(), trusted / "gw-9.pub")
    boot = str(uuid.uuid4())
    records = [make_record("dev-b", boot, s) for s in range(1, 3001) if s % 500]
    write_bundle(tmp_path / "b.pgbundle", records, gateway_id="gw-9", site="gym-z", signing_key=key)

    outputs = []
    for _ in range(2):
        done = run_cli(
            "central",
            "import",
            str(tmp_path / "b.pgbundle"),
            "--config",
            str(cassandra_config),
            timeout_s=300,
        )
        assert done.returncode == 0, done.stderr
        ledger = run_cli("central", "ledger", "--json", "--config", str(cassandra_config))
        outputs.append(json.loads(ledger.stdout))
    assert outputs[0] == outputs[1]
    (device,) = outputs[0]["devices"]
    assert (device["records"], device["gaps"], device["last_seq"]) == (2994, 5, 2999)
    assert device["missing_ranges"] == [
        [500, 500],
        [1000, 1000],
        [1500, 1500],
        [2000, 2000],
        [2500, 2500],
    ]
    store = _store(cassandra_config)
    try:
        assert _row_count(store) == 2994
    finally:
        store.close()
