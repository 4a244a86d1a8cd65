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
from typing import Any

from fastavro import reader as ocf_reader

from firmware_shim._records import LATEST_SCHEMA_VERSION, SchemaInfo, schema

__all__ = [
    "EXCHANGE",
    "FORMAT",
    "CONTENT_TYPE",
    "MAX_MESSAGE_BYTES",
    "routing_key",
    "build_message",
    "read_message",
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


def read_message(body: bytes, reader_version: int = LATEST_SCHEMA_VERSION) -> Iterator[dict[str, Any]]:
    """Yield the records of an uplink message (or bundle OCF), resolved to ``reader_version``.

    Raises:
        ValueError: the body is not a readable OCF (fastavro's errors are chained).
    """
    if not body.startswith(_MAGIC):
        raise ValueError("message body is not an Avro object container file")
    try:
        records = ocf_reader(io.BytesIO(body), reader_schema=schema(reader_version).parsed)
        yield from records
    except (ValueError, EOFError, KeyError, IndexError, zlib.error) as exc:
        raise ValueError(f"unreadable Avro container: {type(exc).__name__}: {exc}") from exc
