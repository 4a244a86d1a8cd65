"""The Cassandra store: telemetry partitioned by device and day, and the ledger.

Tables (keyspace from ``[cassandra] keyspace``):

``telemetry``  ``PRIMARY KEY ((device_id, day), timestamp_us, boot_id, seq)``,
    newest first; central's enrichment in columns of their own, the
    tracker's measurements in one ``sample frozen<telemetry_sample>`` cell
    (why: see :mod:`central.store._cql_values`). Ops read a device's day (or
    the last hour of it), and a partition stays bounded (one tracker, one
    day, at most 86,400 rows at 1 Hz). ``day`` and ``timestamp_us`` come
    from the record itself, so the key is a function of
    ``(device_id, boot_id, seq)`` and an upsert of a redelivered record lands
    on the same row.
``ledger_ranges``  ``PRIMARY KEY ((device_id, boot_id), first_seq, last_seq)``:
    the ranges of :mod:`central.ledger`, one partition per boot.
``ledger_boots``  ``PRIMARY KEY (device_id, boot_id)``: the boots of a device,
    so one device's ledger is read without a scan.
``device_days``  ``PRIMARY KEY (device_id, day)``, newest first: the telemetry
    partitions a device has, so its newest samples are found however old
    they are (a gym that syncs a month late).
``arrivals``  ``PRIMARY KEY ((hour), ingested_at_us, device_id, gateway_id, site)``:
    one row per device and store write, partitioned by the hour central wrote
    it, so "what arrived in the last N minutes" needs no scan of telemetry
    (which is keyed by sample time). A redelivered batch arrives again, under
    its new receive time.

Writes are prepared, idempotent, at ``[cassandra] consistency``, sent with the
driver's ``execute_concurrent``. Rows of one partition go as one
single-partition UNLOGGED BATCH (up to ``rows_per_batch``): one request and
one mutation on the replica instead of 200, and Cassandra neither warns
about nor batchlogs single-partition batches. Telemetry values are packed by
:mod:`central.store._cql_values` rather than the driver's ``bind``, which
cost more CPU per row than Cassandra's own write.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import (
    BatchStatement,
    BatchType,
    BoundStatement,
    PreparedStatement,
    tuple_factory,
)

from central.ledger import LedgerEntry, ledger_entry, merge_ranges
from central.settings import CassandraSettings
from central.store._cql_values import (
    CQL_TYPES,
    ROW_COLUMNS,
    SAMPLE_FIELDS,
    SAMPLE_TYPE,
    check_columns,
    encode_row,
)
from central.store._model import (
    ARRIVAL_HOUR_US,
    RangeRow,
    StoreError,
    StoreUnavailable,
    TelemetryRow,
    days_between,
    range_rows,
)
from pulsegate.log_quieting import logger_quieted

__all__ = ["CassandraStore"]

log = logging.getLogger(__name__)

_RANGE_COLUMNS = RangeRow._fields
_RR_FIELD = SAMPLE_FIELDS.index("rr_intervals_ms")
#: Errors that no retry fixes: a missing table, a bad query, bad credentials.
_PERMANENT = (InvalidRequest,)


def _ddl(settings: CassandraSettings) -> list[str]:
    ks = settings.keyspace
    columns = ", ".join(f"{name} {CQL_TYPES[name]}" for name in ROW_COLUMNS)
    fields = ", ".join(f"{name} {CQL_TYPES[name]}" for name in SAMPLE_FIELDS)
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {settings.replication}",
        f"CREATE TYPE IF NOT EXISTS {ks}.{SAMPLE_TYPE} ({fields})",
        # Compaction stays the default: bundles and month-old backlogs arrive
        # out of time order, which defeats TimeWindowCompactionStrategy.
        f"CREATE TABLE IF NOT EXISTS {ks}.telemetry ({columns}, sample frozen<{SAMPLE_TYPE}>, "
        "PRIMARY KEY ((device_id, day), timestamp_us, boot_id, seq)) "
        "WITH CLUSTERING ORDER BY (timestamp_us DESC, boot_id ASC, seq ASC) "
        f"AND default_time_to_live = {int(settings.telemetry_ttl_s)}",
        f"CREATE TABLE IF NOT EXISTS {ks}.ledger_ranges (device_id text, boot_id uuid, "
        "first_seq bigint, last_seq bigint, gateway_id text, site text, written_at_us bigint, "
        "PRIMARY KEY ((device_id, boot_id), first_seq, last_seq))",
        f"CREATE TABLE IF NOT EXISTS {ks}.ledger_boots (device_id text, boot_id uuid, "
        "PRIMARY KEY (device_id, boot_id))",
        f"CREATE TABLE IF NOT EXISTS {ks}.device_days (device_id text, day date, "
        "PRIMARY KEY (device_id, day)) WITH CLUSTERING ORDER BY (day DESC)",
        f"CREATE TABLE IF NOT EXISTS {ks}.arrivals (hour bigint, ingested_at_us bigint, device_id text, "
        "gateway_id text, site text, oldest_sample_us bigint, newest_sample_us bigint, records int, "
        "PRIMARY KEY ((hour), ingested_at_us, device_id, gateway_id, site))",
    ]


def _bound(insert: PreparedStatement, row: TelemetryRow) -> BoundStatement:
    """What ``insert.bind(row)`` returns, in ~9 µs instead of ~65: values packed by ``_cql_values``."""
    bound = BoundStatement(insert)
    bound.values = encode_row(row)
    return bound


def _partition_batch(insert: PreparedStatement, rows: Sequence[TelemetryRow]) -> BatchStatement:
    """An UNLOGGED batch of rows of one partition, as ``batch.add(_bound(insert, row))`` per row builds it.

    The first row goes through ``add``, which takes the batch's routing key
    and keyspace from it; every later row is appended as the
    ``(prepared, query id, values)`` entry that ``add`` would append, without
    building a BoundStatement for it (~5 µs a row, a third of the batch's
    cost in Python). ``_statements_and_parameters`` is the driver's private
    list: a test in tests/central_ingest/test_servers.py compares the result
    with ``add`` on the driver installed, so a driver that changes it fails
    there first.
    """
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    batch.is_idempotent = True
    batch.add(_bound(insert, rows[0]))
    query_id = insert.query_id
    batch._statements_and_parameters.extend((True, query_id, encode_row(row)) for row in rows[1:])
    return batch


def arrival_rows(rows: Sequence[TelemetryRow]) -> list[tuple[Any, ...]]:
    """One ``arrivals`` row per (receive time, device, gateway, site) among ``rows``."""
    groups: dict[tuple[int, str, str, str], list[int]] = defaultdict(list)
    for row in rows:
        groups[(row.ingested_at_us, row.device_id, row.gateway_id, row.site)].append(row.timestamp_us)
    return [
        (received_us // ARRIVAL_HOUR_US, received_us, device, gateway, site, min(ts), max(ts), len(ts))
        for (received_us, device, gateway, site), ts in groups.items()
    ]


def _bound_columns(statement: PreparedStatement) -> list[tuple[str, str]]:
    """The statement's bind markers as ``(name, type)``; a UDT's fields follow it as ``(column.field, type)``."""
    found = []
    for column in statement.column_metadata:
        kind = column.type
        if hasattr(kind, "fieldnames"):  # a UDT: its name, then its fields as the node has them
            found.append((column.name, f"frozen<{kind.typename}>"))
            found += [
                (f"{column.name}.{field}", subtype.cql_parameterized_type())
                for field, subtype in zip(kind.fieldnames, kind.subtypes, strict=True)
            ]
        else:
            found.append((column.name, kind.cql_parameterized_type()))
    return found


class CassandraStore:
    """Telemetry and ledger in Cassandra; see :class:`central.store.TelemetryStore`."""

    def __init__(self, settings: CassandraSettings) -> None:
        self.settings = settings
        consistency = ConsistencyLevel.name_to_value.get(settings.consistency.upper())
        if consistency is None:
            raise StoreError(
                f"cassandra.consistency {settings.consistency!r} is not a consistency level"
            )
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=settings.local_dc or None)
            ),
            consistency_level=consistency,
            request_timeout=settings.request_timeout_s,
            row_factory=tuple_factory,
        )
        self._cluster = Cluster(
            contact_points=list(settings.hosts),
            port=settings.port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=settings.connect_timeout_s,
            # Cassandra 4.0 and later speak v5; naming it skips the driver's
            # downgrade dance (and its warnings) through the DSE versions.
            protocol_version=5,
            # Retry a lost node every 0.5 s up to 5 s apart (the default climbs to
            # 10 minutes): after a restart, ingest resumes within seconds.
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
        )
        self._session = self._connect()
        self._statements: dict[str, PreparedStatement] = {}

    def _connect(self) -> Session:
        try:
            with logger_quieted("cassandra.cluster"):  # the StoreUnavailable below says it in one line
                return self._cluster.connect()
        except NoHostAvailable as exc:
            self._cluster.shutdown()
            hosts = ", ".join(f"{h}:{self.settings.port}" for h in self.settings.hosts)
            raise StoreUnavailable(
                f"cannot reach Cassandra at {hosts}; start it "
                "('packaging/services/pulsegate-services start cassandra') or fix [cassandra] hosts"
            ) from exc

    def init_schema(self) -> None:
        for statement in _ddl(self.settings):
            try:
                self._session.execute(statement, timeout=60)
            except _PERMANENT as exc:
                raise StoreError(
                    f"Cassandra refused the schema ({exc}); check [cassandra] replication"
                ) from exc
            except Exception as exc:  # the driver's errors share no base class
                raise StoreUnavailable(
                    f"creating the schema failed ({type(exc).__name__}: {exc}); run db init again"
                ) from exc
        log.info(
            "keyspace %s ready (replication %s)", self.settings.keyspace, self.settings.replication
        )

    def _prepared(self, name: str) -> PreparedStatement:
        statement = self._statements.get(name)
        if statement is None:
            ks = self.settings.keyspace
            cql = {
                "row": f"INSERT INTO {ks}.telemetry ({', '.join(ROW_COLUMNS)}, sample) "
                f"VALUES ({', '.join('?' * (len(ROW_COLUMNS) + 1))})",
                "range": f"INSERT INTO {ks}.ledger_ranges ({', '.join(_RANGE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                "boot": f"INSERT INTO {ks}.ledger_boots (device_id, boot_id) VALUES (?, ?)",
                "device_day": f"INSERT INTO {ks}.device_days (device_id, day) VALUES (?, ?)",
                "arrival": f"INSERT INTO {ks}.arrivals (hour, ingested_at_us, device_id, gateway_id, site, "
                "oldest_sample_us, newest_sample_us, records) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "delete_range": f"DELETE FROM {ks}.ledger_ranges WHERE device_id = ? AND boot_id = ? "
                "AND first_seq = ? AND last_seq = ?",
                "boot_ranges": f"SELECT {', '.join(_RANGE_COLUMNS)} FROM {ks}.ledger_ranges "
                "WHERE device_id = ? AND boot_id = ?",
                "device_boots": f"SELECT boot_id FROM {ks}.ledger_boots WHERE device_id = ?",
                "day_rows": f"SELECT {', '.join(ROW_COLUMNS)}, sample FROM {ks}.telemetry WHERE device_id = ? "
                "AND day = ? AND timestamp_us >= ? AND timestamp_us < ?",
            }[name]
            try:
                with logger_quieted("cassandra.cluster"):  # the errors below say it in one line
                    statement = self._session.prepare(cql)
            except _PERMANENT as exc:
                raise StoreError(
                    f"keyspace {ks!r} lacks central's tables ({exc}); run 'pulsegate central db init'"
                ) from exc
            except Exception as exc:
                raise StoreUnavailable(f"cannot prepare statements on Cassandra: {exc}") from exc
            if name == "row":  # its values are packed by _cql_values, not by the driver
                check_columns(_bound_columns(statement))
            # Every write here is an upsert or a delete by full key: replaying it is harmless,
            # so the driver may retry and speculate.
            statement.is_idempotent = True
            self._statements[name] = statement
        return statement

    def write(self, rows: Sequence[TelemetryRow]) -> None:
        if not rows:
            return
        ranges = range_rows(rows, time.time_ns() // 1000)
        insert = self._prepared("row")
        if self.settings.rows_per_batch > 1:
            self._run_concurrent([(batch, None) for batch in self._partition_batches(insert, rows)])
        else:
            self._run_concurrent([(_bound(insert, row), None) for row in rows])
        # The ledger (and the indexes below) only after every row is in: a range
        # row claims its rows are held. One round: none claims anything about another.
        boots = {(r.device_id, r.boot_id) for r in ranges}
        days = {(row.device_id, row.day) for row in rows}
        self._run_concurrent(
            [(self._prepared("range"), r) for r in ranges]
            + [(self._prepared("boot"), b) for b in boots]
            + [(self._prepared("device_day"), d) for d in days]
            + [(self._prepared("arrival"), a) for a in arrival_rows(rows)]
        )

    def _partition_batches(
        self, insert: PreparedStatement, rows: Sequence[TelemetryRow]
    ) -> list[BatchStatement]:
        by_partition: dict[tuple[str, Any], list[TelemetryRow]] = defaultdict(list)
        for row in rows:
            by_partition[(row.device_id, row.day)].append(row)
        size = self.settings.rows_per_batch
        return [
            _partition_batch(insert, partition_rows[start : start + size])
            for partition_rows in by_partition.values()
            for start in range(0, len(partition_rows), size)
        ]

    def _run_concurrent(self, statements_and_params: list[tuple[Any, Any]]) -> None:
        try:
            results = execute_concurrent(
                self._session,
                statements_and_params,
                concurrency=self.settings.concurrency,
                raise_on_first_error=False,
                results_generator=False,
            )
        except NoHostAvailable as exc:
            raise StoreUnavailable(f"no Cassandra node available: {exc}") from exc
        self._raise_first_failure(results)

    def _run_concurrent_args(
        self, statement: PreparedStatement, params: Iterable[Sequence[Any]]
    ) -> None:
        try:
            results = execute_concurrent_with_args(
                self._session,
                statement,
                list(params),
                concurrency=self.settings.concurrency,
                raise_on_first_error=False,
                results_generator=False,
            )
        except NoHostAvailable as exc:
            raise StoreUnavailable(f"no Cassandra node available: {exc}") from exc
        self._raise_first_failure(results)

    @staticmethod
    def _raise_first_failure(results: Iterable[Any]) -> None:
        failures = [result for ok, result in results if not ok]
        if not failures:
            return
        first = failures[0]
        if isinstance(first, _PERMANENT):
            raise StoreError(f"Cassandra refused a write: {first}") from first
        raise StoreUnavailable(
            f"{len(failures)} Cassandra writes failed, first {type(first).__name__}: {first}"
        ) from first

    def _read(
        self, statement: PreparedStatement | str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            return list(self._session.execute(statement, params))
        except _PERMANENT as exc:
            raise StoreError(
                f"Cassandra refused a read: {exc}; run 'pulsegate central db init'"
            ) from exc
        except (
            Exception
        ) as exc:  # NoHostAvailable, timeouts, Unavailable: the driver's tree has no common base
            raise StoreUnavailable(f"Cassandra read failed: {type(exc).__name__}: {exc}") from exc

    def _range_rows(self, device_id: str | None) -> list[tuple[Any, ...]]:
        if device_id is None:
            ks = self.settings.keyspace
            return self._read(f"SELECT {', '.join(_RANGE_COLUMNS)} FROM {ks}.ledger_ranges")
        found = []
        for (boot_id,) in self._read(self._prepared("device_boots"), (device_id,)):
            found += self._read(self._prepared("boot_ranges"), (device_id, boot_id))
        return found

    def ledger(self, device_id: str | None = None) -> list[LedgerEntry]:
        by_boot: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        for row in self._range_rows(device_id):
            by_boot[(row[0], str(row[1]))].append(row)
        entries = []
        for (dev, boot), parts in sorted(by_boot.items()):
            newest = max(parts, key=lambda p: p[3])
            entries.append(
                ledger_entry(dev, boot, [(p[2], p[3]) for p in parts], newest[4], newest[5])
            )
        return entries

    def compact_ledger(self, min_rows: int = 2) -> int:
        by_boot: dict[tuple[str, Any], list[tuple[Any, ...]]] = defaultdict(list)
        for row in self._range_rows(None):
            by_boot[(row[0], row[1])].append(row)
        compacted = 0
        for (dev, boot), parts in by_boot.items():
            if len(parts) < max(min_rows, 2):
                continue
            merged = merge_ranges((p[2], p[3]) for p in parts)
            if len(merged) == len(parts):
                continue
            newest = max(parts, key=lambda p: p[3])
            # Insert the merged ranges first, then delete what they cover: a
            # concurrent reader or compactor never sees the union shrink.
            self._run_concurrent_args(
                self._prepared("range"),
                [(dev, boot, a, b, newest[4], newest[5], newest[6]) for a, b in merged],
            )
            stale = [(dev, boot, p[2], p[3]) for p in parts if (p[2], p[3]) not in merged]
            self._run_concurrent_args(self._prepared("delete_range"), stale)
            compacted += 1
        return compacted

    def telemetry(self, device_id: str, start_us: int, end_us: int) -> list[TelemetryRow]:
        rows = []
        statement = self._prepared("day_rows")
        for day in days_between(start_us, end_us):
            for *columns, sample in self._read(statement, (device_id, day, start_us, end_us)):
                columns[1] = columns[1].date()  # cassandra.util.Date
                fields = list(sample)
                fields[_RR_FIELD] = list(fields[_RR_FIELD] or ())
                rows.append(TelemetryRow(*columns, *fields))
        rows.sort(key=lambda r: (r.timestamp_us, str(r.boot_id), r.seq))
        return rows

    def close(self) -> None:
        self._cluster.shutdown()
