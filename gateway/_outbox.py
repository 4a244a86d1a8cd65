"""The durable outbox: every accepted record, committed before it is ACKed.

One SQLite file per gateway (``<state_dir>/gateway.sqlite``) in WAL mode with
``synchronous=FULL``, so a commit survives power loss, not only a crash. The
serial ingest is the only writer of records; the uplink deletes them once the
broker confirmed them. Per ``(device_id, boot_id)`` the file also keeps which
sequence numbers arrived, so duplicates are recognised across restarts and
gaps are visible.
"""

from __future__ import annotations

import bisect
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from gateway.errors import GatewayError

__all__ = [
    "DB_FILENAME",
    "AcceptedRecord",
    "QuarantinedFrame",
    "SequenceTracker",
    "Outbox",
    "BatchResult",
    "open_database",
]

DB_FILENAME = "gateway.sqlite"


def now_us() -> int:
    return time.time_ns() // 1000


def open_database(state_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the gateway's database; create its tables unless ``readonly``."""
    path = Path(state_dir) / DB_FILENAME
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        conn.row_factory = sqlite3.Row
        return conn
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is synced at every commit, so an ACKed record survives
        # power loss (NORMAL may roll back the last commits, see sqlite.org/pragma).
        conn.execute("PRAGMA synchronous=FULL")
        _create_schema(sqlite_utils.Database(conn))
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise damaged(path, exc) from None
    return conn


def damaged(path: Path, exc: sqlite3.DatabaseError) -> GatewayError:
    """The one-line error for a gateway database SQLite cannot read."""
    return GatewayError(f"{str(path)!r} is damaged or not a gateway database ({exc}); "
                        "stop the daemon and run 'pulsegate gateway salvage'; see 'Recover' in the README")


def _create_schema(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: ids are never reused after the uplink deletes rows, so
    # a message id (gateway:first-last id) names one set of records forever.
    db.execute(
        "CREATE TABLE IF NOT EXISTS outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, boot_id TEXT NOT NULL,"
        " seq INTEGER NOT NULL, timestamp_us INTEGER NOT NULL, received_at_us INTEGER NOT NULL,"
        " schema_fingerprint BLOB NOT NULL, datum BLOB NOT NULL)"
    )
    db["outbox"].create_index(["device_id", "boot_id", "seq"], unique=True, if_not_exists=True)
    db["devices"].create(
        {
            "device_id": str,
            "boot_id": str,
            "contiguous_seq": int,  # every seq 1..contiguous_seq arrived
            "max_seq": int,
            "received": int,
            "duplicates": int,
            "quarantined": int,
            "first_seen_us": int,
            "last_seen_us": int,
            "port": str,
            "schema_version": int,
        },
        pk=("device_id", "boot_id"),
        if_not_exists=True,
    )
    # Seqs that arrived above contiguous_seq, as closed ranges: the holes
    # between them are the gaps. Normally empty; bounded by reordering.
    db["seq_ranges"].create(
        {"device_id": str, "boot_id": str, "first_seq": int, "last_seq": int},
        pk=("device_id", "boot_id", "first_seq"),
        if_not_exists=True,
    )
    db["quarantine"].create(
        {
            "id": int,
            "received_at_us": int,
            "port": str,
            "device_id": str,
            "reason": str,
            "detail": str,
            "raw": bytes,
        },
        pk="id",
        if_not_exists=True,
    )
    db["uplink_state"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    # Who collected these records (gateway id, site), written by the daemon:
    # an export signs with the identity the records were gathered under.
    db["identity"].create({"key": str, "value": str}, pk="key", if_not_exists=True)


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field, per record
class AcceptedRecord:
    """A valid record on its way into the outbox."""

    port: str
    device_id: str
    boot_id: str
    seq: int
    timestamp_us: int
    schema_fingerprint: bytes
    schema_version: int
    datum: bytes
    #: The decoded record, for cue sources; not stored (the datum is).
    record: dict | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class QuarantinedFrame:
    """A frame the gateway refused, kept with the reason."""

    port: str
    device_id: str | None
    reason: str
    detail: str
    raw: bytes
    #: For a well-framed record refused for its content: the seq it used, so
    #: it still counts as handled and the tracker does not resend it forever.
    boot_id: str | None = None
    seq: int | None = None


@dataclass(slots=True)
class SequenceTracker:
    """Which seqs of one ``(device_id, boot_id)`` arrived: a watermark plus ranges above it."""

    contiguous_seq: int = 0
    ranges: list[list[int]] = field(default_factory=list)  #: sorted, disjoint, all > contiguous_seq + 1
    max_seq: int = 0

    def add(self, seq: int) -> bool:
        """Record ``seq``; return False if it had already arrived."""
        if seq <= self.contiguous_seq:
            return False
        starts = [r[0] for r in self.ranges]
        i = bisect.bisect_right(starts, seq) - 1
        if i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]:
            return False
        self.max_seq = max(self.max_seq, seq)
        if seq == self.contiguous_seq + 1:
            self.contiguous_seq = seq
            if self.ranges and self.ranges[0][0] == seq + 1:
                self.contiguous_seq = self.ranges.pop(0)[1]
            return True
        # Insert as its own range, then merge with neighbours.
        self.ranges.insert(i + 1, [seq, seq])
        j = i + 1
        if j + 1 < len(self.ranges) and self.ranges[j + 1][0] == seq + 1:
            self.ranges[j][1] = self.ranges.pop(j + 1)[1]
        if j > 0 and self.ranges[j - 1][1] == seq - 1:
            self.ranges[j - 1][1] = self.ranges.pop(j)[1]
        return True

    @property
    def missing(self) -> int:
        """Seqs below the highest received that have not arrived: the gaps."""
        held = self.contiguous_seq + sum(end - start + 1 for start, end in self.ranges)
        return self.max_seq - held

    def missing_ranges(self) -> list[tuple[int, int]]:
        holes = []
        previous_end = self.contiguous_seq
        for start, end in self.ranges:
            holes.append((previous_end + 1, start - 1))
            previous_end = end
        return holes


@dataclass(slots=True)
class _DeviceCounters:
    tracker: SequenceTracker
    received: int = 0
    duplicates: int = 0
    quarantined: int = 0
    first_seen_us: int = 0
    last_seen_us: int = 0
    port: str = ""
    schema_version: int = 0
    ranges_changed: bool = False


@dataclass(slots=True)
class BatchResult:
    """What one committed batch changed, for ACKs and metrics."""

    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    #: (port, boot_id) -> highest contiguous durable seq, for the ACKs to send.
    acks: dict[tuple[str, str], int] = field(default_factory=dict)


class Outbox:
    """The ingest side of the outbox: dedup, gap tracking and batched commits.

    Not thread-safe: one writer thread owns it.
    """

    def __init__(self, state_dir: Path) -> None:
        self.conn = open_database(state_dir)
        self._devices: dict[tuple[str, str], _DeviceCounters] = {}
        self._load_devices()

    def _load_devices(self) -> None:
        for row in self.conn.execute("SELECT * FROM devices"):
            tracker = SequenceTracker(row["contiguous_seq"], [], row["max_seq"])
            self._devices[(row["device_id"], row["boot_id"])] = _DeviceCounters(
                tracker, row["received"], row["duplicates"], row["quarantined"],
                row["first_seen_us"], row["last_seen_us"], row["port"] or "", row["schema_version"] or 0,
            )
        for row in self.conn.execute("SELECT * FROM seq_ranges ORDER BY device_id, boot_id, first_seq"):
            counters = self._devices.get((row["device_id"], row["boot_id"]))
            if counters is not None:
                counters.tracker.ranges.append([row["first_seq"], row["last_seq"]])

    def record_identity(self, gateway_id: str, site: str, *, uplink_enabled: bool = False) -> None:
        """Remember which gateway (and gym) fills this outbox, and whether it forwards it."""
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO identity VALUES (?, ?)",
                                  [("gateway_id", gateway_id), ("site", site),
                                   ("uplink", "enabled" if uplink_enabled else "disabled")])

    def contiguous_seq(self, device_id: str, boot_id: str) -> int:
        """Highest seq of this boot up to which everything is durable (0 if none)."""
        counters = self._devices.get((device_id, boot_id))
        return counters.tracker.contiguous_seq if counters else 0

    def _counters(self, device_id: str, boot_id: str, now: int) -> _DeviceCounters:
        key = (device_id, boot_id)
        counters = self._devices.get(key)
        if counters is None:
            counters = self._devices[key] = _DeviceCounters(SequenceTracker(), first_seen_us=now)
        return counters

    def commit_batch(self, records: Iterable[AcceptedRecord], rejected: Iterable[QuarantinedFrame] = ()) -> BatchResult:
        """Deduplicate, insert and commit; return what to ACK.

        On an SQLite error nothing of the batch is kept in memory either, so
        the caller may retry the same batch.
        """
        now = now_us()
        result = BatchResult()
        rows = []
        touched: dict[tuple[str, str], _DeviceCounters] = {}
        snapshot = {k: (c.tracker.contiguous_seq, [r[:] for r in c.tracker.ranges], c.tracker.max_seq,
                        c.received, c.duplicates, c.quarantined) for k, c in self._devices.items()}
        new_keys: set[tuple[str, str]] = set()
        for rec in records:
            key = (rec.device_id, rec.boot_id)
            if key not in self._devices:
                new_keys.add(key)
            counters = self._counters(rec.device_id, rec.boot_id, now)
            touched[key] = counters
            counters.last_seen_us, counters.port, counters.schema_version = now, rec.port, rec.schema_version
            before = len(counters.tracker.ranges)
            if counters.tracker.add(rec.seq):
                counters.received += 1
                rows.append((rec.device_id, rec.boot_id, rec.seq, rec.timestamp_us, now, rec.schema_fingerprint, rec.datum))
                counters.ranges_changed |= before != len(counters.tracker.ranges) or bool(counters.tracker.ranges)
            else:
                counters.duplicates += 1
                result.duplicates += 1
            result.acks[(rec.port, rec.boot_id)] = counters.tracker.contiguous_seq
        quarantine_rows = []
        for frame in rejected:
            quarantine_rows.append((now, frame.port, frame.device_id, frame.reason, frame.detail, frame.raw))
            result.quarantined += 1
            if frame.device_id is not None and frame.boot_id is not None:
                key = (frame.device_id, frame.boot_id)
                if key not in self._devices:
                    new_keys.add(key)
                counters = self._counters(frame.device_id, frame.boot_id, now)
                touched[key] = counters
                counters.quarantined += 1
                counters.last_seen_us = now
                if frame.seq is not None:
                    # Refused for its content, so resending cannot help: count
                    # the seq as handled (it is kept in quarantine, not lost).
                    counters.tracker.add(frame.seq)
                    counters.ranges_changed = True
                    result.acks[(frame.port, frame.boot_id)] = counters.tracker.contiguous_seq
        try:
            self._write(rows, quarantine_rows, touched)
        except sqlite3.Error:
            self._restore(snapshot, new_keys)
            raise
        result.inserted = len(rows)
        return result

    def _write(self, rows: list[tuple], quarantine_rows: list[tuple], touched: dict[tuple[str, str], _DeviceCounters]) -> None:
        conn = self.conn
        with conn:  # one transaction: records, quarantine, counters, ranges
            conn.executemany(
                "INSERT INTO outbox (device_id, boot_id, seq, timestamp_us, received_at_us, schema_fingerprint, datum)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if quarantine_rows:
                conn.executemany(
                    "INSERT INTO quarantine (received_at_us, port, device_id, reason, detail, raw) VALUES (?, ?, ?, ?, ?, ?)",
                    quarantine_rows,
                )
            for (device_id, boot_id), c in touched.items():
                conn.execute(
                    "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (device_id, boot_id, c.tracker.contiguous_seq, c.tracker.max_seq, c.received, c.duplicates,
                     c.quarantined, c.first_seen_us, c.last_seen_us, c.port, c.schema_version),
                )
                if c.ranges_changed:
                    conn.execute("DELETE FROM seq_ranges WHERE device_id = ? AND boot_id = ?", (device_id, boot_id))
                    conn.executemany(
                        "INSERT INTO seq_ranges VALUES (?, ?, ?, ?)",
                        [(device_id, boot_id, start, end) for start, end in c.tracker.ranges],
                    )
                    c.ranges_changed = bool(c.tracker.ranges)

    def _restore(self, snapshot: dict, new_keys: set[tuple[str, str]]) -> None:
        for key in new_keys:
            self._devices.pop(key, None)
        for key, (contiguous, ranges, max_seq, received, duplicates, quarantined) in snapshot.items():
            c = self._devices[key]
            c.tracker.contiguous_seq, c.tracker.ranges, c.tracker.max_seq = contiguous, ranges, max_seq
            c.received, c.duplicates, c.quarantined = received, duplicates, quarantined
            c.ranges_changed = True

    def close(self) -> None:
        self.conn.close()
