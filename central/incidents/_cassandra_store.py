"""The incident store on Cassandra: prepared statements, LWTs where order matters.

Cassandra has no multi-partition transaction, so a :class:`Change` is written
in this order:

1. For a create or a reopen, claim ``incident_open`` for (subject, kind) with
   ``IF NOT EXISTS``: the one-open-incident rule holds across processes.
2. Write the incident with ``IF version = ?`` (or insert it): the optimistic
   lock. On failure the claim from step 1 is released.
3. Write the audit entries, outbox events, indexes, problem and SLA events in
   one logged batch: idempotent inserts keyed by the change, so a retry
   writes the same rows.

Known shortcoming: a process that dies between steps 2 and 3 leaves the
incident changed without its audit entry and outbox events for that change
(the next change carries on normally). Closing that gap needs the batch to be
written first and made visible by the version bump, which is future work.
Outbox order per incident relies on event times that the service makes
increase per incident even across processes with skewed clocks.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from central.incidents._errors import (
    DuplicateOpenIncident,
    IncidentStoreError,
    MissingIncidentStore,
    StaleIncident,
)
from central.incidents._model import OPEN_STATES, AuditEntry, Incident, OutboxEvent, Problem
from central.incidents._store import Change, IncidentFilter, OutboxStats

__all__ = ["CassandraIncidentStore"]

logger = logging.getLogger(__name__)

MAX_INDEX_SCAN = 10_000
"""Index rows a filtered list reads at most before it stops: filters run client-side."""

_CHANNELS = ("pagerduty", "gateway", "runbook")

_TABLES = [
    "CREATE TABLE IF NOT EXISTS incidents (id text PRIMARY KEY, version int, subject text, kind text,"
    " state text, priority text, created_at double, doc text)",
    "CREATE TABLE IF NOT EXISTS incident_index (bucket text, created_at double, id text,"
    " PRIMARY KEY ((bucket), created_at, id)) WITH CLUSTERING ORDER BY (created_at DESC, id ASC)",
    "CREATE TABLE IF NOT EXISTS incident_by_subject (subject text, kind text, created_at double, id text,"
    " PRIMARY KEY ((subject, kind), created_at, id))",
    "CREATE TABLE IF NOT EXISTS incident_open (subject text, kind text, id text, PRIMARY KEY ((subject, kind)))",
    "CREATE TABLE IF NOT EXISTS incident_audit (incident_id text, version int, idx int, at double, actor text,"
    " action text, changes text, note text, PRIMARY KEY ((incident_id), version, idx))",
    "CREATE TABLE IF NOT EXISTS incident_problems (id text PRIMARY KEY, subject text, kind text, state text,"
    " created_at double, doc text)",
    "CREATE TABLE IF NOT EXISTS incident_problem_index (bucket text, created_at double, id text, subject text,"
    " kind text, PRIMARY KEY ((bucket), created_at, id)) WITH CLUSTERING ORDER BY (created_at DESC, id ASC)",
    "CREATE TABLE IF NOT EXISTS incident_outbox (channel text, created_at double, event_id text,"
    " incident_id text, attempts int, last_error text, body text, PRIMARY KEY ((channel), created_at, event_id))",
    "CREATE TABLE IF NOT EXISTS incident_outbox_dropped (channel text, event_id text, incident_id text,"
    " created_at double, dropped_at double, reason text, body text, PRIMARY KEY ((channel), event_id))",
    "CREATE TABLE IF NOT EXISTS incident_sla_events (target text, kind text, incident_id text, round int,"
    " at double, PRIMARY KEY ((target, kind), incident_id, round))",
    "CREATE TABLE IF NOT EXISTS incident_leases (name text PRIMARY KEY, holder text)",
]

_STATEMENTS = {
    "get": "SELECT doc FROM incidents WHERE id = ?",
    "insert": "INSERT INTO incidents (id, version, subject, kind, state, priority, created_at, doc)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "update": "UPDATE incidents SET version = ?, state = ?, priority = ?, doc = ? WHERE id = ? IF version = ?",
    "claim": "INSERT INTO incident_open (subject, kind, id) VALUES (?, ?, ?) IF NOT EXISTS",
    "release": "DELETE FROM incident_open WHERE subject = ? AND kind = ? IF id = ?",
    "find_open": "SELECT id FROM incident_open WHERE subject = ? AND kind = ?",
    "all_open": "SELECT id FROM incident_open",
    "index": "INSERT INTO incident_index (bucket, created_at, id) VALUES ('all', ?, ?)",
    "scan_index": "SELECT id FROM incident_index WHERE bucket = 'all'",
    "by_subject": "INSERT INTO incident_by_subject (subject, kind, created_at, id) VALUES (?, ?, ?, ?)",
    "since": "SELECT id FROM incident_by_subject WHERE subject = ? AND kind = ? AND created_at >= ?",
    "audit": "INSERT INTO incident_audit (incident_id, version, idx, at, actor, action, changes, note)"
             " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "trail": "SELECT incident_id, version, idx, at, actor, action, changes, note FROM incident_audit"
             " WHERE incident_id = ?",
    "problem": "INSERT INTO incident_problems (id, subject, kind, state, created_at, doc) VALUES (?, ?, ?, ?, ?, ?)",
    "problem_index": "INSERT INTO incident_problem_index (bucket, created_at, id, subject, kind)"
                     " VALUES ('all', ?, ?, ?, ?)",
    "get_problem": "SELECT doc FROM incident_problems WHERE id = ?",
    "scan_problems": "SELECT id, subject, kind FROM incident_problem_index WHERE bucket = 'all'",
    "outbox_add": "INSERT INTO incident_outbox (channel, created_at, event_id, incident_id, attempts, last_error,"
                  " body) VALUES (?, ?, ?, ?, 0, '', ?)",
    "outbox_pending": "SELECT created_at, event_id, incident_id, attempts, last_error, body FROM incident_outbox"
                      " WHERE channel = ? LIMIT ?",
    "outbox_delete": "DELETE FROM incident_outbox WHERE channel = ? AND created_at = ? AND event_id = ?",
    "outbox_retry": "UPDATE incident_outbox SET attempts = ?, last_error = ? WHERE channel = ? AND created_at = ?"
                    " AND event_id = ?",
    "outbox_drop": "INSERT INTO incident_outbox_dropped (channel, event_id, incident_id, created_at, dropped_at,"
                   " reason, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "outbox_count": "SELECT COUNT(*), MIN(created_at) FROM incident_outbox WHERE channel = ?",
    "dropped_count": "SELECT COUNT(*) FROM incident_outbox_dropped WHERE channel = ?",
    "sla": "INSERT INTO incident_sla_events (target, kind, incident_id, round, at) VALUES (?, ?, ?, ?, ?)",
    "sla_count": "SELECT COUNT(*) FROM incident_sla_events WHERE target = ? AND kind = ?",
    "lease_take": "INSERT INTO incident_leases (name, holder) VALUES (?, ?) IF NOT EXISTS USING TTL ?",
    "lease_renew": "UPDATE incident_leases USING TTL ? SET holder = ? WHERE name = ? IF holder = ?",
}


TABLE_NAMES = tuple(re.findall(r"EXISTS (\w+)", " ".join(_TABLES)))
"""This store's tables (all prefixed ``incident``), sharing central's keyspace with the others."""


def _qualify(cql: str, keyspace: str) -> str:
    """Prefix table names with the keyspace: Cassandra 5 warns about prepared statements under USE."""
    return re.sub(r"\b(FROM|INTO|UPDATE|EXISTS) (incident\w*)", rf"\1 {keyspace}.\2", cql)


class CassandraIncidentStore:
    """The incident store on a Cassandra keyspace (see the module docstring for write order)."""

    def __init__(self, cluster: Any, session: Any, keyspace: str, drop_on_close: bool = False) -> None:
        self._cluster, self._session, self.keyspace = cluster, session, keyspace
        self._drop_on_close = drop_on_close
        self._ps = {name: self._prepare(_qualify(cql, keyspace)) for name, cql in _STATEMENTS.items()}

    @classmethod
    def connect(cls, settings: Any, drop_on_close: bool = False, *, create: bool = True) -> CassandraIncidentStore:
        """Connect to ``settings.hosts``; with ``create``, make the keyspace and tables if missing.

        Args:
            settings: central's [cassandra] settings (hosts, port, keyspace, replication).
            drop_on_close: drop the keyspace on :meth:`close` (tests only).
            create: False for commands that only work on existing incidents: a
                missing keyspace or table is then a wrong keyspace name, refused
                instead of made (a typo would otherwise create a keyspace).

        Raises:
            IncidentStoreError: Cassandra cannot be reached or refuses the schema.
            MissingIncidentStore: without ``create``, the tables are not there.
        """
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL, request_timeout=15,
        )
        # Protocol v5 is Cassandra 5.0's; pinning it skips the driver's downgrade dance.
        cluster = Cluster(list(settings.hosts), port=settings.port, protocol_version=5,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        try:
            session = cluster.connect()
            if not create:
                keyspace = cluster.metadata.keyspaces.get(settings.keyspace)
                if keyspace is None or "incidents" not in keyspace.tables:
                    raise MissingIncidentStore(
                        f"no incident tables in Cassandra keyspace {settings.keyspace!r}; check [cassandra] "
                        "keyspace (they are made by 'central incidents serve', 'detect' or 'raise')"
                    )
            else:
                session.execute(
                    f"CREATE KEYSPACE IF NOT EXISTS {settings.keyspace} WITH replication = {settings.replication}"
                )
                for cql in _TABLES:
                    session.execute(_qualify(cql, settings.keyspace))
        except MissingIncidentStore:
            cluster.shutdown()
            raise
        except Exception as exc:  # the driver raises many unrelated types: NoHostAvailable, OperationTimedOut, ...
            cluster.shutdown()
            raise IncidentStoreError(
                f"cannot use Cassandra at {','.join(settings.hosts)}:{settings.port} keyspace {settings.keyspace!r}: "
                f"{exc}; start it with 'packaging/services/pulsegate-services start cassandra'"
            ) from exc
        logger.info("incident store on Cassandra keyspace %s", settings.keyspace)
        return cls(cluster, session, settings.keyspace, drop_on_close)

    def _prepare(self, cql: str) -> Any:
        statement = self._session.prepare(cql)
        # Plain statements write fixed values to fixed keys, so a retry is harmless;
        # an LWT retried after a timeout could report "not applied" for its own
        # write, so those are left to the service's reload-and-retry.
        statement.is_idempotent = " IF " not in cql
        return statement

    def _run(self, name: str, params: tuple = ()) -> Any:
        try:
            return self._session.execute(self._ps[name], params)
        except Exception as exc:
            raise IncidentStoreError(f"Cassandra {name} failed: {exc}") from exc

    def close(self) -> None:
        """Shut the driver down (dropping the keyspace if asked to)."""
        if self._drop_on_close:
            self._session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        self._cluster.shutdown()

    # -- writes -----------------------------------------------------------------

    def commit(self, change: Change) -> None:
        """See :meth:`IncidentStore.commit`; the order of writes is in the module docstring."""
        inc = change.incident
        claims = inc.is_open and (change.previous_state is None or change.previous_state not in OPEN_STATES)
        if claims:
            result = self._run("claim", (inc.subject, inc.kind, inc.id))
            row = result.one()
            if not result.was_applied and row.id != inc.id:
                raise DuplicateOpenIncident(f"incident {row.id} is already open for {inc.kind} on {inc.subject}", row.id)
        doc = json.dumps(inc.to_doc(), sort_keys=True)
        if change.expected_version is None:
            applied = self._run("insert", (inc.id, inc.version, inc.subject, inc.kind, inc.state.value, inc.priority,
                                           inc.created_at, doc)).was_applied
        else:
            applied = self._run("update", (inc.version, inc.state.value, inc.priority, doc, inc.id,
                                           change.expected_version)).was_applied
        if not applied:
            if claims:
                self._run("release", (inc.subject, inc.kind, inc.id))
            raise StaleIncident(f"incident {inc.id} changed since it was read; reload it and try again")
        if not inc.is_open and change.previous_state in OPEN_STATES:
            self._run("release", (inc.subject, inc.kind, inc.id))
        self._write_batch(change)

    def _write_batch(self, change: Change) -> None:
        from cassandra.query import BatchStatement, BatchType

        inc = change.incident
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        if change.expected_version is None:
            batch.add(self._ps["index"], (inc.created_at, inc.id))
            batch.add(self._ps["by_subject"], (inc.subject, inc.kind, inc.created_at, inc.id))
        for e in change.audit:
            batch.add(self._ps["audit"], (e.incident_id, e.version, e.index, e.at, e.actor, e.action,
                                          json.dumps(e.changes, sort_keys=True, default=str), e.note))
        for ev in change.outbox:
            batch.add(self._ps["outbox_add"], (ev.channel, ev.created_at, ev.event_id, ev.incident_id, json.dumps(ev.body)))
        if change.problem is not None:
            p = change.problem
            batch.add(self._ps["problem"], (p.id, p.subject, p.kind, p.state, p.created_at, json.dumps(p.to_doc())))
            batch.add(self._ps["problem_index"], (p.created_at, p.id, p.subject, p.kind))
        for s in change.sla_events:
            batch.add(self._ps["sla"], (s.target, s.kind, s.incident_id, s.round, s.at))
        batch.is_idempotent = True
        try:
            self._session.execute(batch)
        except Exception as exc:
            raise IncidentStoreError(f"Cassandra write of incident {inc.id} v{inc.version} failed: {exc}") from exc

    # -- reads ------------------------------------------------------------------

    def get(self, incident_id: str) -> Incident | None:
        """See :meth:`IncidentStore.get`."""
        row = self._run("get", (incident_id,)).one()
        return Incident.from_doc(json.loads(row.doc)) if row else None

    def _many(self, ids: list[str]) -> list[Incident]:
        found = (self.get(i) for i in ids)
        return [i for i in found if i is not None]

    def find_open(self, subject: str, kind: str) -> Incident | None:
        """See :meth:`IncidentStore.find_open`."""
        row = self._run("find_open", (subject, kind)).one()
        incident = self.get(row.id) if row else None
        return incident if incident is not None and incident.is_open else None

    def open_incidents(self) -> list[Incident]:
        """See :meth:`IncidentStore.open_incidents`."""
        found = [i for i in self._many([r.id for r in self._run("all_open")]) if i.is_open]
        return sorted(found, key=lambda i: i.created_at)

    def list_incidents(self, query: IncidentFilter) -> list[Incident]:
        """See :meth:`IncidentStore.list_incidents`; filters run client-side over the time index."""
        limit = max(1, min(query.limit, 1000))
        out: list[Incident] = []
        for scanned, row in enumerate(self._run("scan_index")):
            if scanned >= MAX_INDEX_SCAN or len(out) >= limit:
                break
            incident = self.get(row.id)
            if incident is None or (query.states and incident.state.value not in query.states):
                continue
            if any(getattr(query, f) is not None and getattr(incident, f) != getattr(query, f)
                   for f in ("kind", "subject", "priority")):
                continue
            out.append(incident)
        return out

    def created_since(self, subject: str, kind: str, since: float) -> list[Incident]:
        """See :meth:`IncidentStore.created_since`."""
        return self._many([r.id for r in self._run("since", (subject, kind, since))])

    def audit_trail(self, incident_id: str) -> list[AuditEntry]:
        """See :meth:`IncidentStore.audit_trail`."""
        return [AuditEntry(r.incident_id, r.version, r.idx, r.at, r.actor, r.action, json.loads(r.changes), r.note)
                for r in self._run("trail", (incident_id,))]

    def get_problem(self, problem_id: str) -> Problem | None:
        """See :meth:`IncidentStore.get_problem`."""
        row = self._run("get_problem", (problem_id,)).one()
        return Problem.from_doc(json.loads(row.doc)) if row else None

    def find_open_problem(self, subject: str, kind: str) -> Problem | None:
        """See :meth:`IncidentStore.find_open_problem`."""
        for row in self._run("scan_problems"):
            if row.subject == subject and row.kind == kind:
                problem = self.get_problem(row.id)
                if problem is not None and problem.state != "closed":
                    return problem
        return None

    def list_problems(self, limit: int = 100) -> list[Problem]:
        """See :meth:`IncidentStore.list_problems`."""
        ids = [r.id for _, r in zip(range(max(1, min(limit, 1000))), self._run("scan_problems"), strict=False)]
        return [p for p in (self.get_problem(i) for i in ids) if p is not None]

    # -- outbox, counters, leases ---------------------------------------------------

    def outbox_pending(self, channel: str, limit: int) -> list[OutboxEvent]:
        """See :meth:`IncidentStore.outbox_pending`."""
        return [OutboxEvent(channel=channel, incident_id=r.incident_id, created_at=r.created_at,
                            body=json.loads(r.body), event_id=r.event_id, attempts=r.attempts, last_error=r.last_error)
                for r in self._run("outbox_pending", (channel, limit))]

    def outbox_done(self, event: OutboxEvent) -> None:
        """See :meth:`IncidentStore.outbox_done`."""
        self._run("outbox_delete", (event.channel, event.created_at, event.event_id))

    def outbox_retry(self, event: OutboxEvent, error: str) -> None:
        """See :meth:`IncidentStore.outbox_retry`."""
        event.attempts += 1
        self._run("outbox_retry", (event.attempts, error[:500], event.channel, event.created_at, event.event_id))

    def outbox_drop(self, event: OutboxEvent, reason: str, now: float) -> None:
        """See :meth:`IncidentStore.outbox_drop`."""
        self._run("outbox_drop", (event.channel, event.event_id, event.incident_id, event.created_at, now,
                                  reason[:1000], json.dumps(event.body)))
        self.outbox_done(event)

    def outbox_stats(self) -> dict[str, OutboxStats]:
        """See :meth:`IncidentStore.outbox_stats`."""
        stats = {}
        for channel in _CHANNELS:
            count, oldest = self._run("outbox_count", (channel,)).one()
            dropped = self._run("dropped_count", (channel,)).one()[0]
            if count or dropped:
                stats[channel] = OutboxStats(pending=count, oldest_created_at=oldest if count else None, dropped=dropped)
        return stats

    def sla_event_counts(self) -> dict[tuple[str, str], int]:
        """See :meth:`IncidentStore.sla_event_counts`."""
        counts = {}
        for target in ("response", "resolution"):
            for kind in ("functional", "hierarchical", "breach"):
                n = self._run("sla_count", (target, kind)).one()[0]
                if n:
                    counts[(target, kind)] = n
        return counts

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """See :meth:`IncidentStore.acquire_lease`; the row's TTL is the lease's expiry."""
        ttl = max(1, int(ttl_s))
        taken = self._run("lease_take", (name, holder, ttl))
        if taken.was_applied:
            return True
        if taken.one().holder != holder:
            return False
        return bool(self._run("lease_renew", (ttl, holder, name, holder)).was_applied)
