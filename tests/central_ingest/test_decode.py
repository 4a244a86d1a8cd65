"""Decoding uplink messages: v1 and v2 writers, enrichment, and what is poison."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
from pathlib import Path

import fastavro
import pytest

from central.ingest import (
    PoisonMessage,
    accept_batches,
    check_records,
    decode_delivery,
    writer_version,
)
from central.store._sqlite import SqliteStore
from central_ingest.testdata import T0_US, make_record, message_body, message_headers
from firmware_shim import schema

BOOT = str(uuid.UUID(int=1))


def test_v1_and_v2_writers_in_one_stream_land_as_the_same_rows(tmp_path: Path) -> None:
    """A v1 tracker and a v2 tracker send the same samples; v1 rows get the v2 defaults."""
    v2 = [make_record("dev-2", BOOT, s) for s in range(1, 6)]
    v1 = [
        {
            k: v
            for k, v in r.items()
            if k not in ("rr_intervals_ms", "respiration_rate_bpm", "sport")
        }
        | {"device_id": "dev-1"}
        for r in v2
    ]
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    batches = [
        decode_delivery(message_body(v1, version=1), message_headers(5)),
        decode_delivery(
            message_body(v2, version=2), message_headers(5, gateway_id="gw-2", site="gym-b")
        ),
    ]
    assert [b.schema_version for b in batches] == [1, 2]
    assert accept_batches(store, batches) == 10

    rows1 = store.telemetry("dev-1", T0_US, T0_US + 10_000_000)
    rows2 = store.telemetry("dev-2", T0_US, T0_US + 10_000_000)
    assert [r.seq for r in rows1] == [r.seq for r in rows2] == [1, 2, 3, 4, 5]
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r1.timestamp_us == T0_US + r1.seq * 1_000_000
        assert (r1.heart_rate_bpm, r1.distance_m, r1.host_uptime_s) == (
            r2.heart_rate_bpm,
            r2.distance_m,
            r2.host_uptime_s,
        )
        assert (r1.rr_intervals_ms, r1.respiration_rate_bpm, r1.sport) == ([], None, None)
        assert (r2.rr_intervals_ms, r2.respiration_rate_bpm, r2.sport) == (
            [800, 810],
            14.0,
            "running",
        )
        assert (r1.gateway_id, r1.site, r1.schema_version) == ("gw-1", "gym-a", 1)
        assert (r2.gateway_id, r2.site, r2.schema_version) == ("gw-2", "gym-b", 2)
        assert str(r1.day) == "2025-03-01"


def test_redelivered_message_changes_no_telemetry_value(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    body = message_body([make_record("dev", BOOT, s) for s in range(1, 51)])
    accept_batches(store, [decode_delivery(body, message_headers(50))])
    first = store.telemetry("dev", T0_US, T0_US + 86_400_000_000)
    ledger = store.ledger()
    accept_batches(store, [decode_delivery(body, message_headers(50))])
    again = store.telemetry("dev", T0_US, T0_US + 86_400_000_000)
    assert len(again) == 50
    # Only the write time moves; every telemetry value and the key stay.
    assert [r._replace(ingested_at_us=0) for r in again] == [
        r._replace(ingested_at_us=0) for r in first
    ]
    assert store.ledger() == ledger
    count = (
        sqlite3.connect(tmp_path / "t.sqlite3").execute("SELECT count(*) FROM telemetry").fetchone()
    )
    assert count == (50,)


def _foreign_ocf() -> bytes:
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(other), [{"x": 1}])
    return buf.getvalue()


def _v2_with_extra_field() -> bytes:
    """An OCF whose writer schema is v2 plus one field: readable, but no known schema."""
    changed = json.loads(json.dumps(schema(2).json))
    changed["fields"].append({"name": "mood", "type": "int", "default": 0})
    buf = io.BytesIO()
    fastavro.writer(
        buf, fastavro.parse_schema(changed), [make_record("dev", BOOT, 1) | {"mood": 3}]
    )
    return buf.getvalue()


GOOD = message_body([make_record("dev", BOOT, 1), make_record("dev", BOOT, 2)])


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"not avro at all", message_headers(1), "not_avro"),
        (b"Obj\x01garbage", message_headers(1), "not_avro"),
        (_foreign_ocf(), message_headers(1), "unknown_schema"),
        (_v2_with_extra_field(), message_headers(1), "unknown_schema"),
        (GOOD[:-30], message_headers(2), "bad_datum"),
        (GOOD, message_headers(3), "count_mismatch"),
        (GOOD, {**message_headers(2), "pulsegate-format": "telemetry-ocf/9"}, "bad_header"),
        (GOOD, {k: v for k, v in message_headers(2).items() if k != "gateway-id"}, "bad_header"),
        (GOOD, {**message_headers(2), "record-count": "2"}, "bad_header"),
        (GOOD, None, "bad_header"),
        (
            message_body([make_record("dev", BOOT, 1, heart_rate_bpm=400)]),
            message_headers(1),
            "invalid_record",
        ),
        (message_body([make_record("dev", BOOT, 0)]), message_headers(1), "invalid_record"),
    ],
    ids=[
        "text",
        "bad-ocf",
        "foreign-schema",
        "changed-schema",
        "truncated",
        "count",
        "format",
        "no-gateway",
        "count-type",
        "no-headers",
        "implausible",
        "seq-zero",
    ],
)
def test_poison_messages_are_named_by_reason(
    body: bytes, headers: dict | None, reason: str
) -> None:
    with pytest.raises(PoisonMessage) as caught:
        decode_delivery(body, headers)
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)


def test_bytes_headers_are_accepted() -> None:
    """pika hands some brokers' string headers back as bytes."""
    headers = {k: (v.encode() if isinstance(v, str) else v) for k, v in message_headers(2).items()}
    batch = decode_delivery(GOOD, headers)
    assert (batch.gateway_id, batch.site, len(batch.records)) == ("gw-1", "gym-a", 2)


