"""Incidents from central to the wearer's wrist: real gateway daemon, emulated tracker, real RabbitMQ.

Each test runs a gym: ``pulsegate shim replay`` on a pseudo-terminal (it logs
every haptic cue it plays) and ``pulsegate gateway run`` reading it, with the
uplink (and so the downlink) on the test vhost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from replay_harness import PULSEGATE, GatewayProcess, Tracker, run_cli

from central.downlink import AmqpGatewayNotifier
from central.incidents import CHANNEL_GATEWAY, IncidentDaemon, build_service
from central.incidents.settings import IncidentSettings
from central.settings import CentralSection, CentralSettings
from downlink.downlink_harness import DEVICE_ID, RECORDING, SITE, notice_body, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def expected_pattern(priority: str) -> str:
    """What the tracker should play for an incident: P1 and P2 are alarms, the rest one long pulse."""
    return "ALARM" if priority in ("P1", "P2") else "LONG"


@dataclass
class Gym:
    tracker: Tracker
    gateway: GatewayProcess
    cue_log: Path

    def status(self) -> dict[str, Any]:
        reply = self.gateway.call("status")
        assert reply["ok"], reply
        return reply["result"]

    def cues(self) -> list[dict[str, Any]]:
        if not self.cue_log.exists():
            return []
        return [json.loads(line) for line in self.cue_log.read_text().splitlines() if line.strip()]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        return next((i for i in self.status()["incidents"] if i["incident_id"] == incident_id), None)


@pytest.fixture
def start_gym(tmp_path: Path, amqp_url: str, gateway_id: str, processes: list) -> Iterator[Any]:
    def start(wait_for_tracker: bool = True) -> Gym:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[gateway]\nid = "{gateway_id}"\nsite = "{SITE}"\n'
            f'[uplink]\nenabled = true\namqp_url = "{amqp_url}"\nbackoff_min_s = 0.2\nbackoff_max_s = 2.0\n'
            '[airpods]\nenabled = false\n'
            '[metrics]\nlisten_address = ""\n'
        )
        link = tmp_path / "tracker-link"
        cue_log = tmp_path / "cues.jsonl"
        tracker = Tracker(RECORDING, link, "--speed", "20", "--cue-log", str(cue_log), log_dir=tmp_path)
        processes.append(tracker)
        tracker.wait_ready()
        gateway = GatewayProcess(tmp_path / "state", [link], tmp_path)
        processes.append(gateway)
        gateway.start().wait_socket()
        gym = Gym(tracker, gateway, cue_log)
        wait_for(lambda: gym.status()["downlink"]["state"] == "connected", 30, "the downlink to connect")
        if wait_for_tracker:
            wait_for(lambda: any(p["device_id"] == DEVICE_ID and p["state"] == "open" for p in gym.status()["ports"]),
                     30, "the tracker's HELLO")
        return gym

    yield start


def test_a_notice_from_central_cues_the_tracker_and_shows_in_status(
    start_gym: Any, gateway_id: str, amqp_url: str
) -> None:
    gym = start_gym()
    notifier = AmqpGatewayNotifier(amqp_url)
    alarm = notice_body(gateway_id, priority="P2")
    attention = notice_body(gateway_id, priority="P4", kind="battery_low", summary="Tracker battery below 10 percent")
    try:
        notifier(alarm)
        notifier(attention)
        wait_for(lambda: len(gym.cues()) == 2, 30, "two cues played on the tracker")
        assert [(c["device_id"], c["pattern"]) for c in gym.cues()] == [
            (DEVICE_ID, expected_pattern("P2")), (DEVICE_ID, expected_pattern("P4")),
        ]

        listed = gym.incident(alarm["incident_id"])
        assert listed is not None
        assert {k: listed[k] for k in ("priority", "kind", "subject", "summary", "state")} == {
            k: alarm[k] for k in ("priority", "kind", "subject", "summary", "state")
        }
        sent = {c["key"]: c for c in gym.status()["cues"]}
        assert sent[f"incident:{alarm['incident_id']}"]["pattern"] == "ALARM"
        wait_for(lambda: {c["state"] for c in gym.status()["cues"]} == {"acknowledged"}, 15, "CUE_ACKs")

        # Resolved: the list follows, the wrist is left alone.
        notifier({**alarm, "state": "resolved", "at": notice_body(gateway_id)["at"]})
        wait_for(lambda: (gym.incident(alarm["incident_id"]) or {}).get("state") == "resolved", 20, "the resolution")
        assert gym.status()["downlink"]["notices"]["handled"] == 3
        time.sleep(1.0)  # a wrongly sent cue would be played and logged within this
        assert len(gym.cues()) == 2
    finally:
        notifier.close()


def test_a_notice_sent_while_the_gateway_was_off_is_listed_when_it_starts(
    start_gym: Any, gateway_id: str, amqp_url: str
) -> None:
    notifier = AmqpGatewayNotifier(amqp_url)
    body = notice_body(gateway_id, subject="gateway:" + gateway_id, kind="uplink_backlog", priority="P3")
    try:
        notifier(body)  # the gateway has never connected: its queue holds the notice
    finally:
        notifier.close()
    gym = start_gym(wait_for_tracker=False)
    # Whether its haptic half reaches a tracker depends on the tracker having
    # said HELLO first, so this test checks the listing, which must not race.
    listed = wait_for(lambda: gym.incident(body["incident_id"]), 30, "the held notice")
    assert listed["state"] == "new" and listed["subject"] == body["subject"]


def test_an_incident_raised_in_the_incident_service_reaches_the_wrist(
    start_gym: Any, gateway_id: str, amqp_url: str, tmp_path: Path
) -> None:
    gym = start_gym()
    settings = CentralSettings(
        central=CentralSection(state_dir=tmp_path / "central"),
        incidents=IncidentSettings(listen_address="127.0.0.1:0", tick_interval_s=0.2),
    )
    service = build_service(settings)
    notifier = AmqpGatewayNotifier(amqp_url)
    daemon = IncidentDaemon(service, tmp_path / "runbooks", gateway_notifier=notifier)
    daemon.start()
    try:
        incident = service.raise_incident(
            "heart_rate_high", f"device:{DEVICE_ID}", "Heart rate above 190 bpm",
            impact="high", urgency="high", gateway_id=gateway_id, site=SITE,
        )
        assert incident.priority == "P1"  # high impact, high urgency (ITIL example matrix)
        wait_for(lambda: gym.cues(), 30, "the cue on the tracker")
        assert [(c["device_id"], c["pattern"]) for c in gym.cues()] == [(DEVICE_ID, expected_pattern("P1"))]
        wait_for(lambda: gym.incident(incident.id), 10, "the listing")

        service.resolve(incident.id, actor="test")
        wait_for(lambda: (gym.incident(incident.id) or {}).get("state") == "resolved", 30, "the resolution")
        assert service.store.outbox_pending(CHANNEL_GATEWAY, 10) == []
    finally:
        daemon.stop()
        notifier.close()


def test_incidents_serve_sends_notices_when_amqp_is_configured(
    start_gym: Any, gateway_id: str, amqp_url: str, tmp_path: Path
) -> None:
    gym = start_gym()
    config = tmp_path / "central.toml"
    config.write_text(
        f'[central]\nstate_dir = "{tmp_path / "central"}"\n'
        f'[amqp]\nurl = "{amqp_url}"\n'
        '[incidents]\nlisten_address = "127.0.0.1:0"\ntick_interval_s = 0.2\n'
    )
    log = (tmp_path / "serve.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_")}
    serve = subprocess.Popen([*PULSEGATE, "central", "incidents", "serve", "--config", str(config)],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: "gateway notices go to" in (tmp_path / "serve.log").read_text(), 30, "serve to start")
        raised = run_cli("central", "incidents", "raise", "heart_rate_high", f"device:{DEVICE_ID}",
                         "Heart rate above 190 bpm", "--impact", "high", "--urgency", "medium",
                         "--gateway-id", gateway_id, "--config", str(config))
        assert raised.returncode == 0, raised.stderr
        incident_id, priority = raised.stdout.split()[:2]
        assert priority == "P2"
        wait_for(lambda: gym.cues(), 30, "the cue on the tracker")
        assert [(c["device_id"], c["pattern"]) for c in gym.cues()] == [(DEVICE_ID, expected_pattern("P2"))]
        assert wait_for(lambda: gym.incident(incident_id), 10, "the listing")["priority"] == "P2"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
