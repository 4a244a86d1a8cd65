"""The compiled Avro datum reader against fastavro, the reference it replaces in the hot path."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_strategies import records_v2

from firmware_shim._datum_reader import BadDatum, UnsupportedSchema, compile_reader
from firmware_shim._records import DATUM_ERRORS, schema

V2_ONLY = {"rr_intervals_ms", "respiration_rate_bpm", "sport"}


def write(record: dict[str, Any], version: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(version).parsed, record)
    return buf.getvalue()


def fastavro_read(datum: bytes, writer: int, reader: int) -> tuple[dict[str, Any], int]:
    stream = io.BytesIO(datum)
    reader_schema = schema(reader).parsed if reader != writer else None
    return fastavro.schemaless_reader(stream, schema(writer).parsed, reader_schema), stream.tell()


def compiled(writer: int, reader: int):
    return compile_reader(schema(writer).json, schema(reader).json if reader != writer else None)


@settings(max_examples=300, deadline=None)
@given(records_v2, st.sampled_from([(2, 2), (1, 2), (1, 1), (2, 1)]))
def test_reads_what_fastavro_reads(record: dict[str, Any], versions: tuple[int, int]) -> None:
    writer, reader = versions
    if writer == 1:
        record = {k: v for k, v in record.items() if k not in V2_ONLY}
    datum = write(record, writer)
    assert compiled(writer, reader)(datum, 0) == fastavro_read(datum, writer, reader)


@settings(max_examples=400, deadline=None)
@given(records_v2, st.data())
def test_corrupted_datums_fail_or_agree_with_fastavro(record: dict[str, Any], data: st.DataObject) -> None:
    datum = bytearray(write(record, 2))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(datum) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            datum[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del datum[where:]
            if not datum:
                datum.append(0)
        else:
            datum.insert(where, data.draw(st.integers(0, 255)))
    datum = bytes(datum)
    try:
        mine: Any = compiled(2, 2)(datum, 0)
    except DATUM_ERRORS as exc:
        mine = type(exc)
    try:
        theirs: Any = fastavro_read(datum, 2, 2)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types; only failure matters
        theirs = type(exc)
    if isinstance(mine, tuple):
        # Whatever the compiled reader accepts, fastavro reads the same way.
        assert mine == theirs
    elif isinstance(theirs, tuple):
        # Stricter than fastavro in two documented ways only: a negative union
        # branch index (fastavro indexes the branch list from its end) and a
        # varint over ten bytes (fastavro wraps it; Avro's Java reader refuses).
        assert mine is BadDatum, (mine, theirs)
        assert _stricter_by_design(datum), datum.hex()


def _stricter_by_design(datum: bytes) -> bool:
    """Does the compiled reader refuse ``datum`` for one of its two documented strictnesses?"""
    try:
        compiled(2, 2)(datum, 0)
    except BadDatum as exc:
        text = str(exc)
        negative_union = "union branch varint" in text and int(text.split()[3]) % 2 == 1
        return negative_union or "longer than 10 bytes" in text
    return False


def test_a_union_index_padded_to_two_bytes_reads_as_fastavro_reads_it() -> None:
    """Found by the corruption test: 0x80 0x00 is a non-canonical varint 0, the null branch."""
    datum = bytes.fromhex(
        "00480065336537303638322d633230392d346361632d363239662d3666626564383263303763640000000000000000"
        "020000008000000000000000000000000000"
    )
    assert compiled(2, 2)(datum, 0) == fastavro_read(datum, 2, 2)


def test_v1_defaults_are_fresh_for_every_record() -> None:
    v1 = {k: v for k, v in _plain_record().items() if k not in V2_ONLY}
    read = compiled(1, 2)
    first, _ = read(write(v1, 1), 0)
    first["rr_intervals_ms"].append(700)
    second, _ = read(write(v1, 1), 0)
    assert second["rr_intervals_ms"] == []


def test_reads_consecutive_datums_from_one_buffer() -> None:
    records = [dict(_plain_record(), seq=seq) for seq in range(1, 6)]
    block = b"".join(write(r, 2) for r in records)
    read, pos, out = compiled(2, 2), 0, []
    while pos < len(block):
        record, pos = read(block, pos)
        out.append(record)
    assert out == records


@pytest.mark.parametrize(
    ("datum", "message"),
    [
        (b"\x02a\x02b" + b"\xff" * 11, "longer than 10 bytes"),  # seq varint never ends
        (b"\x7fabc", "overruns the datum"),  # device_id claims 63 bytes
        (b"\x01", "overruns the datum"),  # negative string length
    ],
)
def test_malformed_datums_name_the_fault(datum: bytes, message: str) -> None:
    with pytest.raises(BadDatum, match=message):
        compiled(2, 2)(datum, 0)


def test_an_array_count_beyond_the_datum_is_refused_before_allocating() -> None:
    head = write({k: v for k, v in _plain_record().items() if k not in V2_ONLY}, 1)
    # v2 datum: the v1 fields, then an array block claiming 2^40 items.
    huge = 2**40 << 1
    varint = bytearray()
    while huge > 0x7F:
        varint.append((huge & 0x7F) | 0x80)
        huge >>= 7
    varint.append(huge)
    with pytest.raises(BadDatum, match="array block of 1099511627776 items"):
        compiled(2, 2)(head + bytes(varint), 0)


@pytest.mark.parametrize(
    "field_type",
    [{"type": "map", "values": "int"}, {"type": "enum", "name": "E", "symbols": ["A"]},
     {"type": "fixed", "name": "F", "size": 4}],
    ids=["map", "enum", "fixed"],
)
def test_types_it_does_not_cover_are_refused_at_compile_time(field_type: dict) -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    with pytest.raises(UnsupportedSchema):
        compile_reader(json.loads(json.dumps(writer)))


def test_a_reader_field_without_default_missing_from_the_writer_is_refused() -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    reader = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]}
    with pytest.raises(UnsupportedSchema, match="'b'"):
        compile_reader(writer, reader)


def _plain_record() -> dict[str, Any]:
    return {
        "device_id": "gym-7", "boot_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "seq": 1,
        "timestamp_us": 1_700_000_000_000_000, "heart_rate_bpm": 131, "cadence_rpm": None, "speed_m_s": 2.5,
        "distance_m": 1234.5, "latitude_deg": None, "longitude_deg": None, "altitude_m": None, "power_w": 250,
        "temperature_c": None, "steps": None, "battery_pct": 90,
        "host": {"uptime_s": 3600, "cpu_load": 0.25, "free_memory_bytes": 1 << 28},
        "rr_intervals_ms": [812, 790], "respiration_rate_bpm": None, "sport": "cycling",
    }