def test_a_record_whose_boot_id_is_no_uuid_is_poison() -> None:
    """The wire carries boot ids as strings; one that is no UUID would fail the write later."""
    good = [make_record("dev", BOOT, 1), make_record("dev", BOOT, 2)]
    check_records(good)
    with pytest.raises(PoisonMessage) as caught:
        check_records([*good, make_record("dev", "boot-7", 3)])
    assert caught.value.reason == "invalid_record"
    assert "'boot-7' is not a UUID" in str(caught.value) and "seq 3" in str(caught.value)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _with_blocked_metadata(ocf: bytes, version: int) -> bytes:
    """The same OCF, its header map rewritten as two blocks, the first with a negative count.

    The Avro spec lets a writer give a block's count as negative followed by its
    size in bytes; fastavro never does, other writers may.
    """
    # The old map's last entry is the codec: its key, its value's length, its value.
    map_end = ocf.index(b"avro.codec") + len(b"avro.codec") + 1 + len(b"deflate")
    assert ocf[map_end] == 0
    schema_entry = _zigzag(11) + b"avro.schema" + _zigzag(len(text := _schema_text(version))) + text
    codec_entry = _zigzag(10) + b"avro.codec" + _zigzag(7) + b"deflate"
    header = (
        b"Obj\x01"
        + _zigzag(-1)
        + _zigzag(len(codec_entry))
        + codec_entry
        + _zigzag(1)
        + schema_entry
        + b"\x00"
    )
    return header + ocf[map_end + 1 :]


def _schema_text(version: int) -> bytes:
    return json.dumps(schema(version).json).encode()


@pytest.mark.parametrize("version", [1, 2])
def test_writer_version_reads_a_header_map_in_blocks(version: int) -> None:
    body = message_body([make_record("dev", BOOT, 1)], version=version)
    assert writer_version(body) == version
    assert writer_version(_with_blocked_metadata(body, version)) == version


@pytest.mark.parametrize(
    "header",
    [b"Obj\x01", b"Obj\x01\x02", b"Obj\x01\x02\x16avro.schema\xff", b"Obj\x01\x00" + b"\x00" * 16],
    ids=["no-map", "cut-in-map", "bad-length", "no-schema"],
)
def test_a_damaged_header_is_not_avro(header: bytes) -> None:
    with pytest.raises(PoisonMessage) as caught:
        writer_version(header)
    assert caught.value.reason == "not_avro"
