"""Several detect processes at once, ``fleet --json``, and the fleet gauges over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from central.detectors import DetectLoop, Detectors
from central.fleet import FleetMetrics, serve_fleet_metrics
from central.incidents import build_service
from central.settings import CentralSettings
from central.store import TelemetryStore

from .conftest import FakeClock, incidents_of
from .streams import US, Tracker, every_second

PULSEGATE = str(Path(sys.executable).parent / "pulsegate")


def heart_rate_spell(store: TelemetryStore, end_us: int) -> None:
    """TR-HR: 40 s above 185 bpm up to ``end_us``, still going."""
    Tracker(store, "TR-HR").send(every_second(end_us - 39 * US, 40, heart_rate_bpm=200))


def test_two_detectors_at_once_open_one_incident(
    settings: CentralSettings, store: TelemetryStore, clock: FakeClock
) -> None:
    heart_rate_spell(store, clock.now_us)
    settings.detectors.enabled = ["heart_rate_out_of_band"]
    first, second = Detectors.open(settings, clock), Detectors.open(settings, clock)
    try:
        barrier = threading.Barrier(2)
        results: list[list[str]] = []

        def run(d: Detectors) -> None:
            barrier.wait()
            results.append([a.verb for a in d.run_pass()])

        threads = [threading.Thread(target=run, args=(d,)) for d in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(v for r in results for v in r) in (["raised"], ["raised", "repeated"])
        assert second.run_pass() == [] and first.run_pass() == []
        (incident,) = incidents_of(first, "heart_rate_out_of_band")
        assert incident.repeat_count <= 2
    finally:
        first.close()
        second.close()


def test_detect_once_as_two_real_processes(
    config_path: Path, store: TelemetryStore, settings: CentralSettings
) -> None:
    heart_rate_spell(store, int(time.time() * US))
    env = {"PULSEGATE_DETECTORS_ENABLED": "heart_rate_out_of_band", "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [PULSEGATE, "central", "detect", "--once", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = [line for out, _ in outputs for line in out.splitlines()]
    assert any(
        line.startswith("raised ") and "heart_rate_out_of_band device:TR-HR" in line
        for line in lines
    ), lines
    service = build_service(settings)
    try:
        opened = [i for i in service.store.open_incidents() if i.kind == "heart_rate_out_of_band"]
    finally:
        service.store.close()
    assert len(opened) == 1 and opened[0].priority == "P1"


def fleet_of_three(store: TelemetryStore, now_us: int) -> None:
    """gym-1: TR-A live now, TR-B last heard an hour ago; gym-2: TR-C two hours ago, delivered late."""
    Tracker(store, "TR-A", "gym-1", "zurich").send(every_second(now_us - 9 * US, 5, battery_pct=55))
    Tracker(store, "TR-B", "gym-1", "zurich").send(
        every_second(now_us - 3600 * US, 5, battery_pct=12)
    )
    late = Tracker(store, "TR-C", "gym-2", "basel")
    rows = late.rows(
        [(now_us - 7300 * US, {}), (now_us - 7200 * US, {})],
        received_us=now_us - 7200 * US + 90 * US,
    )
    store.write(rows[:1] + rows[1:])


def test_fleet_json(config_path: Path, store: TelemetryStore, settings: CentralSettings) -> None:
    now_us = int(time.time() * US)
    fleet_of_three(store, now_us)
    service = build_service(settings)
    try:
        service.raise_incident(
            "gateway_silent", "gateway:gym-2", "gym-2 silent", priority="P2", gateway_id="gym-2"
        )
    finally:
        service.store.close()
    out = subprocess.run(
        [PULSEGATE, "central", "fleet", "--json", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["summary"] == {
        "gateways": 2,
        "gateways_online": 1,
        "devices": 3,
        "devices_online": 1,
    }
    gyms = {g["gateway_id"]: g for g in doc["gateways"]}
    assert gyms["gym-1"]["site"] == "zurich" and gyms["gym-1"]["online"] is True
    assert gyms["gym-1"]["devices"] == 2 and gyms["gym-1"]["devices_online"] == 1
    assert 0 <= gyms["gym-1"]["last_sync_age_s"] < 30
    assert gyms["gym-2"]["online"] is False and 7100 < gyms["gym-2"]["last_sync_age_s"] < 7200
    assert gyms["gym-2"]["open_incidents"] == 1 and gyms["gym-2"]["records_missing"] == 0
    devices = {d["device_id"]: d for d in doc["devices"]}
    assert devices["TR-A"]["online"] is True and devices["TR-A"]["battery_pct"] == 55
    assert devices["TR-B"]["online"] is False and 3590 < devices["TR-B"]["last_seen_age_s"] < 3630
    assert doc["incidents"]["open"] == 1 and doc["incidents"]["by_priority"]["P2"] == 1
    assert doc["incidents"]["list"][0]["subject"] == "gateway:gym-2"
    assert set(gyms["gym-1"]) == {
        "gateway_id",
        "site",
        "online",
        "last_sync",
        "last_sync_age_s",
        "devices",
        "devices_online",
        "backlog_age_s",
        "records_missing",
        "open_incidents",
    }


def test_fleet_gauges_over_http(
    settings: CentralSettings, store: TelemetryStore, clock: FakeClock
) -> None:
    fleet_of_three(store, clock.now_us)
    metrics = FleetMetrics()
    host, port = serve_fleet_metrics("127.0.0.1:0", metrics) or ("", 0)
    detectors = Detectors.open(settings, clock)
    try:
        DetectLoop(detectors, metrics, emit=lambda line: None).run_once()
    finally:
        detectors.close()
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("pulsegate_central_devices_online", ())] == 1
    assert samples[("pulsegate_central_gateways_online", ())] == 1
    key = (("gateway_id", "gym-2"), ("site", "basel"))
    assert (
        samples[("pulsegate_central_gateway_last_sync_timestamp_seconds", key)]
        == (clock.now_us - 7110 * US) / US
    )
    assert samples[("pulsegate_central_gateway_online", key)] == 0
    assert ("pulsegate_central_detect_last_pass_timestamp_seconds", ()) in samples
