"""The uplink's side of the SQLite outbox: what to send next, and forgetting what was confirmed.

The ingest thread inserts rows; the uplink reads them through two id cursors
and deletes them once the broker confirmed their message. At the start of a
session the newest id is the *watermark*: rows above it are live and go out
first, rows at or below it are the backlog, drained oldest first behind them.

::

    ids:  1 ........ backlog_cursor ........ watermark ........ live_cursor ........
          (sent or in flight)  (backlog to send)    (live: sent or in flight)  (new: send next)

``outbox.id`` is an INTEGER PRIMARY KEY; without AUTOINCREMENT SQLite hands
out ``max(id) + 1``, so deleting the newest rows lets an id come back. After
every delete the cursors are lowered to the table's new ``max(id)`` (read in
the same write transaction), so a reused id is still seen as new.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError
from gateway.uplink._messages import OutboxRow

__all__ = ["OutboxQueue", "OutboxStats", "UplinkStoreError", "read_persisted_state"]

#: Ids per ``IN (...)`` list: under SQLite's historic limit of 999 bound
#: parameters, so any build of the library accepts it.
_IDS_PER_STATEMENT = 900

_SELECT_COLUMNS = "id, schema_fingerprint, datum, received_at_us"


class UplinkStoreError(GatewayError):
    """The outbox file is missing, unreadable, or lacks the outbox table."""


@dataclass(frozen=True)
class OutboxStats:
    """How much waits in the outbox."""

    records: int
    oldest_received_at_us: int | None

    def oldest_age_s(self, now_us: int | None = None) -> float | None:
        if self.oldest_received_at_us is None:
            return None
        now_us = time.time_ns() // 1000 if now_us is None else now_us
        return max(0.0, (now_us - self.oldest_received_at_us) / 1e6)


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if not path.is_file():
        raise UplinkStoreError(f"outbox file {str(path)!r} does not exist; start the gateway once to create it")
    uri = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    try:
        db = sqlite3.connect(uri, timeout=5.0, isolation_level=None, uri=read_only)
        if not read_only:
            db.execute("PRAGMA synchronous=FULL")
        db.execute("SELECT id, schema_fingerprint, datum, received_at_us FROM outbox LIMIT 0")
    except sqlite3.Error as exc:
        raise UplinkStoreError(f"outbox file {str(path)!r} is not a gateway outbox: {exc}") from exc
    return db


class OutboxQueue:
    """Rows to publish, in live-first order, from one gateway's outbox file.

    Not thread-safe: the uplink thread opens it and is its only user.
    """

    def __init__(self, path: Path) -> None:
        self._db = _connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS uplink_state (key TEXT PRIMARY KEY, value TEXT)")
        self._backlog_cursor = 0
        self._watermark = 0
        self._live_cursor = 0

    def close(self) -> None:
        self._db.close()

    def start_session(self) -> int:
        """Take the newest id as the watermark; return the backlog's record count."""
        self._watermark = self._max_id()
        self._live_cursor = self._watermark
        self._backlog_cursor = 0
        return self.stats().records

    def next_rows(self, limit: int, *, live: bool = True, backlog: bool = True) -> tuple[list[OutboxRow], bool]:
        """The next rows to send: live ones if any (and ``live``), else the oldest backlog (if ``backlog``).

        Returns:
            Up to ``limit`` rows in id order (empty when nothing waits), and
            whether they are live.
        """
        if live:
            rows = self._select("id > ?", (self._live_cursor,), limit)
            if rows:
                self._live_cursor = rows[-1].id
                return rows, True
        if not backlog or self._backlog_cursor >= self._watermark:
            return [], False
        rows = self._select("id > ? AND id <= ?", (self._backlog_cursor, self._watermark), limit)
        self._backlog_cursor = rows[-1].id if rows else self._watermark
        return rows, False

    def rows_by_id(self, ids: Sequence[int]) -> list[OutboxRow]:
        """The rows among ``ids`` that are still in the outbox, in id order."""
        found: list[OutboxRow] = []
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            chunk = ids[start : start + _IDS_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            found += self._select(f"id IN ({marks})", tuple(chunk), len(chunk))
        return sorted(found, key=lambda row: row.id)

    def delete_confirmed(self, ids: Iterable[int], state: Mapping[str, str]) -> None:
        """Delete the confirmed rows ``ids`` and save ``state`` in one short transaction."""
        runs = _contiguous_runs(sorted(ids))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # A message's rows are nearly always consecutive ids; deleting by
            # range is about twice as fast as by an IN list.
            self._db.executemany("DELETE FROM outbox WHERE id >= ? AND id <= ?", runs)
            self._write_state(state)
            newest = self._max_id()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        # See the module docstring: ids above `newest` may be handed out again.
        self._live_cursor = min(self._live_cursor, newest)
        self._watermark = min(self._watermark, newest)
        self._backlog_cursor = min(self._backlog_cursor, newest)

    def save_state(self, state: Mapping[str, str]) -> None:
        """Persist ``state`` for ``status`` to read when the daemon is not running."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._write_state(state)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def stats(self) -> OutboxStats:
        return _stats(self._db)

    def _write_state(self, state: Mapping[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO uplink_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            state.items(),
        )

    def _max_id(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])

    def _select(self, where: str, args: tuple[int, ...], limit: int) -> list[OutboxRow]:
        cursor = self._db.execute(
            f"SELECT {_SELECT_COLUMNS} FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
        )
        return list(map(OutboxRow._make, cursor))


def _contiguous_runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7, 8]`` -> ``[(1, 3), (7, 8)]``; ``ids`` sorted and distinct."""
    runs: list[tuple[int, int]] = []
    for row_id in ids:
        if runs and runs[-1][1] == row_id - 1:
            runs[-1] = (runs[-1][0], row_id)
        else:
            runs.append((row_id, row_id))
    return runs


def _stats(db: sqlite3.Connection) -> OutboxStats:
    records, oldest = db.execute(
        "SELECT count(*), (SELECT received_at_us FROM outbox ORDER BY id LIMIT 1) FROM outbox"
    ).fetchone()
    return OutboxStats(int(records), oldest)


def read_persisted_state(path: Path) -> tuple[OutboxStats, dict[str, str]]:
    """Read the outbox's size and the uplink's saved state without the daemon.

    Raises:
        UplinkStoreError: the file is missing or not a gateway outbox.
    """
    db = _connect(path, read_only=True)
    try:
        stats = _stats(db)
        try:
            state = dict(db.execute("SELECT key, value FROM uplink_state").fetchall())
        except sqlite3.OperationalError:  # an outbox the uplink never ran on
            state = {}
    finally:
        db.close()
    return stats, state
