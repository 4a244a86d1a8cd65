"""Read-only views of a gateway's state, straight from its SQLite file.

This is the one reader the gateway offers to others: ``pulsegate gateway
status`` uses it when the daemon is not running, and the terminal UI uses it
as its fallback. It never writes and never needs the daemon.

What only the running daemon knows (the uplink's live connection, the ports)
is not in the file: ``live_daemon_status`` asks the daemon for it over its
control socket.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from firmware_shim import decode_datum, schema_by_fingerprint
from gateway._control import SOCKET_FILENAME
from gateway._outbox import DB_FILENAME, SequenceTracker, damaged, open_database
from gateway.errors import GatewayError

__all__ = [
    "read_status", "read_device", "daemon_state", "live_daemon_status", "recorded_identity",
    "StateDirError", "DaemonUnreachableError",
]

#: A status answer is a few KiB per tracker; a longer line is not a sane daemon.
_STATUS_REPLY_MAX_BYTES = 16 * 1024 * 1024


class StateDirError(GatewayError):
    """The state directory holds no gateway database."""


class DaemonUnreachableError(GatewayError):
    """The daemon holds the state dir's lock but does not answer on its control socket."""


def live_daemon_status(state_dir: Path, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """The running daemon's own status (the control API's ``status``), with the live uplink state.

    Args:
        state_dir: The daemon's state directory (its control socket is there).
        timeout_s: How long to wait for the connection and for the answer.

    Returns:
        The ``status`` result, as CONTROL_API.md describes it.

    Raises:
        DaemonUnreachableError: no socket, no answer in time, or an error answer.
    """
    path = Path(state_dir) / SOCKET_FILENAME
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            stream = sock.makefile("rwb")
            stream.write(json.dumps({"id": 1, "op": "status", "args": {}}).encode() + b"\n")
            stream.flush()
            reply = json.loads(stream.readline(_STATUS_REPLY_MAX_BYTES) or b"null")
    except (OSError, ValueError) as exc:
        raise DaemonUnreachableError(f"the gateway daemon does not answer on {str(path)!r}: {exc}") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else "no reply"
        raise DaemonUnreachableError(f"the gateway daemon on {str(path)!r} refused its status: {error}")
    return reply["result"]


def daemon_state(state_dir: Path) -> dict[str, Any]:
    """Whether a gateway daemon holds this state dir's lock, and its pid."""
    lock = Path(state_dir) / "gateway.lock"
    if not lock.exists():
        return {"running": False, "pid": None}
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = lock.read_text().strip()
        return {"running": True, "pid": int(text) if text.isdigit() else None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {"running": False, "pid": None}
    finally:
        os.close(fd)


def _connect(state_dir: Path) -> sqlite3.Connection:
    path = Path(state_dir) / DB_FILENAME
    if not path.exists():
        raise StateDirError(
            f"no gateway database at {str(path)!r}; pass the --state-dir the gateway runs with"
        )
    return open_database(Path(state_dir), readonly=True)


def _iso(us: int | None) -> str | None:
    if not us:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us / 1_000_000))


def _trackers(conn: sqlite3.Connection) -> dict[tuple[str, str], SequenceTracker]:
    trackers = {}
    for row in conn.execute("SELECT device_id, boot_id, contiguous_seq, max_seq FROM devices"):
        trackers[(row[0], row[1])] = SequenceTracker(row[2], [], row[3])
    for row in conn.execute("SELECT * FROM seq_ranges ORDER BY device_id, boot_id, first_seq"):
        tracker = trackers.get((row["device_id"], row["boot_id"]))
        if tracker is not None:
            tracker.ranges.append([row["first_seq"], row["last_seq"]])
    return trackers


def read_status(state_dir: Path) -> dict[str, Any]:
    """The gateway's status as ``gateway status --json`` prints it.

    Raises:
        StateDirError: ``state_dir`` holds no gateway database.
        GatewayError: the database is damaged.
    """
    try:
        return _read_status(state_dir)
    except sqlite3.DatabaseError as exc:
        raise damaged(Path(state_dir) / DB_FILENAME, exc) from None


