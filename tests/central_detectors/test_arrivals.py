"""Silence, gateway backlog and clock skew, judged on arrivals with an injected clock."""

from __future__ import annotations

import pytest

from central.detectors import Detectors
from central.incidents import State
from central.store import TelemetryStore

from .conftest import FakeClock, incidents_of
from .streams import US, Tracker, every_second


@pytest.fixture(autouse=True)
def short_timers(detectors: Detectors) -> None:
    s = detectors.settings.detectors
    s.tracker_silent_s, s.gateway_silent_s, s.silence_clear_s, s.max_sample_gap_s = (
        60.0,
        120.0,
        30.0,
        10.0,
    )


def live(tracker: Tracker, clock: FakeClock, seconds: int) -> None:
    """``seconds`` of live samples ending at the clock, then the clock moves past them."""
    tracker.send(every_second(clock.now_us - (seconds - 1) * US, seconds))


def test_tracker_and_gateway_silence(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    detectors.settings.detectors.enabled = ["tracker_silent", "gateway_silent"]
    a, b = Tracker(store, "TR-A"), Tracker(store, "TR-B")
    live(a, clock, 120)
    live(b, clock, 120)
    assert detectors.run_pass() == []

    clock.advance(70)
    live(a, clock, 70)  # TR-B says nothing while its gateway delivers
    assert [(x.verb, x.kind, x.subject, x.priority) for x in detectors.run_pass()] == [
        ("raised", "tracker_silent", "device:TR-B", "P4")
    ]

    clock.advance(130)  # the whole gateway goes quiet: TR-A is left to the gateway's incident
    assert [(x.kind, x.subject, x.priority) for x in detectors.run_pass()] == [
        ("gateway_silent", "gateway:gym-1", "P3")
    ]

    clock.advance(10)
    live(a, clock, 10)
    live(b, clock, 10)
    assert detectors.run_pass() == []  # 10 s of data is not yet 30 s of it
    clock.advance(25)
    live(a, clock, 25)
    live(b, clock, 25)
    assert sorted((x.verb, x.subject) for x in detectors.run_pass()) == [
        ("resolved", "device:TR-B"),
        ("resolved", "gateway:gym-1"),
    ]
    assert incidents_of(detectors, "tracker_silent", "device:TR-A") == []


def test_backlog_fires_when_old_records_keep_arriving_and_clears_when_drained(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    detectors.settings.detectors.enabled = ["gateway_backlog"]
    tracker = Tracker(store, "TR-DRAIN", gateway_id="gym-2")
    base = clock.now_us - clock.now_us % (60 * US) - 1800 * US  # minute-aligned, half an hour ago

    def minute(k: int, backlog: bool) -> None:
        received = base + k * 60 * US
        tracker.send([(received, {})], received_us=received)  # the live record goes first
        if backlog:
            tracker.send(
                [(received - 7200 * US, {})], received_us=received
            )  # then two-hour-old ones

    for k in range(5):
        minute(k, backlog=True)
    assert detectors.run_pass() == []  # four minutes of backlog: not yet five
    minute(5, backlog=True)
    actions = detectors.run_pass()
    assert [(x.verb, x.subject, x.priority) for x in actions] == [("raised", "gateway:gym-2", "P4")]
    assert "7200 s old" in actions[0].summary

    for k in range(6, 11):
        minute(k, backlog=False)
    assert detectors.run_pass() == []  # drained for four minutes
    minute(11, backlog=False)
    assert [x.verb for x in detectors.run_pass()] == ["resolved"]


def test_clock_skew_in_live_data_but_not_in_a_bundle(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    detectors.settings.detectors.enabled = ["clock_skew"]
    fresh, behind = (
        Tracker(store, "TR-OK", gateway_id="gym-3"),
        Tracker(store, "TR-SLOW", gateway_id="gym-3"),
    )
    ahead = Tracker(store, "TR-FAST", gateway_id="gym-4")
    bundled = Tracker(store, "TR-OLD", gateway_id="gym-5")
    start = clock.now_us - 1200 * US

    def batch(k: int, behind_by_s: int) -> None:
        received = start + k * 10 * US
        fresh.send([(received - 1 * US, {})], received_us=received)
        behind.send([(received - behind_by_s * US, {})], received_us=received)
        ahead.send([(received + 600 * US, {})], received_us=received)
        bundled.send(
            [(received - 86400 * US, {})], received_us=received
        )  # old, nothing live beside it

    for k in range(30):  # 290 s: not yet sustained
        batch(k, behind_by_s=600)
    assert detectors.run_pass() == []
    batch(30, behind_by_s=600)
    assert sorted((x.verb, x.subject) for x in detectors.run_pass()) == [
        ("raised", "device:TR-FAST"),
        ("raised", "device:TR-SLOW"),
    ]
    for k in range(31, 62):  # TR-SLOW's clock is fixed for 300 s
        batch(k, behind_by_s=2)
    assert [(x.verb, x.subject) for x in detectors.run_pass()] == [("resolved", "device:TR-SLOW")]
    assert incidents_of(detectors, "clock_skew", "device:TR-OLD") == []
    assert incidents_of(detectors, "clock_skew", "device:TR-FAST")[0].state is State.NEW
