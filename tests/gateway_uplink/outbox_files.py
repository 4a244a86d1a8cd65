"""Real outbox files for the uplink tests and benchmark: the lead's table, real encoded records."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware_shim import encode_record, split_soe

# The outbox contract (gateway/_outbox.py is the lead's); copied here so the
# tests do not depend on the daemon's code.
OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  device_id TEXT NOT NULL,
  boot_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  timestamp_us INTEGER NOT NULL,
  received_at_us INTEGER NOT NULL,
  schema_fingerprint BLOB NOT NULL,
  datum BLOB NOT NULL,
  UNIQUE (device_id, boot_id, seq)
);
CREATE TABLE IF NOT EXISTS uplink_state (key TEXT PRIMARY KEY, value TEXT);
"""


def make_record(device_id: str, boot_id: str, seq: int, *, version: int = 2) -> dict[str, Any]:
    """A plausible telemetry sample; ``seq`` drives the values so records differ."""
    record: dict[str, Any] = {
        "device_id": device_id,
        "boot_id": boot_id,
        "seq": seq,
        "timestamp_us": 1_760_000_000_000_000 + seq * 1_000_000,
        "heart_rate_bpm": 60 + seq % 120,
        "cadence_rpm": 80 + seq % 20,
        "speed_m_s": 3.5,
        "distance_m": seq * 3.5,
        "host": {"uptime_s": 1000 + seq, "cpu_load": 0.25, "free_memory_bytes": 1 << 28},
    }
    if version >= 2:
        record["rr_intervals_ms"] = [800 + seq % 50, 810]
        record["sport"] = "running"
    return record


class OutboxFile:
    """A gateway outbox file written the way the serial ingest writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(OUTBOX_SCHEMA)

    def insert(self, records: Iterable[tuple[dict[str, Any], int]], received_at_us: int | None = None) -> list[int]:
        """Insert ``(record, schema version)`` pairs in one transaction; return their ids."""
        ids = []
        self.db.execute("BEGIN IMMEDIATE")
        for record, version in records:
            info, datum = split_soe(encode_record(record, version))
            cursor = self.db.execute(
                "INSERT INTO outbox (device_id, boot_id, seq, timestamp_us, received_at_us, schema_fingerprint, datum)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record["device_id"], record["boot_id"], record["seq"], record["timestamp_us"],
                    received_at_us if received_at_us is not None else time.time_ns() // 1000,
                    info.fingerprint, datum,
                ),
            )
            ids.append(int(cursor.lastrowid))  # type: ignore[arg-type]
        self.db.execute("COMMIT")
        return ids

    def insert_device(self, device_id: str, count: int, *, version: int = 2, first_seq: int = 1) -> tuple[str, list[int]]:
        """Insert ``count`` records of one tracker boot; return the boot id and the row ids."""
        boot_id = str(uuid.uuid4())
        records = [(make_record(device_id, boot_id, seq, version=version), version) for seq in range(first_seq, first_seq + count)]
        return boot_id, self.insert(records)

    def ids(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT id FROM outbox ORDER BY id")]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self.db.close()
