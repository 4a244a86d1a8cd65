"""Where cues come from: workout milestones, and the gateway's own health.

Both classes are pure: the gateway feeds them telemetry records and events
with their times, and submits the cues they return to the
:class:`~gateway.airpods.CueDispatcher`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware_shim import HapticPattern
from gateway.airpods._cues import Cue, CueError, CuePriority
from gateway.airpods.settings import CueSettings

__all__ = ["MilestoneTracker", "SystemHealthCues"]

#: Trackers followed at once. A gym has tens; beyond this the device heard
#: from least recently is forgotten (its next milestone re-baselines).
MAX_TRACKED_DEVICES = 256
#: A cumulative distance that drops by more than this is a new workout.
_DISTANCE_RESET_M = 50.0
#: The buffer cue re-arms once the fill drops this far below the threshold,
#: so a buffer hovering at the threshold does not repeat the cue.
_BUFFER_REARM_PCT = 10.0
#: Longest incident summary spoken; longer ones are cut at a word.
_MAX_SUMMARY_CHARS = 120


@dataclass
class _Workout:
    boot_id: Any
    start_us: int
    last_us: int
    last_distance_m: float | None = None
    distance_count: int | None = None
    duration_count: int = 0
    zone: int | None = None
    pending_zone: int | None = None
    pending_since_us: int = 0


class MilestoneTracker:
    """Turn a tracker's telemetry stream into milestone cues.

    Emits one cue per ``distance_step_km`` of cumulative distance, per
    ``duration_step_min`` since the first record of the workout, and per
    heart-rate zone change. Zones rise as soon as the heart rate reaches a
    zone's floor and fall only when it drops ``hr_zone_hysteresis_bpm`` below
    it, and a new zone is announced only once it has held for
    ``hr_zone_dwell_s``, so a heart rate hovering on a boundary is quiet.

    A workout starts with the first record seen from a device, or when its
    ``boot_id`` changes, its clock goes backwards or its distance restarts.
    Known limitation: records carry no workout start, so after a gateway
    restart durations count from the first record this process saw.
    """

    def __init__(self, settings: CueSettings) -> None:
        self._settings = settings
        self._distance_step_m = settings.distance_step_km * 1000.0
        self._duration_step_us = settings.duration_step_min * 60_000_000
        self._dwell_us = settings.hr_zone_dwell_s * 1_000_000
        self._zone_floors_bpm = [
            settings.max_heart_rate_bpm * p / 100.0 for p in settings.hr_zone_floors_pct
        ]
        self._workouts: OrderedDict[str, _Workout] = OrderedDict()  # capped at MAX_TRACKED_DEVICES

    def feed(self, record: Mapping[str, Any]) -> list[Cue]:
        """Take one telemetry record (telemetry.v2 fields).

        Returns:
            The milestone cues this record triggers, often none.

        Raises:
            CueError: the record lacks ``device_id`` or ``timestamp_us``.
        """
        device_id = record.get("device_id")
        timestamp_us = record.get("timestamp_us")
        if not device_id or not isinstance(timestamp_us, int):
            raise CueError(
                f"telemetry record needs device_id and an integer timestamp_us, got "
                f"device_id={device_id!r}, timestamp_us={timestamp_us!r}"
            )
        workout = self._workout(device_id, record.get("boot_id"), timestamp_us)
        cues: list[Cue] = []
        self._distance(device_id, workout, record.get("distance_m"), cues)
        self._duration(device_id, workout, timestamp_us, cues)
        self._heart_rate(device_id, workout, record.get("heart_rate_bpm"), timestamp_us, cues)
        workout.last_us = timestamp_us
        return cues

    def zone_of(self, heart_rate_bpm: float) -> int:
        """The zone (0 below zone 1) a heart rate falls in, without hysteresis."""
        # The floors ascend strictly (settings check), so this counts those reached.
        return bisect.bisect_right(self._zone_floors_bpm, heart_rate_bpm)

    def _workout(self, device_id: str, boot_id: Any, timestamp_us: int) -> _Workout:
        workout = self._workouts.pop(device_id, None)
        if workout is None or workout.boot_id != boot_id or timestamp_us < workout.last_us:
            workout = _Workout(boot_id, timestamp_us, timestamp_us)
        self._workouts[device_id] = workout
        if len(self._workouts) > MAX_TRACKED_DEVICES:
            self._workouts.popitem(last=False)
        return workout

    def _distance(
        self, device_id: str, workout: _Workout, distance_m: Any, cues: list[Cue]
    ) -> None:
        if distance_m is None or not math.isfinite(distance_m) or distance_m < 0:
            return
        count = math.floor(distance_m / self._distance_step_m)
        restarted = (
            workout.last_distance_m is not None
            and distance_m < workout.last_distance_m - _DISTANCE_RESET_M
        )
        workout.last_distance_m = distance_m
        if workout.distance_count is None or restarted:
            # Baseline: a workout joined midway announces the next step, not the last one.
            workout.distance_count = count
            return
        if count > workout.distance_count:
            workout.distance_count = count
            km = count * self._settings.distance_step_km
            text = f"{km:g} kilometre{'' if km == 1 else 's'}"
            cues.append(
                Cue(
                    f"{device_id}:distance:{count}",
                    CuePriority.MILESTONE,
                    text,
                    HapticPattern.DOUBLE_TAP,
                    device_id,
                )
            )

    def _duration(
        self, device_id: str, workout: _Workout, timestamp_us: int, cues: list[Cue]
    ) -> None:
        count = math.floor((timestamp_us - workout.start_us) / self._duration_step_us)
        if count > workout.duration_count:
            workout.duration_count = count
            minutes = count * self._settings.duration_step_min
            hours, rest = divmod(round(minutes), 60)
            spoken = f"{hours} hour{'' if hours == 1 else 's'}" if hours else ""
            if rest or not hours:
                spoken = f"{spoken} {rest} minute{'' if rest == 1 else 's'}".strip()
            cues.append(
                Cue(
                    f"{device_id}:duration:{count}:{workout.start_us}",
                    CuePriority.MILESTONE,
                    spoken,
                    HapticPattern.DOUBLE_TAP,
                    device_id,
                )
            )

    def _heart_rate(
        self,
        device_id: str,
        workout: _Workout,
        heart_rate_bpm: Any,
        timestamp_us: int,
        cues: list[Cue],
    ) -> None:
        if heart_rate_bpm is None or heart_rate_bpm <= 0:
            return
        if workout.zone is None:
            workout.zone = self.zone_of(heart_rate_bpm)  # the starting zone is not news
            return
        zone = self._zone_with_hysteresis(workout.zone, heart_rate_bpm)
        if zone == workout.zone:
            workout.pending_zone = None
            return
        if zone != workout.pending_zone:
            workout.pending_zone, workout.pending_since_us = zone, timestamp_us
        if timestamp_us - workout.pending_since_us < self._dwell_us:
            return
        rising, workout.zone, workout.pending_zone = zone > workout.zone, zone, None
        if zone == len(self._zone_floors_bpm) and rising:
            cue = Cue(
                f"{device_id}:hr_zone:{zone}:{timestamp_us}",
                CuePriority.HEALTH,
                f"Heart rate zone {zone}, maximum effort",
                HapticPattern.LONG,
                device_id,
            )
        else:
            text = f"Heart rate zone {zone}" if zone else "Heart rate below zone 1"
            cue = Cue(
                f"{device_id}:hr_zone:{zone}:{timestamp_us}",
                CuePriority.MILESTONE,
                text,
                HapticPattern.TAP,
                device_id,
            )
        cues.append(cue)

    def _zone_with_hysteresis(self, zone: int, heart_rate_bpm: float) -> int:
        # Up as soon as a floor is reached; down only once clearly below it.
        zone = max(zone, self.zone_of(heart_rate_bpm))
        hysteresis = self._settings.hr_zone_hysteresis_bpm
        while zone > 0 and heart_rate_bpm < self._zone_floors_bpm[zone - 1] - hysteresis:
            zone -= 1
        return zone


class SystemHealthCues:
    """Cues about the gateway itself: uplink outages, a filling buffer, incidents, test cues.

    Voice only, except incidents and test cues aimed at a tracker. Feed it
    events as they happen and call :meth:`check` periodically.
    """

    def __init__(self, settings: CueSettings) -> None:
        self._settings = settings
        self._uplink_down_since_s: float | None = None
        self._uplink_announced = False
        self._buffer_armed = True
        self._serial = itertools.count(1)

    def uplink(self, up: bool, now_s: float) -> list[Cue]:
        """Record the uplink's state.

        Returns:
            A "restored" cue when an outage that was announced ends.
        """
        if not up:
            if self._uplink_down_since_s is None:
                self._uplink_down_since_s = now_s
            return []
        announced = self._uplink_announced
        self._uplink_down_since_s, self._uplink_announced = None, False
        if not announced:
            return []
        return [Cue(f"uplink:restored:{now_s:.0f}", CuePriority.INFO, "Gateway uplink restored")]

    def check(self, now_s: float) -> list[Cue]:
        """Announce an uplink outage once it has lasted ``uplink_down_after_s``."""
        since = self._uplink_down_since_s
        if (
            since is None
            or self._uplink_announced
            or now_s - since < self._settings.uplink_down_after_s
        ):
            return []
        self._uplink_announced = True
        minutes = max(1, round((now_s - since) / 60))
        text = f"Gateway uplink down for {minutes} minute{'' if minutes == 1 else 's'}, data is kept on the gateway"
        return [Cue(f"uplink:down:{since:.0f}", CuePriority.HEALTH, text)]

    def buffer_fill(self, fill_pct: float) -> list[Cue]:
        """Record the outbox fill level; announce crossing ``buffer_alert_pct`` upwards."""
        threshold = self._settings.buffer_alert_pct
        if fill_pct < threshold - _BUFFER_REARM_PCT:
            self._buffer_armed = True
        if fill_pct < threshold or not self._buffer_armed:
            return []
        self._buffer_armed = False
        text = f"Gateway buffer {math.floor(fill_pct)} percent full"
        return [Cue(f"buffer:{next(self._serial)}", CuePriority.HEALTH, text)]

    def incident(
        self, incident_id: str, summary: str, priority: str, device_id: str | None = None
    ) -> Cue:
        """A cue for an incident central sent down.

        Args:
            incident_id: Central's incident id (the de-duplication key).
            summary: One line to speak; cut at a word past 120 characters.
            priority: ITIL priority ``P1``..``P5``; P1 and P2 are alarms.
            device_id: The tracker concerned, which also plays the haptic part.

        Raises:
            CueError: the priority is not P1..P5.
        """
        if priority not in ("P1", "P2", "P3", "P4", "P5"):
            raise CueError(f"incident {incident_id!r} has priority {priority!r}; expected P1 to P5")
        if len(summary) > _MAX_SUMMARY_CHARS:
            summary = summary[:_MAX_SUMMARY_CHARS].rsplit(" ", 1)[0]
        alarm = priority in ("P1", "P2")
        return Cue(
            f"incident:{incident_id}",
            CuePriority.ALARM if alarm else CuePriority.HEALTH,
            f"Incident, priority {priority[1]}: {summary}",
            (HapticPattern.ALARM if alarm else HapticPattern.LONG) if device_id else None,
            device_id,
        )

    def test_cue(self, device_id: str | None = None) -> Cue:
        """The field staff's "send a test cue": a voice line and, for a tracker, a tap."""
        target = f" to {device_id}" if device_id else ""
        return Cue(
            f"test:{device_id or 'voice'}:{next(self._serial)}",
            CuePriority.INFO,
            f"Test cue from the gateway{target}",
            HapticPattern.TAP if device_id else None,
            device_id,
        )
