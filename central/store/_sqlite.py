"""The embedded store: one SQLite file (WAL) for telemetry and the ledger.

Several processes may write the file at once: every write is one
``BEGIN IMMEDIATE`` transaction, and SQLite serialises them. The telemetry
key is ``(device_id, boot_id, seq)``, so a redelivered row is an upsert that
changes only ``ingested_at_us``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from central.ledger import LedgerEntry, ledger_entry, merge_ranges
from central.store._model import (
    COLUMNS,
    StoreError,
    StoreUnavailable,
    TelemetryRow,
    days_between,
    range_rows,
)

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

#: How long a writer waits for another process's transaction before giving up
#: with StoreUnavailable (the ingest loop then retries).
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS telemetry (
    {", ".join(COLUMNS)},
    PRIMARY KEY (device_id, boot_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS telemetry_by_time ON telemetry (device_id, timestamp_us);
CREATE TABLE IF NOT EXISTS ledger_ranges (
    device_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    gateway_id TEXT,
    site TEXT,
    written_at_us INTEGER,
    PRIMARY KEY (device_id, boot_id, first_seq, last_seq)
) WITHOUT ROWID;
"""

_UPSERT_ROW = (
    f"INSERT INTO telemetry ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (device_id, boot_id, seq) DO UPDATE SET ingested_at_us = excluded.ingested_at_us"
)
_UPSERT_RANGE = (
    "INSERT INTO ledger_ranges VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET written_at_us = excluded.written_at_us"
)


#: Position of the one list column, kept as JSON text in SQLite.
_RR = COLUMNS.index("rr_intervals_ms")


def _to_sql(row: TelemetryRow) -> tuple[object, ...]:
    return (
        row.device_id,
        row.day.isoformat(),
        row.timestamp_us,
        str(row.boot_id),
        *row[4:_RR],
        json.dumps(row.rr_intervals_ms),
        *row[_RR + 1 :],
    )


def _from_sql(values: Sequence[object]) -> TelemetryRow:
    return TelemetryRow(
        values[0],
        date.fromisoformat(values[1]),
        values[2],
        uuid.UUID(values[3]),  # type: ignore[arg-type]
        *values[4:_RR],
        json.loads(values[_RR]),
        *values[_RR + 1 :],  # type: ignore[arg-type]
    )


