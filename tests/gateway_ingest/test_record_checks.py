"""Records refused for their content, through a real daemon, with and without decode workers.

Frames are written by hand onto a real pseudo-terminal, so each refusal is
one we chose; the outbox and quarantine are read back with plain SQL, and
the ACKs from the gateway are decoded off the line.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import time
import tty
import uuid
from pathlib import Path

import pytest
from replay_harness import PROVENANCE, GatewayProcess, Tracker, run_cli

from firmware_shim import Ack, FrameType, Hello, StreamDecoder, encode_frame, encode_record, schema

BOOT = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")


def _record(seq: int, **changes: object) -> dict:
    record = {
        "device_id": "checks-1", "boot_id": str(BOOT), "seq": seq, "timestamp_us": 1_735_000_000_000_000 + seq,
        "heart_rate_bpm": 120, "cadence_rpm": 80, "speed_m_s": 3.0, "distance_m": 10.0 * seq,
        "latitude_deg": 47.0, "longitude_deg": 8.0, "altitude_m": 400.0, "power_w": 200, "temperature_c": 20.0,
        "steps": None, "battery_pct": 90, "host": {"uptime_s": seq, "cpu_load": 0.5, "free_memory_bytes": 1 << 20},
        "rr_intervals_ms": [], "respiration_rate_bpm": None, "sport": None,
    }
    record.update(changes)
    return record


def _telemetry(seq: int, payload: bytes) -> bytes:
    return encode_frame(FrameType.TELEMETRY, seq, payload)


@pytest.mark.parametrize("decode_workers", [0, 1])
def test_refused_records_are_quarantined_with_their_reason(tmp_path: Path, processes, decode_workers: int) -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    link = tmp_path / "tty"
    os.symlink(os.ttyname(slave), link)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n[serial]\ndecode_workers = {decode_workers}\n')
    gateway = GatewayProcess(tmp_path / "state", [link], tmp_path, config=config).start()
    processes.append(gateway)
    gateway.wait_socket()
    bad_datum = encode_record(_record(3))[:-6]  # cut inside the host block
    wire = b"".join([
        encode_frame(FrameType.HELLO, 0, Hello("checks-1", BOOT, schema(2).fingerprint, "test").to_payload()),
        _telemetry(1, encode_record(_record(1))),
        _telemetry(2, encode_record(_record(2, heart_rate_bpm=400))),
        _telemetry(3, bad_datum),
        _telemetry(4, encode_record(_record(9))),  # the record says seq 9
        _telemetry(5, encode_record(_record(5), 1)),  # schema v1 writer
    ])
    os.write(master, wire)
    state = tmp_path / "state" / "gateway.sqlite"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(state) as conn:
            done = conn.execute("SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM quarantine)").fetchone()[0]
        if done == 5:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the last ACK
    acks = [Ack.from_payload(f.payload) for f in StreamDecoder().feed(os.read(master, 65536))
            if getattr(f, "type", None) is FrameType.ACK]
    status = run_cli("gateway", "status", "--json", "--state-dir", str(tmp_path / "state"))
    # The default config forwards nothing: the uplink is off, not down.
    assert json.loads(status.stdout)["uplink"]["state"] == "disabled", status.stdout + status.stderr
    gateway.stop()
    os.close(master)
    os.close(slave)
    with sqlite3.connect(state) as conn:
        stored = conn.execute("SELECT seq, schema_fingerprint FROM outbox ORDER BY seq").fetchall()
        refused = conn.execute("SELECT reason, detail, device_id FROM quarantine ORDER BY id").fetchall()
    assert stored == [(1, schema(2).fingerprint), (5, schema(1).fingerprint)]
    assert [(reason, device) for reason, _, device in refused] == [
        ("out_of_range", "checks-1"), ("bad_datum", "checks-1"), ("seq_mismatch", "checks-1")]
    assert refused[0][1] == "heart_rate_bpm 400 outside 20..255"
    assert refused[2][1] == "frame seq 4 but record seq 9"
    # Seq 2 was readable, so it counts as handled; seq 3 was not, so the
    # contiguous run stops there and the tracker will resend it.
    assert acks and acks[-1] == Ack(BOOT, 2)


def test_decode_worker_killed_mid_replay_loses_nothing(tmp_path: Path, processes) -> None:
    """kill -9 of the decode worker process: the writer decodes that round itself, a new pool starts."""
    facts = PROVENANCE["fitparse__garmin-edge-500-activity"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "1500", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    workers: list[int] = []
    for _ in range(600):
        devices = gateway.call("status")["result"]["devices"]
        workers = _grandchildren(gateway.process.pid)
        if devices and devices[0]["received"] > 1000 and workers:
            break
        time.sleep(0.05)
    assert workers, "no decode worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert tracker.wait() == 0, tracker.log
    gateway.wait_socket()
    received = gateway.call("status")["result"]["devices"][0]
    gateway.stop()
    assert (received["received"], received["gaps"]) == (facts.samples, 0)
    assert "decode pool broken" in gateway.log  # said once, by the next round after the kill


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    return parents


def _children(pid: int) -> list[int]:
    return [p for p, parent in _parents().items() if parent == pid]


def _grandchildren(pid: int) -> list[int]:
    """The decode workers: children of the fork server, itself the daemon's child."""
    children = set(_children(pid))
    return [p for p, parent in _parents().items() if parent in children]


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_decode_workers_exit_with_a_killed_daemon(tmp_path: Path, processes) -> None:
    """kill -9 of the daemon leaves no worker or fork server behind, holding pipes and memory."""
    facts = PROVENANCE["tcxparser__test"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "400", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    for _ in range(600):
        family = _grandchildren(gateway.process.pid)
        if family:
            break
        time.sleep(0.05)
    assert family, "no decode worker process found"
    family += _children(gateway.process.pid)
    gateway.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(pid) for pid in family):
        time.sleep(0.1)
    assert not [pid for pid in family if _running(pid)]
