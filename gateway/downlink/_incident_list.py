"""The gateway's list of incidents from central, and which notices cue the wearer."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from firmware_shim.downlink_format import OPEN_STATES, IncidentNotice

__all__ = ["MAX_CUE_AGE_S", "MAX_INCIDENTS_SHOWN", "apply_notice"]

#: Incidents kept for status and the UI. A gym has a handful open at a time;
#: 100 is days of history while the status JSON stays small. Resolved ones
#: make room first.
MAX_INCIDENTS_SHOWN = 100
#: An open notice older than this waited in the queue while the gateway was
#: offline: it is listed but cues nobody, because the wearer has moved on and
#: the notice resolving it may be the very next message.
MAX_CUE_AGE_S = 15 * 60.0


def apply_notice(incidents: list[dict[str, Any]], notice: IncidentNotice, *, now_s: float | None = None) -> bool:
    """Put ``notice`` into ``incidents`` (one entry per incident, newest last) and say whether to cue.

    The list is replaced in one slice assignment, so a thread reading it (the
    control API's ``status``) sees either the old or the new list, never half.

    Args:
        incidents: the daemon's list; each entry has ``incident_id, priority,
            kind, subject, summary, state, major, at, received_at``.
        notice: the notice central sent.
        now_s: the current time, seconds since the epoch (for tests).

    Returns:
        True when the wearer should be cued: the incident is open, concerns a
        tracker, is fresh (see :data:`MAX_CUE_AGE_S`), and is new to this
        gateway, reopened, or just declared major. An acknowledgement or a
        redelivery of a notice already shown cues nothing.
    """
    now_s = time.time() if now_s is None else now_s
    existing = next((i for i in incidents if i["incident_id"] == notice.incident_id), None)
    entry = {
        "incident_id": notice.incident_id,
        "priority": notice.priority,
        "kind": notice.kind,
        "subject": notice.subject,
        "summary": notice.summary,
        "state": notice.state,
        "major": notice.major,
        "at": notice.at,
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s)),
    }
    updated = [i for i in incidents if i is not existing] + [entry]
    incidents[:] = _capped(updated)

    was_open = existing is not None and existing["state"] in OPEN_STATES
    became_major = notice.major and not (existing is not None and existing.get("major"))
    fresh = now_s - _epoch_s(notice.at) <= MAX_CUE_AGE_S
    return notice.is_open and notice.device_id is not None and fresh and (not was_open or became_major)


def _capped(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    excess = len(incidents) - MAX_INCIDENTS_SHOWN
    if excess <= 0:
        return incidents
    closed = [i for i in incidents if i["state"] not in OPEN_STATES][:excess]
    kept = [i for i in incidents if not any(i is c for c in closed)]
    return kept[-MAX_INCIDENTS_SHOWN:]


def _epoch_s(at: str) -> float:
    # The contract guarantees ISO 8601 UTC ending in "Z".
    return dt.datetime.fromisoformat(at[:-1] + "+00:00").timestamp()
