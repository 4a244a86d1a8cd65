"""Telemetry records: Avro single-object encoding, fingerprints, schema evolution, sane ranges."""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro.schema
import pytest
import shim_reference_codecs as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_strategies import records_v2

import firmware_shim
from firmware_shim import (
    SOE_MARKER,
    RecordError,
    decode_record,
    encode_record,
    schema,
    schema_by_fingerprint,
    split_soe,
    validate_record,
)

SCHEMA_DIR = Path(firmware_shim.__file__).resolve().parent / "schemas"
V2_ONLY_FIELDS = ("rr_intervals_ms", "respiration_rate_bpm", "sport")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def schema_json(version: int) -> Any:
    return json.loads((SCHEMA_DIR / f"telemetry.v{version}.avsc").read_text())


def as_float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def base_record(version: int = 2, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "device_id": "trk-7",
        "boot_id": "9b4a6a02-3d0e-4a8e-b0d4-2f6f1b6b5a11",
        "seq": 1,
        "timestamp_us": 1_700_000_000_123_456,
        "heart_rate_bpm": 140,
        "cadence_rpm": 88,
        "speed_m_s": 6.5,
        "distance_m": 1000.0,
        "latitude_deg": 52.1,
        "longitude_deg": 4.3,
        "altitude_m": 12.5,
        "power_w": 230,
        "temperature_c": 18.0,
        "steps": 10,
        "battery_pct": 80,
        "host": {"uptime_s": 10, "cpu_load": 0.25, "free_memory_bytes": 1 << 28},
    }
    if version >= 2:
        record.update(rr_intervals_ms=[700, 710], respiration_rate_bpm=15.0, sport="running")
    record.update(overrides)
    return record


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """The record in the writer's terms (the decoder may hand back UUID and datetime objects)."""
    out = dict(record)
    out["boot_id"] = str(out["boot_id"])
    if isinstance(out["timestamp_us"], datetime):
        out["timestamp_us"] = (out["timestamp_us"] - _EPOCH) // timedelta(microseconds=1)
    return out


# --- fingerprints -----------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_fingerprint_is_fastavros_crc64_of_the_canonical_form(version: int) -> None:
    raw = schema_json(version)
    fastavro_fp = bytes.fromhex(
        fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(raw), "CRC-64-AVRO")
    )
    assert schema(version).fingerprint == fastavro_fp
    assert encode_record(base_record(version), version)[2:10] == fastavro_fp


@pytest.mark.parametrize("version", [1, 2])
def test_fingerprint_matches_an_independent_crc64_and_canonical_form(version: int) -> None:
    raw = schema_json(version)
    pcf = ref.parsing_canonical_form(raw)
    assert pcf == fastavro.schema.to_parsing_canonical_form(raw)
    assert schema(version).fingerprint == ref.crc64_avro(pcf.encode()).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("text", "signed_fingerprint"),
    [
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
        ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ],
)
def test_independent_crc64_matches_the_avro_projects_published_values(
    text: str, signed_fingerprint: int
) -> None:
    """Values from apache/avro share/test/data/schema-tests.txt (signed 64-bit)."""
    assert ref.crc64_avro(text.encode()) == signed_fingerprint & 0xFFFFFFFFFFFFFFFF


def test_logical_types_do_not_change_the_fingerprint() -> None:
    """PCF drops logicalType, so annotating a field is not a new schema version."""
    raw = schema_json(1)
    for field in raw["fields"]:
        if isinstance(field["type"], dict) and "logicalType" in field["type"]:
            field["type"] = field["type"]["type"]
    assert ref.schema_fingerprint(raw) == schema(1).fingerprint


def test_versions_have_distinct_fingerprints_that_map_back() -> None:
    assert schema(1).fingerprint != schema(2).fingerprint
    for version in (1, 2):
        assert schema_by_fingerprint(schema(version).fingerprint).version == version
    assert schema_by_fingerprint(bytes(8)) is None
    with pytest.raises(ValueError, match="unknown telemetry schema version 3"):
        schema(3)


# --- single-object encoding -------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(records_v2, st.sampled_from([1, 2]))
def test_soe_round_trip_and_independent_encoding(record: dict[str, Any], version: int) -> None:
    if version == 1:
        record = {k: v for k, v in record.items() if k not in V2_ONLY_FIELDS}
    payload = encode_record(record, version)
    assert payload == ref.single_object(
        schema_json(version), record
    )  # byte for byte, independently
    decoded, writer_version = decode_record(payload, reader_version=version)
    assert writer_version == version
    assert plain(decoded) == record


def test_v1_writer_read_as_v2_gets_the_v2_defaults() -> None:
    v1 = base_record(1)
    decoded, writer_version = decode_record(encode_record(v1, 1))  # reader: the latest, v2
    assert writer_version == 1
    defaults = {
        f["name"]: f["default"] for f in schema_json(2)["fields"] if f["name"] in V2_ONLY_FIELDS
    }
    assert defaults == {"rr_intervals_ms": [], "respiration_rate_bpm": None, "sport": None}
    assert plain(decoded) == {**v1, **defaults}


def test_v2_writer_read_as_v1_drops_the_new_fields() -> None:
    v2 = base_record(2)
    decoded, writer_version = decode_record(encode_record(v2, 2), reader_version=1)
    assert writer_version == 2
    assert plain(decoded) == {k: v for k, v in v2.items() if k not in V2_ONLY_FIELDS}


