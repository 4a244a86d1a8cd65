"""Where incidents live: the :class:`IncidentStore` interface and its SQLite implementation.

A change to an incident is one :class:`Change`: the incident's new state (with
the version it was read at), its audit entries, the outbound events it causes,
an optional problem record and SLA events. The SQLite store writes a change in
one transaction, so an incident, its audit trail and its outbox never disagree.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from central.incidents._errors import (
    DuplicateOpenIncident,
    IncidentStoreError,
    StaleIncident,
)
from central.incidents._model import (
    OPEN_STATES,
    AuditEntry,
    Incident,
    OutboxEvent,
    Problem,
    SlaEvent,
    State,
)

__all__ = ["Change", "IncidentFilter", "IncidentStore", "OutboxStats", "SQLiteIncidentStore"]

logger = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
"""Cap on incidents returned by one list call, so one query cannot pull a whole history into memory."""

_OPEN_SQL = ", ".join(f"'{s.value}'" for s in OPEN_STATES)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, subject TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    priority TEXT NOT NULL, alert_fingerprint TEXT, created_at REAL NOT NULL,
    version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_subject_kind ON incidents (subject, kind, created_at);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (subject, kind)
    WHERE state IN ({_OPEN_SQL});
CREATE TABLE IF NOT EXISTS audit (
    incident_id TEXT NOT NULL, version INTEGER NOT NULL, idx INTEGER NOT NULL, at REAL NOT NULL,
    actor TEXT NOT NULL, action TEXT NOT NULL, changes TEXT NOT NULL, note TEXT NOT NULL,
    PRIMARY KEY (incident_id, version, idx));
CREATE TABLE IF NOT EXISTS problems (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS problems_subject_kind ON problems (subject, kind, state);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
    incident_id TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_channel ON outbox (channel, seq);
CREATE TABLE IF NOT EXISTS outbox_dropped (
    event_id TEXT PRIMARY KEY, channel TEXT NOT NULL, incident_id TEXT NOT NULL,
    created_at REAL NOT NULL, dropped_at REAL NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sla_events (
    incident_id TEXT NOT NULL, round INTEGER NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (incident_id, round, target, kind));
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""


@dataclass
class Change:
    """Everything one change to an incident writes, committed together."""

    incident: Incident
    expected_version: int | None
    """Version the incident was read at; None creates it."""
    previous_state: State | None = None
    """State the incident was read in (None on create); stores that keep an open-claim table need it."""
    audit: list[AuditEntry] = field(default_factory=list)
    outbox: list[OutboxEvent] = field(default_factory=list)
    problem: Problem | None = None
    sla_events: list[SlaEvent] = field(default_factory=list)


@dataclass
class IncidentFilter:
    """Which incidents to list; None means any."""

    states: list[str] | None = None
    kind: str | None = None
    subject: str | None = None
    priority: str | None = None
    limit: int = 100


@dataclass
class OutboxStats:
    """Pending and dropped counts of one outbox channel."""

    pending: int = 0
    oldest_created_at: float | None = None
    dropped: int = 0


class IncidentStore(Protocol):
    """What the incident service needs from storage."""

    def commit(self, change: Change) -> None:
        """Write a change atomically (SQLite) or idempotently in order (Cassandra).

        Raises:
            StaleIncident: the stored version is not ``change.expected_version``.
            DuplicateOpenIncident: another incident is open for the same (subject, kind).
        """

    def get(self, incident_id: str) -> Incident | None:
        """The incident with this id, or None."""

    def find_open(self, subject: str, kind: str) -> Incident | None:
        """The open incident for (subject, kind), or None."""

    def list_incidents(self, query: IncidentFilter) -> list[Incident]:
        """Incidents matching ``query``, newest first."""

    def open_incidents(self) -> list[Incident]:
        """Every open incident."""

    def created_since(self, subject: str, kind: str, since: float) -> list[Incident]:
        """Incidents of (subject, kind) created at or after ``since``, oldest first."""

    def audit_trail(self, incident_id: str) -> list[AuditEntry]:
        """The incident's audit entries, oldest first."""

    def get_problem(self, problem_id: str) -> Problem | None:
        """The problem with this id, or None."""

    def find_open_problem(self, subject: str, kind: str) -> Problem | None:
        """The problem not yet closed for (subject, kind), or None."""

    def list_problems(self, limit: int = 100) -> list[Problem]:
        """Problems, newest first."""

    def outbox_pending(self, channel: str, limit: int) -> list[OutboxEvent]:
        """The oldest ``limit`` undelivered events of ``channel``, in order."""

    def outbox_done(self, event: OutboxEvent) -> None:
        """Remove a delivered event."""

    def outbox_retry(self, event: OutboxEvent, error: str) -> None:
        """Record a failed try of an event that stays pending."""

    def outbox_drop(self, event: OutboxEvent, reason: str, now: float) -> None:
        """Move an event that can never be delivered to the dropped table."""

    def outbox_stats(self) -> dict[str, OutboxStats]:
        """Per channel: pending count, oldest pending, dropped count."""

    def sla_event_counts(self) -> dict[tuple[str, str], int]:
        """(target, kind) → how many SLA events were recorded."""

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """Take or renew the named lease for ``holder``; False while another holds it."""

    def close(self) -> None:
        """Release connections."""


