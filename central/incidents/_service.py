"""The incident service: ITIL lifecycle, priority, SLA timers, escalation, problems.

Pure logic over an :class:`~central.incidents._store.IncidentStore` and an
injectable clock. Every change goes through :meth:`IncidentService._change`,
which diffs the incident, writes the audit trail and derives the outbound
events (PagerDuty, gateway notice, runbook step) in the same commit, so what
is paged always matches what is stored.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central.incidents._errors import (
    DuplicateOpenIncident,
    IllegalTransition,
    IncidentNotFound,
    IncidentStoreError,
    InvalidIncident,
    StaleIncident,
)
from central.incidents._model import (
    AuditEntry,
    Incident,
    OutboxEvent,
    Problem,
    SlaEvent,
    State,
    iso8601,
    new_id,
    transition_target,
)
from central.incidents._store import Change, IncidentFilter, IncidentStore
from central.incidents.settings import (
    LEVELS,
    PRIORITIES,
    IncidentSettings,
    PagerDutySettings,
    RunbookSettings,
)

__all__ = ["CHANNEL_GATEWAY", "CHANNEL_PAGERDUTY", "CHANNEL_RUNBOOK", "IncidentService", "Clock"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Returns the current time as epoch seconds; tests inject a fake one."""

CHANNEL_PAGERDUTY = "pagerduty"
CHANNEL_GATEWAY = "gateway"
CHANNEL_RUNBOOK = "runbook"

MAX_COMMIT_TRIES = 5
"""Optimistic-lock retries before giving up: contention on one incident is rare, a loop would hide a bug."""

MAX_SUMMARY_CHARS = 1024
"""PagerDuty's limit on payload.summary; summaries are cut to it on entry."""

_UNAUDITED = frozenset({"version", "updated_at"})


@dataclass
class _Mutation:
    action: str
    note: str = ""
    extra: list[OutboxEvent] | None = None
    sla: list[SlaEvent] | None = None
    problem: Problem | None = None


