"""Read workout recordings (FIT, GPX, TCX) into telemetry samples.

One sample per FIT ``record`` message and per GPX or TCX trackpoint, in file
order. A sample holds the sensor fields of the telemetry schema; the emulator
adds the tracker's own fields (ids, seq, battery, host state).
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_shim.errors import ShimError

__all__ = ["Recording", "RecordingError", "read_recording", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".fit", ".gpx", ".tcx")
_SEMICIRCLE_TO_DEG = 180.0 / 2**31
_EARTH_RADIUS_M = 6_371_008.8


class RecordingError(ShimError):
    """A recording could not be read; the message says which file and why."""


@dataclass(frozen=True)
class Recording:
    """The samples of one workout recording."""

    path: Path
    sport: str | None
    samples: list[dict[str, Any]]

    @property
    def device_id(self) -> str:
        """The default device id for a replay: the file name without extension."""
        return self.path.stem


def read_recording(path: str | Path) -> Recording:
    """Read a FIT, GPX or TCX file.

    Raises:
        RecordingError: the file is missing, of an unknown kind, unparsable,
            or holds no sample.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise RecordingError(f"{path}: unknown recording type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if not path.is_file():
        raise RecordingError(f"{path}: not a regular file")
    try:
        reader = {".fit": _read_fit, ".gpx": _read_gpx, ".tcx": _read_tcx}[suffix]
        sport, samples = reader(path)
    except RecordingError:
        raise
    except Exception as exc:  # every parser has its own error tree
        raise RecordingError(f"{path}: cannot parse {suffix[1:].upper()}: {exc}") from exc
    if not samples:
        raise RecordingError(f"{path}: no samples in the recording")
    _fill_missing_timestamps(samples)
    return Recording(path, sport, samples)


def _fill_missing_timestamps(samples: list[dict[str, Any]]) -> None:
    # A trackpoint without a time (rare, but GPX allows it) gets its
    # predecessor's time plus one second, so seq order stays time order.
    previous = None
    for sample in samples:
        if sample.get("timestamp_us") is None:
            if previous is None:
                raise RecordingError("the first sample has no timestamp")
            sample["timestamp_us"] = previous + 1_000_000
        previous = sample["timestamp_us"]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: timestamp() * 1e6 is a float, 1 µs off at times.
    return (moment - _EPOCH) // _ONE_MICROSECOND


# --- FIT ------------------------------------------------------------------------


def _read_fit(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    import fitdecode

    samples: list[dict[str, Any]] = []
    sport = None
    # fitdecode warns on quirky definitions (the COROS file declares 1-byte
    # uint32 fields) and carries on; the warnings are noise for a replay.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fitdecode.FitReader(str(path), check_crc=fitdecode.CrcCheck.WARN) as fit:
            for frame in fit:
                if not isinstance(frame, fitdecode.FitDataMessage):
                    continue
                if frame.name == "record":
                    samples.append(_fit_sample(frame))
                elif frame.name in ("session", "sport") and sport is None:
                    value = _fit_value(frame, "sport")
                    if value is not None:
                        sport = str(value)
    return sport, samples


def _fit_value(frame: Any, name: str) -> Any:
    if not frame.has_field(name):
        return None
    return frame.get_value(name, fallback=None)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _fit_sample(frame: Any) -> dict[str, Any]:
    value = lambda name: _number(_fit_value(frame, name))  # noqa: E731
    timestamp = _fit_value(frame, "timestamp")
    lat, lon = value("position_lat"), value("position_long")
    speed = value("enhanced_speed")
    altitude = value("enhanced_altitude")
    cadence = value("cadence")
    return {
        "timestamp_us": _micros(timestamp) if isinstance(timestamp, datetime) else None,
        "heart_rate_bpm": _heart_rate(value("heart_rate")),
        "cadence_rpm": _int(cadence),
        "speed_m_s": speed if speed is not None else value("speed"),
        "distance_m": value("distance"),
        "latitude_deg": lat * _SEMICIRCLE_TO_DEG if lat is not None else None,
        "longitude_deg": lon * _SEMICIRCLE_TO_DEG if lon is not None else None,
        "altitude_m": altitude if altitude is not None else value("altitude"),
        "power_w": _int(value("power")),
        "temperature_c": value("temperature"),
        "steps": None,
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _heart_rate(value: float | None) -> int | None:
    # Straps report 0 bpm while they have no skin contact: that is "no
    # reading", not a heart that stopped.
    bpm = _int(value)
    return bpm if bpm else None


# --- GPX ------------------------------------------------------------------------


def _read_gpx(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    import gpxpy

    with path.open(encoding="utf-8") as fh:
        gpx = gpxpy.parse(fh)
    samples: list[dict[str, Any]] = []
    sport = None
    distance = 0.0
    previous = None
    for track in gpx.tracks:
        sport = sport or track.type
        for segment in track.segments:
            for point in segment.points:
                if previous is not None:
                    distance += _haversine_m(previous, (point.latitude, point.longitude))
                previous = (point.latitude, point.longitude)
                extensions = _extension_values(point.extensions)
                samples.append(
                    {
                        "timestamp_us": _micros(point.time) if point.time else None,
                        "heart_rate_bpm": _heart_rate(extensions.get("hr")),
                        "cadence_rpm": _int(extensions.get("cad")),
                        "speed_m_s": extensions.get("speed"),
                        "distance_m": distance,
                        "latitude_deg": point.latitude,
                        "longitude_deg": point.longitude,
                        "altitude_m": point.elevation,
                        "power_w": _int(extensions.get("power")),
                        "temperature_c": extensions.get("atemp"),
                        "steps": None,
                    }
                )
    return sport, samples


def _extension_values(elements: list[ET.Element]) -> dict[str, float]:
    # Garmin's TrackPointExtension appears as gpxtpx:, ns3: or a default
    # namespace depending on the exporter: match local names, not prefixes.
    values: dict[str, float] = {}
    for element in elements:
        for node in element.iter():
            local = node.tag.rsplit("}", 1)[-1].lower()
            text = (node.text or "").strip()
            if text:
                try:
                    values[local] = float(text)
                except ValueError:
                    pass
    return values


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


# --- TCX ------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ET.Element, *path: str) -> str | None:
    node: ET.Element | None = element
    for name in path:
        node = next((c for c in node if _local(c.tag) == name), None) if node is not None else None
    if node is None or node.text is None:
        return None
    return node.text.strip()


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _read_tcx(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    root = ET.parse(path).getroot()
    samples: list[dict[str, Any]] = []
    sport = None
    for activity in (e for e in root.iter() if _local(e.tag) == "Activity"):
        sport = sport or activity.get("Sport")
        for point in (e for e in activity.iter() if _local(e.tag) == "Trackpoint"):
            time_text = _child_text(point, "Time")
            extensions = next((c for c in point if _local(c.tag) == "Extensions"), None)
            ext = _extension_values([extensions]) if extensions is not None else {}
            samples.append(
                {
                    "timestamp_us": _micros(datetime.fromisoformat(time_text.replace("Z", "+00:00"))) if time_text else None,
                    "heart_rate_bpm": _heart_rate(_float_or_none(_child_text(point, "HeartRateBpm", "Value"))),
                    "cadence_rpm": _int(_float_or_none(_child_text(point, "Cadence")) or ext.get("runcadence")),
                    "speed_m_s": ext.get("speed"),
                    "distance_m": _float_or_none(_child_text(point, "DistanceMeters")),
                    "latitude_deg": _float_or_none(_child_text(point, "Position", "LatitudeDegrees")),
                    "longitude_deg": _float_or_none(_child_text(point, "Position", "LongitudeDegrees")),
                    "altitude_m": _float_or_none(_child_text(point, "AltitudeMeters")),
                    "power_w": _int(ext.get("watts")),
                    "temperature_c": None,
                    "steps": None,
                }
            )
    return sport, samples
