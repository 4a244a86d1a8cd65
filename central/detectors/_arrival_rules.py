"""Rules judged on arrivals and last-seen times: silence, gateway backlog, clock skew.

* **gateway_silent**: central received nothing from a gateway for
  ``gateway_silent_s`` (wall clock). Clears once it has delivered
  continuously for ``silence_clear_s``.
* **tracker_silent**: central received nothing of a tracker for
  ``tracker_silent_s`` *while its gateway delivers live data*; a tracker
  behind a silent gateway is left to the gateway's incident, and a bundle
  import (old data only) does not wake silence alarms for every tracker in it.
* **gateway_backlog**: records reach central older than ``backlog_limit_s``,
  judged per bucket of receive time on the worst age in it, so live records
  sent ahead of a draining backlog do not hide it.
* **clock_skew**: a tracker's newest sample in a batch is ahead of central's
  receive time by more than the limit (no backlog explains that), or behind
  it by more than the limit in a *live* batch (one in which another record of
  the same gateway arrived within ``live_window_s`` of being sampled).

Known limit: the store keeps central's receive time, not the gateway's
(the uplink header ``received-at-us`` is not stored), so a tracker whose
clock is behind cannot be told from a backlog on a gateway that has no other
live tracker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from central.detectors._episodes import EpisodeScan, Verdict, scan_episodes
from central.detectors._pass import DetectionPass, iso_us
from central.fleet import Arrival

__all__ = ["judge_backlog", "judge_clock_skew", "judge_silence"]

_US = 1_000_000


def _continuous(received_us: Iterable[int], since_us: int, until_us: int, max_gap_us: int) -> bool:
    """Whether receive times cover ``[since_us, until_us]`` with no hole longer than ``max_gap_us``."""
    times = sorted(t for t in received_us if since_us - max_gap_us <= t <= until_us)
    if not times or times[0] > since_us + max_gap_us or until_us - times[-1] > max_gap_us:
        return False
    return all(b - a <= max_gap_us for a, b in zip(times, times[1:], strict=False))


def judge_silence(p: DetectionPass) -> None:
    """Raise or resolve gateway_silent and tracker_silent."""
    s, now = p.settings, p.now_us
    gap_us, clear_us = int(s.max_sample_gap_s * _US), int(s.silence_clear_s * _US)
    received_by: dict[str, list[int]] = defaultdict(list)
    live_until: dict[str, int] = {}
    for a in p.arrivals:
        received_by[f"gateway:{a.gateway_id}"].append(a.received_us)
        received_by[f"device:{a.device_id}"].append(a.received_us)
        if abs(a.received_us - a.newest_sample_us) <= s.live_window_s * _US:
            live_until[a.gateway_id] = max(live_until.get(a.gateway_id, 0), a.received_us)

    if "gateway_silent" in s.enabled:
        for gw in p.gateways:
            subject = f"gateway:{gw.gateway_id}"
            if p.mine(subject):
                _judge_one_silence(
                    p,
                    "gateway_silent",
                    subject,
                    gw.last_received_us,
                    s.gateway_silent_s,
                    received_by[subject],
                    gap_us,
                    clear_us,
                    gw.gateway_id,
                    gw.site,
                )
    if "tracker_silent" in s.enabled:
        for dev in p.devices:
            subject = f"device:{dev.device_id}"
            gateway_live = now - live_until.get(dev.gateway_id, 0) <= s.tracker_silent_s * _US
            if p.mine(subject) and (gateway_live or p.open_incident("tracker_silent", subject)):
                _judge_one_silence(
                    p,
                    "tracker_silent",
                    subject,
                    dev.last_received_us,
                    s.tracker_silent_s,
                    received_by[subject],
                    gap_us,
                    clear_us,
                    dev.gateway_id,
                    dev.site,
                    may_raise=gateway_live,
                )


def _judge_one_silence(
    p: DetectionPass,
    kind: str,
    subject: str,
    last_us: int,
    silent_s: float,
    received: list[int],
    gap_us: int,
    clear_us: int,
    gateway_id: str,
    site: str,
    *,
    may_raise: bool = True,
) -> None:
    age_s = (p.now_us - last_us) / _US
    if age_s > p.settings.forget_after_s:
        return  # retired: neither alerted on nor resolved
    what = subject.replace(":", " ")
    if age_s > silent_s:
        if may_raise:
            p.ensure_open(
                kind,
                subject,
                f"{what} silent: nothing received since {iso_us(last_us)}",
                impact="medium" if kind == "gateway_silent" else "low",
                urgency="medium",
                category="network",
                gateway_id=gateway_id,
                site=site,
                details={"last_received": iso_us(last_us)},
            )
    elif _continuous(received, p.now_us - clear_us, p.now_us, gap_us):
        p.resolve(kind, subject, f"delivering again for {clear_us / _US:g} s")


def _scan(
    series: list[tuple[int, Verdict, float | None]], fire_s: float, clear_s: float, gap_s: float
) -> EpisodeScan:
    return scan_episodes(
        sorted(series, key=lambda item: item[0]),
        fire_after_us=int(fire_s * _US),
        clear_after_us=int(clear_s * _US),
        max_gap_us=int(gap_s * _US),
    )


def judge_backlog(p: DetectionPass) -> None:
    """Raise or resolve gateway_backlog from the worst age on arrival per receive-time bucket."""
    s = p.settings
    bucket_us, limit_us = int(s.arrival_bucket_s * _US), int(s.backlog_limit_s * _US)
    worst: dict[str, dict[int, int]] = defaultdict(dict)
    sites: dict[str, str] = {}
    for a in p.arrivals:
        bucket = (
            a.received_us - a.received_us % bucket_us
        )  # aligned: the same buckets in every pass
        age_us = a.received_us - a.oldest_sample_us
        worst[a.gateway_id][bucket] = max(worst[a.gateway_id].get(bucket, age_us), age_us)
        sites[a.gateway_id] = a.site
    for gateway_id, buckets in worst.items():
        subject = f"gateway:{gateway_id}"
        if not p.mine(subject):
            continue
        series = [
            (t, Verdict.BAD if age > limit_us else Verdict.GOOD, age / _US)
            for t, age in buckets.items()
        ]
        # A bucket lasts bucket_s: consecutive ones are one bucket apart, never a hole.
        scan = _scan(
            series,
            s.backlog_fire_after_s,
            s.backlog_clear_after_s,
            max(s.max_sample_gap_s, 2 * s.arrival_bucket_s),
        )
        _act_on_scan(
            p,
            scan,
            "gateway_backlog",
            subject,
            gateway_id,
            sites[gateway_id],
            lambda w,
            gateway_id=gateway_id: f"gateway {gateway_id} delivers records up to {w:.0f} s old (limit {s.backlog_limit_s:g} s)",
            impact="medium",
            urgency="low",
            category="network",
        )


def judge_clock_skew(p: DetectionPass) -> None:
    """Raise or resolve clock_skew per tracker from the offset of its newest sample per batch."""
    s = p.settings
    limit_us, live_us = int(s.clock_skew_limit_s * _US), int(s.live_window_s * _US)
    live_batches = {
        (a.gateway_id, a.received_us)
        for a in p.arrivals
        if abs(a.received_us - a.newest_sample_us) <= live_us
    }
    series: dict[str, list[tuple[int, Verdict, float | None]]] = defaultdict(list)
    where: dict[str, Arrival] = {}
    for a in p.arrivals:
        offset_us = a.newest_sample_us - a.received_us
        if offset_us > limit_us or (
            offset_us < -limit_us and (a.gateway_id, a.received_us) in live_batches
        ):
            verdict = Verdict.BAD
        elif abs(offset_us) <= limit_us:
            verdict = Verdict.GOOD
        else:
            verdict = (
                Verdict.NEUTRAL
            )  # old data in a batch with nothing live: a backlog or a bundle
        series[a.device_id].append((a.received_us, verdict, abs(offset_us) / _US))
        where[a.device_id] = a
    for device_id, samples in series.items():
        subject = f"device:{device_id}"
        if not p.mine(subject):
            continue
        scan = _scan(
            samples, s.clock_skew_fire_after_s, s.clock_skew_clear_after_s, s.max_sample_gap_s
        )
        _act_on_scan(
            p,
            scan,
            "clock_skew",
            subject,
            where[device_id].gateway_id,
            where[device_id].site,
            lambda w,
            device_id=device_id: f"clock of {device_id} is off by up to {w:.0f} s against central (limit {s.clock_skew_limit_s:g} s)",
            impact="low",
            urgency="medium",
            category="hardware",
        )


def _act_on_scan(
    p: DetectionPass,
    scan: EpisodeScan,
    kind: str,
    subject: str,
    gateway_id: str,
    site: str,
    describe: Callable[[float], str],
    **fields: str,
) -> None:
    """Ongoing → keep open; cleared → resolve; ended inside the window → record once."""
    open_incident = p.open_incident(kind, subject)
    truncated = scan.first_verdict is Verdict.BAD
    for index, episode in enumerate(scan.episodes):
        if episode.ongoing or open_incident is not None or (index == 0 and truncated):
            continue
        p.record_episode(
            kind,
            subject,
            describe(episode.worst or 0.0),
            episode.start_us,
            note=f"ended at {iso_us(episode.end_us or 0)}",
            gateway_id=gateway_id,
            site=site,
            details={"start": iso_us(episode.start_us), "worst_s": episode.worst},
            **{**fields, "urgency": "low"},
        )
    if scan.ongoing is not None:
        ep = scan.ongoing
        p.ensure_open(
            kind,
            subject,
            describe(ep.worst or 0.0),
            gateway_id=gateway_id,
            site=site,
            details={
                "start": iso_us(ep.start_us),
                "worst_s": ep.worst,
                "episode_start_us": ep.start_us,
            },
            **fields,
        )
    elif open_incident is not None and scan.cleared:
        p.resolve(kind, subject, f"clear since {iso_us(scan.last_sample_us or 0)}")
