"""Running the detectors: one pass (:func:`run_detectors_once`) or a loop (:class:`DetectLoop`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from central.detectors._arrival_rules import judge_backlog, judge_clock_skew, judge_silence
from central.detectors._dead_letter import judge_dead_letter
from central.detectors._ledger_gap import judge_ledger_gaps
from central.detectors._pass import Action, DetectionPass
from central.detectors._sample_rules import battery_rule, heart_rate_rule, judge_device
from central.errors import CentralError
from central.fleet import FleetMetrics, FleetReader, build_fleet_report, open_fleet_reader
from central.incidents import IncidentService, build_service
from central.store import TelemetryStore, open_store

if TYPE_CHECKING:
    from central.settings import CentralSettings

__all__ = ["DetectLoop", "Detectors", "dead_letter_enabled", "run_detectors_once"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def dead_letter_enabled(settings: CentralSettings) -> bool:
    """Whether the dead-letter check runs: ``on``, or ``auto`` with a broker (the Cassandra deployment)."""
    mode = settings.detectors.dead_letter
    return "dead_letter" in settings.detectors.enabled and (
        mode == "on" or (mode == "auto" and settings.store.backend == "cassandra")
    )


@dataclass
class Detectors:
    """The detectors over one store, reader and incident service.

    Args:
        settings: Central's settings ([detectors], [fleet], [amqp]).
        store: The telemetry store.
        reader: Fleet aggregates over the same store.
        service: The incident service.
        clock: Wall-clock epoch seconds; tests inject their own.
    """

    settings: CentralSettings
    store: TelemetryStore
    reader: FleetReader
    service: IncidentService
    clock: Clock = time.time

    @classmethod
    def open(cls, settings: CentralSettings, clock: Clock = time.time) -> Detectors:
        """Open the configured store, its fleet reader and the incident service.

        Raises:
            StoreError: the store cannot be opened (StoreUnavailable: not reachable yet).
        """
        store = open_store(settings)
        try:
            reader = open_fleet_reader(settings)
        except BaseException:
            store.close()
            raise
        return cls(settings, store, reader, build_service(settings, clock), clock)

    def run_pass(self) -> list[Action]:
        """Judge everything once, as of now; returns what was raised, resolved or recorded.

        Raises:
            StoreError: the store cannot be read (StoreUnavailable: try again later).
        """
        s = self.settings.detectors
        p = DetectionPass(s, self.store, self.reader, self.service, int(self.clock() * 1_000_000))
        if "tracker_silent" in s.enabled or "gateway_silent" in s.enabled:
            judge_silence(p)
        if "gateway_backlog" in s.enabled:
            judge_backlog(p)
        if "clock_skew" in s.enabled:
            judge_clock_skew(p)
        if "ledger_gap" in s.enabled:
            judge_ledger_gaps(p)
        rules = [rule for rule in (heart_rate_rule(s), battery_rule(s)) if rule.kind in s.enabled]
        forget_us = int(s.forget_after_s * 1_000_000)
        for device in p.devices if rules else []:
            if p.now_us - device.last_received_us > forget_us or not p.mine(
                f"device:{device.device_id}"
            ):
                continue
            for rule in rules:
                judge_device(p, device, rule)
        if dead_letter_enabled(self.settings):
            judge_dead_letter(p, self.settings.amqp.url)
        return p.actions

    def close(self) -> None:
        """Release the store, the reader and the incident store."""
        for part in (self.reader, self.store, self.service.store):
            try:
                part.close()
            except (
                Exception
            ) as exc:  # closing is best effort: report, do not mask the caller's error
                log.debug("closing %s failed: %s", type(part).__name__, exc)


def run_detectors_once(settings: CentralSettings, clock: Clock = time.time) -> list[str]:
    """One pass of every enabled detector over the configured store.

    Returns:
        One human line per incident raised, repeated, resolved or recorded.

    Raises:
        StoreError: the store cannot be read.
    """
    detectors = Detectors.open(settings, clock)
    try:
        return [action.line() for action in detectors.run_pass()]
    finally:
        detectors.close()


class DetectLoop:
    """Run passes every ``interval_s`` until stopped, refreshing the fleet gauges after each.

    Args:
        detectors: What to run.
        metrics: The fleet gauges to refresh, if served.
        emit: Called with each action's line (the CLI prints them).
        stop: Set it to stop the loop.
    """

    def __init__(
        self,
        detectors: Detectors,
        metrics: FleetMetrics | None = None,
        emit: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> None:
        self.detectors = detectors
        self.metrics = metrics
        self.emit = emit
        self.stop = stop or threading.Event()

    def run_once(self) -> list[Action]:
        """One pass and a gauge refresh; a store outage is logged and left for the next pass."""
        try:
            return self.run_once_strict()
        except CentralError as exc:  # store or incident store down: the next pass retries
            log.warning("detect pass skipped: %s", exc)
            return []

    def run_once_strict(self) -> list[Action]:
        """One pass and a gauge refresh.

        Raises:
            CentralError: the store or the incident store cannot be used.
        """
        started = time.monotonic()
        actions = self.detectors.run_pass()
        if self.metrics is not None:
            d = self.detectors
            self.metrics.update(
                build_fleet_report(d.settings, d.reader, d.store, d.service, d.clock())
            )
        duration_s = time.monotonic() - started
        for action in actions:
            self.emit(action.line())
        if self.metrics is not None:
            self.metrics.record_pass(
                self.detectors.clock(), duration_s, [(a.kind, a.verb) for a in actions]
            )
        log.debug("detect pass: %d actions in %.2f s", len(actions), duration_s)
        return actions

    def run(self, interval_s: float) -> None:
        """Pass after pass until :attr:`stop` is set."""
        log.info(
            "detectors running every %g s (shard %d of %d)",
            interval_s,
            self.detectors.settings.detectors.shard_index,
            self.detectors.settings.detectors.shard_count,
        )
        while not self.stop.is_set():
            self.run_once()
            self.stop.wait(interval_s)
