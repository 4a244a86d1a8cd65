"""Settings of the AirPods link ([airpods]), the voice output ([voice]) and the cue policy ([cues]).

Plain dataclasses read by :func:`pulsegate.config.load_config`: every field has
a default, and ``__post_init__`` refuses bad values with a message that names
the key and what would be accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

__all__ = ["AirPodsSettings", "VoiceSettings", "CueSettings", "parse_clock_time"]

_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_MODEL_CODE = re.compile(r"^(0x)?[0-9A-Fa-f]{4}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_clock_time(text: str, key: str) -> time:
    """Parse ``"HH:MM"`` (24-hour) into a :class:`datetime.time`.

    Raises:
        ValueError: the text is not a 24-hour ``HH:MM`` time.
    """
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{key} must be a 24-hour time like '22:30', got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _require_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{key} must be greater than 0, got {value!r}")


@dataclass
class AirPodsSettings:
    """[airpods]: which AirPods belong to this gateway and how to track them."""

    enabled: bool = True
    """Scan for the AirPods at all; false leaves the link in state ``disabled``."""

    adapter: str = ""
    """BlueZ adapter name such as ``hci0``; empty picks the first powered adapter."""

    addresses: list[str] = field(default_factory=list)
    """Allowed Bluetooth addresses (``AA:BB:CC:DD:EE:FF``). Empty accepts any address.
    AirPods rotate a random address unless paired with this gateway, see PAIRING.md."""

    models: list[str] = field(default_factory=list)
    """Allowed model codes as hex (``0x0E20`` AirPods Pro). Empty accepts any model."""

    rssi_floor_dbm: int = -60
    """Adverts weaker than this are ignored: other people's AirPods in a gym are farther away."""

    rssi_hysteresis_db: int = 5
    """Once the pair is present, adverts down to ``rssi_floor_dbm - rssi_hysteresis_db`` still count."""

    strongest_window_s: float = 10.0
    """The pair is the strongest matching beacon seen in this many seconds."""

    away_after_s: float = 30.0
    """No advert from the pair for this long means ``away`` (one missed advert does not)."""

    confirm_adverts: int = 2
    """Consecutive adverts that must agree before in-ear changes to out-of-ear or back."""

    scanning_mode: str = "active"
    """``active`` or ``passive``; passive needs BlueZ >= 5.56 started with --experimental."""

    retry_initial_s: float = 1.0
    """First wait before restarting a failed scanner; doubles on each failure."""

    retry_max_s: float = 60.0
    """Longest wait between scanner restarts while the adapter is missing."""

    scan_watchdog_s: float = 60.0
    """Restart scanning when no advert of any kind arrived for this long (BlueZ goes
    silent, rather than failing, when the adapter disappears)."""

    poll_interval_s: float = 0.5
    """How often the link re-evaluates presence and the watchdog."""

    def __post_init__(self) -> None:
        for address in self.addresses:
            if not _ADDRESS.match(address):
                raise ValueError(
                    f"airpods.addresses entry {address!r} is not a Bluetooth address like 'AA:BB:CC:DD:EE:FF'"
                )
        for code in self.models:
            if not _MODEL_CODE.match(code):
                raise ValueError(
                    f"airpods.models entry {code!r} is not a 4-digit hex model code like '0x0E20'"
                )
        if not -127 <= self.rssi_floor_dbm <= 20:
            raise ValueError(
                f"airpods.rssi_floor_dbm must be between -127 and 20 dBm, got {self.rssi_floor_dbm!r}"
            )
        if self.rssi_hysteresis_db < 0:
            raise ValueError(
                f"airpods.rssi_hysteresis_db must be 0 or more, got {self.rssi_hysteresis_db!r}"
            )
        if self.scanning_mode not in ("active", "passive"):
            raise ValueError(
                f"airpods.scanning_mode must be 'active' or 'passive', got {self.scanning_mode!r}"
            )
        if self.confirm_adverts < 1:
            raise ValueError(
                f"airpods.confirm_adverts must be 1 or more, got {self.confirm_adverts!r}"
            )
        for key in (
            "strongest_window_s",
            "away_after_s",
            "retry_initial_s",
            "retry_max_s",
            "scan_watchdog_s",
            "poll_interval_s",
        ):
            _require_positive(f"airpods.{key}", getattr(self, key))
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"airpods.retry_max_s ({self.retry_max_s!r}) must not be below retry_initial_s ({self.retry_initial_s!r})"
            )

    @property
    def model_codes(self) -> frozenset[int]:
        """The ``models`` allow-list as integers."""
        return frozenset(int(code, 16) for code in self.models)

    @property
    def address_set(self) -> frozenset[str]:
        """The ``addresses`` allow-list, upper case."""
        return frozenset(a.upper() for a in self.addresses)


