"""The whole path against real servers: trackers -> gateway -> RabbitMQ -> ingest -> Cassandra.

Expected counts come from tests/fixtures/PROVENANCE.md (another tool's count
of each recording's samples); Cassandra is read back with the driver.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from replay_harness import PROVENANCE, PULSEGATE, GatewayProcess, Tracker, run_cli

pytestmark = [pytest.mark.servers, pytest.mark.slow]

#: FIT, GPX and TCX recordings of different sizes, a couple of minutes to replay in all.
RECORDINGS = ["fitparse__garmin-fenix-5-run", "tcxparser__test", "togeojson__run", "fitparse-rs__hrv-activity",
              "sports-lib__amazfit"]


def _configs(tmp_path: Path, keyspace: str, amqp_url: str) -> tuple[Path, Path]:
    central = tmp_path / "central.toml"
    central.write_text(
        f'[central]\nstate_dir = "{tmp_path / "central"}"\n[store]\nbackend = "cassandra"\n'
        f'[cassandra]\nkeyspace = "{keyspace}"\n[amqp]\nurl = "{amqp_url}"\n'
        '[ingest]\nmetrics_address = ""\nbatch_wait_ms = 20\nmax_backoff_s = 2.0\nledger_refresh_s = 0\n'
    )
    gateway = tmp_path / "gateway.toml"
    gateway.write_text(
        '[gateway]\nid = "gw-pipeline"\nsite = "gym-test"\n[metrics]\nlisten_address = ""\n'
        f'[airpods]\nenabled = false\n[uplink]\nenabled = true\namqp_url = "{amqp_url}"\n'
    )
    return central, gateway


def _start_ingest(central: Path, log_dir: Path) -> subprocess.Popen:
    done = run_cli("central", "db", "init", "--config", str(central), timeout=180)
    assert done.returncode == 0, done.stderr
    return subprocess.Popen([*PULSEGATE, "-v", "central", "ingest", "--config", str(central)],
                            stdout=subprocess.DEVNULL, stderr=(log_dir / "ingest.log").open("w"))


def _ledger(central: Path) -> dict[str, list[dict]]:
    done = run_cli("central", "ledger", "--json", "--config", str(central), timeout=120)
    assert done.returncode == 0, done.stderr
    by_device: dict[str, list[dict]] = {}
    for entry in json.loads(done.stdout)["devices"]:
        by_device.setdefault(entry["device_id"], []).append(entry)
    return by_device


def _wait_for_ledger(central: Path, expected: dict[str, int], timeout_s: float = 300) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout_s
    while True:
        ledger = _ledger(central)
        held = {d: sum(e["records"] for e in entries) for d, entries in ledger.items()}
        if held == expected:
            return ledger
        assert time.monotonic() < deadline, f"central holds {held}, expected {expected}"
        time.sleep(2)


def _rows_in_cassandra(keyspace: str) -> dict[str, list[int]]:
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042, protocol_version=5)
    try:
        rows = cluster.connect(keyspace).execute("SELECT device_id, seq FROM telemetry", timeout=120)
        seqs: dict[str, list[int]] = {}
        for row in rows:
            seqs.setdefault(row.device_id, []).append(row.seq)
        return {d: sorted(s) for d, s in seqs.items()}
    finally:
        cluster.shutdown()


def _replay(tmp_path: Path, names: list[str], *extra: str) -> list[Tracker]:
    trackers = [Tracker(PROVENANCE[n].path, tmp_path / f"tty-{n}", *extra, log_dir=tmp_path) for n in names]
    for tracker in trackers:
        tracker.wait_ready()
    return trackers


def test_every_record_reaches_cassandra_exactly_once(tmp_path: Path, processes: list, keyspace: str, amqp_url: str) -> None:
    central, gateway_config = _configs(tmp_path, keyspace, amqp_url)
    ingest = _start_ingest(central, tmp_path)
    processes.append(ingest)
    trackers = _replay(tmp_path, RECORDINGS, "--max-rate")
    processes.extend(trackers)
    gateway = GatewayProcess(tmp_path / "state", [t.link for t in trackers], tmp_path, config=gateway_config)
    processes.append(gateway)
    gateway.start()
    for tracker in trackers:
        assert tracker.wait() == 0, tracker.log
    expected = {n: PROVENANCE[n].samples for n in RECORDINGS}
    ledger = _wait_for_ledger(central, expected)
    assert all(e["gaps"] == 0 and e["first_seq"] == 1 for entries in ledger.values() for e in entries)
    assert all(e["gateway_id"] == "gw-pipeline" and e["site"] == "gym-test" for es in ledger.values() for e in es)
    rows = _rows_in_cassandra(keyspace)
    assert rows == {n: list(range(1, PROVENANCE[n].samples + 1)) for n in RECORDINGS}
    gateway.wait_socket()
    assert gateway.call("status")["result"]["outbox"]["records"] == 0  # confirmed records left the outbox


def test_gateway_killed_mid_drain_loses_and_duplicates_nothing(
    tmp_path: Path, processes: list, keyspace: str, amqp_url: str
) -> None:
    central, gateway_config = _configs(tmp_path, keyspace, amqp_url)
    ingest = _start_ingest(central, tmp_path)
    processes.append(ingest)
    name = "tormoder-fit__me__activity-small-fenix2-run"  # 2809 records
    trackers = _replay(tmp_path, [name], "--max-rate")
    processes.extend(trackers)
    gateway = GatewayProcess(tmp_path / "state", [trackers[0].link], tmp_path, config=gateway_config)
    processes.append(gateway)
    gateway.start()
    gateway.wait_socket()
    deadline = time.monotonic() + 120
    while True:  # kill it while the uplink is part-way through
        uplink = gateway.call("status")["result"]["uplink"]
        if uplink.get("confirmed_records_total", 0) > 300:
            break
        assert time.monotonic() < deadline, uplink
        time.sleep(0.02)
    gateway.kill()
    gateway.start()
    assert trackers[0].wait() == 0, trackers[0].log
    ledger = _wait_for_ledger(central, {name: PROVENANCE[name].samples})
    assert [e["gaps"] for e in ledger[name]] == [0]
    assert _rows_in_cassandra(keyspace) == {name: list(range(1, PROVENANCE[name].samples + 1))}
