"""Benchmark: central ingest into Cassandra, beside the driver's own execute_concurrent.

Needs the real servers (``packaging/services/pulsegate-services start``).
Prints records per second for, on the same rows in the same run:

1. baseline: ``execute_concurrent_with_args`` of one prepared INSERT per row;
2. the store path: decode the AMQP bodies and ``accept_batches`` them
   (partition batches, then the ledger), in this process;
3. end to end: messages in RabbitMQ drained by N ``pulsegate central ingest``
   processes, timed until their counters say every record is written; then
   the ledger must hold every one.

Beside each rate it prints the CPU time per record of the Cassandra JVM and
of the Python side (this process, or the ingest workers in steady state):
on a 2-core machine their sum bounds the rate at 2 s / (sum) records/s.
Measured 2026-12-04 with two workers: Cassandra ~30-44 µs and the workers
~53-63 µs a record, 18,700-22,500 records/s in steady state (goal 15,000).

Cassandra should run with the full JIT (the test default stops at C1):
``PULSEGATE_CASSANDRA_JVM_OPTS=-XX:TieredStopAtLevel=4 packaging/services/pulsegate-services restart cassandra``;
the first line printed shows the JVM flags that matter here.

Run: ``flock /tmp/pulsegate-bench.lock .venv/bin/python benchmarks/central_ingest.py [--records 60000] [--workers 1 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cassandra.concurrent import execute_concurrent_with_args  # noqa: E402

from central.ingest import accept_batches, decode_delivery  # noqa: E402
from central.settings import load_settings  # noqa: E402
from central.store import open_store, row_from_record  # noqa: E402
from central.store._cassandra import CassandraStore  # noqa: E402
from central.store._cql_values import ROW_COLUMNS  # noqa: E402
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


_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cassandra_pid() -> int | None:
    """The local Cassandra node's JVM, as the service script knows it."""
    done = subprocess.run(
        [str(REPO / "packaging/services/pulsegate-services"), "status", "cassandra", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return json.loads(done.stdout)["cassandra"]["pid"]
    except (ValueError, KeyError, TypeError):
        return None


def _cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds a process has used so far (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def _jvm_flags(pid: int | None) -> str:
    if pid is None:
        return "Cassandra's JVM not found"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return "Cassandra's JVM not readable"
    # The last of a repeated flag wins, so show the last of each.
    picked = {a.split("=")[0]: a for a in argv if a.startswith(_SHOWN_JVM_FLAGS)}
    return "JVM " + " ".join(picked.values())


_SHOWN_JVM_FLAGS = ("-XX:TieredStopAtLevel", "-Xmx", "-XX:+Use", "-Dcassandra.settings.")


def _rate(
    label: str, records: int, seconds: float, cpu_s: tuple[float, float] | None = None
) -> float:
    """Print one figure; ``cpu_s`` is (Cassandra, Python) CPU seconds spent on ``records``."""
    rate = records / seconds
    cpu = ""
    if cpu_s is not None:
        jvm_us, python_us = (1e6 * s / records for s in cpu_s)
        cpu = f"  CPU/record: Cassandra {jvm_us:4.0f} µs, Python {python_us:4.0f} µs"
    print(
        f"{label:<58} {records:>7} records {seconds:7.2f} s {rate:>9,.0f} records/s{cpu}",
        flush=True,
    )
    return rate


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(store: CassandraStore, messages: list[tuple[bytes, dict]]) -> None:
    rows = []
    for body, headers in messages:
        batch = decode_delivery(body, headers)
        for r in batch.records:
            row = row_from_record(r, gateway_id="gw", site="s", schema_version=2, ingested_at_us=0)
            # The driver binds the key and enrichment columns, then the sample UDT as a tuple.
            rows.append([*row[: len(ROW_COLUMNS)], tuple(row[len(ROW_COLUMNS) :])])
    insert = store._prepared("row")
    jvm = _cassandra_pid()
    cpu_before = _cpu_s(jvm), _self_cpu_s()
    started = time.perf_counter()
    results = execute_concurrent_with_args(
        store._session, insert, rows, concurrency=store.settings.concurrency
    )
    assert all(ok for ok, _ in results)
    _rate(
        "driver execute_concurrent_with_args, one INSERT a row",
        len(rows),
        time.perf_counter() - started,
        (_cpu_s(jvm) - cpu_before[0], _self_cpu_s() - cpu_before[1]),
    )


def store_path(
    store: CassandraStore, messages: list[tuple[bytes, dict]], chunk_messages: int
) -> None:
    jvm = _cassandra_pid()
    cpu_before = _cpu_s(jvm), _self_cpu_s()
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
        (_cpu_s(jvm) - cpu_before[0], _self_cpu_s() - cpu_before[1]),
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_WRITTEN_METRIC = "pulsegate_central_records_ingested_total "


def _records_ingested(ports: list[int]) -> int:
    """Records the workers have written (their Prometheus counters), summed; 0 until they serve."""
    written = 0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                text = page.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(_WRITTEN_METRIC):
                written += int(float(line[len(_WRITTEN_METRIC) :]))
    return written


def _held(store: CassandraStore) -> int:
    return sum(entry.records for entry in store.ledger())


def end_to_end(
    keyspace: str,
    messages: list[tuple[bytes, dict]],
    workers: int,
    tmp: Path,
    rows_per_batch: int | None,
) -> None:
    vhost = f"pulsegate-bench-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        _publish(url, messages)
        config = tmp / f"bench-{workers}.toml"
        config.write_text(
            f'[central]\nstate_dir = "{tmp}"\n[store]\nbackend = "cassandra"\n'
            f'[cassandra]\nkeyspace = "{keyspace}"\n'
            + (f"rows_per_batch = {rows_per_batch}\n" if rows_per_batch else "")
            + f'[amqp]\nurl = "{url}"\n'
            '[ingest]\nmetrics_address = ""\nledger_refresh_s = 0\n'
        )
        store = open_store(load_settings(config))
        assert isinstance(store, CassandraStore)
        base = _held(store)
        total = sum(h["record-count"] for _, h in messages)
        ports = [_free_port() for _ in range(workers)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [str(Path(sys.executable).parent / "pulsegate"), "central", "ingest"]
                + ["--config", str(config)],
                # WARNING: the workers' INFO lines would interleave with the figures.
                env={
                    **os.environ,
                    "PULSEGATE_INGEST_METRICS_ADDRESS": f"127.0.0.1:{port}",
                    "PULSEGATE_LOG_LEVEL": os.environ.get("PULSEGATE_LOG_LEVEL", "WARNING"),
                },
            )
            for port in ports
        ]
        # Progress comes from the workers' own counters, not from reading the
        # ledger: a full ledger scan ten times a second cost Cassandra a fifth
        # of its CPU and slowed the very ingest it watched.
        first_row_at = None
        jvm = _cassandra_pid()
        while (written := _records_ingested(ports)) < total:
            if first_row_at is None and written > 0:
                first_row_at, first_written = time.perf_counter(), written
                first_cpu = _cpu_s(jvm), sum(_cpu_s(p.pid) for p in procs)
            time.sleep(0.05)
        done = time.perf_counter()
        done_cpu = _cpu_s(jvm), sum(_cpu_s(p.pid) for p in procs)
        for proc in procs:
            proc.terminate()
            proc.wait(60)
        held = _held(store) - base
        store.close()
        assert held == total, f"the ledger holds {held} of the {total} records the workers wrote"
        _rate(f"end to end, {workers} ingest process(es), incl. start-up", total, done - started)
        if first_row_at is not None:
            _rate(
                f"end to end, {workers} ingest process(es), steady state",
                total - first_written,
                done - first_row_at,
                (done_cpu[0] - first_cpu[0], done_cpu[1] - first_cpu[1]),
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
        f"concurrency {settings.cassandra.concurrency}; {_jvm_flags(_cassandra_pid())}",
        flush=True,
    )
    try:
        baseline(store, _messages(args.records))
        store_path(store, _messages(args.records), chunk_messages=25)
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                end_to_end(
                    keyspace, _messages(args.records), workers, Path(tmp), args.rows_per_batch
                )
    finally:
        store._session.execute(f"DROP KEYSPACE {keyspace}", timeout=120)
        store.close()


if __name__ == "__main__":
    main()
