"""What the store keeps: a telemetry row, the ledger's range rows, the store interface."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from central.errors import CentralError
from central.ledger import LedgerEntry, contiguous_runs

__all__ = [
    "StoreError",
    "StoreUnavailable",
    "TelemetryRow",
    "RangeRow",
    "TelemetryStore",
    "row_from_record",
    "rows_from_records",
    "range_rows",
    "day_of",
    "ARRIVAL_HOUR_US",
]

#: Width of a Cassandra ``arrivals`` partition: one hour of store writes
#: (the store writes it, the fleet reader reads it).
ARRIVAL_HOUR_US = 3_600_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_US_PER_DAY = 86_400_000_000


class StoreError(CentralError):
    """The store refused or cannot be used (schema missing, bad settings): not worth retrying."""


class StoreUnavailable(StoreError):
    """A transient store failure (Cassandra down or timing out): retry the same write later."""


class TelemetryRow(NamedTuple):
    """One record as central stores it: the tracker's fields, flattened, plus enrichment.

    The key is ``(device_id, boot_id, seq)``; ``day`` and ``timestamp_us``
    come from the record itself, so a redelivery lands on the same row.
    ``ingested_at_us`` is the time central wrote the row; a redelivery
    rewrites it and nothing else.
    """

    device_id: str
    day: date
    timestamp_us: int
    boot_id: uuid.UUID
    seq: int
    gateway_id: str
    site: str
    schema_version: int
    ingested_at_us: int
    heart_rate_bpm: int | None
    cadence_rpm: int | None
    speed_m_s: float | None
    distance_m: float | None
    latitude_deg: float | None
    longitude_deg: float | None
    altitude_m: float | None
    power_w: int | None
    temperature_c: float | None
    steps: int | None
    battery_pct: int | None
    host_uptime_s: int
    host_cpu_load: float
    host_free_memory_bytes: int
    rr_intervals_ms: list[int]
    respiration_rate_bpm: float | None
    sport: str | None


#: Column names in row order; both backends use them as their column names.
COLUMNS: tuple[str, ...] = TelemetryRow._fields
#: Fields copied as they are from a record resolved to the latest schema.
_PLAIN_FIELDS = COLUMNS[9:20]


class RangeRow(NamedTuple):
    """One ledger row: ``first_seq..last_seq`` of a boot are held (see :mod:`central.ledger`)."""

    device_id: str
    boot_id: uuid.UUID
    first_seq: int
    last_seq: int
    gateway_id: str
    site: str
    written_at_us: int


def day_of(timestamp_us: int) -> date:
    """The UTC day of a timestamp in microseconds: the telemetry partition."""
    return _EPOCH_DATE + timedelta(days=timestamp_us // _US_PER_DAY)


def _as_us(value: int | datetime) -> int:
    if isinstance(value, datetime):  # fastavro hands timestamp-micros back as aware datetimes
        return (value - _EPOCH) // _ONE_US
    return value


def rows_from_records(
    records: Iterable[dict[str, Any]],
    *,
    gateway_id: str,
    site: str,
    schema_version: int,
    ingested_at_us: int,
) -> list[TelemetryRow]:
    """Flatten records (resolved to the latest schema) and enrich them.

    The hot path of ingest: boot ids and days repeat within a batch, so each
    distinct one is parsed once.

    Raises:
        ValueError: a boot id is not a UUID (checked records never have one).
    """
    boots: dict[Any, uuid.UUID] = {}
    days: dict[int, date] = {}
    rows = []
    for record in records:
        ts_us = record["timestamp_us"]
        if not isinstance(ts_us, int):
            ts_us = _as_us(ts_us)
        day = days.get(ts_us // _US_PER_DAY)
        if day is None:
            day = days[ts_us // _US_PER_DAY] = day_of(ts_us)
        boot = boots.get(record["boot_id"])
        if boot is None:
            boot = boots[record["boot_id"]] = _as_uuid(record["boot_id"])
        host = record["host"]
        rows.append(
            TelemetryRow(
                record["device_id"],
                day,
                ts_us,
                boot,
                record["seq"],
                gateway_id,
                site,
                schema_version,
                ingested_at_us,
                *[record[name] for name in _PLAIN_FIELDS],
                host["uptime_s"],
                host["cpu_load"],
                host["free_memory_bytes"],
                list(record["rr_intervals_ms"]),
                record["respiration_rate_bpm"],
                record["sport"],
            )
        )
    return rows


def _as_uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def row_from_record(
    record: dict[str, Any], *, gateway_id: str, site: str, schema_version: int, ingested_at_us: int
) -> TelemetryRow:
    """Flatten one record (resolved to the latest schema) and enrich it.

    Raises:
        ValueError: its boot id is not a UUID.
    """
    return rows_from_records(
        [record],
        gateway_id=gateway_id,
        site=site,
        schema_version=schema_version,
        ingested_at_us=ingested_at_us,
    )[0]


def range_rows(rows: Iterable[TelemetryRow], written_at_us: int) -> list[RangeRow]:
    """The ledger rows a batch adds: one per contiguous run of each boot's seqs.

    The gateway and site of a run are those of the run's last row.
    """
    by_boot: dict[tuple[str, uuid.UUID], dict[int, TelemetryRow]] = defaultdict(dict)
    for row in rows:
        by_boot[(row.device_id, row.boot_id)][row.seq] = row
    out = []
    for (device_id, boot_id), seqs in by_boot.items():
        for first, last in contiguous_runs(seqs):
            tail = seqs[last]
            out.append(
                RangeRow(device_id, boot_id, first, last, tail.gateway_id, tail.site, written_at_us)
            )
    return out


class TelemetryStore(Protocol):
    """Where central keeps telemetry and the loss ledger (SQLite or Cassandra).

    Implementations are safe to share between threads, and several processes
    may write the same store at once.
    """

    def init_schema(self) -> None:
        """Create the keyspace/tables if missing (idempotent)."""

    def write(self, rows: Sequence[TelemetryRow]) -> None:
        """Upsert ``rows``, then add their ledger ranges; return only when all are accepted.

        Raises:
            StoreUnavailable: transient failure; some rows may be written, and
                writing the same rows again is safe.
            StoreError: a permanent failure (no schema, bad settings).
        """

    def ledger(self, device_id: str | None = None) -> list[LedgerEntry]:
        """The ledger of every boot (of one device), sorted by device then boot."""

    def compact_ledger(self, min_rows: int = 2) -> int:
        """Merge the range rows of boots with at least ``min_rows``; return boots compacted."""

    def telemetry(self, device_id: str, start_us: int, end_us: int) -> list[TelemetryRow]:
        """One device's rows with ``start_us <= timestamp_us < end_us``, oldest first.

        Raises:
            StoreError: the range spans more than :data:`MAX_QUERY_DAYS` days.
        """

    def close(self) -> None:
        """Release connections."""


#: Longest time range one telemetry read may span: each day is one partition
#: read in Cassandra, so an open-ended range would mean thousands of queries.
MAX_QUERY_DAYS = 366


def days_between(start_us: int, end_us: int) -> list[date]:
    """The UTC days a half-open time range touches (the partitions to read).

    Raises:
        StoreError: the range spans more than :data:`MAX_QUERY_DAYS` days.
    """
    if end_us <= start_us:
        return []
    if end_us - start_us > MAX_QUERY_DAYS * _US_PER_DAY:
        raise StoreError(
            f"a telemetry read spans at most {MAX_QUERY_DAYS} days; split the time range"
        )
    first, last = day_of(start_us), day_of(end_us - 1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