@dataclass
class VoiceSettings:
    """[voice]: text-to-speech and the audio player."""

    enabled: bool = True
    """Speak cues at all; false drops every voice part with reason ``voice_disabled``."""

    tts_command: str = "espeak-ng"
    """The espeak-ng executable (name on PATH or a full path)."""

    voice: str = "en"
    """espeak-ng voice name (``espeak-ng --voices`` lists them)."""

    words_per_minute: int = 165
    """Speaking rate; espeak-ng accepts 80 to 450."""

    player_command: list[str] = field(default_factory=list)
    """Player argv; the WAV path is appended, or replaces a ``{wav}`` argument. Empty
    picks the first of pw-play, paplay, aplay on PATH."""

    render_dir: Path | None = None
    """Where WAV files are rendered; empty uses a private temporary directory."""

    render_timeout_s: float = 10.0
    """Longest time espeak-ng may take to render one cue."""

    play_timeout_s: float = 30.0
    """Longest time the player may take for one cue."""

    max_text_chars: int = 200
    """Longest cue text; about 15 s of speech, longer texts are refused."""

    def __post_init__(self) -> None:
        if not 80 <= self.words_per_minute <= 450:
            raise ValueError(
                f"voice.words_per_minute must be between 80 and 450, got {self.words_per_minute!r}"
            )
        for key in ("render_timeout_s", "play_timeout_s"):
            _require_positive(f"voice.{key}", getattr(self, key))
        if self.max_text_chars < 1:
            raise ValueError(f"voice.max_text_chars must be 1 or more, got {self.max_text_chars!r}")
        if not self.tts_command.strip():
            raise ValueError(
                "voice.tts_command must name the espeak-ng executable, got an empty string"
            )


@dataclass
class CueSettings:
    """[cues]: the cue policy and the milestone and health cue sources."""

    max_voice_per_minute: int = 4
    """Voice cues accepted per rolling minute, alarms not counted."""

    max_alarm_voice_per_minute: int = 10
    """Alarm voice cues accepted per rolling minute (their own cap)."""

    dedupe_window_s: float = 120.0
    """A cue whose key was accepted this recently is dropped as ``duplicate``."""

    max_age_s: float = 30.0
    """A voice cue still queued after this long is dropped as ``stale``."""

    quiet_hours_start: str = ""
    """Local ``HH:MM`` where quiet hours begin (non-alarm cues dropped); empty disables."""

    quiet_hours_end: str = ""
    """Local ``HH:MM`` where quiet hours end; may be earlier than the start (wraps midnight)."""

    distance_step_km: float = 1.0
    """A milestone cue every this many kilometres."""

    duration_step_min: float = 10.0
    """A milestone cue every this many minutes of workout."""

    max_heart_rate_bpm: int = 190
    """Maximum heart rate the zones are computed from."""

    hr_zone_floors_pct: list[int] = field(default_factory=lambda: [50, 60, 70, 80, 90])
    """Lower bounds of heart-rate zones 1..N in percent of the maximum, ascending."""

    hr_zone_hysteresis_bpm: int = 5
    """Heart rate must fall this far below a zone's floor before the lower zone is announced."""

    hr_zone_dwell_s: float = 30.0
    """A new heart-rate zone is announced only after it has held this long (0 announces at once)."""

    uplink_down_after_s: float = 300.0
    """Announce an uplink outage once it has lasted this long."""

    buffer_alert_pct: float = 80.0
    """Announce when the outbox is fuller than this percentage."""

    def __post_init__(self) -> None:
        for key in ("max_voice_per_minute", "max_alarm_voice_per_minute"):
            if getattr(self, key) < 0:
                raise ValueError(f"cues.{key} must be 0 or more, got {getattr(self, key)!r}")
        for key in (
            "dedupe_window_s",
            "max_age_s",
            "distance_step_km",
            "duration_step_min",
            "uplink_down_after_s",
        ):
            _require_positive(f"cues.{key}", getattr(self, key))
        if bool(self.quiet_hours_start) != bool(self.quiet_hours_end):
            raise ValueError(
                "cues.quiet_hours_start and cues.quiet_hours_end must be set together (or both left empty)"
            )
        if self.quiet_hours_start:
            parse_clock_time(self.quiet_hours_start, "cues.quiet_hours_start")
            parse_clock_time(self.quiet_hours_end, "cues.quiet_hours_end")
        if not 60 <= self.max_heart_rate_bpm <= 250:
            raise ValueError(
                f"cues.max_heart_rate_bpm must be between 60 and 250, got {self.max_heart_rate_bpm!r}"
            )
        floors = self.hr_zone_floors_pct
        if not floors or any(not 0 < f < 100 for f in floors) or floors != sorted(set(floors)):
            raise ValueError(
                f"cues.hr_zone_floors_pct must be strictly ascending percentages between 0 and 100, got {floors!r}"
            )
        if self.hr_zone_dwell_s < 0:
            raise ValueError(
                f"cues.hr_zone_dwell_s must be 0 or more, got {self.hr_zone_dwell_s!r}"
            )
        if self.hr_zone_hysteresis_bpm < 0:
            raise ValueError(
                f"cues.hr_zone_hysteresis_bpm must be 0 or more, got {self.hr_zone_hysteresis_bpm!r}"
            )
        if not 0 < self.buffer_alert_pct <= 100:
            raise ValueError(
                f"cues.buffer_alert_pct must be in (0, 100], got {self.buffer_alert_pct!r}"
            )

    def quiet_hours(self) -> tuple[time, time] | None:
        """The quiet-hours range as ``(start, end)`` local times, or ``None`` when disabled."""
        if not self.quiet_hours_start:
            return None
        return (
            parse_clock_time(self.quiet_hours_start, "cues.quiet_hours_start"),
            parse_clock_time(self.quiet_hours_end, "cues.quiet_hours_end"),
        )
