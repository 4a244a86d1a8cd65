"""Benchmark: drain a big outbox backlog to RabbitMQ while live records keep arriving.

Prints three figures from one run against a real broker:

1. raw baseline: plain pika (BlockingChannel with confirms, one message in
   flight) publishing the very message bytes the uplink would send;
2. the same bytes through a pipelined SelectConnection (as many unconfirmed
   messages as the uplink allows) - the most pika can give on this machine;
3. the uplink draining the outbox (read, encode, publish, confirm, delete), with
   live records inserted at a steady rate meanwhile; their latency is measured
   from insert to consumption from a queue bound to the gateway's routing key.

Goals: drain >= 50,000 records/s; live p99 < 500 ms.

    .venv/bin/python benchmarks/uplink_drain.py                  # 1,000,000 records
    .venv/bin/python benchmarks/uplink_drain.py --records 100000 --amqp-url amqp://guest:guest@127.0.0.1:5672/

Every message also lands in ``pulsegate.ingest`` (the uplink declares it bound
to ``telemetry.#``); on a shared development broker, purge that queue or use a
broker of your own (``--amqp-url``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
import pika.spec
from prometheus_client import CollectorRegistry

# The outbox test helper, imported as a plain module: putting tests/ itself on
# the path would let tests/firmware_shim shadow the real package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "gateway_uplink"))

from outbox_files import OutboxFile, make_record  # noqa: E402

from firmware_shim.amqp_topology import declare_topology  # noqa: E402
from firmware_shim.uplink_format import EXCHANGE, routing_key  # noqa: E402
from gateway.uplink import Uplink, UplinkSettings  # noqa: E402
from gateway.uplink._messages import OutboxRow, build_messages  # noqa: E402

SITE = "bench"
#: Records per INSERT transaction when filling the backlog.
_FILL_BATCH = 20_000


def fill_outbox(outbox: OutboxFile, records: int) -> None:
    devices = max(1, records // 50_000)
    per_device = -(-records // devices)
    made = 0
    started = time.monotonic()
    for device in range(devices):
        boot_id = str(uuid.uuid4())
        for first in range(1, per_device + 1, _FILL_BATCH):
            count = min(_FILL_BATCH, per_device - first + 1, records - made)
            if count <= 0:
                break
            outbox.insert(
                (make_record(f"bench-{device:04d}", boot_id, seq), 2) for seq in range(first, first + count)
            )
            made += count
        print(f"  filled {made:,}/{records:,} records ({time.monotonic() - started:.0f} s)", flush=True)


def prebuilt_messages(outbox: OutboxFile, gateway_id: str, batch: int, codec: str) -> list[tuple[str, bytes, int]]:
    rows = [OutboxRow(*r) for r in outbox.db.execute(
        "SELECT id, schema_fingerprint, datum, received_at_us FROM outbox ORDER BY id")]
    out = []
    for start in range(0, len(rows), batch):
        messages, _ = build_messages(rows[start:start + batch], gateway_id=gateway_id, codec=codec, live=False)
        out += [(m.message_id, m.body, m.record_count) for m in messages]
    return out


def properties(message_id: str, gateway_id: str, count: int) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/vnd.pulsegate.telemetry+avro", delivery_mode=2, message_id=message_id,
        headers={"pulsegate-format": "telemetry-ocf/1", "gateway-id": gateway_id, "site": SITE, "record-count": count},
    )


def raw_blocking(url: str, gateway_id: str, messages: list[tuple[str, bytes, int]]) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    started = time.monotonic()
    for message_id, body, count in messages:
        channel.basic_publish(EXCHANGE, routing_key(SITE, gateway_id), body,
                              properties(message_id, gateway_id, count), mandatory=True)
    elapsed = time.monotonic() - started
    connection.close()
    return sum(m[2] for m in messages) / elapsed


def raw_pipelined(url: str, gateway_id: str, messages: list[tuple[str, bytes, int]], window: int) -> float:
    state = {"next": 0, "acked": 0, "started": 0.0, "elapsed": 0.0}

    def publish_more(channel: pika.channel.Channel) -> None:
        while state["next"] < len(messages) and state["next"] - state["acked"] < window:
            message_id, body, count = messages[state["next"]]
            channel.basic_publish(EXCHANGE, routing_key(SITE, gateway_id), body,
                                  properties(message_id, gateway_id, count), mandatory=True)
            state["next"] += 1

    def on_confirm(frame: pika.frame.Method, channel: pika.channel.Channel) -> None:
        state["acked"] = frame.method.delivery_tag
        if state["acked"] == len(messages):
            state["elapsed"] = time.monotonic() - state["started"]
            connection.close()
        else:
            publish_more(channel)

    def on_channel(channel: pika.channel.Channel) -> None:
        def confirmed(_frame: object) -> None:
            state["started"] = time.monotonic()
            publish_more(channel)
        channel.confirm_delivery(lambda frame: on_confirm(frame, channel), callback=confirmed)

    connection = pika.SelectConnection(
        pika.URLParameters(url), on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _r: c.ioloop.stop(),
    )
    connection.ioloop.start()
    return sum(m[2] for m in messages) / state["elapsed"]


class LiveProbe:
    """Inserts live records at a steady rate and times them to consumption."""

    def __init__(self, outbox: OutboxFile, url: str, gateway_id: str, rate_per_s: float, queue: str) -> None:
        self.outbox, self.url, self.gateway_id, self.rate_per_s, self.queue = outbox, url, gateway_id, rate_per_s, queue
        self.inserted_at: dict[int, float] = {}
        self.latencies_s: list[float] = []
        self.consumed_records = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def insert_loop(self) -> None:
        boot_id, seq, period_s = str(uuid.uuid4()), 0, 0.02
        per_tick = max(1, round(self.rate_per_s * period_s))
        next_at = time.monotonic()
        while not self.stop.is_set():
            records = [(make_record("live-0001", boot_id, seq + i + 1), 2) for i in range(per_tick)]
            seq += per_tick
            ids = self.outbox.insert(records)
            now = time.time()
            with self._lock:
                self.inserted_at.update((i, now) for i in ids)
            next_at += period_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    def consume_loop(self, expected_records: threading.Event) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        for _method, props, _body in channel.consume(self.queue, auto_ack=True, inactivity_timeout=0.2):
            if props is None:
                if expected_records.is_set():
                    break
                continue
            now = time.time()
            self.consumed_records += props.headers["record-count"]
            first, last = (int(x) for x in props.message_id.rsplit(":", 1)[1].split("-"))
            with self._lock:
                for row_id in range(first, last + 1):
                    at = self.inserted_at.pop(row_id, None)
                    if at is not None:
                        self.latencies_s.append(now - at)
        connection.close()


def drain_with_uplink(args: argparse.Namespace, outbox: OutboxFile, gateway_id: str, queue: str) -> None:
    settings = UplinkSettings(enabled=True, amqp_url=args.amqp_url, batch_max_records=args.batch_max_records,
                              max_in_flight_messages=args.max_in_flight, codec=args.codec)
    probe = LiveProbe(outbox, args.amqp_url, gateway_id, args.live_rate, queue)
    done = threading.Event()
    consumer = threading.Thread(target=probe.consume_loop, args=(done,), daemon=True)
    inserter = threading.Thread(target=probe.insert_loop, daemon=True)
    consumer.start()
    uplink = Uplink(settings, outbox_path=outbox.path, gateway_id=gateway_id, site=SITE, registry=CollectorRegistry())
    started = time.monotonic()
    uplink.start()
    while not uplink.status()["connected"]:
        time.sleep(0.005)
    # Live means "arrived after the uplink connected": start the ingest now.
    inserter.start()
    last_print = started
    while True:
        status = uplink.status()
        if status["confirmed_records_total"] >= args.records:
            probe.stop.set()
            inserter.join()
            if outbox.count() == 0:
                break
        if time.monotonic() - last_print >= 5:
            last_print = time.monotonic()
            print(f"  {status['confirmed_records_total']:,} confirmed, {status['drain_rate_records_per_s']:,.0f}/s,"
                  f" state {status['state']}", flush=True)
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    status = uplink.status()
    uplink.stop()
    time.sleep(0.5)
    done.set()
    consumer.join()
    lat_ms = sorted(x * 1000 for x in probe.latencies_s)
    print(f"uplink drain: {status['confirmed_records_total']:,} records in {elapsed:.1f} s ="
          f" {status['confirmed_records_total'] / elapsed:,.0f} records/s"
          f" (published {status['published_records_total']:,}, consumed {probe.consumed_records:,})")
    if lat_ms:
        p50 = statistics.median(lat_ms)
        p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
        print(f"live records: {len(lat_ms):,} at {args.live_rate:.0f}/s, insert->consume p50 {p50:.0f} ms,"
              f" p99 {p99:.0f} ms, max {lat_ms[-1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="backlog size (default 1,000,000)")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--live-rate", type=float, default=200.0, help="live records inserted per second")
    parser.add_argument("--batch-max-records", type=int, default=UplinkSettings.batch_max_records)
    parser.add_argument("--max-in-flight", type=int, default=UplinkSettings.max_in_flight_messages)
    parser.add_argument("--codec", default=UplinkSettings.codec, choices=("null", "deflate"))
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="uplink-bench-") as tmp:
        outbox = OutboxFile(Path(tmp) / "gateway.sqlite")
        print(f"filling an outbox with {args.records:,} records ...", flush=True)
        fill_outbox(outbox, args.records)
        gateway_id = "bench-" + uuid.uuid4().hex[:8]
        connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
        channel = connection.channel()
        declare_topology(channel)
        queue = channel.queue_declare(f"uplink-bench-{gateway_id}", auto_delete=True).method.queue
        channel.queue_bind(queue, EXCHANGE, routing_key(SITE, gateway_id))
        if not args.skip_baseline:
            channel.queue_bind(queue, EXCHANGE, routing_key(SITE, gateway_id + "-raw"))
            messages = prebuilt_messages(outbox, gateway_id + "-raw", args.batch_max_records, args.codec)
            print(f"raw pika, BlockingChannel, 1 in flight: {raw_blocking(args.amqp_url, gateway_id + '-raw', messages):,.0f} records/s", flush=True)
            rate = raw_pipelined(args.amqp_url, gateway_id + "-raw", messages, args.max_in_flight)
            print(f"raw pika, SelectConnection, {args.max_in_flight} in flight: {rate:,.0f} records/s", flush=True)
            channel.queue_purge(queue)
        drain_with_uplink(args, outbox, gateway_id, queue)
        connection.close()


if __name__ == "__main__":
    main()
