"""Recordings replayed over real pseudo-terminals into a real gateway daemon.

Expected counts and time spans come from tests/fixtures/PROVENANCE.md, which
another tool (fitdecode/fitparse, gpxpy, a plain XML count) produced; the
outbox is read with plain SQL.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from replay_harness import PROVENANCE, GatewayProcess, ProvenanceFacts, Tracker


def _micros(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)


def _outbox_rows(state_dir: Path, device_id: str) -> list[tuple[str, int, int]]:
    with sqlite3.connect(state_dir / "gateway.sqlite") as conn:
        return conn.execute(
            "SELECT boot_id, seq, timestamp_us FROM outbox WHERE device_id = ? ORDER BY boot_id, seq", (device_id,)
        ).fetchall()


def _assert_complete(state_dir: Path, facts: ProvenanceFacts) -> None:
    rows = _outbox_rows(state_dir, facts.path.stem)
    assert len(rows) == facts.samples
    seqs = [seq for _, seq, _ in rows]
    assert seqs == list(range(1, facts.samples + 1)), "records missing or duplicated"
    timestamps = [ts for _, _, ts in rows]
    # The recording's first and last sample times, as the provenance check
    # printed them (whole seconds for most files).
    assert abs(timestamps[0] - _micros(facts.first_time)) < 1_000_000
    assert abs(max(timestamps) - _micros(facts.last_time)) < 1_000_000


@pytest.mark.slow
def test_every_recording_is_buffered_whole_in_order(tmp_path, processes):
    """All 28 recordings at once, at full speed: every sample lands once, in seq order."""
    trackers = [Tracker(f.path, tmp_path / name, "--max-rate", log_dir=tmp_path) for name, f in PROVENANCE.items()]
    processes.extend(trackers)
    for tracker in trackers:
        tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [t.link for t in trackers], tmp_path).start()
    processes.append(gateway)
    for tracker in trackers:
        assert tracker.wait() == 0, tracker.log
    gateway.stop()
    for facts in PROVENANCE.values():
        _assert_complete(tmp_path / "state", facts)


def test_gateway_killed_mid_replay_loses_nothing_acknowledged(tmp_path, processes):
    """kill -9 in the middle of a replay, then a restart: the final count is complete."""
    facts = PROVENANCE["fitparse__garmin-edge-500-activity"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "1500", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    for _ in range(300):
        response = gateway.call("status")
        assert "result" in response, response  # the daemon's own words if status failed
        devices = response["result"]["devices"]
        if devices and devices[0]["received"] > 1000:
            break
        __import__("time").sleep(0.05)
    gateway.kill()  # SIGKILL: no chance to flush anything
    before = len(_outbox_rows(tmp_path / "state", facts.path.stem))
    assert 1000 <= before < facts.samples
    gateway.start()
    assert tracker.wait() == 0, tracker.log
    gateway.stop()
    _assert_complete(tmp_path / "state", facts)
    assert gateway.starts == 2


def test_port_unplugged_and_replugged_mid_replay(tmp_path, processes):
    """The tracker's cable is pulled for a second; the gateway reopens the port by itself."""
    facts = PROVENANCE["tcxparser__test"]
    # 400x: the 33-minute recording takes 5 s, so the cable is pulled mid-replay.
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "400", "--unplug-after", "100", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    assert tracker.wait() == 0, tracker.log
    gateway.wait_socket()
    ports = gateway.call("status")["result"]["ports"]
    assert ports[0]["reopen_count"] >= 1
    gateway.stop()
    _assert_complete(tmp_path / "state", facts)
    assert "went away" in gateway.log and "reopened" in gateway.log


def test_tracker_reboot_starts_a_new_boot_and_keeps_old_records(tmp_path, processes):
    """A reboot mid-replay: two boots, each contiguous, together the whole recording."""
    facts = PROVENANCE["togeojson__tour_hr"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "30", "--reboot-after", "60", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    assert tracker.wait() == 0, tracker.log
    gateway.stop()
    rows = _outbox_rows(tmp_path / "state", facts.path.stem)
    boots: dict[str, list[int]] = {}
    for boot, seq, _ in rows:
        boots.setdefault(boot, []).append(seq)
    assert len(boots) == 2
    assert sorted(len(s) for s in boots.values()) != [0, facts.samples]
    assert sum(len(s) for s in boots.values()) == facts.samples
    for seqs in boots.values():
        assert seqs == list(range(1, len(seqs) + 1))
    # Samples keep their order across the reboot: the new boot's first sample
    # follows the old boot's last one in time.
    first_boot, second_boot = sorted(boots, key=lambda b: min(ts for bb, _, ts in rows if bb == b))
    assert max(ts for b, _, ts in rows if b == first_boot) <= min(ts for b, _, ts in rows if b == second_boot)


def test_line_noise_is_quarantined_and_recovered(tmp_path, processes):
    """Corrupted frames go to quarantine with a reason; resends fill every hole."""
    facts = PROVENANCE["togeojson__run"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--max-rate", "--noise", "0.05", "--seed", "7", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    assert tracker.wait() == 0, tracker.log
    gateway.stop()
    _assert_complete(tmp_path / "state", facts)
    with sqlite3.connect(tmp_path / "state" / "gateway.sqlite") as conn:
        reasons = dict(conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall())
        duplicates = conn.execute("SELECT sum(duplicates) FROM devices").fetchone()[0]
    assert reasons and set(reasons) <= {"crc", "cobs", "too_short", "length", "version", "type", "too_large"}
    assert duplicates > 0  # go-back-N resends what followed a lost frame


def test_schema_v1_firmware_is_accepted(tmp_path, processes):
    """An old tracker writing schema v1 is stored with its own writer schema."""
    facts = PROVENANCE["fitparse__garmin-fenix-5-run"]
    tracker = Tracker(facts.path, tmp_path / "tty", "--max-rate", "--schema-version", "1", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    assert tracker.wait() == 0, tracker.log
    gateway.stop()
    _assert_complete(tmp_path / "state", facts)
    from firmware_shim import schema

    with sqlite3.connect(tmp_path / "state" / "gateway.sqlite") as conn:
        fingerprints = {row[0] for row in conn.execute("SELECT DISTINCT schema_fingerprint FROM outbox")}
    assert fingerprints == {schema(1).fingerprint}