class SQLiteIncidentStore:
    """The embedded store: one SQLite file in WAL mode, safe across threads and processes.

    Args:
        path: the database file; its directory is created if missing.
        busy_timeout_ms: how long a writer waits for another process's lock.
    """

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: an incident or a page accepted by the API must survive a power cut.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise IncidentStoreError(f"cannot open incident database {str(self.path)!r}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise IncidentStoreError(f"incident database {str(self.path)!r}: {exc}") from exc

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        self._db.execute(sql, params)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise IncidentStoreError(f"incident database {str(self.path)!r}: {exc}") from exc

    def commit(self, change: Change) -> None:
        """Write ``change`` in one transaction; see :meth:`IncidentStore.commit`."""
        inc = change.incident
        doc = json.dumps(inc.to_doc(), sort_keys=True)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._commit_in_transaction(change, doc)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                if "incidents.subject" in str(exc):
                    existing = self._db.execute(
                        f"SELECT id FROM incidents WHERE subject = ? AND kind = ? AND state IN ({_OPEN_SQL})",
                        (inc.subject, inc.kind),
                    ).fetchone()
                    raise DuplicateOpenIncident(
                        f"incident {existing[0] if existing else '?'} is already open for {inc.kind} on {inc.subject}",
                        existing[0] if existing else None,
                    ) from None
                raise IncidentStoreError(f"incident database {str(self.path)!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise IncidentStoreError(f"incident database {str(self.path)!r}: {exc}") from exc

    def _commit_in_transaction(self, change: Change, doc: str) -> None:
        inc = change.incident
        row = (inc.subject, inc.kind, inc.state.value, inc.priority, inc.alert_fingerprint, inc.version, doc)
        if change.expected_version is None:
            self._db.execute(
                "INSERT INTO incidents (subject, kind, state, priority, alert_fingerprint, version, doc, id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, inc.id, inc.created_at),
            )
        else:
            cursor = self._db.execute(
                "UPDATE incidents SET subject = ?, kind = ?, state = ?, priority = ?, alert_fingerprint = ?,"
                " version = ?, doc = ? WHERE id = ? AND version = ?",
                (*row, inc.id, change.expected_version),
            )
            if cursor.rowcount != 1:
                raise StaleIncident(f"incident {inc.id} changed since it was read; reload it and try again")
        for entry in change.audit:
            self._db.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.incident_id, entry.version, entry.index, entry.at, entry.actor, entry.action,
                 json.dumps(entry.changes, sort_keys=True, default=str), entry.note),
            )
        for event in change.outbox:
            self._db.execute(
                "INSERT INTO outbox (event_id, channel, incident_id, created_at, body) VALUES (?, ?, ?, ?, ?)",
                (event.event_id, event.channel, event.incident_id, event.created_at, json.dumps(event.body)),
            )
        if change.problem is not None:
            p = change.problem
            self._db.execute(
                "INSERT OR REPLACE INTO problems VALUES (?, ?, ?, ?, ?, ?)",
                (p.id, p.kind, p.subject, p.state, p.created_at, json.dumps(p.to_doc())),
            )
        for sla in change.sla_events:
            self._db.execute(
                "INSERT OR IGNORE INTO sla_events VALUES (?, ?, ?, ?, ?)",
                (sla.incident_id, sla.round, sla.target, sla.kind, sla.at),
            )

    def get(self, incident_id: str) -> Incident | None:
        """See :meth:`IncidentStore.get`."""
        rows = self._query("SELECT doc FROM incidents WHERE id = ?", (incident_id,))
        return Incident.from_doc(json.loads(rows[0][0])) if rows else None

    def find_open(self, subject: str, kind: str) -> Incident | None:
        """See :meth:`IncidentStore.find_open`."""
        rows = self._query(
            f"SELECT doc FROM incidents WHERE subject = ? AND kind = ? AND state IN ({_OPEN_SQL})", (subject, kind)
        )
        return Incident.from_doc(json.loads(rows[0][0])) if rows else None

    def list_incidents(self, query: IncidentFilter) -> list[Incident]:
        """See :meth:`IncidentStore.list_incidents`."""
        where, params = ["1 = 1"], []
        if query.states:
            where.append(f"state IN ({', '.join('?' for _ in query.states)})")
            params.extend(query.states)
        for column in ("kind", "subject", "priority"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        limit = max(1, min(query.limit, MAX_LIST_LIMIT))
        rows = self._query(
            f"SELECT doc FROM incidents WHERE {' AND '.join(where)} ORDER BY created_at DESC, id LIMIT {limit}",
            tuple(params),
        )
        return [Incident.from_doc(json.loads(r[0])) for r in rows]

    def open_incidents(self) -> list[Incident]:
        """See :meth:`IncidentStore.open_incidents`."""
        rows = self._query(f"SELECT doc FROM incidents WHERE state IN ({_OPEN_SQL}) ORDER BY created_at")
        return [Incident.from_doc(json.loads(r[0])) for r in rows]

    def created_since(self, subject: str, kind: str, since: float) -> list[Incident]:
        """See :meth:`IncidentStore.created_since`."""
        rows = self._query(
            "SELECT doc FROM incidents WHERE subject = ? AND kind = ? AND created_at >= ? ORDER BY created_at",
            (subject, kind, since),
        )
        return [Incident.from_doc(json.loads(r[0])) for r in rows]

    def audit_trail(self, incident_id: str) -> list[AuditEntry]:
        """See :meth:`IncidentStore.audit_trail`."""
        rows = self._query("SELECT * FROM audit WHERE incident_id = ? ORDER BY version, idx", (incident_id,))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    def get_problem(self, problem_id: str) -> Problem | None:
        """See :meth:`IncidentStore.get_problem`."""
        rows = self._query("SELECT doc FROM problems WHERE id = ?", (problem_id,))
        return Problem.from_doc(json.loads(rows[0][0])) if rows else None

    def find_open_problem(self, subject: str, kind: str) -> Problem | None:
        """See :meth:`IncidentStore.find_open_problem`."""
        rows = self._query(
            "SELECT doc FROM problems WHERE subject = ? AND kind = ? AND state != 'closed' ORDER BY created_at DESC",
            (subject, kind),
        )
        return Problem.from_doc(json.loads(rows[0][0])) if rows else None

    def list_problems(self, limit: int = 100) -> list[Problem]:
        """See :meth:`IncidentStore.list_problems`."""
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        rows = self._query(f"SELECT doc FROM problems ORDER BY created_at DESC LIMIT {limit}")
        return [Problem.from_doc(json.loads(r[0])) for r in rows]

    def outbox_pending(self, channel: str, limit: int) -> list[OutboxEvent]:
        """See :meth:`IncidentStore.outbox_pending`."""
        rows = self._query(
            "SELECT seq, event_id, channel, incident_id, created_at, attempts, last_error, body FROM outbox"
            " WHERE channel = ? ORDER BY seq LIMIT ?",
            (channel, limit),
        )
        return [
            OutboxEvent(channel=r[2], incident_id=r[3], created_at=r[4], body=json.loads(r[7]), event_id=r[1],
                        seq=r[0], attempts=r[5], last_error=r[6])
            for r in rows
        ]

    def outbox_done(self, event: OutboxEvent) -> None:
        """See :meth:`IncidentStore.outbox_done`."""
        self._write([("DELETE FROM outbox WHERE event_id = ?", (event.event_id,))])

    def outbox_retry(self, event: OutboxEvent, error: str) -> None:
        """See :meth:`IncidentStore.outbox_retry`."""
        self._write([(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE event_id = ?",
            (error[:500], event.event_id),
        )])

    def outbox_drop(self, event: OutboxEvent, reason: str, now: float) -> None:
        """See :meth:`IncidentStore.outbox_drop`."""
        self._write([
            ("INSERT OR REPLACE INTO outbox_dropped VALUES (?, ?, ?, ?, ?, ?, ?)",
             (event.event_id, event.channel, event.incident_id, event.created_at, now, reason[:1000],
              json.dumps(event.body))),
            ("DELETE FROM outbox WHERE event_id = ?", (event.event_id,)),
        ])

    def outbox_stats(self) -> dict[str, OutboxStats]:
        """See :meth:`IncidentStore.outbox_stats`."""
        stats: dict[str, OutboxStats] = {}
        for channel, count, oldest in self._query("SELECT channel, COUNT(*), MIN(created_at) FROM outbox GROUP BY channel"):
            stats[channel] = OutboxStats(pending=count, oldest_created_at=oldest)
        for channel, count in self._query("SELECT channel, COUNT(*) FROM outbox_dropped GROUP BY channel"):
            stats.setdefault(channel, OutboxStats()).dropped = count
        return stats

    def sla_event_counts(self) -> dict[tuple[str, str], int]:
        """See :meth:`IncidentStore.sla_event_counts`."""
        rows = self._query("SELECT target, kind, COUNT(*) FROM sla_events GROUP BY target, kind")
        return {(r[0], r[1]): r[2] for r in rows}

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """See :meth:`IncidentStore.acquire_lease`."""
        self._write([(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
            (name, holder, now + ttl_s, now),
        )])
        rows = self._query("SELECT holder FROM leases WHERE name = ?", (name,))
        return bool(rows) and rows[0][0] == holder
