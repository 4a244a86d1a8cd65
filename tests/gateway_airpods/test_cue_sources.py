"""Milestone and system-health cue sources, on crafted streams and a real 3.5 h ride."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from firmware_shim import HapticPattern, read_recording
from gateway.airpods import CueError, CuePriority, CueSettings, MilestoneTracker, SystemHealthCues

RIDE = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "recordings"
    / "fit"
    / "fitparse__garmin-edge-500-activity.fit"
)
MINUTE_US = 60_000_000


def record(
    t_s: float,
    *,
    distance_m: float | None = None,
    hr: int | None = None,
    device: str = "t1",
    boot: str = "b1",
) -> dict[str, Any]:
    return {
        "device_id": device,
        "boot_id": boot,
        "timestamp_us": int(t_s * 1_000_000),
        "distance_m": distance_m,
        "heart_rate_bpm": hr,
    }


def texts(cues: list) -> list[str]:
    return [c.voice_text for c in cues]


def feed_all(tracker: MilestoneTracker, records: list[dict[str, Any]]) -> list:
    return [cue for r in records for cue in tracker.feed(r)]


def test_distance_cue_each_kilometre_and_one_cue_for_a_jump() -> None:
    tracker = MilestoneTracker(CueSettings(duration_step_min=1000))
    cues = feed_all(
        tracker,
        [record(i, distance_m=d) for i, d in enumerate([0, 500, 999, 1000, 1500, 2100, 4500])],
    )
    assert texts(cues) == ["1 kilometre", "2 kilometres", "4 kilometres"]
    assert all(
        c.priority is CuePriority.MILESTONE and c.haptic is HapticPattern.DOUBLE_TAP for c in cues
    )
    assert [c.key for c in cues] == ["t1:distance:1", "t1:distance:2", "t1:distance:4"]


def test_joining_a_workout_midway_announces_the_next_step_only() -> None:
    tracker = MilestoneTracker(CueSettings(distance_step_km=0.5))
    cues = feed_all(
        tracker,
        [record(0, distance_m=5300), record(1, distance_m=5499), record(2, distance_m=5500)],
    )
    assert texts(cues) == ["5.5 kilometres"]


def test_distance_restart_or_new_boot_rebaselines() -> None:
    tracker = MilestoneTracker(CueSettings())
    feed_all(tracker, [record(0, distance_m=0), record(1, distance_m=3200)])
    assert tracker.feed(record(2, distance_m=10)) == []  # distance restarted: a new workout
    assert texts(tracker.feed(record(3, distance_m=1000))) == ["1 kilometre"]
    assert tracker.feed(record(4, distance_m=2500, boot="b2")) == []  # tracker rebooted
    assert texts(tracker.feed(record(5, distance_m=3000, boot="b2"))) == ["3 kilometres"]


def test_duration_cues_and_their_wording() -> None:
    tracker = MilestoneTracker(CueSettings(duration_step_min=10))
    cues = feed_all(tracker, [record(m * 60) for m in range(0, 81)])
    assert texts(cues) == [
        "10 minutes",
        "20 minutes",
        "30 minutes",
        "40 minutes",
        "50 minutes",
        "1 hour",
        "1 hour 10 minutes",
        "1 hour 20 minutes",
    ]


def test_devices_are_tracked_separately() -> None:
    tracker = MilestoneTracker(CueSettings())
    tracker.feed(record(0, distance_m=0, device="a"))
    tracker.feed(record(0, distance_m=900, device="b"))
    assert [c.device_id for c in tracker.feed(record(1, distance_m=1000, device="b"))] == ["b"]
    assert tracker.feed(record(1, distance_m=999, device="a")) == []


def test_heart_rate_zone_changes_with_hysteresis() -> None:
    """Max 200 bpm, floors 50/60/70/80/90 % = 100/120/140/160/180 bpm, hysteresis 3 bpm."""
    tracker = MilestoneTracker(
        CueSettings(
            max_heart_rate_bpm=200,
            hr_zone_hysteresis_bpm=3,
            hr_zone_dwell_s=0,
            duration_step_min=1000,
        )
    )
    heart_rates = [130, 139, 140, 139, 141, 138, 137, 140, 136, 150, 181, 179, 178, 176]
    cues = feed_all(tracker, [record(i, hr=hr) for i, hr in enumerate(heart_rates)])
    # 130 is zone 2 (silent start); 140 -> 3; 138/137 stay 3 (>= 137); 136 -> 2; 150 -> 3;
    # 181 -> 5 (top: health); 179, 178 stay 5 (>= 177); 176 -> 4.
    assert texts(cues) == [
        "Heart rate zone 3",
        "Heart rate zone 2",
        "Heart rate zone 3",
        "Heart rate zone 5, maximum effort",
        "Heart rate zone 4",
    ]
    top = cues[3]
    assert top.priority is CuePriority.HEALTH and top.haptic is HapticPattern.LONG
    assert len({c.key for c in cues}) == len(
        cues
    )  # keys differ so de-duplication never eats a change


def test_record_without_device_or_time_is_refused() -> None:
    tracker = MilestoneTracker(CueSettings())
    with pytest.raises(CueError, match="device_id"):
        tracker.feed({"timestamp_us": 1})
    with pytest.raises(CueError, match="timestamp_us"):
        tracker.feed({"device_id": "t1", "timestamp_us": None})


def test_zone_change_is_announced_only_after_the_dwell_time() -> None:
    """A 20 s spike into zone 4 is not announced; 30 s in zone 4 is, at the 30th second."""
    tracker = MilestoneTracker(
        CueSettings(max_heart_rate_bpm=200, hr_zone_dwell_s=30, duration_step_min=1000)
    )
    spike = [150] * 10 + [165] * 20 + [150] * 10
    assert feed_all(tracker, [record(t, hr=hr) for t, hr in enumerate(spike)]) == []
    held = [record(100 + t, hr=165) for t in range(40)]
    cues = [(r["timestamp_us"], c) for r in held for c in tracker.feed(r)]
    assert [(ts // 1_000_000, c.voice_text) for ts, c in cues] == [(130, "Heart rate zone 4")]


def _zone_changes_independently(
    samples: list[tuple[int, int]], floors_bpm: list[float], hysteresis: float, dwell_us: float
) -> int:
    """Count announced zone changes by walking zones one step at a time, a formulation unlike the tracker's."""
    zone, candidate, since, changes = None, None, 0, 0
    for ts, hr in samples:
        if zone is None:
            zone = len([f for f in floors_bpm if hr >= f])
            continue
        target = zone
        while target < len(floors_bpm) and hr >= floors_bpm[target]:
            target += 1
        if target == zone:
            while target > 0 and hr + hysteresis < floors_bpm[target - 1]:
                target -= 1
        if target == zone:
            candidate = None
            continue
        if target != candidate:
            candidate, since = target, ts
        if ts - since >= dwell_us:
            zone, candidate, changes = target, None, changes + 1
    return changes