class SqliteStore:
    """Telemetry and ledger in one SQLite file; see :class:`central.store.TelemetryStore`."""

    def __init__(self, path: Path, *, create: bool = True, config_hint: str = "") -> None:
        """Open (with ``create``, make) the store file.

        Args:
            path: The SQLite file.
            create: Make the file and its folder when missing (writers: ingest,
                detectors, the demo). Without it the file must exist and hold
                the schema, and nothing is created (reading commands, import).
            config_hint: The setting that names ``path``, for the error message.

        Raises:
            StoreError: without ``create``, the file is missing or has no tables.
        """
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            target: str | Path = path
        else:
            if not path.is_file():
                raise StoreError(
                    f"no central store at {str(path)!r}; run 'pulsegate central db init' "
                    f"or check {config_hint or 'the store path'}"
                )
            # mode=rw opens an existing file and never creates one, even if it
            # vanished since the check above.
            target = f"{path.resolve().as_uri()}?mode=rw"
        # One connection shared by the ingest loop and the ledger refresher,
        # serialised by a lock: SQLite allows one writer at a time anyway.
        self._lock = threading.Lock()
        self._conn = self._connect(target, create)

    def _connect(self, target: str | Path, create: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                target, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False,
                uri=not create,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from exc
        try:
            if not create:
                self._require_schema(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an acked AMQP message must survive a power cut, not only a crash.
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:
            conn.close()
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            conn.close()
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _require_schema(self, conn: sqlite3.Connection) -> None:
        try:
            found = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name IN ('telemetry', 'ledger_ranges')"
                )
            }
        except sqlite3.DatabaseError as exc:  # "file is not a database", say
            raise StoreError(f"cannot read the store {str(self.path)!r}: {exc}") from exc
        if found != {"telemetry", "ledger_ranges"}:
            raise StoreError(
                f"the store {str(self.path)!r} has no tables; run 'pulsegate central db init'"
            )

    def init_schema(self) -> None:
        with self._lock:
            self._conn.executescript(_SCHEMA)
        log.info("store schema ready in %s", self.path)

    def write(self, rows: Sequence[TelemetryRow]) -> None:
        if not rows:
            return
        ranges = range_rows(rows, time.time_ns() // 1000)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(_UPSERT_ROW, map(_to_sql, rows))
                    self._conn.executemany(
                        _UPSERT_RANGE, [(r[0], str(r[1]), *r[2:]) for r in ranges]
                    )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise self._translate(exc) from exc

    def ledger(self, device_id: str | None = None) -> list[LedgerEntry]:
        sql = "SELECT device_id, boot_id, first_seq, last_seq, gateway_id, site, written_at_us FROM ledger_ranges"
        with self._lock:
            try:
                if device_id is None:
                    cursor = self._conn.execute(sql)
                else:
                    cursor = self._conn.execute(sql + " WHERE device_id = ?", (device_id,))
                found = cursor.fetchall()
            except sqlite3.OperationalError as exc:
                raise self._translate(exc) from exc
        by_boot: dict[tuple[str, str], list[tuple[int, int, str, str, int]]] = defaultdict(list)
        for dev, boot, first, last, gw, site, written in found:
            by_boot[(dev, boot)].append((first, last, gw, site, written))
        entries = []
        for (dev, boot), parts in sorted(by_boot.items()):
            newest = max(parts, key=lambda p: p[1])
            entries.append(ledger_entry(dev, boot, [p[:2] for p in parts], newest[2], newest[3]))
        return entries

    def compact_ledger(self, min_rows: int = 2) -> int:
        compacted = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                boots = self._conn.execute(
                    "SELECT device_id, boot_id FROM ledger_ranges GROUP BY 1, 2 HAVING count(*) >= ?",
                    (max(min_rows, 2),),
                ).fetchall()
                for dev, boot in boots:
                    compacted += self._compact_boot(dev, boot)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return compacted

    def _compact_boot(self, device_id: str, boot_id: str) -> int:
        parts = self._conn.execute(
            "SELECT first_seq, last_seq, gateway_id, site, written_at_us FROM ledger_ranges "
            "WHERE device_id = ? AND boot_id = ? ORDER BY last_seq",
            (device_id, boot_id),
        ).fetchall()
        merged = merge_ranges(p[:2] for p in parts)
        if len(merged) == len(parts):
            return 0
        gw, site, written = parts[-1][2:]
        self._conn.execute(
            "DELETE FROM ledger_ranges WHERE device_id = ? AND boot_id = ?", (device_id, boot_id)
        )
        self._conn.executemany(
            _UPSERT_RANGE,
            [(device_id, boot_id, first, last, gw, site, written) for first, last in merged],
        )
        return 1

    def telemetry(self, device_id: str, start_us: int, end_us: int) -> list[TelemetryRow]:
        days_between(start_us, end_us)  # the same limit as Cassandra's, so callers meet it in tests
        with self._lock:
            found = self._conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM telemetry WHERE device_id = ? "
                "AND timestamp_us >= ? AND timestamp_us < ? ORDER BY timestamp_us, boot_id, seq",
                (device_id, start_us, end_us),
            ).fetchall()
        return [_from_sql(values) for values in found]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _translate(self, exc: sqlite3.OperationalError) -> StoreError:
        text = str(exc)
        if "no such table" in text:
            return StoreError(
                f"the store {str(self.path)!r} has no tables; run 'pulsegate central db init'"
            )
        if "locked" in text or "busy" in text:
            return StoreUnavailable(
                f"the store {str(self.path)!r} stayed locked for {_BUSY_TIMEOUT_S:g} s"
            )
        return StoreUnavailable(f"SQLite error on {str(self.path)!r}: {text}")
