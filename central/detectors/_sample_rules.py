"""Rules judged on a tracker's own samples, by sample time: heart rate and battery.

Each pass reads, per tracker, the ``lookback_s`` of samples ending at its
newest sample, widened to cover every sample received within the arrival
window (a bundle or a drained backlog is judged whole) and extended back
while the window opens inside a BAD run, up to ``max_lookback_s``, so an
episode's start and identity do not depend on when the pass runs. A replayed or bundled recording is therefore judged by when
its samples were taken, not by when it arrived. Episodes that already ended
are recorded (raised and resolved at once, at low urgency); an ongoing one
keeps an incident open until the samples clear.

Known limit: an episode more than ``max_lookback_s`` before a tracker's
newest sample (deep inside a long bundle) is not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from central.detectors._episodes import Episode, EpisodeScan, Verdict, scan_episodes
from central.detectors._pass import DetectionPass, iso_us
from central.detectors.settings import DetectorSettings
from central.fleet import DeviceActivity
from central.store import TelemetryRow

__all__ = ["SampleRule", "battery_rule", "heart_rate_rule", "judge_device"]

log = logging.getLogger(__name__)

_US = 1_000_000

Classify = Callable[[TelemetryRow], tuple[Verdict, float | None]]


@dataclass(frozen=True)
class SampleRule:
    """A condition on samples, its hysteresis and how its incidents read."""

    kind: str
    classify: Classify
    fire_after_s: float
    clear_after_s: float
    worse: Callable[[float, float], bool]
    describe: Callable[[str, Episode], str]
    impact: str
    urgency: str
    category: str


def heart_rate_rule(s: DetectorSettings) -> SampleRule:
    """Heart rate outside ``[low, high]`` bpm, clear once back inside by the hysteresis margin."""
    low, high, margin = s.heart_rate_low_bpm, s.heart_rate_high_bpm, s.heart_rate_hysteresis_bpm

    def classify(row: TelemetryRow) -> tuple[Verdict, float | None]:
        bpm = row.heart_rate_bpm
        if bpm is None:
            return Verdict.NEUTRAL, None
        if bpm > high or bpm < low:
            return Verdict.BAD, float(bpm)
        if low + margin <= bpm <= high - margin:
            return Verdict.GOOD, float(bpm)
        return Verdict.NEUTRAL, float(bpm)

    def distance(bpm: float) -> float:  # how far outside the band
        return bpm - high if bpm > high else low - bpm

    def describe(device_id: str, episode: Episode) -> str:
        worst = int(episode.worst) if episode.worst is not None else "?"
        return (
            f"heart rate of {device_id} outside {low}-{high} bpm from {iso_us(episode.start_us)} "
            f"(sample time), worst {worst} bpm"
        )

    return SampleRule(
        "heart_rate_out_of_band",
        classify,
        s.heart_rate_fire_after_s,
        s.heart_rate_clear_after_s,
        lambda a, b: distance(a) > distance(b),
        describe,
        "high",
        "high",
        "wearer-safety",
    )


def battery_rule(s: DetectorSettings) -> SampleRule:
    """Battery below ``battery_low_pct``; clear only above ``battery_clear_pct``."""

    def classify(row: TelemetryRow) -> tuple[Verdict, float | None]:
        pct = row.battery_pct
        if pct is None:
            return Verdict.NEUTRAL, None
        if pct < s.battery_low_pct:
            return Verdict.BAD, float(pct)
        if pct > s.battery_clear_pct:
            return Verdict.GOOD, float(pct)
        return Verdict.NEUTRAL, float(pct)

    def describe(device_id: str, episode: Episode) -> str:
        worst = int(episode.worst) if episode.worst is not None else "?"
        return f"battery of {device_id} below {s.battery_low_pct} % since {iso_us(episode.start_us)}, lowest {worst} %"

    return SampleRule(
        "battery_low",
        classify,
        s.battery_fire_after_s,
        s.battery_clear_after_s,
        lambda a, b: a < b,
        describe,
        "low",
        "medium",
        "hardware",
    )


def _scan(p: DetectionPass, device: DeviceActivity, rule: SampleRule) -> EpisodeScan:
    # Whatever arrived lately is judged whole (a bundle, a drained backlog), up to max_lookback_s.
    arrived_us = p.oldest_arrived_sample_us.get(device.device_id, device.newest_sample_us)
    recent_s = (device.newest_sample_us - arrived_us) / _US + p.settings.max_sample_gap_s
    span_s = min(max(p.settings.lookback_s, recent_s), p.settings.max_lookback_s)
    while True:
        rows = p.device_rows(device, span_s)
        scan = scan_episodes(
            ((row.timestamp_us, *rule.classify(row)) for row in rows),
            fire_after_us=int(rule.fire_after_s * _US),
            clear_after_us=int(rule.clear_after_s * _US),
            max_gap_us=int(p.settings.max_sample_gap_s * _US),
            worse=rule.worse,
        )
        if scan.first_verdict is not Verdict.BAD or span_s >= p.settings.max_lookback_s:
            return scan
        span_s = min(span_s * 2, p.settings.max_lookback_s)  # the window opened inside a BAD run


def judge_device(p: DetectionPass, device: DeviceActivity, rule: SampleRule) -> None:
    """Raise, record or resolve ``rule``'s incident for one tracker."""
    subject = f"device:{device.device_id}"
    scan = _scan(p, device, rule)
    where = {
        "gateway_id": device.gateway_id,
        "site": device.site,
        "category": rule.category,
        "impact": rule.impact,
    }
    open_incident = p.open_incident(rule.kind, subject)
    truncated = (
        scan.first_verdict is Verdict.BAD
    )  # the first episode's start may lie before the window
    for index, episode in enumerate(scan.episodes):
        if episode.ongoing or open_incident is not None or (index == 0 and truncated):
            continue
        p.record_episode(
            rule.kind,
            subject,
            rule.describe(device.device_id, episode),
            episode.start_us,
            note=f"episode ended at {iso_us(episode.end_us or 0)} (sample time)",
            urgency="low",
            details=_details(episode),
            **where,
        )
    ongoing = scan.ongoing
    if ongoing is not None:
        p.ensure_open(
            rule.kind,
            subject,
            rule.describe(device.device_id, ongoing),
            urgency=rule.urgency,
            details={**_details(ongoing), "episode_start_us": ongoing.start_us},
            **where,
        )
    elif open_incident is not None and scan.cleared:
        p.resolve(
            rule.kind,
            subject,
            f"clear for {rule.clear_after_s:g} s of samples up to {iso_us(scan.last_sample_us or 0)}",
        )


def _details(episode: Episode) -> dict[str, object]:
    return {
        "start": iso_us(episode.start_us),
        "fired_at": iso_us(episode.fired_us),
        "last_bad": iso_us(episode.last_bad_us),
        "end": iso_us(episode.end_us) if episode.end_us is not None else None,
        "worst": episode.worst,
    }
