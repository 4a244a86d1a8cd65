"""AirPodsLink driven through bleak's BleakScanner with a replaying backend, on short real timers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.airpods import AirPodsLink, AirPodsSettings, LinkState

from ._replay import FakeRadio, background, replay_backend, stream

OURS = "AA:AA:AA:AA:AA:01"
NEIGHBOUR = "BB:BB:BB:BB:BB:02"
FAKE = "DD:DD:DD:DD:DD:03"
WAIT_S = 5.0  # generous upper bound; the tests finish in tenths of a second

FAST = dict(
    poll_interval_s=0.02,
    away_after_s=0.4,
    retry_initial_s=0.05,
    retry_max_s=0.4,
    scan_watchdog_s=0.3,
    strongest_window_s=1.0,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def radio() -> FakeRadio:
    return FakeRadio()


@pytest.fixture
def make_link(radio: FakeRadio, registry: CollectorRegistry) -> Iterator[object]:
    links: list[AirPodsLink] = []

    def make(**overrides: object) -> AirPodsLink:
        settings = AirPodsSettings(**{**FAST, **overrides})  # type: ignore[arg-type]
        link = AirPodsLink(settings, backend=replay_backend(radio), registry=registry)
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop()


def adverts_counted(registry: CollectorRegistry, outcome: str) -> float:
    return (
        registry.get_sample_value("pulsegate_gateway_airpods_adverts_total", {"outcome": outcome})
        or 0.0
    )


def test_link_picks_our_pair_among_neighbours_and_fakes(
    radio: FakeRadio, make_link, registry
) -> None:
    """Our AirPods 3 in ear at -50 dBm win over a weaker neighbour and a louder 19-byte fake."""
    radio.script = sorted(
        stream("ap13", OURS, -50, start_s=0.0, stop_s=3.0, every_s=0.05)
        + stream("ap02", NEIGHBOUR, -58, start_s=0.01, stop_s=3.0, every_s=0.05)
        + stream("ap23", FAKE, -35, start_s=0.02, stop_s=3.0, every_s=0.05),
        key=lambda a: a.at_s,
    )
    link = make_link()
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)

    status = link.status()
    assert status["state"] == "in_ear" and status["address"] == OURS and status["rssi_dbm"] == -50
    assert status["model"] == {"code": "0x1320", "name": "AirPods 3"}
    assert status["battery_pct"] == {"left": 80, "right": 80, "case": None, "single": None}
    assert status["in_ear"] == {"left": True, "right": True}
    assert 0 <= status["last_advert_age_s"] < 1.0
    assert link.voice_allowed()
    time.sleep(0.3)  # let a few more adverts of each kind arrive
    assert adverts_counted(registry, "rejected_short_payload") >= 1
    assert adverts_counted(registry, "other_beacon") >= 1
    assert (
        registry.get_sample_value("pulsegate_gateway_airpods_battery_ratio", {"part": "left"})
        == 0.8
    )
    assert (
        registry.get_sample_value("pulsegate_gateway_airpods_link_state", {"state": "in_ear"}) == 1
    )


def test_single_missed_in_ear_advert_does_not_flap(radio: FakeRadio, make_link, caplog) -> None:
    """In-ear stream with one out-of-ear advert in the middle: the link never reports 'near'."""
    pods_in = stream("ap13", OURS, -50, start_s=0.0, stop_s=0.6, every_s=0.05)
    blip = stream("ap12", OURS, -50, start_s=0.6, stop_s=0.65, every_s=0.05)
    more_in = stream("ap13", OURS, -50, start_s=0.65, stop_s=1.2, every_s=0.05)
    radio.script = pods_in + blip + more_in + background(stop_s=1.5)
    radio.script.sort(key=lambda a: a.at_s)
    caplog.set_level(logging.INFO, logger="gateway.airpods")
    link = make_link(confirm_adverts=2, away_after_s=5.0)
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    time.sleep(1.3)
    assert link.state is LinkState.IN_EAR
    transitions = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AirPods ")]
    assert transitions == [f"AirPods in_ear: AirPods 3 ({OURS}, -50 dBm)"]


def test_pods_taken_out_then_pair_goes_away(radio: FakeRadio, make_link) -> None:
    """in ear -> out of ear (confirmed) -> silent longer than away_after_s while the gym keeps advertising."""
    radio.script = sorted(
        stream("ap13", OURS, -50, start_s=0.0, stop_s=0.3, every_s=0.05)
        + stream("ap12", OURS, -50, start_s=0.3, stop_s=0.6, every_s=0.05)
        + background(stop_s=3.0),
        key=lambda a: a.at_s,
    )
    link = make_link(away_after_s=0.4)
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    assert link.wait_for_state([LinkState.NEAR], WAIT_S)
    assert not link.voice_allowed()
    assert link.status()["battery_pct"]["case"] == 90  # ap12: case 90 %, lid open
    assert link.wait_for_state([LinkState.AWAY], WAIT_S)
    assert link.status()["last_advert_age_s"] >= 0.4


def test_no_adapter_at_startup_logs_one_line_and_recovers(
    radio: FakeRadio, make_link, caplog
) -> None:
    """Without an adapter start() returns, state is no_adapter, one WARNING is logged; plugging one in recovers."""
    radio.remove_adapter()
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=3.0, every_s=0.05)
    caplog.set_level(logging.DEBUG, logger="gateway.airpods")
    link = make_link()
    link.start()
    assert link.wait_for_state([LinkState.NO_ADAPTER], WAIT_S)
    time.sleep(0.5)  # several retries
    assert len(radio.start_attempts_s) >= 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "No Bluetooth adapters found." in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert (
        link.status()["state"] == "no_adapter"
        and link.status()["last_error"] == "No Bluetooth adapters found."
    )
    assert not link.voice_allowed()

    radio.add_adapter()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    assert link.status()["last_error"] is None


def test_adapter_vanishing_mid_scan_backs_off_and_recovers(
    radio: FakeRadio, make_link, registry, caplog
) -> None:
    """BlueZ goes silent when the adapter is pulled: the watchdog restarts, start() fails, retries back off."""
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=30.0, every_s=0.05)
    caplog.set_level(logging.INFO, logger="gateway.airpods")
    link = make_link(adapter="hci0", retry_initial_s=0.05, retry_max_s=0.4)
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)

    radio.remove_adapter()
    pulled_at = len(radio.start_attempts_s)
    assert link.wait_for_state([LinkState.NO_ADAPTER], WAIT_S)
    assert link.status()["last_error"] == "adapter 'hci0' not found"
    assert (
        registry.get_sample_value(
            "pulsegate_gateway_airpods_scanner_restarts_total", {"reason": "watchdog"}
        )
        == 1
    )
    time.sleep(1.6)
    failures = radio.start_attempts_s[pulled_at:]
    gaps = [b - a for a, b in zip(failures, failures[1:], strict=False)]
    assert len(gaps) >= 3
    # exponential: each wait about doubles (timer jitter allowed) and none exceeds the cap by much
    assert all(
        later >= earlier * 1.5 or earlier >= 0.35
        for earlier, later in zip(gaps, gaps[1:], strict=False)
    )
    assert max(gaps) < 0.4 + 0.2
    assert any(
        "Bluetooth adapter lost" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )

    radio.add_adapter()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)


def test_rescan_restarts_scanning_and_cuts_backoff_short(
    radio: FakeRadio, make_link, registry
) -> None:
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=30.0, every_s=0.05)
    link = make_link(retry_initial_s=0.05, retry_max_s=60.0, scan_watchdog_s=10.0)
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    before = len(radio.start_attempts_s)
    link.rescan()
    deadline = time.monotonic() + WAIT_S
    while len(radio.start_attempts_s) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(radio.start_attempts_s) == before + 1
    assert (
        registry.get_sample_value(
            "pulsegate_gateway_airpods_scanner_restarts_total", {"reason": "rescan"}
        )
        == 1
    )
    assert link.status()["scanner_restarts"] == 1


def test_rescan_during_a_long_backoff_retries_at_once(radio: FakeRadio, make_link) -> None:
    radio.remove_adapter()
    link = make_link(retry_initial_s=30.0, retry_max_s=60.0)
    link.start()
    assert link.wait_for_state([LinkState.NO_ADAPTER], WAIT_S)
    radio.add_adapter()
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=3.0, every_s=0.05)
    link.rescan()  # without it the next try would be 30 s away
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)


def test_passive_mode_asks_bluez_for_the_apple_pattern(radio: FakeRadio, make_link) -> None:
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=1.0, every_s=0.05)
    link = make_link(scanning_mode="passive", adapter="hci1")
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    args = radio.started_args[0]
    assert args["mode"] == "passive" and args["bluez"]["adapter"] == "hci1"
    (pattern,) = args["bluez"]["or_patterns"]
    assert pattern.start_position == 0 and pattern.content_of_pattern == b"\x4c\x00\x07"
    assert int(pattern.ad_data_type) == 0xFF  # manufacturer specific data


def test_disabled_link_never_scans(radio: FakeRadio, make_link) -> None:
    link = make_link(enabled=False)
    link.start()
    assert link.state is LinkState.DISABLED and radio.start_attempts_s == []


def test_stop_ends_the_thread_and_reports_stopped(radio: FakeRadio, make_link) -> None:
    radio.script = stream("ap13", OURS, -50, start_s=0.0, stop_s=3.0, every_s=0.05)
    link = make_link()
    link.start()
    assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
    thread = link._thread
    link.stop()
    assert link.state is LinkState.STOPPED and thread is not None and not thread.is_alive()


def test_real_bluez_backend_without_a_system_bus_reports_no_adapter(
    monkeypatch, tmp_path, caplog
) -> None:
    """bleak's own BlueZ backend, with the D-Bus system bus pointed at a socket that does not exist."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-such-bus'}")
    caplog.set_level(logging.WARNING, logger="gateway.airpods")
    link = AirPodsLink(AirPodsSettings(**FAST), registry=CollectorRegistry())  # type: ignore[arg-type]
    try:
        link.start()
        assert link.wait_for_state([LinkState.NO_ADAPTER], WAIT_S)
        assert "D-Bus system bus not reachable" in link.status()["last_error"]
        assert len(caplog.records) == 1
    finally:
        link.stop()
