"""Benchmark: records/s the gateway ingests and commits from 16 flooding pseudo-terminals.

Sixteen trackers' worth of frames (real samples from a fixture recording,
encoded as the emulator would) are written as fast as the terminals accept
them into a real ``pulsegate gateway run`` daemon. The figure is committed
records over the time from the first byte written to the last record
committed. The baseline is a plain ``sqlite3`` ``executemany`` of the same
rows into a table of the same shape, with the same pragmas, in this run.
Also reports the peak RSS (VmHWM) and CPU of the daemon with its decode
worker processes.

    .venv/bin/python benchmarks/gateway_ingest.py [--devices 16] [--records-per-device 24239] [--decode-workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tty
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_shim import (  # noqa: E402
    FrameType,
    Hello,
    encode_frame,
    encode_record,
    read_recording,
    schema,
    split_soe,
)

RECORDING = REPO / "tests/fixtures/recordings/fit/tormoder-fit__me__activity-large-fenxi2-multisport.fit"


def build_streams(devices: int, per_device: int) -> tuple[list[bytes], list[list[tuple]]]:
    """Wire bytes per device, and the outbox rows the same records make (for the baseline)."""
    samples = read_recording(RECORDING).samples
    streams, rows = [], []
    info = schema(2)
    for d in range(devices):
        device_id, boot_id = f"bench-{d:02d}", uuid.uuid4()
        wire = bytearray(encode_frame(FrameType.HELLO, 0, Hello(device_id, boot_id, info.fingerprint, "bench").to_payload()))
        device_rows = []
        for seq in range(1, per_device + 1):
            sample = samples[(seq - 1) % len(samples)]
            record = dict(sample, device_id=device_id, boot_id=str(boot_id), seq=seq, battery_pct=80,
                          host={"uptime_s": seq, "cpu_load": 0.3, "free_memory_bytes": 1 << 28})
            payload = encode_record(record)
            wire += encode_frame(FrameType.TELEMETRY, seq, payload)
            device_rows.append((device_id, str(boot_id), seq, sample["timestamp_us"], 0, info.fingerprint,
                                split_soe(payload)[1]))
        streams.append(bytes(wire))
        rows.append(device_rows)
    return streams, rows


def baseline(rows: list[list[tuple]], folder: Path) -> float:
    """Plain sqlite3 executemany of the same rows: records/s."""
    path = folder / "baseline.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, device_id TEXT, boot_id TEXT, seq INTEGER,"
                 " timestamp_us INTEGER, received_at_us INTEGER, schema_fingerprint BLOB, datum BLOB)")
    conn.execute("CREATE UNIQUE INDEX ix ON outbox (device_id, boot_id, seq)")
    flat = [r for device_rows in rows for r in device_rows]
    started = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO outbox (device_id, boot_id, seq, timestamp_us, received_at_us,"
                         " schema_fingerprint, datum) VALUES (?, ?, ?, ?, ?, ?, ?)", flat)
    elapsed = time.perf_counter() - started
    conn.close()
    return len(flat) / elapsed


def control(state_dir: Path, op: str) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(state_dir / "control.sock"))
        stream = sock.makefile("rwb")
        stream.write(json.dumps({"id": 1, "op": op}).encode() + b"\n")
        stream.flush()
        return json.loads(stream.readline())["result"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the decode workers and their fork server)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def peak_rss_mb(pid: int) -> float:
    """Sum of the peak RSS of the daemon and its worker processes (an upper bound: peaks may not coincide)."""
    total_kib = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time of the daemon and its worker processes."""
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_gateway(streams: list[bytes], folder: Path, decode_workers: int) -> tuple[float, float, int, float]:
    masters, links = [], []
    for i in range(len(streams)):
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        link = folder / f"tty{i:02d}"
        os.symlink(os.ttyname(slave), link)
        masters.append((master, slave))
        links.append(link)
    state = folder / "state"
    config = folder / "gateway.toml"
    config.write_text(f'[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n[serial]\ndecode_workers = {decode_workers}\n')
    gateway = subprocess.Popen(
        [sys.executable, "-m", "pulsegate", "gateway", "run", "--state-dir", str(state), "--config", str(config),
         *[a for link in links for a in ("--port", str(link))]],
        stderr=(folder / "gateway.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 60
        while not (state / "control.sock").exists():
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise SystemExit("gateway did not start: " + (folder / "gateway.log").read_text())
            time.sleep(0.05)
        time.sleep(0.5)
        total = sum(s.count(b"\x00") for s in streams) - len(streams)  # frames minus the HELLOs
        offsets = [0] * len(streams)
        fds = [m for m, _ in masters]
        cpu_before = cpu_seconds(gateway.pid)
        started = time.perf_counter()
        while any(offsets[i] < len(streams[i]) for i in range(len(streams))):
            want_write = [fds[i] for i in range(len(fds)) if offsets[i] < len(streams[i])]
            readable, writable, _ = select.select(fds, want_write, [], 0.1)
            for fd in readable:  # drain the ACKs
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    pass
            for fd in writable:
                i = fds.index(fd)
                try:
                    offsets[i] += os.write(fd, streams[i][offsets[i]:offsets[i] + 65536])
                except BlockingIOError:
                    pass
        while True:
            committed = control(state, "status")["ingest"]["records_committed"]
            for fd in fds:
                try:
                    os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    pass
            if committed >= total:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        rss = peak_rss_mb(gateway.pid)
        cpu_share = (cpu_seconds(gateway.pid) - cpu_before) / elapsed
        return total / elapsed, rss, total, cpu_share
    finally:
        gateway.terminate()
        gateway.wait(30)
        for master, slave in masters:
            os.close(master)
            os.close(slave)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--records-per-device", type=int, default=24239)
    parser.add_argument("--decode-workers", type=int, default=1, help="serial.decode_workers (0: decode in the port loop)")
    args = parser.parse_args()
    print(f"encoding {args.devices} x {args.records_per_device} records from {RECORDING.name} ...", flush=True)
    streams, rows = build_streams(args.devices, args.records_per_device)
    folder = Path(tempfile.mkdtemp(prefix="pulsegate-bench-"))
    try:
        raw = baseline(rows, folder)
        rate, rss, total, cpu_share = run_gateway(streams, folder, args.decode_workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"gateway ingest: {rate:,.0f} records/s committed from {args.devices} pseudo-terminals ({total:,} records,"
          f" {args.decode_workers} decode worker(s))")
    print(f"baseline sqlite3 executemany, same rows: {raw:,.0f} records/s  (gateway at {rate / raw:.0%} of it)")
    print(f"gateway peak RSS (daemon + decode workers): {rss:.0f} MiB; their CPU while ingesting:"
          f" {cpu_share:.0%} of one core ({1e6 * cpu_share / rate:.0f} µs of CPU per record)")


if __name__ == "__main__":
    main()
