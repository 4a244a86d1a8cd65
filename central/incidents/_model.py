"""The incident, problem, audit and outbox records, and the ITIL lifecycle rules.

Lifecycle (actions in brackets)::

    new ──[ack]──▶ acknowledged ──[start]──▶ in_progress ◀──[start]── on_hold
     │                  │  └────────[hold]───────┐  └──[hold]──▶ on_hold
     └──[start]─────────┼──▶ in_progress         │
     any open state ──[resolve]──▶ resolved ──[close]──▶ closed (final)
                                     └──[reopen]──▶ in_progress

``closed`` is final: a later recurrence raises a new incident, which the
problem record links to the old one. ``reopen`` is only for ``resolved``.
Times are float seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from central.incidents._errors import IllegalTransition

__all__ = [
    "AuditEntry",
    "Incident",
    "OPEN_STATES",
    "OutboxEvent",
    "Problem",
    "SlaEvent",
    "State",
    "TRANSITIONS",
    "iso8601",
    "new_id",
    "transition_target",
]


class State(StrEnum):
    """Where an incident is in its lifecycle."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    RESOLVED = "resolved"
    CLOSED = "closed"


OPEN_STATES = frozenset({State.NEW, State.ACKNOWLEDGED, State.IN_PROGRESS, State.ON_HOLD})
"""States in which the service is still interrupted; at most one per (subject, kind)."""

TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "ack": (frozenset({State.NEW}), State.ACKNOWLEDGED),
    "start": (frozenset({State.NEW, State.ACKNOWLEDGED, State.ON_HOLD}), State.IN_PROGRESS),
    "hold": (frozenset({State.ACKNOWLEDGED, State.IN_PROGRESS}), State.ON_HOLD),
    "resolve": (OPEN_STATES, State.RESOLVED),
    "close": (frozenset({State.RESOLVED}), State.CLOSED),
    "reopen": (frozenset({State.RESOLVED}), State.IN_PROGRESS),
}
"""action → (states it is allowed from, state it leads to)."""


def transition_target(incident_id: str, current: State, action: str) -> State:
    """Return the state ``action`` leads to from ``current``.

    Raises:
        IllegalTransition: the action is unknown or not allowed from ``current``.
    """
    if action not in TRANSITIONS:
        raise IllegalTransition(f"unknown action {action!r}; use one of {', '.join(TRANSITIONS)}")
    allowed, target = TRANSITIONS[action]
    if current in allowed:
        return target
    hint = ""
    if current is State.CLOSED and action == "reopen":
        hint = "; closed incidents are final: a recurrence raises a new incident linked to the same problem"
    raise IllegalTransition(
        f"cannot {action} incident {incident_id} while it is {current.value}; "
        f"{action} is allowed from {', '.join(sorted(s.value for s in allowed))}{hint}"
    )


def new_id(prefix: str) -> str:
    """A fresh random id such as ``INC-3f2a9c0d1e4b5a67``."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def iso8601(epoch_s: float | None) -> str | None:
    """Render epoch seconds as ISO 8601 UTC with milliseconds, or None."""
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Incident:
    """One incident. ``version`` counts committed changes (optimistic locking)."""

    id: str
    kind: str
    subject: str
    summary: str
    impact: str
    urgency: str
    priority: str
    created_at: float
    category: str = "service"
    state: State = State.NEW
    major: bool = False
    gateway_id: str | None = None
    site: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    repeat_count: int = 1
    last_seen_at: float = 0.0
    updated_at: float = 0.0
    responded_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    clock_started_at: float = 0.0
    """Start of the resolution clock: creation, or the last reopen."""
    held_s: float = 0.0
    """Seconds spent on hold since ``clock_started_at`` (excluding a hold still running)."""
    hold_started_at: float | None = None
    assignment_group: str = "service-desk"
    escalations: list[str] = field(default_factory=list)
    """``target:level`` escalations done in this round, e.g. ``response:functional``."""
    breaches: list[str] = field(default_factory=list)
    """Targets breached (``response``, ``resolution``), each recorded once."""
    round: int = 0
    """Bumped by each reopen, so a reopened incident can escalate again."""
    problem_id: str | None = None
    alert_fingerprint: str | None = None
    alert_starts_at: str | None = None
    runbook_status: str | None = None
    """None, or planning / planned / plan_failed / approved / applied / apply_failed."""
    paged: bool = False
    """A PagerDuty trigger is outstanding for this incident (not yet resolved there)."""
    version: int = 0

    @property
    def is_open(self) -> bool:
        """True while the incident is not resolved or closed."""
        return self.state in OPEN_STATES

    def to_doc(self) -> dict[str, Any]:
        """The incident as a JSON-ready dict (times as epoch seconds)."""
        doc = dataclasses.asdict(self)
        doc["state"] = self.state.value
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Incident:
        """Rebuild an incident from :meth:`to_doc` output, ignoring unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["state"] = State(values["state"])
        return cls(**values)


@dataclass
class Problem:
    """A problem record: the unknown (or known) cause behind recurring incidents."""

    id: str
    kind: str
    subject: str
    created_at: float
    updated_at: float
    state: str = "open"
    incident_ids: list[str] = field(default_factory=list)
    note: str = ""

    def to_doc(self) -> dict[str, Any]:
        """The problem as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Problem:
        """Rebuild a problem from :meth:`to_doc` output."""
        return cls(**doc)


@dataclass
class AuditEntry:
    """One change to an incident: who, when, what, and each field's before/after."""

    incident_id: str
    version: int
    index: int
    at: float
    actor: str
    action: str
    changes: dict[str, list[Any]] = field(default_factory=dict)
    note: str = ""

    def to_doc(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict, with an ISO 8601 time."""
        doc = dataclasses.asdict(self)
        doc["at_iso"] = iso8601(self.at)
        return doc



#: Per-process tiebreak for event ids made in the same nanosecond.
_EVENT_COUNTER = itertools.count()


def _ordered_event_id() -> str:
    """A unique id that sorts in creation order within a process.

    Outboxes are read ordered by (created_at, event_id); created_at comes from
    the service's clock, which may repeat (an injected clock, a fast burst),
    and events of one dedup_key must still leave in the order they were made.
    """
    return f"{time.time_ns():020d}-{next(_EVENT_COUNTER) % 1_000_000:06d}-{uuid.uuid4().hex[:8]}"


@dataclass
class OutboxEvent:
    """A durable outbound event: a PagerDuty event, a gateway notice or a runbook step.

    ``seq`` is assigned by the store and orders events within a channel.
    """

    channel: str
    incident_id: str
    created_at: float
    body: dict[str, Any]
    event_id: str = field(default_factory=_ordered_event_id)
    seq: int | None = None
    attempts: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class SlaEvent:
    """An escalation or breach, recorded once per (incident, round, target, kind)."""

    incident_id: str
    round: int
    target: str
    kind: str
    """``breach``, ``functional`` or ``hierarchical``."""
    at: float
