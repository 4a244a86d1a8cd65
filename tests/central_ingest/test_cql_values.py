"""Packing telemetry rows for Cassandra: the same bytes as the driver's own serializers."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from cassandra import cqltypes
from cassandra.query import UNSET_VALUE

from central.store import COLUMNS, StoreError, TelemetryRow, rows_from_records
from central.store._cql_values import CQL_TYPES, check_columns, encode_row
from central_ingest.testdata import make_record

#: The driver's type for each CQL type name: its serializers are the reference.
_DRIVER_TYPES = {
    "text": cqltypes.UTF8Type,
    "date": cqltypes.SimpleDateType,
    "bigint": cqltypes.LongType,
    "uuid": cqltypes.UUIDType,
    "int": cqltypes.Int32Type,
    "float": cqltypes.FloatType,
    "double": cqltypes.DoubleType,
    "frozen<list<int>>": cqltypes.ListType.apply_parameters([cqltypes.Int32Type]),
}
_PROTOCOL_VERSION = 5


def _driver_values(row: TelemetryRow) -> list[object]:
    """The driver's bytes for each value; a missing value is the driver's UNSET_VALUE, not null."""
    return [
        UNSET_VALUE
        if value is None
        else _DRIVER_TYPES[CQL_TYPES[name]].serialize(value, _PROTOCOL_VERSION)
        for name, value in zip(COLUMNS, row, strict=True)
    ]


def _row(**fields: object) -> TelemetryRow:
    record = make_record("dev-ü", str(uuid.UUID(int=7)), 42, **fields)
    (row,) = rows_from_records(
        [record], gateway_id="gw-1", site="gym-a", schema_version=2, ingested_at_us=123_456
    )
    return row


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {
            "heart_rate_bpm": None,
            "speed_m_s": None,
            "distance_m": None,
            "latitude_deg": None,
            "longitude_deg": None,
            "altitude_m": None,
            "power_w": None,
            "temperature_c": None,
            "steps": None,
            "battery_pct": None,
            "respiration_rate_bpm": None,
            "sport": None,
        },
        {"rr_intervals_ms": []},
        {"rr_intervals_ms": list(range(300, 330))},  # longer than the precompiled packers
        {"latitude_deg": -89.999999, "longitude_deg": 179.123456789, "sport": "vélo ⛰"},
        {"steps": 2**40, "heart_rate_bpm": -5, "timestamp_us": 4_102_444_799_999_999},
    ],
    ids=["typical", "nulls", "no-beats", "many-beats", "precision-unicode", "extremes"],
)
def test_encoded_row_matches_the_driver_serializers(fields: dict) -> None:
    row = _row(**fields)
    assert encode_row(row) == _driver_values(row)


def test_missing_values_are_unset_never_null() -> None:
    """Null would write a tombstone cell per missing value; unset writes nothing."""
    values = encode_row(_row(heart_rate_bpm=None, sport=None))
    by_name = dict(zip(COLUMNS, values, strict=True))
    assert by_name["heart_rate_bpm"] is UNSET_VALUE
    assert by_name["sport"] is UNSET_VALUE
    assert None not in values


def test_the_date_column_counts_days_from_two_to_the_31() -> None:
    """The protocol's date: unsigned days with 1970-01-01 at 2**31 (worked out by hand)."""
    row = _row()._replace(day=date(1970, 1, 2))
    assert encode_row(row)[1] == (2**31 + 1).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("column", "value"),
    [("heart_rate_bpm", 2**31), ("speed_m_s", 1e39), ("device_id", 7), ("boot_id", "not-a-uuid")],
)
def test_a_value_that_does_not_fit_its_column_is_a_store_error(column: str, value: object) -> None:
    row = _row()._replace(**{column: value})
    with pytest.raises(StoreError, match="does not fit the telemetry table"):
        encode_row(row)


def test_check_columns_refuses_a_table_of_other_types() -> None:
    driver_names = {"text": "varchar", "frozen<list<int>>": "list<int>"}
    columns = [(name, driver_names.get(CQL_TYPES[name], CQL_TYPES[name])) for name in COLUMNS]
    check_columns(columns)
    changed = [*columns[:9], ("heart_rate_bpm", "bigint"), *columns[10:]]
    with pytest.raises(StoreError, match="differ from central's"):
        check_columns(changed)
    with pytest.raises(StoreError):
        check_columns(columns[:-1])
