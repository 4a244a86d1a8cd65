"""Cues for the wearer: milestones and system health, spoken through the AirPods
(when one is in an ear) and played as haptic patterns on the tracker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from firmware_shim import HapticPattern
from gateway.airpods import (
    AirPodsLink,
    AirPodsSettings,
    CueDispatcher,
    CueError,
    CueSettings,
    MilestoneTracker,
    SystemHealthCues,
    VoiceOutput,
    VoiceSettings,
    airpods_status,
)

__all__ = ["WearerCues"]

log = logging.getLogger(__name__)


class WearerCues:
    """Owns the AirPods link, the voice output, the cue policy and the cue sources."""

    def __init__(
        self,
        airpods: AirPodsSettings,
        voice: VoiceSettings,
        cues: CueSettings,
        *,
        haptic_sink: Callable[[str, HapticPattern, str], None],
        registry: CollectorRegistry,
    ) -> None:
        self.link = AirPodsLink(airpods, registry=registry)
        self.voice = VoiceOutput(voice) if airpods.enabled and voice.enabled else None
        self.dispatcher = CueDispatcher(
            cues, self.voice, haptic_sink=haptic_sink, voice_gate=self.link.voice_allowed, registry=registry
        )
        self.milestones = MilestoneTracker(cues)
        self.health = SystemHealthCues(cues)

    def start(self) -> None:
        self.dispatcher.start()
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        self.dispatcher.stop()
        if self.voice is not None:
            self.voice.close()

    def status(self) -> dict[str, Any]:
        status = airpods_status(self.link, self.dispatcher)
        status["state"] = str(status.get("state", "unknown"))
        return status

    def rescan(self) -> None:
        self.link.rescan()

    def test_cue(self, device_id: str | None) -> None:
        self.dispatcher.submit(self.health.test_cue(device_id))

    def feed(self, records: list[dict[str, Any]]) -> None:
        """Milestones from freshly committed records (called per committed batch)."""
        for record in records:
            for cue in self.milestones.feed(record):
                self.dispatcher.submit(cue)

    def incident(self, incident_id: str, summary: str, priority: str, device_id: str | None) -> None:
        try:
            self.dispatcher.submit(self.health.incident(incident_id, summary, priority, device_id))
        except CueError as exc:
            log.warning("incident %s from central not cued: %s", incident_id, exc)

    def tick(self, *, uplink_up: bool | None, buffer_fill_pct: float) -> None:
        """Periodic health cues: uplink outages, a filling buffer."""
        now_s = time.monotonic()
        cues = []
        if uplink_up is not None:
            cues += self.health.uplink(uplink_up, now_s)
        cues += self.health.check(now_s)
        cues += self.health.buffer_fill(buffer_fill_pct)
        for cue in cues:
            self.dispatcher.submit(cue)
