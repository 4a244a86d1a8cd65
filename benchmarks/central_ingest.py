"""Benchmark: central ingest into Cassandra, beside the driver's own execute_concurrent.

Needs the real servers (``packaging/services/pulsegate-services start``).
Prints records per second for, on the same rows in the same run:

1. baseline: ``execute_concurrent_with_args`` of one prepared INSERT per row;
2. the store path: decode the AMQP bodies and ``accept_batches`` them
   (partition batches, then the ledger), in this process;
3. end to end: messages in RabbitMQ drained by N ``pulsegate central ingest``
   processes, timed until the ledger holds every record.

Run: ``.venv/bin/python benchmarks/central_ingest.py [--records 60000] [--workers 1 2]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cassandra.concurrent import execute_concurrent_with_args  # noqa: E402

from central.ingest import accept_batches, decode_delivery  # noqa: E402
from central.settings import load_settings  # noqa: E402
from central.store import open_store, row_from_record  # noqa: E402
from central.store._cassandra import CassandraStore  # noqa: E402
from firmware_shim import encode_record, split_soe  # noqa: E402
from firmware_shim.uplink_format import FORMAT, build_message  # noqa: E402

T0_US = 1_740_787_200_000_000
RECORDS_PER_MESSAGE = 200
DEVICES = 30  # one busy gym


def _record(device: str, boot: str, seq: int) -> dict:
    return {
        "device_id": device,
        "boot_id": boot,
        "seq": seq,
        "timestamp_us": T0_US + seq * 1_000_000,
        "heart_rate_bpm": 120,
        "cadence_rpm": 85,
        "speed_m_s": 3.1,
        "distance_m": seq * 3.1,
        "latitude_deg": 47.37,
        "longitude_deg": 8.54,
        "altitude_m": 410.0,
        "power_w": 210,
        "temperature_c": 21.0,
        "steps": seq * 2,
        "battery_pct": 77,
        "host": {"uptime_s": 5000 + seq, "cpu_load": 0.3, "free_memory_bytes": 1 << 24},
        "rr_intervals_ms": [500, 505],
        "respiration_rate_bpm": 30.0,
        "sport": "running",
    }


def _messages(total: int) -> list[tuple[bytes, dict]]:
    """Messages as a gateway sends them: each device's records in order, 200 a message."""
    per_device = total // DEVICES
    out = []
    for d in range(DEVICES):
        boot = str(uuid.uuid4())
        for start in range(1, per_device + 1, RECORDS_PER_MESSAGE):
            seqs = range(start, min(per_device, start + RECORDS_PER_MESSAGE - 1) + 1)
            info, datums = None, []
            for s in seqs:
                info, datum = split_soe(encode_record(_record(f"bench-{d:02d}", boot, s)))
                datums.append(datum)
            headers = {
                "pulsegate-format": FORMAT,
                "gateway-id": "gw-bench",
                "site": "bench",
                "record-count": len(datums),
            }
            out.append((build_message(info, datums), headers))
    return out


def _rate(label: str, records: int, seconds: float) -> float:
    rate = records / seconds
    print(f"{label:<58} {records:>7} records {seconds:7.2f} s {rate:>9,.0f} records/s", flush=True)
    return rate


def baseline(store: CassandraStore, messages: list[tuple[bytes, dict]]) -> None:
    rows = []
    for body, headers in messages:
        batch = decode_delivery(body, headers)
        rows += [
            row_from_record(r, gateway_id="gw", site="s", schema_version=2, ingested_at_us=0)
            for r in batch.records
        ]
    insert = store._prepared("row")
    started = time.perf_counter()
    results = execute_concurrent_with_args(
        store._session, insert, rows, concurrency=store.settings.concurrency
    )
    assert all(ok for ok, _ in results)
    _rate(
        "driver execute_concurrent_with_args, one INSERT a row",
        len(rows),
        time.perf_counter() - started,
    )


