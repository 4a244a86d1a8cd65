"""Telemetry records: the versioned Avro schemas and their single-object encoding.

A TELEMETRY frame carries one record in Avro single-object encoding (SOE):
the marker ``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint
(little-endian), then the binary datum. Readers pick the writer schema by that
fingerprint and resolve it to the newest schema they know.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from firmware_shim._datum_reader import BadDatum, DatumReader, UnsupportedSchema, compile_reader

__all__ = [
    "SOE_MARKER",
    "SCHEMA_VERSIONS",
    "LATEST_SCHEMA_VERSION",
    "SchemaInfo",
    "RecordError",
    "schema",
    "schema_by_fingerprint",
    "encode_record",
    "decode_record",
    "decode_datum",
    "datum_reader",
    "split_soe",
    "validate_record",
]

SOE_MARKER = b"\xc3\x01"
SCHEMA_VERSIONS = (1, 2)
LATEST_SCHEMA_VERSION = SCHEMA_VERSIONS[-1]


class RecordError(ValueError):
    """A payload is not a valid telemetry record; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaInfo:
    """One telemetry schema version, parsed, with its fingerprint."""

    version: int
    json: dict[str, Any]
    parsed: Any
    fingerprint: bytes  #: 8 bytes, exactly the SOE header's fingerprint field

    @property
    def text(self) -> str:
        return json.dumps(self.json, sort_keys=True)


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@cache
def schema(version: int = LATEST_SCHEMA_VERSION) -> SchemaInfo:
    """Return telemetry schema ``version`` as shipped in ``schemas/``."""
    if version not in SCHEMA_VERSIONS:
        raise ValueError(f"unknown telemetry schema version {version!r}; known: {SCHEMA_VERSIONS}")
    text = resources.files(__package__).joinpath(f"schemas/telemetry.v{version}.avsc").read_text()
    raw = json.loads(text)
    # Parsed without logical types: in-process code works on the wire's
    # plain values (timestamps as int microseconds, boot ids as strings);
    # the fingerprint is unaffected (logicalType is not in the canonical form).
    parsed = parse_schema(_without_logical_types(raw))
    fp_hex = fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
    return SchemaInfo(version, raw, parsed, bytes.fromhex(fp_hex))


@cache
def _by_fingerprint() -> dict[bytes, SchemaInfo]:
    return {schema(v).fingerprint: schema(v) for v in SCHEMA_VERSIONS}


def schema_by_fingerprint(fp: bytes) -> SchemaInfo | None:
    """The known schema whose fingerprint is ``fp``, or None."""
    return _by_fingerprint().get(fp)


def encode_record(record: dict[str, Any], version: int = LATEST_SCHEMA_VERSION) -> bytes:
    """Encode ``record`` with schema ``version`` in single-object encoding."""
    info = schema(version)
    buf = io.BytesIO()
    buf.write(SOE_MARKER)
    buf.write(info.fingerprint)
    schemaless_writer(buf, info.parsed, record)
    return buf.getvalue()


def split_soe(payload: bytes) -> tuple[SchemaInfo, bytes]:
    """Check the SOE header; return the writer schema and the datum bytes.

    Raises:
        RecordError: ``not_avro`` for a missing marker, ``unknown_schema`` for
            a fingerprint no known schema has.
    """
    if len(payload) < 10 or payload[:2] != SOE_MARKER:
        raise RecordError("not_avro", "payload lacks the Avro single-object marker C3 01")
    info = schema_by_fingerprint(payload[2:10])
    if info is None:
        raise RecordError("unknown_schema", f"writer schema fingerprint {payload[2:10].hex()} is not known")
    return info, payload[10:]


def decode_record(payload: bytes, reader_version: int = LATEST_SCHEMA_VERSION) -> tuple[dict[str, Any], int]:
    """Decode an SOE payload, resolved to ``reader_version``.

    Returns:
        The record and the writer's schema version.

    Raises:
        RecordError: ``not_avro``, ``unknown_schema`` or ``bad_datum``.
    """
    info, datum = split_soe(payload)
    return decode_datum(info, datum, reader_version), info.version


