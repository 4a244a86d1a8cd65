"""The uplink message format: how telemetry travels from a gateway to central.

One AMQP message carries one batch of records as an Avro Object Container
File (OCF) holding a single block. All records of a message share their
writer schema (the tracker's), named in the OCF header, so central resolves
v1 and v2 writers to the schema it reads with. The gateway builds the block
from the datums exactly as trackers sent them, without re-encoding.

AMQP properties and headers (all required unless marked optional):

=========================  ==============================================
exchange                   ``pulsegate.telemetry`` (topic, durable)
routing key                ``telemetry.<site>.<gateway_id>``
content_type               ``application/vnd.pulsegate.telemetry+avro``
delivery_mode              2 (persistent)
message_id                 ``<gateway_id>:<first outbox id>-<last outbox id>``
header ``pulsegate-format``  ``telemetry-ocf/1``
header ``gateway-id``        the sending gateway's id
header ``site``              the gym's site id
header ``record-count``      records in the block
header ``received-at-us``    optional: gateway receive time of the newest record
=========================  ==============================================

A bundle file (sneakernet) is the same OCF, larger and signed: see BUNDLE.md.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from fastavro import reader as ocf_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

from firmware_shim._records import (
    DATUM_ERRORS,
    LATEST_SCHEMA_VERSION,
    SchemaInfo,
    datum_reader,
    schema,
    schema_by_fingerprint,
)

__all__ = [
    "EXCHANGE",
    "FORMAT",
    "CONTENT_TYPE",
    "MAX_MESSAGE_BYTES",
    "routing_key",
    "build_message",
    "read_message",
    "container_schema_text",
]

EXCHANGE = "pulsegate.telemetry"
FORMAT = "telemetry-ocf/1"
CONTENT_TYPE = "application/vnd.pulsegate.telemetry+avro"
#: Cap on one message's body. RabbitMQ handles far larger, but big messages
#: stall the confirm pipeline and a redelivery repeats more work; 1 MiB holds
#: several thousand records.
MAX_MESSAGE_BYTES = 1 << 20

_MAGIC = b"Obj\x01"


def routing_key(site: str, gateway_id: str) -> str:
    """The routing key of a gateway's telemetry messages."""
    return f"telemetry.{site}.{gateway_id}"


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(data: bytes) -> bytes:
    return _zigzag(len(data)) + data


def build_message(writer: SchemaInfo, datums: Sequence[bytes], codec: str = "deflate") -> bytes:
    """Return an OCF holding ``datums`` (binary Avro, written with ``writer``) as one block.

    Args:
        writer: the schema every datum was written with.
        datums: the records' binary encodings (an SOE payload minus its 10-byte header).
        codec: ``null`` or ``deflate``.
    """
    if codec not in ("null", "deflate"):
        raise ValueError(f"codec must be 'null' or 'deflate', got {codec!r}")
    sync = os.urandom(16)
    meta = {"avro.schema": json.dumps(writer.json).encode(), "avro.codec": codec.encode()}
    header = bytearray(_MAGIC)
    header += _zigzag(len(meta))
    for key, value in meta.items():
        header += _avro_bytes(key.encode()) + _avro_bytes(value)
    header += b"\x00" + sync
    data = b"".join(datums)
    if codec == "deflate":
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        data = compressor.compress(data) + compressor.flush()
    return bytes(header) + _zigzag(len(datums)) + _zigzag(len(data)) + data + sync


#: Largest decompressed block accepted: a 1 MiB message of deflated records
#: inflates to a few MiB; more is a deflate bomb, not telemetry.
MAX_BLOCK_BYTES = 64 << 20
_SYNC_BYTES = 16