def store_path(
    store: CassandraStore, messages: list[tuple[bytes, dict]], chunk_messages: int
) -> None:
    started = time.perf_counter()
    records = 0
    for i in range(0, len(messages), chunk_messages):
        batches = [
            decode_delivery(body, headers) for body, headers in messages[i : i + chunk_messages]
        ]
        records += accept_batches(store, batches)
    _rate(
        f"decode + accept_batches ({store.settings.rows_per_batch} rows/batch, +ledger)",
        records,
        time.perf_counter() - started,
    )


def _rabbitmqctl(*args: str) -> None:
    home = REPO / ".state" / "services" / "rabbitmq" / "erlang-home"
    subprocess.run(
        ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", "pulsegate@localhost", *args],
        check=True,
        capture_output=True,
        env={**os.environ, "HOME": str(home)},
    )


def _publish(url: str, messages: list[tuple[bytes, dict]]) -> None:
    import pika

    from firmware_shim.amqp_topology import EXCHANGE, declare_topology

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    declare_topology(channel)
    channel.confirm_delivery()
    for body, headers in messages:
        channel.basic_publish(
            EXCHANGE,
            "telemetry.bench.gw-bench",
            body,
            pika.BasicProperties(delivery_mode=2, headers=headers),
        )
    connection.close()


def _held(store: CassandraStore) -> int:
    return sum(entry.records for entry in store.ledger())


def end_to_end(keyspace: str, messages: list[tuple[bytes, dict]], workers: int, tmp: Path) -> None:
    vhost = f"pulsegate-bench-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        _publish(url, messages)
        config = tmp / f"bench-{workers}.toml"
        config.write_text(
            f'[central]\nstate_dir = "{tmp}"\n[store]\nbackend = "cassandra"\n'
            f'[cassandra]\nkeyspace = "{keyspace}"\n[amqp]\nurl = "{url}"\n'
            '[ingest]\nmetrics_address = ""\nledger_refresh_s = 0\n'
        )
        store = open_store(load_settings(config))
        assert isinstance(store, CassandraStore)
        total = sum(h["record-count"] for _, h in messages) + _held(store)
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "pulsegate"),
                    "central",
                    "ingest",
                    "--config",
                    str(config),
                ]
            )
            for _ in range(workers)
        ]
        first_row_at = None
        base = _held(store)
        while (held := _held(store)) < total:
            if first_row_at is None and held > base:
                first_row_at, first_held = time.perf_counter(), held
            time.sleep(0.1)
        done = time.perf_counter()
        for proc in procs:
            proc.terminate()
            proc.wait(60)
        store.close()
        records = total - base
        _rate(f"end to end, {workers} ingest process(es), incl. start-up", records, done - started)
        if first_row_at is not None:
            _rate(
                f"end to end, {workers} ingest process(es), steady state",
                total - first_held,
                done - first_row_at,
            )
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rows-per-batch", type=int, default=None, help="override [cassandra] rows_per_batch"
    )
    args = parser.parse_args()

    keyspace = f"pulsegate_bench_{uuid.uuid4().hex[:8]}"
    settings = load_settings()
    settings.store.backend = "cassandra"
    settings.cassandra.keyspace = keyspace
    if args.rows_per_batch:
        settings.cassandra.rows_per_batch = args.rows_per_batch
    store = open_store(settings)
    assert isinstance(store, CassandraStore)
    store.init_schema()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; keyspace {keyspace}; "
        f"concurrency {settings.cassandra.concurrency}",
        flush=True,
    )
    try:
        baseline(store, _messages(args.records))
        store_path(store, _messages(args.records), chunk_messages=25)
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                end_to_end(keyspace, _messages(args.records), workers, Path(tmp))
    finally:
        store._session.execute(f"DROP KEYSPACE {keyspace}", timeout=120)
        store.close()


if __name__ == "__main__":
    main()
