"""Turning an AMQP delivery (or a chunk of a bundle) into a batch central can write."""

from __future__ import annotations

import io
import json
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastavro import reader as ocf_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

from central.errors import CentralError
from central.store import TelemetryRow, TelemetryStore, row_from_record
from firmware_shim import LATEST_SCHEMA_VERSION, schema_by_fingerprint, validate_record
from firmware_shim.uplink_format import FORMAT, read_message

__all__ = [
    "PoisonMessage",
    "DecodedBatch",
    "decode_delivery",
    "check_records",
    "accept_batches",
    "writer_version",
]

#: Longest header value copied into an error message: a hostile header cannot flood the logs.
_MAX_QUOTED_CHARS = 80


class PoisonMessage(CentralError):
    """A message no retry can ingest; ``reason`` is a short code for metrics and the DLQ header."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedBatch:
    """The records of one message or bundle chunk, with what central adds to them.

    Attributes:
        gateway_id: The gateway that sent (or signed) them.
        site: The gateway's site.
        schema_version: The writer schema of the records (they are resolved to the latest).
        records: The records, as the latest schema reads them.
        gateway_received_at_us: When the gateway received the newest record, if known.
    """

    gateway_id: str
    site: str
    schema_version: int
    records: list[dict[str, Any]]
    gateway_received_at_us: int | None = None


def writer_version(ocf: bytes) -> int:
    """The telemetry schema version an OCF was written with, from its header.

    Raises:
        PoisonMessage: ``not_avro`` or ``unknown_schema``.
    """
    try:
        header_schema = json.loads(ocf_reader(io.BytesIO(ocf)).metadata["avro.schema"])
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(header_schema), "CRC-64-AVRO"))
    except Exception as exc:  # fastavro raises ValueError, EOFError, KeyError... on a bad header
        raise PoisonMessage(
            "not_avro", f"not an Avro container file ({type(exc).__name__}: {exc})"
        ) from None
    info = schema_by_fingerprint(fp)
    if info is None:
        raise PoisonMessage(
            "unknown_schema", f"writer schema fingerprint {fp.hex()} is no known telemetry schema"
        )
    return info.version


def _read_records(body: bytes, version: int) -> list[dict[str, Any]]:
    if version != LATEST_SCHEMA_VERSION:
        return list(read_message(body))
    # Same result as read_message, twice as fast: fastavro resolves schemas
    # record by record whenever a reader schema is given, even an identical one.
    try:
        return list(ocf_reader(io.BytesIO(body)))
    except (ValueError, EOFError, KeyError, IndexError, zlib.error) as exc:
        raise ValueError(f"unreadable Avro container: {type(exc).__name__}: {exc}") from exc


def _header(headers: Mapping[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value:
        raise PoisonMessage(
            "bad_header",
            f"header {name!r} is missing or not a string: {str(value)[:_MAX_QUOTED_CHARS]!r}",
        )
    return value


def _int_header(headers: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = headers.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoisonMessage(
            "bad_header",
            f"header {name!r} must be an integer, got {str(value)[:_MAX_QUOTED_CHARS]!r}",
        )
    return value


def check_records(records: Iterable[dict[str, Any]]) -> None:
    """Refuse a batch holding an implausible record (the gateway's own acceptance rule).

    Raises:
        PoisonMessage: ``invalid_record``, naming the first bad record.
    """
    for record in records:
        why = validate_record(record)
        if why is not None:
            raise PoisonMessage(
                "invalid_record", f"device {record['device_id'][:64]!r} seq {record['seq']}: {why}"
            )


def decode_delivery(body: bytes, headers: Mapping[str, Any] | None) -> DecodedBatch:
    """Decode one uplink message (see :mod:`firmware_shim.uplink_format`).

    Raises:
        PoisonMessage: ``bad_header``, ``not_avro``, ``unknown_schema``,
            ``bad_datum``, ``count_mismatch`` or ``invalid_record``.
    """
    headers = headers or {}
    fmt = headers.get("pulsegate-format")
    fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise PoisonMessage(
            "bad_header",
            f"pulsegate-format is {str(fmt)[:_MAX_QUOTED_CHARS]!r}, expected {FORMAT!r}",
        )
    gateway_id = _header(headers, "gateway-id")
    site = _header(headers, "site")
    count = _int_header(headers, "record-count", required=True)
    received_at_us = _int_header(headers, "received-at-us", required=False)
    version = writer_version(body)
    try:
        records = _read_records(body, version)
    except ValueError as exc:
        raise PoisonMessage("bad_datum", str(exc)) from None
    if len(records) != count:
        raise PoisonMessage(
            "count_mismatch", f"header record-count is {count} but the body holds {len(records)}"
        )
    check_records(records)
    return DecodedBatch(gateway_id, site, version, records, received_at_us)


def rows_of(batches: Iterable[DecodedBatch], ingested_at_us: int) -> list[TelemetryRow]:
    """Flatten and enrich the records of ``batches``."""
    return [
        row_from_record(
            record,
            gateway_id=b.gateway_id,
            site=b.site,
            schema_version=b.schema_version,
            ingested_at_us=ingested_at_us,
        )
        for b in batches
        for record in b.records
    ]


def accept_batches(store: TelemetryStore, batches: Sequence[DecodedBatch]) -> int:
    """Write decoded batches to the store: the one path of live ingest and bundle import.

    Returns:
        The number of records written.

    Raises:
        StoreUnavailable: retry with the same batches later (the write is idempotent).
        StoreError: the store cannot be used.
    """
    rows = rows_of(batches, time.time_ns() // 1000)
    store.write(rows)
    return len(rows)
