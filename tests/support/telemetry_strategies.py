"""Hypothesis strategies for telemetry records: every v2 field over its whole Avro range."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["records_v2"]

optional_int = st.none() | st.integers(-(2**31), 2**31 - 1)
optional_float32 = st.none() | st.floats(width=32, allow_nan=False)
optional_double = st.none() | st.floats(allow_nan=False)
records_v2 = st.fixed_dictionaries(
    {
        "device_id": st.text(max_size=80),
        "boot_id": st.uuids().map(str),
        "seq": st.integers(-(2**63), 2**63 - 1),
        "timestamp_us": st.integers(0, 2**62),
        "heart_rate_bpm": optional_int,
        "cadence_rpm": optional_int,
        "speed_m_s": optional_float32,
        "distance_m": optional_double,
        "latitude_deg": optional_double,
        "longitude_deg": optional_double,
        "altitude_m": optional_float32,
        "power_w": optional_int,
        "temperature_c": optional_float32,
        "steps": st.none() | st.integers(-(2**63), 2**63 - 1),
        "battery_pct": optional_int,
        "host": st.fixed_dictionaries(
            {
                "uptime_s": st.integers(0, 2**40),
                "cpu_load": st.floats(width=32, allow_nan=False),
                "free_memory_bytes": st.integers(0, 2**40),
            }
        ),
        "rr_intervals_ms": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20),
        "respiration_rate_bpm": optional_float32,
        "sport": st.none() | st.text(max_size=40),
    }
)
