"""Detectors: fleet and wearer conditions judged over the store, raised as incidents.

Entry points::

    run_detectors_once(settings) -> list[str]      # one pass; one line per incident action
    detectors = Detectors.open(settings, clock)     # store + fleet reader + incident service
    detectors.run_pass() -> list[Action]
    DetectLoop(detectors, metrics).run(interval_s)  # ``pulsegate central detect``

Every detector is stateless between passes: "sustained" is derived from
stored samples (:func:`scan_episodes`), and an open incident is the only
memory that a condition fired, so any number of detect processes may run
at once; their duplicate raises become repeats the incident service folds.
"""

from central.detectors._episodes import Episode, EpisodeScan, Verdict, scan_episodes
from central.detectors._pass import Action, DetectionPass
from central.detectors._runner import DetectLoop, Detectors, dead_letter_enabled, run_detectors_once
from central.detectors.settings import ALL_DETECTORS, DetectorSettings, FleetSettings

__all__ = [
    "ALL_DETECTORS",
    "Action",
    "DetectLoop",
    "DetectionPass",
    "DetectorSettings",
    "Detectors",
    "Episode",
    "EpisodeScan",
    "FleetSettings",
    "Verdict",
    "dead_letter_enabled",
    "run_detectors_once",
    "scan_episodes",
]
