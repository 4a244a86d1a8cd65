"""Heart rate out of band: crafted live streams, and a real recording replayed by sample time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from central.detectors import Detectors
from central.incidents import State
from central.store import TelemetryStore
from firmware_shim import read_recording

from .conftest import FakeClock, incidents_of
from .streams import SENSOR_FIELDS, US, Tracker, every_second

KIND = "heart_rate_out_of_band"
FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "recordings" / "tcx" / "tcxparser__test.tcx"
)


@pytest.fixture(autouse=True)
def only_heart_rate(detectors: Detectors) -> None:
    detectors.settings.detectors.enabled = [KIND]


def iso(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / US, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_fires_after_30_s_above_the_band_and_clears_after_30_s_inside(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    tracker = Tracker(store, "TR-1")
    t = clock.now_us - 900 * US
    tracker.send(every_second(t, 60, heart_rate_bpm=120))
    tracker.send(every_second(t + 60 * US, 30, heart_rate_bpm=190))  # spans 29 s: not sustained
    tracker.send(every_second(t + 90 * US, 10, heart_rate_bpm=120))
    assert detectors.run_pass() == []

    start = t + 100 * US
    tracker.send(every_second(start, 31, heart_rate_bpm=191))  # spans 30 s: sustained
    actions = detectors.run_pass()
    assert [(a.verb, a.kind, a.subject, a.priority) for a in actions] == [
        ("raised", KIND, "device:TR-1", "P1")
    ]
    (incident,) = incidents_of(detectors, KIND)
    assert incident.details["start"] == iso(start) and incident.details["worst"] == 191
    assert incident.gateway_id == "gym-1" and incident.site == "zurich"

    tracker.send(every_second(start + 31 * US, 30, heart_rate_bpm=150))  # a 29 s dip: still open
    tracker.send(every_second(start + 61 * US, 3, heart_rate_bpm=195))
    assert detectors.run_pass() == []
    tracker.send(every_second(start + 64 * US, 30, heart_rate_bpm=150))  # 29 s inside: still open
    assert detectors.run_pass() == []
    assert incidents_of(detectors, KIND)[0].state is State.NEW

    tracker.send([(start + 94 * US, {"heart_rate_bpm": 150})])  # now 30 s inside
    assert [a.verb for a in detectors.run_pass()] == ["resolved"]
    (incident,) = incidents_of(detectors, KIND)
    assert incident.state is State.RESOLVED and incident.repeat_count == 1
    assert detectors.run_pass() == []  # the ended episode is not recorded again


def test_low_heart_rate_fires_too(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    tracker = Tracker(store, "TR-2")
    tracker.send(every_second(clock.now_us - 100 * US, 40, heart_rate_bpm=35))
    assert [(a.verb, a.subject) for a in detectors.run_pass()] == [("raised", "device:TR-2")]


def sustained_runs(samples: list[dict], high_bpm: int, sustain_s: int) -> list[tuple[int, int]]:
    """(first, last) sample times of the runs of consecutive samples above ``high_bpm`` lasting ``sustain_s``."""
    runs: list[list[int]] = []
    current: list[int] | None = None
    for sample in samples:
        bpm = sample.get("heart_rate_bpm")
        if bpm is None:
            continue
        if bpm > high_bpm:
            if current is None:
                current = [sample["timestamp_us"], sample["timestamp_us"]]
                runs.append(current)
            current[1] = sample["timestamp_us"]
        else:
            current = None
    return [(a, b) for a, b in runs if b - a >= sustain_s * US]


def test_a_replayed_recording_is_judged_by_sample_time(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    """A recording from years ago, delivered now in one bundle, yields its episodes, each recorded once."""
    recording = read_recording(FIXTURE)
    samples = recording.samples
    expected = sustained_runs(samples, 185, 30)
    assert len(expected) == 2  # the fixture's two spells above 185 bpm (38 s and 31 s long)
    tail = [
        s["heart_rate_bpm"]
        for s in samples
        if s["timestamp_us"] >= samples[-1]["timestamp_us"] - 30 * US
    ]
    assert all(
        40 <= bpm <= 185 for bpm in tail if bpm is not None
    )  # so both have ended by the last sample

    tracker = Tracker(store, recording.device_id, gateway_id="gym-offline", site="basel")
    bundle = [(s["timestamp_us"], {k: s.get(k) for k in SENSOR_FIELDS}) for s in samples]
    tracker.send(bundle, received_us=clock.now_us)  # one write, as an imported bundle arrives

    actions = detectors.run_pass()
    assert [a.verb for a in actions] == ["recorded", "recorded"]
    found = incidents_of(detectors, KIND, f"device:{recording.device_id}")
    assert sorted(i.details["episode_start_us"] for i in found) == [first for first, _ in expected]
    assert sorted(i.details["last_bad"] for i in found) == [iso(last) for _, last in expected]
    assert {i.state for i in found} == {State.RESOLVED} and {i.priority for i in found} == {"P3"}

    clock.advance(60)
    assert detectors.run_pass() == []  # the same samples, judged again: nothing new
    assert len(incidents_of(detectors, KIND)) == 2