@cache
def datum_reader(writer_version: int, reader_version: int = LATEST_SCHEMA_VERSION) -> DatumReader:
    """A compiled reader of datums written with ``writer_version``, resolved to ``reader_version``.

    ``read(buf, pos) -> (record, next_pos)``; see :mod:`firmware_shim._datum_reader`
    for what it raises. Records hold the wire's plain values (int timestamps,
    str boot ids), as :func:`decode_datum` returns them.
    """
    writer, reader = schema(writer_version).json, schema(reader_version).json
    try:
        return compile_reader(writer, reader if reader_version != writer_version else None)
    except UnsupportedSchema:
        # A future schema using a type the compiler lacks: fastavro reads it (slower).
        return _fastavro_reader(schema(writer_version), schema(reader_version))


def _fastavro_reader(writer: SchemaInfo, reader: SchemaInfo) -> DatumReader:
    def read(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
        stream = io.BytesIO(buf)
        stream.seek(pos)
        record = schemaless_reader(stream, writer.parsed, reader.parsed if reader.version != writer.version else None)
        return record, stream.tell()

    return read


#: What a compiled or fastavro reader raises on bytes that are no datum of its schema.
DATUM_ERRORS = (BadDatum, IndexError, struct.error, UnicodeDecodeError, EOFError, ValueError)


def decode_datum(info: SchemaInfo, datum: bytes, reader_version: int = LATEST_SCHEMA_VERSION) -> dict[str, Any]:
    """Decode a binary datum written with ``info``, resolved to ``reader_version``.

    Raises:
        RecordError: ``bad_datum``.
    """
    try:
        record, end = datum_reader(info.version, reader_version)(datum, 0)
    except DATUM_ERRORS as exc:
        raise RecordError("bad_datum", f"{type(exc).__name__}: {exc}") from None
    if end != len(datum):
        raise RecordError("bad_datum", f"{len(datum) - end} trailing bytes after the datum")
    return record


# Sane ranges. A value outside is physically implausible for a person in a gym
# or on a ride and points at a firmware or sensor fault; the bounds are wide
# on purpose, so real recordings (mountain passes, sprints, cold rides) pass.
_RANGES: dict[str, tuple[float, float]] = {
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


def _range_failure(name: str, value: Any, lo: float, hi: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is {value}"
    return f"{name} {value} outside {lo}..{hi}"


def _compile_range_check() -> Callable[[dict[str, Any]], str | None]:
    """One straight-line check of every range in ``_RANGES``: a third of the cost of a loop over it."""
    lines = ["def check(record, _fail=_fail):", "    get = record.get"]
    for name, (lo, hi) in _RANGES.items():
        # NaN fails every comparison, so it lands in _fail with the out-of-range values.
        lines.append(f"    v = get({name!r})")
        lines.append(f"    if v is not None and not {lo!r} <= v <= {hi!r}: return _fail({name!r}, v, {lo!r}, {hi!r})")
    lines.append("    return None")
    namespace: dict[str, Any] = {"_fail": _range_failure}
    exec(compile("\n".join(lines) + "\n", "<telemetry range check>", "exec"), namespace)  # noqa: S102
    return namespace["check"]


_check_ranges = _compile_range_check()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
#: 2000-01-01 to 2100-01-01 in microseconds: a clock outside is unset or broken.
_TIMESTAMP_RANGE_US = (946_684_800_000_000, 4_102_444_800_000_000)


def validate_record(record: dict[str, Any]) -> str | None:
    """Return why ``record`` is implausible, or None if it is acceptable."""
    device_id = record["device_id"]
    if not 1 <= len(device_id) <= 64 or not device_id.isascii() or not device_id.isprintable():
        return f"device_id {device_id[:80]!r} is not 1 to 64 printable ASCII characters"
    if record["seq"] < 1 or record["seq"] > 0xFFFFFFFF:
        return f"seq {record['seq']} outside 1..2^32-1"
    lo_ts, hi_ts = _TIMESTAMP_RANGE_US
    ts = record["timestamp_us"]
    if not isinstance(ts, int):  # fastavro hands back an aware datetime
        # Exact integer arithmetic: ts.timestamp() * 1e6 is a float and is
        # off by one microsecond for about 1 % of today's timestamps.
        ts = (ts - _EPOCH) // _ONE_MICROSECOND
    if not lo_ts <= ts < hi_ts:
        return f"timestamp_us {ts} outside 2000..2100"
    why = _check_ranges(record)
    if why is not None:
        return why
    for rr in record.get("rr_intervals_ms") or ():
        if not 150 <= rr <= 3000:
            return f"rr_intervals_ms contains {rr}, outside 150..3000"
    return None