def test_float_fields_are_single_precision_on_the_wire() -> None:
    decoded, _ = decode_record(encode_record(base_record(speed_m_s=0.1, distance_m=0.1)))
    assert decoded["speed_m_s"] == as_float32(0.1) != 0.1
    assert decoded["distance_m"] == 0.1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_avro"),
        (SOE_MARKER + bytes(7), "not_avro"),
        (b"\xc3\x02" + bytes(8), "not_avro"),
        (b"Obj\x01" + bytes(20), "not_avro"),
        (SOE_MARKER + bytes(8) + b"\x02a", "unknown_schema"),
    ],
    ids=["empty", "short-header", "wrong-marker", "container-file", "unknown-fingerprint"],
)
def test_split_soe_refuses_foreign_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        split_soe(payload)
    assert caught.value.reason == reason


@pytest.mark.parametrize("version", [1, 2])
def test_every_truncation_and_extension_of_a_datum_is_refused(version: int) -> None:
    payload = encode_record(base_record(version), version)
    for cut in range(10, len(payload)):
        with pytest.raises(RecordError) as caught:
            decode_record(payload[:cut])
        assert caught.value.reason == "bad_datum", cut
    with pytest.raises(RecordError, match="1 trailing bytes"):
        decode_record(payload + b"\x00")


# --- validate_record --------------------------------------------------------------

RANGES = {
    "heart_rate_bpm": (20, 255),
    "cadence_rpm": (0, 255),
    "speed_m_s": (0, 100),
    "distance_m": (0, 10_000_000),
    "latitude_deg": (-90, 90),
    "longitude_deg": (-180, 180),
    "altitude_m": (-1000, 10_000),
    "power_w": (0, 5000),
    "temperature_c": (-60, 70),
    "steps": (0, 10_000_000),
    "battery_pct": (0, 100),
    "respiration_rate_bpm": (0, 120),
}
INT_FIELDS = {"heart_rate_bpm", "cadence_rpm", "power_w", "steps", "battery_pct"}


def test_a_plausible_record_passes() -> None:
    assert validate_record(base_record()) is None
    assert validate_record(base_record(**{name: None for name in RANGES})) is None


@pytest.mark.parametrize("name", sorted(RANGES))
def test_range_bounds_are_inclusive(name: str) -> None:
    lo, hi = RANGES[name]
    if name in INT_FIELDS:
        below, above = lo - 1, hi + 1
    else:
        below, above = math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)
    assert validate_record(base_record(**{name: lo})) is None
    assert validate_record(base_record(**{name: hi})) is None
    assert validate_record(base_record(**{name: below})) == f"{name} {below} outside {lo}..{hi}"
    assert validate_record(base_record(**{name: above})) == f"{name} {above} outside {lo}..{hi}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", sorted(set(RANGES) - INT_FIELDS))
def test_non_finite_floats_are_refused(name: str, value: float) -> None:
    assert validate_record(base_record(**{name: value})) == f"{name} is {value}"


@pytest.mark.parametrize(
    ("device_id", "ok"),
    [
        ("a", True),
        ("d" * 64, True),
        ("trk 42~", True),
        ("", False),
        ("d" * 65, False),
        ("trk\t", False),
        ("trk\x7f", False),
        ("tr\u00e9", False),
    ],
)
def test_device_id_is_1_to_64_printable_ascii(device_id: str, ok: bool) -> None:
    assert (validate_record(base_record(device_id=device_id)) is None) is ok


@pytest.mark.parametrize(
    ("seq", "ok"), [(0, False), (1, True), (2**32 - 1, True), (2**32, False), (-1, False)]
)
def test_seq_is_1_to_2_pow_32_minus_1(seq: int, ok: bool) -> None:
    assert (validate_record(base_record(seq=seq)) is None) is ok


Y2000_US = 946_684_800_000_000
Y2100_US = 4_102_444_800_000_000


@pytest.mark.parametrize(
    ("timestamp_us", "ok"),
    [(Y2000_US - 1, False), (Y2000_US, True), (Y2100_US - 1, True), (Y2100_US, False)],
)
def test_timestamp_between_2000_and_2100(timestamp_us: int, ok: bool) -> None:
    assert (validate_record(base_record(timestamp_us=timestamp_us)) is None) is ok
    decoded, _ = decode_record(encode_record(base_record(timestamp_us=timestamp_us)))
    assert (validate_record(decoded) is None) is ok
    # An aware datetime, as fastavro returns for timestamp-micros, is compared to the microsecond.
    moment = _EPOCH + timedelta(microseconds=timestamp_us)
    assert (validate_record(base_record(timestamp_us=moment)) is None) is ok


@pytest.mark.parametrize(
    ("intervals", "ok"), [([150, 3000], True), ([], True), ([149], False), ([800, 3001], False)]
)
def test_rr_intervals_between_150_and_3000_ms(intervals: list[int], ok: bool) -> None:
    assert (validate_record(base_record(rr_intervals_ms=intervals)) is None) is ok


def test_validate_accepts_what_the_decoder_returns() -> None:
    decoded, _ = decode_record(encode_record(base_record()))
    assert plain(decoded) == base_record()
    assert validate_record(decoded) is None


def test_refusal_names_the_exact_timestamp_of_a_datetime() -> None:
    """A float conversion (datetime.timestamp() * 1e6) reads this 1987 time as one microsecond less."""
    timestamp_us = 557_186_691_291_899
    moment = _EPOCH + timedelta(microseconds=timestamp_us)
    assert int(moment.timestamp() * 1_000_000) != timestamp_us  # the trap this guards against
    assert validate_record(base_record(timestamp_us=moment)) == (
        f"timestamp_us {timestamp_us} outside 2000..2100"
    )