def _read_status(state_dir: Path) -> dict[str, Any]:
    conn = _connect(state_dir)
    try:
        # One read transaction, so every query sees the same commit: between
        # two autocommit SELECTs the running daemon can add a device.
        conn.execute("BEGIN")
        now_us = time.time_ns() // 1000
        trackers = _trackers(conn)
        buffered = dict(
            ((r[0], r[1]), r[2])
            for r in conn.execute("SELECT device_id, boot_id, count(*) FROM outbox GROUP BY device_id, boot_id")
        )
        devices = []
        for row in conn.execute("SELECT * FROM devices ORDER BY device_id, first_seen_us"):
            key = (row["device_id"], row["boot_id"])
            tracker = trackers[key]
            devices.append(
                {
                    "device_id": row["device_id"],
                    "boot_id": row["boot_id"],
                    "received": row["received"],
                    "buffered": buffered.get(key, 0),
                    "duplicates": row["duplicates"],
                    "gaps": tracker.missing,
                    "gap_ranges": [list(r) for r in tracker.missing_ranges()],
                    "quarantined": row["quarantined"],
                    "contiguous_seq": tracker.contiguous_seq,
                    "max_seq": tracker.max_seq,
                    "last_seen": _iso(row["last_seen_us"]),
                    "last_seen_age_seconds": round((now_us - row["last_seen_us"]) / 1e6, 3),
                    "port": row["port"],
                    "schema_version": row["schema_version"],
                }
            )
        records, oldest = conn.execute("SELECT count(*), min(received_at_us) FROM outbox").fetchone()
        quarantine = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        reasons = dict(conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall())
        return {
            "devices": devices,
            "outbox": {
                "records": records,
                "oldest_age_seconds": round((now_us - oldest) / 1e6, 3) if oldest else 0.0,
            },
            "quarantine": {"frames": quarantine, "by_reason": reasons},
        }
    finally:
        conn.close()


def read_device(state_dir: Path, device_id: str, *, recent: int = 20) -> dict[str, Any]:
    """One tracker's detail: its boots, the most recent records and quarantined frames.

    Raises:
        StateDirError: no database, or no tracker ``device_id`` in it.
    """
    status = read_status(state_dir)
    boots = [d for d in status["devices"] if d["device_id"] == device_id]
    if not boots:
        raise StateDirError(f"no tracker {device_id!r} in {str(state_dir)!r}")
    try:
        return _read_device(state_dir, device_id, boots, recent)
    except sqlite3.DatabaseError as exc:
        raise damaged(Path(state_dir) / DB_FILENAME, exc) from None


def _read_device(state_dir: Path, device_id: str, boots: list[dict[str, Any]], recent: int) -> dict[str, Any]:
    conn = _connect(state_dir)
    try:
        rows = conn.execute(
            "SELECT schema_fingerprint, datum, received_at_us FROM outbox WHERE device_id = ? ORDER BY id DESC LIMIT ?",
            (device_id, recent),
        ).fetchall()
        records = []
        for row in rows:
            info = schema_by_fingerprint(row["schema_fingerprint"])
            if info is None:
                continue
            record = decode_datum(info, row["datum"])
            records.append(record)
        quarantined = [
            {"at": _iso(r["received_at_us"]), "port": r["port"], "reason": r["reason"], "detail": r["detail"]}
            for r in conn.execute(
                "SELECT received_at_us, port, reason, detail FROM quarantine WHERE device_id = ? ORDER BY id DESC LIMIT ?",
                (device_id, recent),
            )
        ]
        return {"device_id": device_id, "boots": boots, "recent_records": records, "quarantine": quarantined}
    finally:
        conn.close()


def recorded_identity(state_dir: Path) -> dict[str, str]:
    """What the daemon recorded of itself at start: gateway_id, site, uplink (enabled/disabled)."""
    conn = _connect(state_dir)
    try:
        return dict(conn.execute("SELECT key, value FROM identity").fetchall())
    except sqlite3.DatabaseError as exc:
        raise damaged(Path(state_dir) / DB_FILENAME, exc) from None
    finally:
        conn.close()
