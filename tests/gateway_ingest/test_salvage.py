"""`pulsegate gateway salvage` on a real outbox file with pages overwritten, as a failing disk would."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

from replay_harness import run_cli

from firmware_shim import encode_record, schema, split_soe
from gateway._outbox import AcceptedRecord, Outbox

RECORDS = 20_000
PAGE_BYTES = 4096


def _fill(state_dir: Path) -> dict[int, tuple]:
    """An outbox of RECORDS real records; returns id -> (device, seq, datum) as committed."""
    outbox = Outbox(state_dir)
    boot = str(uuid.uuid4())
    info = schema(2)
    batch = []
    for seq in range(1, RECORDS + 1):
        record = {"device_id": "salvage-1", "boot_id": boot, "seq": seq, "timestamp_us": 1_735_000_000_000_000 + seq,
                  "heart_rate_bpm": 100 + seq % 60, "cadence_rpm": None, "speed_m_s": 2.0, "distance_m": float(seq),
                  "latitude_deg": None, "longitude_deg": None, "altitude_m": None, "power_w": None,
                  "temperature_c": None, "steps": seq, "battery_pct": 70,
                  "host": {"uptime_s": seq, "cpu_load": 0.2, "free_memory_bytes": 1 << 20}}
        datum = split_soe(encode_record(record))[1]
        batch.append(AcceptedRecord("/dev/ttyUSB0", "salvage-1", boot, seq, record["timestamp_us"], info.fingerprint,
                                    2, datum))
        if len(batch) == 5000:
            outbox.commit_batch(batch)
            batch = []
    outbox.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = {r[0]: tuple(r[1:]) for r in outbox.conn.execute("SELECT id, device_id, seq, datum FROM outbox")}
    outbox.close()
    return rows


def test_salvage_keeps_every_readable_record_and_the_damaged_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    original = _fill(state)
    db = state / "gateway.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_BYTES
    data = bytearray(db.read_bytes())
    pages = len(data) // PAGE_BYTES
    # Three pages in the middle of the file, where the outbox rows are, turned to 0xFF.
    for page in (pages // 2, pages // 2 + 1, pages // 2 + 7):
        data[page * PAGE_BYTES:(page + 1) * PAGE_BYTES] = b"\xff" * PAGE_BYTES
    db.write_bytes(bytes(data))
    broken = run_cli("gateway", "status", "--state-dir", str(state))
    assert broken.returncode != 0 and "is damaged" in broken.stderr

    result = run_cli("gateway", "salvage", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert (state / "gateway.damaged.sqlite").read_bytes() == bytes(data)  # kept as it was
    with sqlite3.connect(db) as conn:
        salvaged = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT id, device_id, seq, datum FROM outbox")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Most rows survive three bad pages, each one exactly as committed.
    assert RECORDS - 400 <= len(salvaged) < RECORDS
    assert all(original[row_id] == row for row_id, row in salvaged.items())
    copied_line = next(line for line in result.stdout.splitlines() if line.startswith("outbox:"))
    assert copied_line.startswith(f"outbox: {len(salvaged)} rows copied")
    status = json.loads(run_cli("gateway", "status", "--json", "--state-dir", str(state)).stdout)
    assert status["outbox"]["records"] == len(salvaged)


def test_salvage_does_not_overwrite_an_earlier_damaged_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Outbox(state).close()
    (state / "gateway.damaged.sqlite").write_bytes(b"from an earlier salvage")
    again = run_cli("gateway", "salvage", "--state-dir", str(state))
    assert again.returncode != 0
    assert "exists from an earlier salvage; move it away first" in again.stderr
    assert again.stderr.strip().count("\n") == 0


def _btree_pages(db: Path, name: str, page_type: str) -> list[int]:
    """Page numbers of one b-tree's pages of a type, in key order (SQLite's own dbstat table)."""
    with sqlite3.connect(db) as conn:
        return [page for (page,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY path", (name, page_type))]


def _overwrite_page(db: Path, page: int) -> bytes:
    """Page ``page`` (1-based) turned to 0xFF, as a failing disk would; returns the file's new bytes."""
    data = bytearray(db.read_bytes())
    data[(page - 1) * PAGE_BYTES:page * PAGE_BYTES] = b"\xff" * PAGE_BYTES
    db.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_index_page_costs_no_row(tmp_path: Path) -> None:
    state = tmp_path / "state"
    original = _fill(state)
    db = state / "gateway.sqlite"
    leaves = _btree_pages(db, "idx_outbox_device_id_boot_id_seq", "leaf")
    assert len(leaves) > 10  # the index spans many pages: one in the middle is hit
    damaged = _overwrite_page(db, leaves[len(leaves) // 2])
    with sqlite3.connect(db) as conn:  # the rows themselves still read, past the index
        assert conn.execute("SELECT count(*) FROM outbox NOT INDEXED").fetchone()[0] == RECORDS

    result = run_cli("gateway", "salvage", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert (state / "gateway.damaged.sqlite").read_bytes() == damaged
    with sqlite3.connect(db) as conn:
        salvaged = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT id, device_id, seq, datum FROM outbox")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert salvaged == original  # every row, each as committed
    # The summary once, on stdout, from its first line; nothing repeated on stderr.
    assert result.stdout.splitlines()[0] == "identity: 0 rows copied, 0 unreadable"
    assert f"outbox: {RECORDS} rows copied, 0 unreadable" in result.stdout.splitlines()
    assert result.stderr == ""


def test_a_damaged_last_outbox_page_loses_only_its_rows(tmp_path: Path) -> None:
    state = tmp_path / "state"
    original = _fill(state)
    db = state / "gateway.sqlite"
    last_leaf = _btree_pages(db, "outbox", "leaf")[-1]
    with sqlite3.connect(db) as conn:  # one cell per row on a table leaf
        cells = conn.execute("SELECT ncell FROM dbstat WHERE name = 'outbox' AND pageno = ?", (last_leaf,)).fetchone()[0]
    assert 0 < cells < RECORDS
    _overwrite_page(db, last_leaf)

    result = run_cli("gateway", "salvage", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        salvaged = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT id, device_id, seq, datum FROM outbox")}
    # The rightmost leaf holds the highest ids: exactly those are gone, the rest kept as committed.
    assert sorted(salvaged) == list(range(1, RECORDS - cells + 1))
    assert all(original[row_id] == row for row_id, row in salvaged.items())
    assert f"outbox: {RECORDS - cells} rows copied, {cells} unreadable" in result.stdout.splitlines()


def test_salvage_refuses_an_empty_file_and_leaves_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "gateway.sqlite").write_bytes(b"")
    result = run_cli("gateway", "salvage", "--state-dir", str(state))
    assert result.returncode != 0
    assert "nothing to salvage" in result.stderr and "is empty (0 bytes)" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in state.iterdir()) == ["gateway.sqlite"]
    assert (state / "gateway.sqlite").read_bytes() == b""
