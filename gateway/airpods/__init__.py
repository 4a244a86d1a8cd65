"""The wearer's ears: the AirPods BLE link, voice cues and the cue policy.

The gateway daemon owns one of each and wires them like this::

    link = AirPodsLink(config.airpods)
    voice = VoiceOutput(config.voice)
    cues = CueDispatcher(config.cues, voice, haptic_sink=send_cue_frame,
                         voice_gate=link.voice_allowed)
    milestones = MilestoneTracker(config.cues)
    health = SystemHealthCues(config.cues)
    link.start(); cues.start()
    ...
    for cue in milestones.feed(record):        # per accepted telemetry record
        cues.submit(cue)
    status["airpods"] = airpods_status(link, cues)

See PAIRING.md beside this file for what the link can and cannot know.
"""

from __future__ import annotations

from typing import Any

from gateway.airpods._advert import (
    APPLE_COMPANY_ID,
    KNOWN_MODELS,
    AirPodsModel,
    AirPodsState,
    parse_proximity_pairing,
)
from gateway.airpods._cue_sources import MilestoneTracker, SystemHealthCues
from gateway.airpods._cues import Cue, CueDispatcher, CueError, CueOutcome, CuePriority, HapticSink
from gateway.airpods._errors import AdvertError, AirPodsError, VoiceError
from gateway.airpods._link import AirPodsLink, LinkState
from gateway.airpods._presence import Presence, PresenceTracker
from gateway.airpods._voice import DEFAULT_PLAYERS, VoiceOutput
from gateway.airpods.settings import AirPodsSettings, CueSettings, VoiceSettings

__all__ = [
    "APPLE_COMPANY_ID",
    "DEFAULT_PLAYERS",
    "KNOWN_MODELS",
    "AdvertError",
    "AirPodsError",
    "AirPodsLink",
    "AirPodsModel",
    "AirPodsSettings",
    "AirPodsState",
    "Cue",
    "CueDispatcher",
    "CueError",
    "CueOutcome",
    "CuePriority",
    "CueSettings",
    "HapticSink",
    "LinkState",
    "MilestoneTracker",
    "Presence",
    "PresenceTracker",
    "SystemHealthCues",
    "VoiceError",
    "VoiceOutput",
    "VoiceSettings",
    "airpods_status",
    "parse_proximity_pairing",
]


def airpods_status(link: AirPodsLink, cues: CueDispatcher | None) -> dict[str, Any]:
    """The gateway status JSON's ``airpods`` key: the link's status plus cue counts.

    Returns:
        ``link.status()`` with a ``cues`` entry (``None`` without a dispatcher).
    """
    status = link.status()
    status["cues"] = cues.status() if cues is not None else None
    return status