@pytest.mark.slow
def test_real_ride_gives_the_milestones_its_samples_imply() -> None:
    """Garmin Edge 500, 3.5 h, 92.6 km: one cue per km, per 10 minutes, per zone change."""
    ride = read_recording(RIDE)
    records = [{**s, "device_id": "edge-500", "boot_id": "ride"} for s in ride.samples]
    settings = CueSettings(max_heart_rate_bpm=195)
    cues = feed_all(MilestoneTracker(settings), records)

    distances = [r["distance_m"] for r in records if r["distance_m"] is not None]
    expected_km = math.floor(max(distances) / 1000) - math.floor(distances[0] / 1000)
    distance_cues = [c for c in cues if ":distance:" in c.key]
    assert len(distance_cues) == expected_km == 92
    assert texts(distance_cues) == ["1 kilometre"] + [f"{k} kilometres" for k in range(2, 93)]

    # The ride has a recording pause from ~97 to ~116 min, so the 100-minute step is
    # never sampled: one cue per 10-minute step that some sample falls into.
    elapsed_min = [(r["timestamp_us"] - records[0]["timestamp_us"]) / MINUTE_US for r in records]
    steps_reached = {math.floor(m / 10) for m in elapsed_min} - {0}
    duration_cues = [c for c in cues if ":duration:" in c.key]
    assert len(duration_cues) == len(steps_reached) == 20
    assert math.floor(elapsed_min[-1] / 10) == 21 and 10 not in steps_reached

    samples = [(r["timestamp_us"], r["heart_rate_bpm"]) for r in records if r["heart_rate_bpm"]]
    floors = [195 * p / 100 for p in settings.hr_zone_floors_pct]
    zone_cues = [c for c in cues if ":hr_zone:" in c.key]
    expected = _zone_changes_independently(
        samples, floors, settings.hr_zone_hysteresis_bpm, settings.hr_zone_dwell_s * 1_000_000
    )
    assert len(zone_cues) == expected
    naive_changes = sum(
        1
        for (_, a), (_, b) in zip(samples, samples[1:], strict=False)
        if sum(a >= f for f in floors) != sum(b >= f for f in floors)
    )
    assert (
        0 < len(zone_cues) < naive_changes / 5
    )  # hysteresis and dwell remove the boundary chatter


def test_uplink_outage_is_announced_once_after_the_threshold_and_its_end_too() -> None:
    health = SystemHealthCues(CueSettings(uplink_down_after_s=300))
    assert health.uplink(False, 1000.0) == [] and health.check(1299.0) == []
    (down,) = health.check(1300.0)
    assert (
        down.priority is CuePriority.HEALTH
        and "5 minutes" in down.voice_text
        and down.haptic is None
    )
    assert health.check(1900.0) == []  # still down: no repeat
    assert texts(health.uplink(True, 2000.0)) == ["Gateway uplink restored"]
    assert (
        health.uplink(False, 3000.0) == [] and health.uplink(True, 3010.0) == []
    )  # short blip: silent


def test_buffer_fill_crossing_is_announced_once_until_it_drains() -> None:
    health = SystemHealthCues(CueSettings(buffer_alert_pct=80))
    assert health.buffer_fill(79.9) == []
    assert texts(health.buffer_fill(80.4)) == ["Gateway buffer 80 percent full"]
    assert health.buffer_fill(95) == [] and health.buffer_fill(75) == []  # not re-armed above 70 %
    assert health.buffer_fill(81) == []
    health.buffer_fill(60)
    assert len(health.buffer_fill(85)) == 1


def test_incident_priority_maps_to_alarm_or_health() -> None:
    health = SystemHealthCues(CueSettings())
    p1 = health.incident(
        "INC-7", "Tracker edge-500 heart rate sensor lost", "P1", device_id="edge-500"
    )
    assert (
        p1.priority is CuePriority.ALARM
        and p1.haptic is HapticPattern.ALARM
        and p1.key == "incident:INC-7"
    )
    p3 = health.incident("INC-8", "word " * 60, "P3")
    assert p3.priority is CuePriority.HEALTH and p3.haptic is None and len(p3.voice_text) < 150
    with pytest.raises(CueError, match="expected P1 to P5"):
        health.incident("INC-9", "x", "urgent")


def test_each_test_cue_is_distinct() -> None:
    health = SystemHealthCues(CueSettings())
    first, second = health.test_cue("t1"), health.test_cue("t1")
    assert first.key != second.key and first.haptic is HapticPattern.TAP and first.device_id == "t1"
    assert health.test_cue().haptic is None
