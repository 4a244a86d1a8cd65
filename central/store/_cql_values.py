"""Telemetry rows as CQL native-protocol values, serialized without the driver's bind.

The Cassandra telemetry table keeps the key and central's enrichment as
columns of their own (:data:`ROW_COLUMNS`) and everything the tracker
measured in one ``frozen<telemetry_sample>`` UDT cell (:data:`SAMPLE_FIELDS`).
One cell instead of seventeen: Cassandra's write and, above all, its memtable
flush spend their CPU per cell (a JFR profile of the ingest benchmark put two
thirds of the node's samples in flushing cells), and the driver writes ten
values a row instead of twenty-six. Records never change under their key,
so no field ever needs an update of its own; ops read one with
``SELECT sample.heart_rate_bpm ...``.

The driver's ``PreparedStatement.bind`` checks and serializes value by value
through generic type objects: about 65 µs for one row, more CPU than
Cassandra spends storing it. The table's types are fixed, so this module
packs each value with a precompiled ``struct`` into the same bytes the driver
would send. :func:`check_columns` compares the prepared statement's columns
and the UDT's fields with the ones assumed here, so a changed table fails
loudly at prepare time instead of writing bytes of the wrong type.

A missing key or enrichment value cannot happen; a missing measurement is a
null field inside the UDT, which costs nothing. (A null bound to a column of
its own would write a tombstone cell: 172,800 a day for a tracker that leaves
two fields empty at 1 Hz, past Cassandra's ``tombstone_failure_threshold``
of 100,000, so reading that day would fail.)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import date

from central.store._model import COLUMNS, StoreError, TelemetryRow

__all__ = [
    "CQL_TYPES",
    "ROW_COLUMNS",
    "SAMPLE_FIELDS",
    "SAMPLE_TYPE",
    "check_columns",
    "encode_row",
    "expected_columns",
]

#: CQL type of every telemetry value, in row order; the DDL uses them too.
CQL_TYPES: dict[str, str] = {
    "device_id": "text",
    "day": "date",
    "timestamp_us": "bigint",
    "boot_id": "uuid",
    "seq": "bigint",
    "gateway_id": "text",
    "site": "text",
    "schema_version": "int",
    "ingested_at_us": "bigint",
    "heart_rate_bpm": "int",
    "cadence_rpm": "int",
    "speed_m_s": "float",
    "distance_m": "double",
    "latitude_deg": "double",
    "longitude_deg": "double",
    "altitude_m": "float",
    "power_w": "int",
    "temperature_c": "float",
    "steps": "bigint",
    "battery_pct": "int",
    "host_uptime_s": "bigint",
    "host_cpu_load": "float",
    "host_free_memory_bytes": "bigint",
    "rr_intervals_ms": "frozen<list<int>>",
    "respiration_rate_bpm": "float",
    "sport": "text",
}
#: Columns of their own: the primary key and central's enrichment.
ROW_COLUMNS: tuple[str, ...] = COLUMNS[:9]
#: The fields of the ``sample`` UDT column, in order: what the tracker measured.
SAMPLE_FIELDS: tuple[str, ...] = COLUMNS[9:]
#: The UDT's name in the keyspace.
SAMPLE_TYPE = "telemetry_sample"

_INT32 = struct.Struct(">i").pack
_INT64 = struct.Struct(">q").pack
_FLOAT = struct.Struct(">f").pack
_DOUBLE = struct.Struct(">d").pack
_UINT32 = struct.Struct(">I").pack
# A UDT field: its int32 length, then its value.
_SIZED_INT32 = struct.Struct(">ii").pack
_SIZED_INT64 = struct.Struct(">iq").pack
_SIZED_FLOAT = struct.Struct(">if").pack
_SIZED_DOUBLE = struct.Struct(">id").pack
_NULL = _INT32(-1)
#: A CQL ``date`` is unsigned days with the epoch at 2**31 (protocol spec §6).
_DATE_EPOCH_ORDINAL = date(1970, 1, 1).toordinal() - (1 << 31)


#: Longest rr list with a precompiled packer: a record covers about a second,
#: so it holds one to four beats; longer lists take the slower generic path.
_PRECOMPILED_LIST_MAX = 16
_INT_LIST_PACKERS = tuple(
    struct.Struct(">i" + "ii" * count).pack for count in range(_PRECOMPILED_LIST_MAX + 1)
)


def _int_list(values: Sequence[int]) -> bytes:
    # Protocol v3+: an int32 count, then each element as an int32 length (4) and its value.
    count = len(values)
    parts = [4] * (2 * count)
    parts[1::2] = values
    if count <= _PRECOMPILED_LIST_MAX:
        return _INT_LIST_PACKERS[count](count, *parts)
    return struct.pack(f">{2 * count + 1}i", count, *parts)


def encode_row(row: TelemetryRow) -> list[bytes]:
    """The row's values as the native protocol carries them: :data:`ROW_COLUMNS`, then ``sample``.

    One straight line rather than a loop over per-field packers: this runs
    for every record, and the loop costs half as much again. Each UDT field
    is its int32 length and its bytes (-1 for null), packed in one call. The
    tests compare the bytes with the driver's ``bind``.

    Raises:
        StoreError: a value does not fit its type (a bug upstream: validated
            records always fit).
    """
    (
        device_id, day, timestamp_us, boot_id, seq, gateway_id, site, schema_version,
        ingested_at_us, heart_rate_bpm, cadence_rpm, speed_m_s, distance_m, latitude_deg,
        longitude_deg, altitude_m, power_w, temperature_c, steps, battery_pct, host_uptime_s,
        host_cpu_load, host_free_memory_bytes, rr_intervals_ms, respiration_rate_bpm, sport,
    ) = row  # fmt: skip
    try:
        sample = b"".join(
            (
                _NULL if heart_rate_bpm is None else _SIZED_INT32(4, heart_rate_bpm),
                _NULL if cadence_rpm is None else _SIZED_INT32(4, cadence_rpm),
                _NULL if speed_m_s is None else _SIZED_FLOAT(4, speed_m_s),
                _NULL if distance_m is None else _SIZED_DOUBLE(8, distance_m),
                _NULL if latitude_deg is None else _SIZED_DOUBLE(8, latitude_deg),
                _NULL if longitude_deg is None else _SIZED_DOUBLE(8, longitude_deg),
                _NULL if altitude_m is None else _SIZED_FLOAT(4, altitude_m),
                _NULL if power_w is None else _SIZED_INT32(4, power_w),
                _NULL if temperature_c is None else _SIZED_FLOAT(4, temperature_c),
                _NULL if steps is None else _SIZED_INT64(8, steps),
                _NULL if battery_pct is None else _SIZED_INT32(4, battery_pct),
                _SIZED_INT64(8, host_uptime_s),
                _SIZED_FLOAT(4, host_cpu_load),
                _SIZED_INT64(8, host_free_memory_bytes),
                _sized(_int_list(rr_intervals_ms)),
                _NULL if respiration_rate_bpm is None else _SIZED_FLOAT(4, respiration_rate_bpm),
                _NULL if sport is None else _sized(sport.encode()),
            )
        )
        return [
            device_id.encode(),
            _UINT32(day.toordinal() - _DATE_EPOCH_ORDINAL),
            _INT64(timestamp_us),
            boot_id.bytes,
            _INT64(seq),
            gateway_id.encode(),
            site.encode(),
            _INT32(schema_version),
            _INT64(ingested_at_us),
            sample,
        ]
    except (struct.error, OverflowError, AttributeError, TypeError) as exc:
        raise StoreError(
            f"row of device {row.device_id!r} seq {row.seq} does not fit the telemetry table: {exc}"
        ) from exc


def _sized(value: bytes) -> bytes:
    return _INT32(len(value)) + value


#: How the driver names our types when it reads them back from a prepared statement.
_DRIVER_NAMES = {"text": "varchar", "frozen<list<int>>": "list<int>"}


def expected_columns() -> list[tuple[str, str]]:
    """``(name, driver type name)`` of the INSERT's bind markers, then ``sample.<field>`` of each UDT field."""

    def driver(cql: str) -> str:
        return _DRIVER_NAMES.get(cql, cql)

    return [
        *((name, driver(CQL_TYPES[name])) for name in ROW_COLUMNS),
        ("sample", f"frozen<{SAMPLE_TYPE}>"),
        *((f"sample.{name}", driver(CQL_TYPES[name])) for name in SAMPLE_FIELDS),
    ]


def check_columns(bound_columns: Sequence[tuple[str, str]]) -> None:
    """Refuse to encode for a statement whose columns differ from :func:`expected_columns`.

    Args:
        bound_columns: ``(name, driver type name)`` of each bind marker, in
            order, then ``sample.<field>`` of each field of the UDT.

    Raises:
        StoreError: the table's columns are not the ones this module packs.
    """
    expected = expected_columns()
    if list(bound_columns) != expected:
        raise StoreError(
            f"the telemetry table's columns {list(bound_columns)!r} differ from central's "
            f"{expected!r}; migrate the table or run 'pulsegate central db init' on a new keyspace"
        )
