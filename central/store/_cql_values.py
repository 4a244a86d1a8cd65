"""Telemetry rows as CQL native-protocol values, serialized without the driver's bind.

The driver's ``PreparedStatement.bind`` checks and serializes value by value
through generic type objects: about 65 µs for one 26-column row, more CPU
than Cassandra spends storing it. The telemetry table's column types are
fixed, so this module packs each column with a precompiled ``struct``
(about 7 µs a row) into the same bytes the driver would send.
:func:`check_columns` compares the prepared statement's column types with
the ones assumed here, so a changed table fails loudly at prepare time
instead of writing bytes of the wrong type.

A missing value is sent as *unset*, not as null: an INSERT that binds null
writes a tombstone cell. A tracker that leaves two fields empty (a v1 writer
has no respiration rate or sport) would put 172,800 tombstones in a day's
partition at 1 Hz, and reading that day would pass Cassandra's
``tombstone_failure_threshold`` (100,000) and fail. An unset cell is simply
absent and reads back as null all the same; a record never changes under its
key, so there is no older value for a null to erase.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import date

from cassandra.query import UNSET_VALUE

from central.store._model import COLUMNS, StoreError, TelemetryRow

__all__ = ["CQL_TYPES", "check_columns", "encode_row"]

#: CQL type of every telemetry column, in row order; the DDL uses them too.
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
    # frozen: a non-frozen collection makes every INSERT also write a tombstone.
    "rr_intervals_ms": "frozen<list<int>>",
    "respiration_rate_bpm": "float",
    "sport": "text",
}

_INT32 = struct.Struct(">i").pack
_INT64 = struct.Struct(">q").pack
_FLOAT = struct.Struct(">f").pack
_DOUBLE = struct.Struct(">d").pack
_UINT32 = struct.Struct(">I").pack
_UNSET = UNSET_VALUE
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


#: How the driver names our types when it reads them back from a prepared statement.
_DRIVER_NAMES = {"text": "varchar", "frozen<list<int>>": "list<int>"}


def encode_row(row: TelemetryRow) -> list[object]:
    """The row's values as the native protocol carries them: bytes, or ``UNSET_VALUE`` for None.

    One straight line in the order of :data:`CQL_TYPES` rather than a loop
    over per-column packers: this runs for every record, and the loop costs
    half as much again. The tests compare its bytes with the driver's ``bind``.

    Raises:
        StoreError: a value does not fit its column's type (a bug upstream:
            validated records always fit).
    """
    (
        device_id, day, timestamp_us, boot_id, seq, gateway_id, site, schema_version,
        ingested_at_us, heart_rate_bpm, cadence_rpm, speed_m_s, distance_m, latitude_deg,
        longitude_deg, altitude_m, power_w, temperature_c, steps, battery_pct, host_uptime_s,
        host_cpu_load, host_free_memory_bytes, rr_intervals_ms, respiration_rate_bpm, sport,
    ) = row  # fmt: skip
    try:
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
            _UNSET if heart_rate_bpm is None else _INT32(heart_rate_bpm),
            _UNSET if cadence_rpm is None else _INT32(cadence_rpm),
            _UNSET if speed_m_s is None else _FLOAT(speed_m_s),
            _UNSET if distance_m is None else _DOUBLE(distance_m),
            _UNSET if latitude_deg is None else _DOUBLE(latitude_deg),
            _UNSET if longitude_deg is None else _DOUBLE(longitude_deg),
            _UNSET if altitude_m is None else _FLOAT(altitude_m),
            _UNSET if power_w is None else _INT32(power_w),
            _UNSET if temperature_c is None else _FLOAT(temperature_c),
            _UNSET if steps is None else _INT64(steps),
            _UNSET if battery_pct is None else _INT32(battery_pct),
            _INT64(host_uptime_s),
            _FLOAT(host_cpu_load),
            _INT64(host_free_memory_bytes),
            _int_list(rr_intervals_ms),
            _UNSET if respiration_rate_bpm is None else _FLOAT(respiration_rate_bpm),
            _UNSET if sport is None else sport.encode(),
        ]
    except (struct.error, OverflowError, AttributeError, TypeError) as exc:
        raise StoreError(
            f"row of device {row.device_id!r} seq {row.seq} does not fit the telemetry table: {exc}"
        ) from exc


def check_columns(bound_columns: Sequence[tuple[str, str]]) -> None:
    """Refuse to encode for a statement whose columns differ from :data:`CQL_TYPES`.

    Args:
        bound_columns: ``(name, driver type name)`` of each bind marker, in order.

    Raises:
        StoreError: the table's columns are not the ones this module packs.
    """
    expected = [(name, _DRIVER_NAMES.get(CQL_TYPES[name], CQL_TYPES[name])) for name in COLUMNS]
    if list(bound_columns) != expected:
        raise StoreError(
            f"the telemetry table's columns {list(bound_columns)!r} differ from central's "
            f"{expected!r}; migrate the table or run 'pulsegate central db init' on a new keyspace"
        )