def read_message(body: bytes, reader_version: int = LATEST_SCHEMA_VERSION) -> Iterator[dict[str, Any]]:
    """Yield the records of an uplink message (or bundle OCF), resolved to ``reader_version``.

    Records hold the wire's plain values (int ``timestamp_us``, str
    ``boot_id``). A container written with a known telemetry schema is read
    with the compiled datum reader; any other with fastavro.

    Raises:
        ValueError: the body is not a readable OCF.
    """
    if not body.startswith(_MAGIC):
        raise ValueError("message body is not an Avro object container file")
    try:
        meta, pos = _read_header(body)
        writer = _known_version(meta.get("avro.schema", b""))
        codec = meta.get("avro.codec", b"null").decode("ascii", "replace")
        if writer is None or codec not in ("null", "deflate"):
            yield from _read_with_fastavro(body, reader_version)
            return
        read = datum_reader(writer, reader_version)
        sync = body[pos - _SYNC_BYTES:pos]
        while pos < len(body):
            count, pos = _long(body, pos)
            size, pos = _long(body, pos)
            if count < 0 or size < 0 or pos + size + _SYNC_BYTES > len(body):
                raise ValueError(f"block at offset {pos} claims {count} records in {size} bytes")
            data = body[pos:pos + size]
            pos += size
            if body[pos:pos + _SYNC_BYTES] != sync:
                raise ValueError(f"sync marker missing after the block ending at offset {pos}")
            pos += _SYNC_BYTES
            if codec == "deflate":
                data = _inflate(data)
            at = 0
            for _ in range(count):
                record, at = read(data, at)
                yield record
            if at != len(data):
                raise ValueError(f"{len(data) - at} bytes left over after the block's {count} records")
    except DATUM_ERRORS as exc:
        raise ValueError(f"unreadable Avro container: {type(exc).__name__}: {exc}") from exc
    except zlib.error as exc:
        raise ValueError(f"unreadable Avro container: deflate: {exc}") from exc


def container_schema_text(body: bytes) -> bytes:
    """The writer schema (JSON text) a container's header names.

    Raises:
        ValueError: ``body`` is not an OCF, its header is garbled, or it names no schema.
    """
    if not body.startswith(_MAGIC):
        raise ValueError("no Obj\\x01 magic")
    try:
        meta, _ = _read_header(body)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"header cut short or garbled ({type(exc).__name__})") from None
    if "avro.schema" not in meta:
        raise ValueError("no avro.schema in the header")
    return meta["avro.schema"]


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint at offset {pos} is longer than 10 bytes")


def _read_header(body: bytes) -> tuple[dict[str, bytes], int]:
    """The OCF metadata map and the offset after the sync marker."""
    meta: dict[str, bytes] = {}
    pos = len(_MAGIC)
    while True:
        count, pos = _long(body, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _long(body, pos)  # the block's size in bytes
        for _ in range(count):
            key_len, pos = _long(body, pos)
            key = body[pos:pos + key_len].decode()
            pos += key_len
            value_len, pos = _long(body, pos)
            if key_len < 0 or value_len < 0 or pos + value_len > len(body):
                raise ValueError("container metadata overruns the body")
            meta[key] = body[pos:pos + value_len]
            pos += value_len
    if pos + _SYNC_BYTES > len(body):
        raise ValueError("container header ends before its sync marker")
    return meta, pos + _SYNC_BYTES


@lru_cache(maxsize=16)  # a handful of schema versions, each the same bytes every time
def _known_version(schema_json: bytes) -> int | None:
    try:
        fp = fingerprint(to_parsing_canonical_form(json.loads(schema_json)), "CRC-64-AVRO")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    info = schema_by_fingerprint(bytes.fromhex(fp))
    return None if info is None else info.version


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    # Short of the limit, decompress() has returned everything.
    out = inflater.decompress(data, MAX_BLOCK_BYTES + 1)
    if len(out) > MAX_BLOCK_BYTES:
        raise ValueError(f"a block inflates to more than {MAX_BLOCK_BYTES} bytes")
    return out


def _read_with_fastavro(body: bytes, reader_version: int) -> Iterator[dict[str, Any]]:
    try:
        yield from ocf_reader(io.BytesIO(body), reader_schema=schema(reader_version).parsed)
    except (ValueError, EOFError, KeyError, IndexError, zlib.error) as exc:
        raise ValueError(f"unreadable Avro container: {type(exc).__name__}: {exc}") from exc
