"""Crafted telemetry streams for the detector tests, written through the store's public write path."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from central.store import TelemetryRow, TelemetryStore, row_from_record

US = 1_000_000
#: The telemetry fields a recording sample may carry (the rest come from the tracker).
SENSOR_FIELDS = (
    "heart_rate_bpm",
    "cadence_rpm",
    "speed_m_s",
    "distance_m",
    "latitude_deg",
    "longitude_deg",
    "altitude_m",
    "power_w",
    "temperature_c",
    "steps",
)


def record(
    device_id: str, boot_id: str, seq: int, timestamp_us: int, **fields: Any
) -> dict[str, Any]:
    """A complete v2 record; ``fields`` override the sensor values."""
    rec: dict[str, Any] = {name: None for name in SENSOR_FIELDS}
    rec.update(
        device_id=device_id,
        boot_id=boot_id,
        seq=seq,
        timestamp_us=timestamp_us,
        heart_rate_bpm=120,
        battery_pct=80,
        host={"uptime_s": 100 + seq, "cpu_load": 0.2, "free_memory_bytes": 1 << 20},
        rr_intervals_ms=[],
        respiration_rate_bpm=None,
        sport="running",
    )
    rec.update(fields)
    return rec


class Tracker:
    """One tracker's boot: numbers its records and writes them as a gateway would deliver them."""

    def __init__(
        self, store: TelemetryStore, device_id: str, gateway_id: str = "gym-1", site: str = "zurich"
    ) -> None:
        self.store, self.device_id, self.gateway_id, self.site = store, device_id, gateway_id, site
        self.boot_id = str(uuid.uuid4())
        self.seq = 0

    def rows(
        self, samples: Iterable[tuple[int, dict[str, Any]]], received_us: int | None
    ) -> list[TelemetryRow]:
        """Rows for ``(timestamp_us, fields)`` samples, received at ``received_us`` (default: sample time)."""
        out = []
        for timestamp_us, fields in samples:
            self.seq += 1
            rec = record(self.device_id, self.boot_id, self.seq, timestamp_us, **fields)
            out.append(
                row_from_record(
                    rec,
                    gateway_id=self.gateway_id,
                    site=self.site,
                    schema_version=2,
                    ingested_at_us=timestamp_us if received_us is None else received_us,
                )
            )
        return out

    def send(
        self, samples: Iterable[tuple[int, dict[str, Any]]], received_us: int | None = None
    ) -> None:
        """Write samples; each live sample is received when taken unless ``received_us`` says otherwise."""
        rows = self.rows(samples, received_us)
        if received_us is None:
            for row in rows:  # live: one write per sample, at its own receive time
                self.store.write([row])
        else:
            self.store.write(rows)


def every_second(start_us: int, seconds: int, **fields: Any) -> list[tuple[int, dict[str, Any]]]:
    """``seconds`` samples one second apart from ``start_us``, all with ``fields``."""
    return [(start_us + i * US, dict(fields)) for i in range(seconds)]
