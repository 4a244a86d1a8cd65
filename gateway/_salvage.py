"""Salvaging a damaged gateway database: copy every row SQLite can still read into a new one.

``sqlite3 .dump`` stops at the first unreadable page (and ends in ROLLBACK,
leaving nothing), and ``.recover`` fails on the sqlite3 of Debian 12. This
reads each table by rowid in chunks; a chunk that fails is split until the
unreadable rows are isolated, so one bad page loses only the rows on it.
Every read names the table ``NOT INDEXED``: the rows live in the table's own
b-tree, and a damaged index (``idx_outbox_device_id_boot_id_seq`` is half
the file) must cost nothing. The damaged file is kept beside the new one,
never changed.

Records lost with it are simply not in the outbox any more: the trackers
that sent them were ACKed, so they will not resend, and they show as gaps
in central's ledger. The per-boot sequence ranges (``devices``,
``seq_ranges``) are copied as far as they are readable; a boot whose row is
lost starts counting again if its tracker sends more.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway._outbox import DB_FILENAME, open_database
from gateway.errors import GatewayError

__all__ = ["SalvageResult", "salvage_database"]

log = logging.getLogger(__name__)

#: Tables in the order they are copied; outbox is the one that matters.
_TABLES = ("identity", "devices", "seq_ranges", "quarantine", "outbox", "uplink_state")
#: Rows read per query; a failing chunk is halved until single rows remain.
_CHUNK_ROWS = 2000
#: An end of a table that could not be read and has no fallback.
_UNREADABLE: Any = object()


@dataclass
class SalvageResult:
    """What a salvage copied and lost, per table.

    ``lost`` counts rowids in ranges that could not be read (rowids deleted
    before the damage count too: a damaged page cannot tell); -1 means not
    even the table's first and last rowid could be read.
    """

    copied: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    damaged_path: Path | None = None


def salvage_database(state_dir: Path, progress: Callable[[str, int, int], None] | None = None) -> SalvageResult:
    """Replace ``state_dir``'s database by a copy of its readable rows; keep the old file beside it.

    The daemon must be stopped (the caller checks the lock).

    Args:
        state_dir: The gateway's state directory.
        progress: Called with (table, rowids done, rowids in all) after each chunk.

    Returns:
        The rows copied and lost per table, and where the damaged file now is.

    Raises:
        GatewayError: no database there, an empty (0-byte) file, or not even
            its table list is readable.
    """
    path = Path(state_dir) / DB_FILENAME
    if not path.exists():
        raise GatewayError(f"no gateway database at {str(path)!r}; pass the --state-dir the gateway runs with")
    if path.stat().st_size == 0:
        raise GatewayError(f"nothing to salvage: {str(path)!r} is empty (0 bytes); it was left as it is")
    damaged_path = path.with_name("gateway.damaged.sqlite")
    if damaged_path.exists():
        raise GatewayError(f"{str(damaged_path)!r} exists from an earlier salvage; move it away first")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            present = {name for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise GatewayError(f"{str(path)!r} is damaged beyond its table list ({exc}); nothing can be salvaged") from None
        if not present & set(_TABLES):
            raise GatewayError(f"nothing to salvage: {str(path)!r} holds no gateway tables; it was left as it is")
        scratch = path.parent / "salvage.tmp"
        scratch.mkdir(exist_ok=True)
        for leftover in scratch.glob(f"{DB_FILENAME}*"):
            leftover.unlink()
        target = open_database(scratch)
        result = SalvageResult()
        try:
            for table in _TABLES:
                if table in present:
                    _copy_table(source, target, table, result, progress)
            _keep_id_counter(source, target)
        finally:
            target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            target.close()
    finally:
        source.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.rename(damaged_path)
    (scratch / DB_FILENAME).rename(path)
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    result.damaged_path = damaged_path
    # INFO, not WARNING: the CLI prints this summary itself; the log line is for the journal.
    log.info("salvaged %s: copied %s, lost %s; the damaged file is %s", path, result.copied, result.lost,
             damaged_path)
    return result


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str, result: SalvageResult,
                progress: Callable[[str, int, int], None] | None) -> None:
    columns = [row[1] for row in target.execute(f"PRAGMA table_info({table})")]
    bounds = _rowid_bounds(source, table)
    if bounds is None:
        result.copied[table], result.lost[table] = 0, -1  # not even the table's ends are readable
        log.warning("salvage: table %s is unreadable, not even its first and last rowid", table)
        return
    result.copied[table] = result.lost[table] = 0
    low, high = bounds
    if low is None or high is None:
        return  # empty table
    select = f"SELECT rowid, {', '.join(columns)} FROM {table} NOT INDEXED WHERE rowid BETWEEN ? AND ?"  # noqa: S608
    # One row by equality: a range scan steps on to the next leaf to find its
    # end, so the last row before a damaged page would fail with it.
    select_one = f"SELECT rowid, {', '.join(columns)} FROM {table} NOT INDEXED WHERE rowid = ?"  # noqa: S608
    insert = f"INSERT OR IGNORE INTO {table} (rowid, {', '.join(columns)}) VALUES ({', '.join('?' * (len(columns) + 1))})"  # noqa: S608
    start = low
    while start <= high:
        end = min(start + _CHUNK_ROWS - 1, high)
        rows, lost = _read_range(source, (select, select_one), start, end)
        with target:
            target.executemany(insert, rows)
        result.copied[table] += len(rows)
        result.lost[table] += lost
        if progress is not None:
            progress(table, end - low + 1, high - low + 1)
        start = end + 1


def _rowid_bounds(source: sqlite3.Connection, table: str) -> tuple[int | None, int | None] | None:
    """The table's first and last rowid ((None, None): empty), read from its own b-tree; None if unreadable.

    min and max are separate queries: together SQLite answers them by scanning
    the smallest covering index, so one damaged index page failed the table.
    When an end's page is damaged, the outbox falls back to 1 and to its
    AUTOINCREMENT counter (no rowid was ever above it); the other tables fit
    in a page or two, so an unreadable end there means the table is gone.
    """
    ends = []
    for aggregate in ("min", "max"):
        try:
            ends.append(source.execute(f"SELECT {aggregate}(rowid) FROM {table} NOT INDEXED").fetchone()[0])  # noqa: S608
        except sqlite3.DatabaseError:
            ends.append(_fallback_end(source, table, aggregate))
    low, high = ends
    if low is _UNREADABLE or high is _UNREADABLE:
        return None
    return low, high


def _fallback_end(source: sqlite3.Connection, table: str, aggregate: str) -> int | None:
    if table != "outbox":
        return _UNREADABLE
    if aggregate == "min":
        return 1  # AUTOINCREMENT ids start at 1
    try:
        row = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    except sqlite3.DatabaseError:
        return _UNREADABLE
    return _UNREADABLE if row is None else row[0]


def _keep_id_counter(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    """Outbox ids are never reused (message ids name them): carry the old counter over if readable."""
    try:
        row = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    except sqlite3.DatabaseError:
        row = None
    if row is not None:
        with target:
            target.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'", row)
            target.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ? WHERE NOT EXISTS"
                           " (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')", row)


def _read_range(source: sqlite3.Connection, selects: tuple[str, str], start: int, end: int) -> tuple[list[tuple], int]:
    """Rows with rowid in [start, end] that read, and how many rowids in it failed.

    ``selects`` is (by rowid range, by one rowid).
    """
    select_range, select_one = selects
    try:
        if start == end:
            return source.execute(select_one, (start,)).fetchall(), 0
        return source.execute(select_range, (start, end)).fetchall(), 0
    except sqlite3.DatabaseError:
        if start == end:
            return [], 1
    middle = (start + end) // 2
    first, lost_first = _read_range(source, selects, start, middle)
    second, lost_second = _read_range(source, selects, middle + 1, end)
    return first + second, lost_first + lost_second