class IncidentService:
    """Raise, work and resolve incidents.

    Args:
        store: where incidents, audit trail and outboxes live.
        settings: [incidents] settings (matrix, targets, escalation, problems).
        pagerduty: [pagerduty] settings; events are queued only when enabled.
        runbooks: [runbooks] settings; runbook steps are queued only when enabled.
        clock: current time in epoch seconds.
    """

    def __init__(
        self,
        store: IncidentStore,
        settings: IncidentSettings | None = None,
        *,
        pagerduty: PagerDutySettings | None = None,
        runbooks: RunbookSettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or IncidentSettings()
        self.pagerduty = pagerduty or PagerDutySettings()
        self.runbooks = runbooks or RunbookSettings()
        self.clock = clock

    # -- queries ------------------------------------------------------------

    def get(self, incident_id: str) -> Incident:
        """The incident with ``incident_id``.

        Raises:
            IncidentNotFound: no such incident.
        """
        incident = self.store.get(incident_id)
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}; list them with 'pulsegate central incidents list'")
        return incident

    def list_incidents(self, query: IncidentFilter | None = None) -> list[Incident]:
        """Incidents matching ``query`` (default: the latest 100), newest first."""
        return self.store.list_incidents(query or IncidentFilter())

    def timeline(self, incident_id: str) -> list[AuditEntry]:
        """The incident's audit trail, oldest first."""
        self.get(incident_id)
        return self.store.audit_trail(incident_id)

    def priority_for(self, impact: str, urgency: str) -> str:
        """Priority from the impact × urgency matrix.

        Raises:
            InvalidIncident: impact or urgency is not high, medium or low.
        """
        for name, value in (("impact", impact), ("urgency", urgency)):
            if value not in LEVELS:
                raise InvalidIncident(f"{name} must be one of {', '.join(LEVELS)}, got {value!r}")
        return str(self.settings.priority_matrix[impact][urgency])

    def deadlines(self, incident: Incident, now: float | None = None) -> dict[str, float]:
        """Epoch-second deadlines of the targets the open incident has not met yet.

        Time on hold does not count toward resolution, so while on hold the
        resolution deadline moves forward with the clock.
        """
        now = self.clock() if now is None else now
        if not incident.is_open:
            return {}
        out: dict[str, float] = {}
        if incident.responded_at is None:
            out["response"] = incident.created_at + float(self.settings.response_target_s[incident.priority])
        held_s = incident.held_s + (now - incident.hold_started_at if incident.hold_started_at else 0.0)
        out["resolution"] = (
            incident.clock_started_at + float(self.settings.resolution_target_s[incident.priority]) + held_s
        )
        return out

    # -- raising from detectors and alerts -----------------------------------

    def raise_incident(
        self,
        kind: str,
        subject: str,
        summary: str,
        *,
        impact: str = "medium",
        urgency: str = "medium",
        category: str = "service",
        priority: str | None = None,
        major: bool = False,
        gateway_id: str | None = None,
        site: str | None = None,
        details: dict[str, Any] | None = None,
        actor: str = "detector",
        alert_fingerprint: str | None = None,
        alert_starts_at: str | None = None,
    ) -> Incident:
        """Open an incident for (subject, kind), or count a repeat on the open one.

        Args:
            kind: what is wrong, e.g. ``ledger_gap`` or an Alertmanager alertname.
            subject: what it is wrong with, e.g. ``device:TR-0042`` or ``gateway:gym-12``.
            summary: one line for people (cut to 1024 characters).
            impact: high | medium | low.
            urgency: high | medium | low.
            category: free-form ITIL category (``network``, ``data``, ...).
            priority: P1–P5 to override the matrix (P5 = planning).
            major: declare a major incident (always pages, escalates hierarchically).
            gateway_id: the gateway to notify of this incident's changes, if any.
            site: the gym, for people and for the gateway notice.
            details: extra facts (JSON-ready), shown in the timeline and the page.
            actor: who raised it, for the audit trail.
            alert_fingerprint: Alertmanager's fingerprint, when raised from an alert.
            alert_starts_at: the alert's startsAt; a re-notification of the same
                firing (same startsAt) is not counted as a repeat.

        Returns:
            The new or updated incident.

        Raises:
            InvalidIncident: a value is unusable.
        """
        kind, subject = kind.strip(), subject.strip()
        if not kind or not subject:
            raise InvalidIncident("an incident needs a non-empty kind and subject")
        computed = self.priority_for(impact, urgency)
        if priority is not None and priority not in PRIORITIES:
            raise InvalidIncident(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        fields = dict(
            kind=kind, subject=subject, summary=summary.strip()[:MAX_SUMMARY_CHARS] or f"{kind} on {subject}",
            impact=impact, urgency=urgency, priority=priority or computed, category=category, major=major,
            gateway_id=gateway_id, site=site, details=dict(details or {}),
            alert_fingerprint=alert_fingerprint, alert_starts_at=alert_starts_at,
        )
        for _ in range(MAX_COMMIT_TRIES):
            existing = self.store.find_open(subject, kind)
            try:
                if existing is not None:
                    return self._repeat(existing, fields, actor)
                return self._create(fields, actor)
            except (StaleIncident, DuplicateOpenIncident):
                continue  # another writer got there first: read again
        raise IncidentStoreError(f"could not raise {kind} on {subject}: the incident kept changing under us")

    def resolve_matching(self, kind: str, subject: str, *, actor: str = "detector", note: str = "") -> Incident | None:
        """Resolve the open incident for (subject, kind), if there is one (a detector's all-clear)."""
        existing = self.store.find_open(subject, kind)
        if existing is None:
            return None
        return self.resolve(existing.id, actor=actor, note=note or "condition cleared")

    def _create(self, fields: dict[str, Any], actor: str) -> Incident:
        now = self.clock()
        incident = Incident(id=new_id("INC"), created_at=now, **fields)
        incident.last_seen_at = incident.updated_at = incident.clock_started_at = now
        problem, earlier = self._recurrence(incident, now)
        change = self._build_change(None, incident, actor, _Mutation("create", problem=problem), now)
        self.store.commit(change)
        logger.info(
            "incident %s opened: %s on %s, %s%s", incident.id, incident.kind, incident.subject,
            incident.priority, " (major)" if incident.major else "",
        )
        for other in earlier:
            self._link_problem(other.id, problem.id if problem else "")
        return incident

    def _repeat(self, existing: Incident, fields: dict[str, Any], actor: str) -> Incident:
        if fields["alert_fingerprint"] and fields["alert_starts_at"] == existing.alert_starts_at:
            return existing  # Alertmanager's repeat_interval re-notification: the same firing
        now = self.clock()
        after = copy.deepcopy(existing)
        after.repeat_count += 1
        after.last_seen_at = now
        after.alert_starts_at = fields["alert_starts_at"] or after.alert_starts_at
        after.details.update(fields["details"])
        if PRIORITIES.index(fields["priority"]) < PRIORITIES.index(after.priority):
            after.priority, after.impact, after.urgency = fields["priority"], fields["impact"], fields["urgency"]
        if fields["major"]:
            after.major = True
        self.store.commit(self._build_change(existing, after, actor, _Mutation("repeat"), now))
        logger.info("incident %s repeated (%d times): %s on %s", after.id, after.repeat_count, after.kind, after.subject)
        return after

    def _recurrence(self, incident: Incident, now: float) -> tuple[Problem | None, list[Incident]]:
        """Link the incident to a problem when its (subject, kind) keeps recurring."""
        window_start = now - self.settings.problem_window_s
        recent = self.store.created_since(incident.subject, incident.kind, window_start)
        if len(recent) + 1 < self.settings.problem_threshold:
            return None, []
        problem = self.store.find_open_problem(incident.subject, incident.kind)
        if problem is None:
            problem = Problem(id=new_id("PRB"), kind=incident.kind, subject=incident.subject, created_at=now,
                              updated_at=now, note=f"{len(recent) + 1} incidents within {self.settings.problem_window_s:g} s")
            logger.warning("problem %s opened: %s on %s keeps recurring", problem.id, incident.kind, incident.subject)
        earlier = [i for i in recent if i.problem_id != problem.id]
        for other in [*earlier, incident]:
            if other.id not in problem.incident_ids:
                problem.incident_ids.append(other.id)
        problem.updated_at = now
        incident.problem_id = problem.id
        return problem, earlier

    def _link_problem(self, incident_id: str, problem_id: str) -> None:
        def link(incident: Incident, now: float) -> _Mutation:
            incident.problem_id = problem_id
            return _Mutation("link_problem", note=f"recurring: linked to problem {problem_id}")

        self._change(incident_id, "problem-management", link)

    # -- lifecycle -----------------------------------------------------------

    def acknowledge(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """new → acknowledged: someone has the incident (meets the response target)."""
        return self._transition(incident_id, "ack", actor, note)

    def start(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """→ in_progress: work is under way (also resumes from on_hold)."""
        return self._transition(incident_id, "start", actor, note)

    def hold(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """→ on_hold: waiting on someone else; the resolution clock pauses."""
        return self._transition(incident_id, "hold", actor, note)

    def resolve(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """→ resolved: service is restored."""
        return self._transition(incident_id, "resolve", actor, note)

    def close(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """resolved → closed: final."""
        return self._transition(incident_id, "close", actor, note)

    def reopen(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """resolved → in_progress: the fix did not hold; the resolution clock restarts.

        Raises:
            IllegalTransition: the incident is not resolved (closed ones are final).
            DuplicateOpenIncident: another incident is already open for its (subject, kind).
        """
        return self._transition(incident_id, "reopen", actor, note)

    def declare_major(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """Flag an open incident as major: it pages and escalates hierarchically."""

        def mark(incident: Incident, now: float) -> _Mutation:
            if not incident.is_open:
                raise IllegalTransition(f"incident {incident.id} is {incident.state.value}; only open incidents can become major")
            incident.major = True
            return _Mutation("declare_major", note=note)

        return self._change(incident_id, actor, mark)

    def add_note(self, incident_id: str, *, actor: str, action: str, note: str) -> Incident:
        """Append a timeline entry without changing any field (runbook output, paging failures)."""
        return self._change(incident_id, actor, lambda incident, now: _Mutation(action, note=note))

    def _transition(self, incident_id: str, action: str, actor: str, note: str) -> Incident:
        def apply(incident: Incident, now: float) -> _Mutation:
            before_state = incident.state
            incident.state = transition_target(incident.id, incident.state, action)
            if action in ("ack", "start") and incident.responded_at is None:
                incident.responded_at = now
            if before_state is State.ON_HOLD and incident.hold_started_at is not None:
                incident.held_s += now - incident.hold_started_at
                incident.hold_started_at = None
            if action == "hold":
                incident.hold_started_at = now
            elif action == "resolve":
                incident.resolved_at = now
            elif action == "close":
                incident.closed_at = now
            elif action == "reopen":
                incident.resolved_at = None
                incident.round += 1
                incident.clock_started_at, incident.held_s = now, 0.0
                incident.escalations, incident.breaches = [], []
            return _Mutation(action, note=note)

        incident = self._change(incident_id, actor, apply)
        logger.info("incident %s %s by %s: now %s", incident.id, action, actor, incident.state.value)
        return incident

    # -- runbooks --------------------------------------------------------------

    def approve_runbook(self, incident_id: str, *, actor: str, note: str = "") -> Incident:
        """Approve applying the incident's planned runbook (policy ``approve``).

        Raises:
            IllegalTransition: there is no successful plan waiting, or the policy forbids apply.
        """

        def approve(incident: Incident, now: float) -> _Mutation:
            runbook = self.runbooks.runbooks.get(incident.kind)
            if runbook is None or not self.runbooks.enabled:
                raise IllegalTransition(f"incident {incident.id} ({incident.kind}) has no runbook configured")
            if runbook.get("policy", "approve") != "approve":
                raise IllegalTransition(
                    f"the {incident.kind} runbook's policy is {runbook.get('policy')!r}; only 'approve' takes approvals"
                )
            if incident.runbook_status != "planned":
                raise IllegalTransition(
                    f"incident {incident.id} has no plan waiting for approval (runbook status: {incident.runbook_status})"
                )
            incident.runbook_status = "approved"
            event = OutboxEvent(CHANNEL_RUNBOOK, incident.id, now, {"action": "apply", "approved_by": actor})
            return _Mutation("approve_runbook", note=note, extra=[event])

        return self._change(incident_id, actor, approve)

    def record_runbook_result(self, incident_id: str, step: str, ok: bool, output: str) -> Incident:
        """Put a runbook step's outcome on the incident's timeline (called by the runbook runner)."""

        def record(incident: Incident, now: float) -> _Mutation:
            policy = self.runbooks.runbooks.get(incident.kind, {}).get("policy", "approve")
            extra = None
            if step == "plan":
                incident.runbook_status = "planned" if ok else "plan_failed"
                if ok and policy == "auto":
                    incident.runbook_status = "approved"
                    extra = [OutboxEvent(CHANNEL_RUNBOOK, incident.id, now, {"action": "apply", "approved_by": "policy:auto"})]
            else:
                incident.runbook_status = "applied" if ok else "apply_failed"
            return _Mutation(f"runbook_{step}", note=output, extra=extra)

        return self._change(incident_id, "runbook", record)

    # -- SLA timers ------------------------------------------------------------

    def tick(self) -> list[SlaEvent]:
        """Escalate open incidents near a target and record breaches; returns what was recorded."""
        recorded: list[SlaEvent] = []
        for incident in self.store.open_incidents():
            now = self.clock()
            if not self._sla_due(incident, now):
                continue
            try:
                holder: list[SlaEvent] = []
                self._change(incident.id, "sla-timer", functools.partial(self._escalate, holder=holder), tries=1)
                recorded.extend(holder)
            except (StaleIncident, IllegalTransition):
                continue  # changed meanwhile; the next tick looks again
        return recorded

    def _sla_due(self, incident: Incident, now: float) -> list[tuple[str, str]]:
        """(target, kind) SLA events the incident has earned and not yet recorded."""
        due: list[tuple[str, str]] = []
        pages_management = incident.priority == "P1" or incident.major
        for target, deadline in self.deadlines(incident, now).items():
            span_s = float(getattr(self.settings, f"{target}_target_s")[incident.priority])
            elapsed_fraction = 1.0 - (deadline - now) / span_s
            if elapsed_fraction >= self.settings.escalation_fraction:
                due.append((target, "functional"))
                if pages_management:
                    due.append((target, "hierarchical"))
            if elapsed_fraction >= 1.0:
                due.append((target, "breach"))
                if target == "resolution":
                    due.append((target, "hierarchical"))  # stalled: management hears of it
        seen = set(incident.escalations) | {f"{t}:breach" for t in incident.breaches}
        return [d for d in dict.fromkeys(due) if f"{d[0]}:{d[1]}" not in seen]

    def _escalate(self, incident: Incident, now: float, holder: list[SlaEvent]) -> _Mutation:
        due = self._sla_due(incident, now)
        if not due:
            raise StaleIncident("nothing due any more")
        notes = []
        for target, kind in due:
            holder.append(SlaEvent(incident.id, incident.round, target, kind, now))
            if kind == "breach":
                incident.breaches.append(target)
                notes.append(f"{target} target breached")
                logger.warning("incident %s breached its %s target (%s)", incident.id, target, incident.priority)
                continue
            incident.escalations.append(f"{target}:{kind}")
            if kind == "functional":
                incident.assignment_group = self.settings.functional_escalation_group
                notes.append(f"functional escalation to {self.settings.functional_escalation_group} ({target} target)")
            else:
                notes.append(f"hierarchical escalation to {self.settings.hierarchical_escalation_contact} ({target} target)")
            logger.warning("incident %s escalated: %s on the %s target", incident.id, kind, target)
        return _Mutation("sla", note="; ".join(notes), sla=list(holder))

    # -- the one write path ------------------------------------------------------

    def _change(
        self, incident_id: str, actor: str, mutate: Callable[[Incident, float], _Mutation], *, tries: int = MAX_COMMIT_TRIES
    ) -> Incident:
        for attempt in range(tries):
            before = self.get(incident_id)
            after = copy.deepcopy(before)
            now = self.clock()
            mutation = mutate(after, now)
            try:
                self.store.commit(self._build_change(before, after, actor, mutation, now))
                return after
            except StaleIncident:
                if attempt + 1 == tries:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def _build_change(
        self, before: Incident | None, after: Incident, actor: str, mutation: _Mutation, now: float
    ) -> Change:
        events = self._derive_events(before, after, now) + list(mutation.extra or [])
        # Order events of one incident by time even across processes with skewed clocks.
        floor = before.updated_at if before else 0.0
        for index, event in enumerate(events):
            event.created_at = max(now, floor + 0.001) + index * 1e-6
        after.version = (before.version if before else 0) + 1
        after.updated_at = max(now, floor + 0.001)
        changes = {} if before is None else {
            name: [old, new] for name, old in before.to_doc().items()
            if name not in _UNAUDITED and (new := after.to_doc()[name]) != old
        }
        if before is None:
            changes = {k: [None, v] for k, v in after.to_doc().items() if k not in _UNAUDITED and v not in (None, [], {})}
        audit = [AuditEntry(after.id, after.version, 0, now, actor, mutation.action, changes, mutation.note)]
        return Change(
            after, before.version if before else None, before.state if before else None,
            audit, events, mutation.problem, list(mutation.sla or []),
        )

    def _derive_events(self, before: Incident | None, after: Incident, now: float) -> list[OutboxEvent]:
        events: list[OutboxEvent] = []
        if self.pagerduty.enabled:
            events.extend(self._pagerduty_events(before, after, now))
        state_changed = before is None or before.state != after.state or before.major != after.major
        if after.gateway_id and state_changed:
            events.append(OutboxEvent(CHANNEL_GATEWAY, after.id, now, {
                "incident_id": after.id, "gateway_id": after.gateway_id, "site": after.site, "kind": after.kind,
                "subject": after.subject, "state": after.state.value, "priority": after.priority,
                "major": after.major, "summary": after.summary, "at": iso8601(now),
            }))
        if before is None and self.runbooks.enabled and after.kind in self.runbooks.runbooks:
            after.runbook_status = "planning"
            events.append(OutboxEvent(CHANNEL_RUNBOOK, after.id, now, {"action": "plan"}))
        return events

    def _pagerduty_events(self, before: Incident | None, after: Incident, now: float) -> list[OutboxEvent]:
        pageable = after.major or after.priority in self.pagerduty.page_priorities
        actions: list[str] = []
        if after.is_open and pageable and not after.paged:
            actions.append("trigger")
            after.paged = True
        if after.paged and after.state in (State.ACKNOWLEDGED, State.IN_PROGRESS, State.ON_HOLD) and (
            before is None or not before.paged or before.state in (State.NEW, State.RESOLVED)
        ):
            actions.append("acknowledge")
        if after.paged and not after.is_open:
            actions.append("resolve")
            after.paged = False
        service = self.pagerduty.service_by_kind.get(after.kind, self.pagerduty.default_service)
        return [
            OutboxEvent(CHANNEL_PAGERDUTY, after.id, now, {"event_action": action, "service": service,
                                                           "incident": after.to_doc(), "at": now})
            for action in actions
        ]
