"""Hysteresis without memory: episodes of a condition, found in timestamped samples.

A detector classifies each sample as BAD (the condition holds), GOOD (clearly
clear) or NEUTRAL (inside the hysteresis band, or no value: it tells
nothing). :func:`scan_episodes` replays the samples through a two-state
machine:

* an episode *fires* once BAD samples run for at least ``fire_after_us``
  without a GOOD sample between them;
* it *ends* once GOOD samples run for at least ``clear_after_us`` without a
  BAD sample between them;
* two informative samples further apart than ``max_gap_us`` break any run:
  "sustained" needs continuous evidence.

NEUTRAL samples neither extend nor break a run. Because everything is
derived from stored samples, two processes scanning the same window reach
the same episodes, and no timer lives in memory between passes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["Episode", "EpisodeScan", "Verdict", "scan_episodes"]


class Verdict(enum.Enum):
    """How one sample bears on a condition."""

    BAD = "bad"
    GOOD = "good"
    NEUTRAL = "neutral"


@dataclass
class Episode:
    """One sustained spell of the condition.

    Attributes:
        start_us: Time of the first BAD sample of the run that fired it: the episode's identity.
        fired_us: Time of the sample at which the run had lasted ``fire_after_us``.
        last_bad_us: Time of the last BAD sample seen in it.
        end_us: Start of the GOOD run that ended it; None while it is ongoing.
        worst: The most extreme value seen in it (what "extreme" means is the caller's).
    """

    start_us: int
    fired_us: int
    last_bad_us: int
    end_us: int | None = None
    worst: float | None = None

    @property
    def ongoing(self) -> bool:
        return self.end_us is None


@dataclass
class EpisodeScan:
    """What a scan found.

    Attributes:
        episodes: Every episode, oldest first; only the last may be ongoing.
        cleared: True when the samples end in a GOOD run of at least ``clear_after_us``
            (and no episode is ongoing): the all-clear an open incident needs.
        first_verdict: The verdict of the first informative sample, if any: BAD means the
            window may have cut an episode's start.
        last_sample_us: Time of the last informative sample.
    """

    episodes: list[Episode] = field(default_factory=list)
    cleared: bool = False
    first_verdict: Verdict | None = None
    last_sample_us: int | None = None

    @property
    def ongoing(self) -> Episode | None:
        return self.episodes[-1] if self.episodes and self.episodes[-1].ongoing else None


def scan_episodes(
    samples: Iterable[tuple[int, Verdict, float | None]],
    *,
    fire_after_us: int,
    clear_after_us: int,
    max_gap_us: int,
    worse: Callable[[float, float], bool] | None = None,
) -> EpisodeScan:
    """Find the episodes of a condition in ``(time_us, verdict, value)`` samples, sorted by time.

    Args:
        samples: The samples, oldest first.
        fire_after_us: How long BAD must run to fire.
        clear_after_us: How long GOOD must run to end an episode (or to clear).
        max_gap_us: Informative samples further apart break every run.
        worse: ``worse(a, b)`` is True when value ``a`` is more extreme than ``b``;
            default: larger is worse.

    Returns:
        The episodes and whether the samples end cleared.
    """
    worse = worse or (lambda a, b: a > b)
    scan = EpisodeScan()
    current: Episode | None = None
    bad_since: int | None = None
    good_since: int | None = None
    run_worst: float | None = None
    previous: int | None = None
    for time_us, verdict, value in samples:
        if verdict is Verdict.NEUTRAL:
            continue
        if scan.first_verdict is None:
            scan.first_verdict = verdict
        if previous is not None and time_us - previous > max_gap_us:
            bad_since = good_since = None  # a hole in the evidence breaks every run
        previous = time_us
        if verdict is Verdict.BAD:
            good_since = None
            if bad_since is None:
                bad_since, run_worst = time_us, value
            elif value is not None and (run_worst is None or worse(value, run_worst)):
                run_worst = value
            if current is not None:
                current.last_bad_us = time_us
                if value is not None and (current.worst is None or worse(value, current.worst)):
                    current.worst = value
            elif time_us - bad_since >= fire_after_us:
                current = Episode(bad_since, time_us, time_us, worst=run_worst)
                scan.episodes.append(current)
        else:
            bad_since, run_worst = None, None
            good_since = time_us if good_since is None else good_since
            if current is not None and time_us - good_since >= clear_after_us:
                current.end_us = good_since
                current = None
    scan.last_sample_us = previous
    scan.cleared = (
        current is None
        and good_since is not None
        and previous is not None
        and previous - good_since >= clear_after_us
    )
    return scan
