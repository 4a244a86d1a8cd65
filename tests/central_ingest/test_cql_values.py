"""Packing telemetry rows for Cassandra: the same bytes as the driver's own serializers."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from cassandra import cqltypes

from central.store import COLUMNS, StoreError, TelemetryRow, rows_from_records
from central.store._cql_values import (
    CQL_TYPES,
    ROW_COLUMNS,
    SAMPLE_FIELDS,
    SAMPLE_TYPE,
    check_columns,
    encode_row,
    expected_columns,
)
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


_DRIVER_SAMPLE = cqltypes.UserType.make_udt_class(
    "pulsegate",
    SAMPLE_TYPE,
    SAMPLE_FIELDS,
    tuple(_DRIVER_TYPES[CQL_TYPES[name]] for name in SAMPLE_FIELDS),
)


def _driver_values(row: TelemetryRow) -> list[bytes]:
    """The driver's bytes: each key and enrichment column, then the sample UDT from the rest."""
    by_name = row._asdict()
    columns = [
        _DRIVER_TYPES[CQL_TYPES[name]].serialize(by_name[name], _PROTOCOL_VERSION)
        for name in ROW_COLUMNS
    ]
    sample = tuple(by_name[name] for name in SAMPLE_FIELDS)
    return [*columns, _DRIVER_SAMPLE.serialize(sample, _PROTOCOL_VERSION)]


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


def test_the_row_is_its_key_and_enrichment_columns_then_one_sample_cell() -> None:
    """Nine columns of their own plus one UDT cell; a missing measurement is a null field in it."""
    values = encode_row(_row(heart_rate_bpm=None, cadence_rpm=85))
    assert len(values) == len(ROW_COLUMNS) + 1 == 10
    sample = values[-1]
    # The first UDT field, heart_rate_bpm, is null: length -1 and no bytes.
    assert sample[:4] == b"\xff\xff\xff\xff"
    # The second, cadence_rpm: length 4, then 85.
    assert sample[4:12] == (4).to_bytes(4, "big") + (85).to_bytes(4, "big")


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
    columns = expected_columns()
    check_columns(columns)
    assert ("sample", f"frozen<{SAMPLE_TYPE}>") in columns
    hr = columns.index(("sample.heart_rate_bpm", "int"))
    with pytest.raises(StoreError, match="differ from central's"):
        check_columns([*columns[:hr], ("sample.heart_rate_bpm", "bigint"), *columns[hr + 1 :]])
    with pytest.raises(StoreError):
        check_columns(columns[:-1])
    # The table as an older central created it: every measurement a column of its own.
    wide = [(name, CQL_TYPES[name].replace("text", "varchar")) for name in COLUMNS]
    with pytest.raises(StoreError, match="db init"):
        check_columns(wide)
