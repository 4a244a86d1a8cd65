"""The gateway's incident list: one entry per incident, capped, and which notices cue the wearer."""

from __future__ import annotations

import time
from typing import Any

from downlink.downlink_harness import iso_now, notice_body
from firmware_shim.downlink_format import IncidentNotice
from gateway.downlink import MAX_CUE_AGE_S, MAX_INCIDENTS_SHOWN, apply_notice

GATEWAY = "gym-12"


def notice(**overrides: Any) -> IncidentNotice:
    return IncidentNotice.from_body(notice_body(GATEWAY, **overrides))


def test_a_new_device_incident_is_listed_and_cued() -> None:
    incidents: list[dict[str, Any]] = []
    now = time.time()
    first = notice(priority="P3")
    assert apply_notice(incidents, first, now_s=now) is True
    assert incidents == [{
        "incident_id": first.incident_id, "priority": "P3", "kind": first.kind, "subject": first.subject,
        "summary": first.summary, "state": "new", "major": False, "at": first.at,
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }]


def test_acknowledge_updates_in_place_without_a_second_cue() -> None:
    incidents: list[dict[str, Any]] = []
    raised = notice()
    apply_notice(incidents, raised)
    acked = IncidentNotice.from_body({**raised.to_body(), "state": "acknowledged", "at": iso_now(1)})
    assert apply_notice(incidents, acked) is False
    assert [(i["incident_id"], i["state"]) for i in incidents] == [(raised.incident_id, "acknowledged")]


def test_resolved_updates_the_list_and_cues_nobody() -> None:
    incidents: list[dict[str, Any]] = []
    raised = notice()
    apply_notice(incidents, raised)
    resolved = IncidentNotice.from_body({**raised.to_body(), "state": "resolved", "at": iso_now(1)})
    assert apply_notice(incidents, resolved) is False
    assert incidents[0]["state"] == "resolved"


def test_reopen_and_major_cue_again() -> None:
    incidents: list[dict[str, Any]] = []
    raised = notice()
    apply_notice(incidents, raised)
    apply_notice(incidents, IncidentNotice.from_body({**raised.to_body(), "state": "resolved"}))
    reopened = IncidentNotice.from_body({**raised.to_body(), "state": "in_progress"})
    assert apply_notice(incidents, reopened) is True
    major = IncidentNotice.from_body({**raised.to_body(), "state": "in_progress", "major": True})
    assert apply_notice(incidents, major) is True
    assert apply_notice(incidents, major) is False  # the same notice again: nothing new


def test_notices_not_about_a_tracker_are_listed_only() -> None:
    incidents: list[dict[str, Any]] = []
    assert apply_notice(incidents, notice(subject="gateway:gym-12")) is False
    assert len(incidents) == 1


def test_a_stale_notice_from_the_backlog_is_listed_only() -> None:
    incidents: list[dict[str, Any]] = []
    now = time.time()
    stale = notice(at=iso_now(-MAX_CUE_AGE_S - 60))
    assert apply_notice(incidents, stale, now_s=now) is False
    fresh = notice(at=iso_now(-MAX_CUE_AGE_S + 60))
    assert apply_notice(incidents, fresh, now_s=now) is True
    assert len(incidents) == 2


def test_the_list_is_capped_and_resolved_incidents_make_room_first() -> None:
    incidents: list[dict[str, Any]] = []
    oldest_open = notice(subject="gateway:gym-12")
    apply_notice(incidents, oldest_open)
    resolved = [notice(state="resolved") for _ in range(10)]
    for item in resolved:
        apply_notice(incidents, item)
    newer_open = [notice(subject="site:berlin") for _ in range(MAX_INCIDENTS_SHOWN - 1)]
    for item in newer_open:
        apply_notice(incidents, item)
    # 111 notices into a list of 100: the 10 resolved incidents went, the open ones stayed.
    assert len(incidents) == MAX_INCIDENTS_SHOWN
    ids = [i["incident_id"] for i in incidents]
    assert ids == [oldest_open.incident_id, *(n.incident_id for n in newer_open)]
    # Once only open ones are left, the oldest goes.
    last = notice(subject="site:berlin")
    apply_notice(incidents, last)
    assert [i["incident_id"] for i in incidents] == [*(n.incident_id for n in newer_open), last.incident_id]
