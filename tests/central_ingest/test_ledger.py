"""The ledger's range arithmetic, and the ledger a real SQLite store keeps."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from central.ingest import DecodedBatch, accept_batches
from central.ledger import contiguous_runs, ledger_entry, merge_ranges
from central.store import open_store, sqlite_path
from central.store._sqlite import SqliteStore
from central_ingest.testdata import make_record


def test_contiguous_runs_split_on_holes_and_ignore_order_and_duplicates() -> None:
    assert contiguous_runs([9, 1, 2, 3, 3, 5, 10, 2]) == [(1, 3), (5, 5), (9, 10)]
    assert contiguous_runs([]) == []


@pytest.mark.parametrize(
    ("ranges", "merged"),
    [
        ([(1, 3), (4, 6)], ((1, 6),)),  # adjacent ranges join
        ([(5, 9), (1, 6)], ((1, 9),)),  # overlapping, out of order
        ([(1, 2), (4, 5)], ((1, 2), (4, 5))),  # a hole of one stays
        ([(1, 10), (3, 4)], ((1, 10),)),  # contained
        ([(2, 2), (2, 2)], ((2, 2),)),  # the same range twice (a redelivery)
    ],
    ids=["adjacent", "overlap", "hole", "contained", "duplicate"],
)
def test_merge_ranges(ranges: list[tuple[int, int]], merged: tuple[tuple[int, int], ...]) -> None:
    assert merge_ranges(ranges) == merged


def test_ledger_entry_counts_records_gaps_and_head() -> None:
    entry = ledger_entry("dev", "boot", [(3, 5), (9, 9), (6, 6), (12, 20)])
    # Held: 3..6, 9, 12..20 -> 4 + 1 + 9 = 14 records; missing 7..8 and 10..11.
    assert entry.held == ((3, 6), (9, 9), (12, 20))
    assert entry.records == 14
    assert entry.missing == ((7, 8), (10, 11))
    assert entry.gaps == 4
    assert (entry.first_seq, entry.last_seq, entry.head_missing) == (3, 20, 2)
    assert entry.as_json()["missing_ranges"] == [[7, 8], [10, 11]]


def _rows_batch(device: str, boot: str, seqs: list[int]) -> DecodedBatch:
    return DecodedBatch("gw-1", "gym-a", 2, [make_record(device, boot, s) for s in seqs])


def _islands(path: Path) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """The held ranges derived straight from the telemetry rows (gaps and islands in SQL)."""
    conn = sqlite3.connect(path)
    found = conn.execute(
        "SELECT device_id, boot_id, min(seq), max(seq) FROM ("
        " SELECT device_id, boot_id, seq, seq - row_number() OVER (PARTITION BY device_id, boot_id ORDER BY seq) AS grp"
        " FROM telemetry) GROUP BY device_id, boot_id, grp ORDER BY 1, 2, 3"
    ).fetchall()
    conn.close()
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for dev, boot, first, last in found:
        out.setdefault((dev, boot), []).append((first, last))
    return out


def test_ledger_tracks_gaps_and_reboots_across_out_of_order_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    boot1, boot2 = str(uuid.uuid4()), str(uuid.uuid4())
    # Boot 1 loses 41..50 and 77; the tracker reboots and boot 2 starts again at 1.
    seqs1 = [s for s in range(1, 101) if not 41 <= s <= 50 and s != 77]
    random.Random(7).shuffle(seqs1)
    for start in range(0, len(seqs1), 13):
        accept_batches(store, [_rows_batch("dev-a", boot1, seqs1[start : start + 13])])
    accept_batches(store, [_rows_batch("dev-a", boot2, list(range(1, 31)))])

    entries = {e.boot_id: e for e in store.ledger("dev-a")}
    assert entries[boot1].held == ((1, 40), (51, 76), (78, 100))
    assert (entries[boot1].records, entries[boot1].gaps) == (89, 11)
    assert entries[boot2].held == ((1, 30),) and entries[boot2].gaps == 0
    islands = _islands(tmp_path / "t.sqlite3")
    assert [list(e.held) for e in store.ledger()] == [
        islands[(e.device_id, e.boot_id)] for e in store.ledger()
    ]


def test_compaction_keeps_the_ledger_and_shrinks_its_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    boot = str(uuid.uuid4())
    for start in range(1, 200, 10):  # 20 batches of 10, 91..100 never arrives
        if start != 91:
            accept_batches(store, [_rows_batch("dev-c", boot, list(range(start, start + 10)))])
    before = store.ledger()
    assert store.compact_ledger() == 1
    assert store.ledger() == before
    conn = sqlite3.connect(tmp_path / "t.sqlite3")
    assert conn.execute("SELECT first_seq, last_seq FROM ledger_ranges ORDER BY 1").fetchall() == [
        (1, 90),
        (101, 200),
    ]


#: A competing writer: its own process, writing its share in batches of 25, then compacting.
_WRITER = """
import json, sys
from pathlib import Path
from central.ingest import DecodedBatch, accept_batches
from central.store._sqlite import SqliteStore
from central_ingest.testdata import make_record
path, boot, seqs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = SqliteStore(Path(path))
for start in range(0, len(seqs), 25):
    records = [make_record("dev-p", boot, s) for s in seqs[start : start + 25]]
    accept_batches(store, [DecodedBatch("gw-1", "gym-a", 2, records)])
store.compact_ledger()
store.close()
"""


def test_competing_writer_processes_leave_a_correct_ledger(tmp_path: Path) -> None:
    """Four processes write interleaved slices (and compact) at once; the union must be exact."""
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": f"{here.parents[2]}:{here.parents[1]}"}
    path = tmp_path / "shared.sqlite3"
    SqliteStore(path).init_schema()
    boot = str(uuid.uuid4())
    wanted = [s for s in range(1, 2001) if s % 97]  # every 97th record is lost
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), boot, json.dumps(wanted[i::4])], env=env
        )
        for i in range(4)
    ]
    assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
    (entry,) = SqliteStore(path).ledger()
    assert entry.records == len(wanted)
    assert entry.missing == tuple((s, s) for s in range(97, 2001, 97))
    assert _islands(path)[("dev-p", boot)] == list(entry.held)


def test_open_store_uses_the_configured_file(sqlite_settings) -> None:  # noqa: ANN001 - fixture
    store = open_store(sqlite_settings)
    store.init_schema()
    store.close()
    path = sqlite_path(sqlite_settings)
    assert path.parent == sqlite_settings.central.state_dir
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
