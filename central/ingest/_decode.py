"""Turning an AMQP delivery (or a chunk of a bundle) into a batch central can write."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from central.errors import CentralError
from central.store import TelemetryRow, TelemetryStore, rows_from_records
from firmware_shim import schema_by_fingerprint, validate_record
from firmware_shim.uplink_format import FORMAT, container_schema_text, read_message

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


#: Distinct writer-schema texts whose version is remembered. A fleet sends a
#: handful (one per schema version and gateway build); the cap keeps a sender
#: of ever-new schema texts from growing the cache.
_SCHEMA_TEXTS_REMEMBERED = 64


@lru_cache(maxsize=_SCHEMA_TEXTS_REMEMBERED)
def _version_of_schema_text(text: bytes) -> int:
    """The telemetry version whose fingerprint the schema ``text`` has (parsing costs ~1 ms)."""
    try:
        pcf = to_parsing_canonical_form(json.loads(text))
        fp = bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
    except Exception as exc:  # json and fastavro raise ValueError, KeyError, TypeError... on junk
        raise PoisonMessage(
            "not_avro", f"the container's schema is unreadable ({type(exc).__name__}: {exc})"
        ) from None
    info = schema_by_fingerprint(fp)
    if info is None:
        raise PoisonMessage(
            "unknown_schema", f"writer schema fingerprint {fp.hex()} is no known telemetry schema"
        )
    return info.version


def writer_version(ocf: bytes) -> int:
    """The telemetry schema version an OCF was written with, from its header.

    Raises:
        PoisonMessage: ``not_avro`` or ``unknown_schema``.
    """
    try:
        text = container_schema_text(ocf)
    except ValueError as exc:
        raise PoisonMessage("not_avro", f"not an Avro container file ({exc})") from None
    return _version_of_schema_text(text)


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
    boot_ids_seen: set[Any] = set()  # a batch holds a few boots: parse each once
    for record in records:
        why = validate_record(record)
        boot_id = record["boot_id"]
        if why is None and boot_id not in boot_ids_seen:
            why = _uuid_problem(boot_id)
            boot_ids_seen.add(boot_id)
        if why is not None:
            raise PoisonMessage(
                "invalid_record", f"device {record['device_id'][:64]!r} seq {record['seq']}: {why}"
            )


def _uuid_problem(boot_id: Any) -> str | None:
    """Why ``boot_id`` (a str from the wire, or a UUID from fastavro) is no UUID, or None."""
    if isinstance(boot_id, uuid.UUID):
        return None
    try:
        uuid.UUID(boot_id)
    except (ValueError, TypeError, AttributeError):
        return f"boot_id {str(boot_id)[:_MAX_QUOTED_CHARS]!r} is not a UUID"
    return None


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
        records = list(read_message(body))  # resolved to the latest schema
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
    rows: list[TelemetryRow] = []
    for b in batches:
        rows += rows_from_records(
            b.records,
            gateway_id=b.gateway_id,
            site=b.site,
            schema_version=b.schema_version,
            ingested_at_us=ingested_at_us,
        )
    return rows


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
