"""read_message (the compiled-reader OCF path) against fastavro's reader of the same containers."""

from __future__ import annotations

import io
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest

from firmware_shim import encode_record, schema, split_soe
from firmware_shim.uplink_format import MAX_BLOCK_BYTES, build_message, read_message

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _record(seq: int, version: int = 2) -> dict[str, Any]:
    record = {
        "device_id": "gym-3", "boot_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "seq": seq,
        "timestamp_us": 1_735_000_000_000_000 + seq * 1_000_000, "heart_rate_bpm": 100 + seq % 50,
        "cadence_rpm": None, "speed_m_s": 2.5, "distance_m": 2.5 * seq, "latitude_deg": 47.1,
        "longitude_deg": 8.2, "altitude_m": None, "power_w": None, "temperature_c": 19.5, "steps": seq,
        "battery_pct": 88, "host": {"uptime_s": seq, "cpu_load": 0.5, "free_memory_bytes": 1 << 30},
    }
    if version == 2:
        record.update(rr_intervals_ms=[800 + seq % 7], respiration_rate_bpm=None, sport="rowing")
    return record


def _fastavro_plain(body: bytes) -> list[dict[str, Any]]:
    """fastavro's reading, with its logical-type objects turned back into wire values."""
    out = []
    for record in fastavro.reader(io.BytesIO(body), reader_schema=schema(2).parsed):
        record = dict(record, boot_id=str(record["boot_id"]))
        if isinstance(record["timestamp_us"], datetime):
            record["timestamp_us"] = (record["timestamp_us"] - _EPOCH) // timedelta(microseconds=1)
        out.append(record)
    return out


@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("version", [1, 2])
def test_reads_what_fastavro_reads(version: int, codec: str) -> None:
    datums = [split_soe(encode_record(_record(seq, version), version))[1] for seq in range(1, 301)]
    body = build_message(schema(version), datums, codec)
    records = list(read_message(body))
    assert [r["seq"] for r in records] == list(range(1, 301))
    assert records == _fastavro_plain(body)


def test_reads_containers_of_many_blocks_written_by_fastavro() -> None:
    records = [_record(seq) for seq in range(1, 101)]
    buf = io.BytesIO()
    # fastavro writes the schema with its logical types, as any Avro writer would.
    fastavro.writer(buf, fastavro.parse_schema(schema(2).json), records, codec="deflate", sync_interval=300)
    body = buf.getvalue()
    assert sum(1 for _ in fastavro.block_reader(io.BytesIO(body))) > 5
    assert list(read_message(body)) == records


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body[:-20],  # cut inside the last block
        lambda body: body[:-1],  # cut inside the final sync marker
        lambda body: body + b"\x02",  # a stray byte where a block would start
        lambda body: body[:-16] + bytes(16),  # the sync marker replaced
    ],
    ids=["cut-in-block", "cut-in-sync", "trailing-byte", "wrong-sync"],
)
def test_damaged_containers_raise_value_error(damage) -> None:
    body = build_message(schema(2), [split_soe(encode_record(_record(s)))[1] for s in range(1, 20)], "null")
    with pytest.raises(ValueError, match="unreadable Avro container|block|sync"):
        list(read_message(damage(body)))


def test_a_block_inflating_past_the_cap_is_refused() -> None:
    body = build_message(schema(2), [], "deflate")
    empty = zlib.compressobj(1, zlib.DEFLATED, -15)
    empty_block = empty.compress(b"") + empty.flush()
    # An empty message: header, count 0, size, the deflated nothing, sync.
    header_end = len(body) - 16 - len(empty_block) - len(_zigzag(len(empty_block))) - 1
    sync = body[-16:]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(MAX_BLOCK_BYTES + 1)) + compressor.flush()
    count, size = _zigzag(1), _zigzag(len(bomb))
    with pytest.raises(ValueError, match="inflates to more than"):
        list(read_message(body[:header_end] + count + size + bomb + sync))


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
