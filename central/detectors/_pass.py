"""One detection pass: what the rules read, and how they raise and resolve incidents.

A pass reads the store (through the store and a fleet reader) as of one
instant, ``now_us``, and talks to the incident service. It keeps nothing for
the next pass: an open incident *is* the memory that a condition fired.
Rules call :meth:`DetectionPass.ensure_open`, :meth:`DetectionPass.resolve`
and :meth:`DetectionPass.record_episode`; each returns quietly when another
process got there first.
"""

from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from central.detectors.settings import DetectorSettings
from central.fleet import Arrival, DeviceActivity, FleetReader, GatewayActivity
from central.incidents import Incident, IncidentError, IncidentFilter, IncidentService
from central.store import TelemetryRow, TelemetryStore

__all__ = ["Action", "DetectionPass", "iso_us"]

log = logging.getLogger(__name__)

#: Incidents of one (subject, kind) searched for an episode already recorded;
#: an episode older than the newest 50 of its kind on one subject is recorded again.
_EPISODE_HISTORY = 50
_US = 1_000_000


def iso_us(time_us: int) -> str:
    """A microsecond timestamp as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(time_us / _US, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Action:
    """Something a pass did to an incident.

    Attributes:
        verb: ``raised``, ``repeated`` (an open one got new facts), ``resolved``, or
            ``recorded`` (a past episode, raised and resolved at once).
        kind: The detector / incident kind.
        subject: ``device:<id>``, ``gateway:<id>`` or ``queue:<name>``.
        incident_id: The incident.
        priority: Its priority.
        summary: Its one-line summary.
    """

    verb: str
    kind: str
    subject: str
    incident_id: str
    priority: str
    summary: str

    def line(self) -> str:
        """The human line ``detect`` prints."""
        return f"{self.verb} {self.incident_id} {self.priority} {self.kind} {self.subject}: {self.summary}"


@dataclass
class DetectionPass:
    """The state of one pass: the instant, the readers, the service and what was done."""

    settings: DetectorSettings
    store: TelemetryStore
    reader: FleetReader
    service: IncidentService
    now_us: int
    actions: list[Action] = field(default_factory=list)

    def mine(self, subject: str) -> bool:
        """Whether this process's shard judges ``subject``."""
        count = self.settings.shard_count
        return count == 1 or zlib.crc32(subject.encode()) % count == self.settings.shard_index

    @functools.cached_property
    def devices(self) -> list[DeviceActivity]:
        return self.reader.devices()

    @functools.cached_property
    def gateways(self) -> list[GatewayActivity]:
        return self.reader.gateways()

    @functools.cached_property
    def arrivals(self) -> list[Arrival]:
        """Arrivals of the receive-time window every arrival-based rule needs."""
        s = self.settings
        window_s = max(
            s.arrival_window_s, s.tracker_silent_s, s.silence_clear_s + s.max_sample_gap_s
        )
        return self.reader.arrivals(self.now_us - int(window_s * _US), self.now_us + 1)

    @functools.cached_property
    def oldest_arrived_sample_us(self) -> dict[str, int]:
        """Per device: the oldest sample time among the records received in the arrival window."""
        oldest: dict[str, int] = {}
        for a in self.arrivals:
            oldest[a.device_id] = min(
                oldest.get(a.device_id, a.oldest_sample_us), a.oldest_sample_us
            )
        return oldest

    def device_rows(self, device: DeviceActivity, span_s: float) -> list[TelemetryRow]:
        """The device's rows of the ``span_s`` of sample time ending at its newest sample."""
        end_us = device.newest_sample_us + 1
        return self.store.telemetry(device.device_id, end_us - int(span_s * _US), end_us)

    # -- incidents ---------------------------------------------------------------

    def open_incident(self, kind: str, subject: str) -> Incident | None:
        return self.service.store.find_open(subject, kind)

    def ensure_open(self, kind: str, subject: str, summary: str, **fields: Any) -> Incident:
        """Raise (kind, subject) unless an incident is open for it already."""
        existing = self.open_incident(kind, subject)
        if existing is not None:
            return existing
        incident = self.service.raise_incident(kind, subject, summary, **fields)
        # Another process may have raised it a moment ago: then this counted a repeat.
        verb = "raised" if incident.repeat_count == 1 else "repeated"
        self._act(verb, incident)
        return incident

    def update_open(self, existing: Incident, summary: str, **fields: Any) -> None:
        """Count a repeat on an open incident with new facts (a gap grew, the queue grew)."""
        incident = self.service.raise_incident(existing.kind, existing.subject, summary, **fields)
        self._act("repeated", incident, summary)

    def resolve(self, kind: str, subject: str, note: str) -> None:
        """Resolve the open (kind, subject) incident, if any."""
        try:
            incident = self.service.resolve_matching(kind, subject, note=note)
        except IncidentError as exc:  # resolved by another process in between
            log.debug("%s on %s not resolved here: %s", kind, subject, exc)
            return
        if incident is not None:
            self._act("resolved", incident, note)

    def record_episode(
        self, kind: str, subject: str, summary: str, episode_key: int, note: str, **fields: Any
    ) -> None:
        """Raise and resolve an episode that has already ended (found in replayed or bundled data).

        ``episode_key`` (the episode's first sample time) is kept in the incident's details,
        so later passes that scan the same samples do not record it again.
        """
        history = self.service.list_incidents(
            IncidentFilter(kind=kind, subject=subject, limit=_EPISODE_HISTORY)
        )
        if any(i.details.get("episode_start_us") == episode_key for i in history):
            return
        details = {**fields.pop("details", {}), "episode_start_us": episode_key}
        incident = self.service.raise_incident(kind, subject, summary, details=details, **fields)
        try:
            incident = self.service.resolve(incident.id, actor="detector", note=note)
        except IncidentError as exc:
            log.debug("episode incident %s not resolved here: %s", incident.id, exc)
        self._act("recorded", incident)

    def _act(self, verb: str, incident: Incident, summary: str | None = None) -> None:
        action = Action(
            verb,
            incident.kind,
            incident.subject,
            incident.id,
            incident.priority,
            summary or incident.summary,
        )
        self.actions.append(action)
        log.info("%s", action.line())
