"""Priority matrix, SLA deadlines, escalation and breaches, with a fake clock."""

from __future__ import annotations

import pytest

from central.incidents import InvalidIncident
from central.incidents.settings import IncidentSettings

# The 3×3 example of the reference notes (impact × urgency), written out independently.
EXPECTED_MATRIX = {
    ("high", "high"): "P1", ("high", "medium"): "P2", ("medium", "high"): "P2",
    ("high", "low"): "P3", ("medium", "medium"): "P3", ("low", "high"): "P3",
    ("medium", "low"): "P4", ("low", "medium"): "P4", ("low", "low"): "P4",
}


@pytest.mark.parametrize(("impact", "urgency"), list(EXPECTED_MATRIX))
def test_default_matrix(service, impact, urgency):
    assert service.priority_for(impact, urgency) == EXPECTED_MATRIX[(impact, urgency)]
    inc = service.raise_incident("k", f"device:{impact}-{urgency}", "s", impact=impact, urgency=urgency)
    assert inc.priority == EXPECTED_MATRIX[(impact, urgency)]


def test_configured_matrix_and_explicit_p5(sqlite_store, clock, make_service):
    matrix = {level: {u: "P4" for u in ("high", "medium", "low")} for level in ("high", "medium", "low")}
    matrix["low"]["low"] = "P5"
    service = make_service(sqlite_store, clock, priority_matrix=matrix)
    assert service.raise_incident("k", "s1", "x", impact="low", urgency="low").priority == "P5"
    assert service.raise_incident("k", "s2", "x", impact="high", urgency="high").priority == "P4"
    assert service.raise_incident("k", "s3", "x", priority="P5", impact="high", urgency="high").priority == "P5"


def test_bad_levels_are_refused(service):
    with pytest.raises(InvalidIncident, match="impact must be one of high, medium, low, got 'huge'"):
        service.raise_incident("k", "s", "x", impact="huge")
    with pytest.raises(InvalidIncident, match="priority must be one of"):
        service.raise_incident("k", "s", "x", priority="P0")


def test_matrix_with_a_gap_is_refused():
    with pytest.raises(ValueError, match="priority_matrix.low must map each urgency"):
        IncidentSettings(priority_matrix={"high": {"high": "P1", "medium": "P1", "low": "P1"},
                                          "medium": {"high": "P1", "medium": "P1", "low": "P1"},
                                          "low": {"high": "P1"}})


@pytest.mark.parametrize(("priority", "response_s", "resolution_s"),
                         [("P1", 900, 7200), ("P2", 3600, 14400), ("P3", 7200, 86400), ("P4", 14400, 259200)])
def test_default_targets(service, clock, priority, response_s, resolution_s):
    inc = service.raise_incident("k", "s", "x", priority=priority)
    assert service.deadlines(inc) == {"response": clock.now + response_s, "resolution": clock.now + resolution_s}


def test_p3_escalates_functionally_at_80_percent_then_breaches_once(service, clock):
    inc = service.raise_incident("k", "device:TR-9", "x")  # medium/medium → P3: response 2 h
    clock.advance(0.8 * 7200 - 1)
    assert service.tick() == []
    clock.advance(1)
    events = service.tick()
    assert [(e.target, e.kind) for e in events] == [("response", "functional")]
    assert service.get(inc.id).assignment_group == "L2"
    assert service.tick() == []  # recorded once
    clock.advance(0.2 * 7200)
    assert [(e.target, e.kind) for e in service.tick()] == [("response", "breach")]
    clock.advance(3600)
    assert service.tick() == []
    assert service.get(inc.id).breaches == ["response"]
    assert service.store.sla_event_counts() == {("response", "functional"): 1, ("response", "breach"): 1}


def test_p1_and_major_also_escalate_hierarchically(service, clock):
    p1 = service.raise_incident("k", "gateway:a", "x", impact="high", urgency="high")
    major_p3 = service.raise_incident("k", "gateway:b", "x", major=True)
    clock.advance(0.8 * 900)  # P1 response at 80 %
    by_incident: dict[str, set] = {}
    for event in service.tick():
        by_incident.setdefault(event.incident_id, set()).add((event.target, event.kind))
    assert by_incident == {p1.id: {("response", "functional"), ("response", "hierarchical")}}
    clock.advance(0.8 * 7200 - 0.8 * 900)  # P3 response at 80 %, P1 resolution at 80 %
    for event in service.tick():
        by_incident.setdefault(event.incident_id, set()).add((event.target, event.kind))
    assert by_incident[major_p3.id] == {("response", "functional"), ("response", "hierarchical")}
    assert {("resolution", "functional"), ("resolution", "hierarchical")} <= by_incident[p1.id]


def test_acknowledging_stops_the_response_clock(service, clock):
    inc = service.raise_incident("k", "s", "x")
    clock.advance(100)
    service.acknowledge(inc.id, actor="a")
    clock.advance(7200)
    assert service.tick() == []
    assert "response" not in service.deadlines(service.get(inc.id))


def test_hold_pauses_the_resolution_clock(service, clock):
    inc = service.raise_incident("k", "s", "x")  # P3: resolution 1 day
    service.acknowledge(inc.id, actor="a")
    clock.advance(1000)
    service.hold(inc.id, actor="a")
    clock.advance(5000)
    held = service.get(inc.id)
    assert service.deadlines(held)["resolution"] == pytest.approx(inc.created_at + 86400 + 5000)
    service.start(inc.id, actor="a")
    clock.advance(300)
    assert service.deadlines(service.get(inc.id))["resolution"] == pytest.approx(inc.created_at + 86400 + 5000)


def test_breached_resolution_escalates_hierarchically(service, clock):
    inc = service.raise_incident("k", "s", "x", priority="P4")
    service.acknowledge(inc.id, actor="a")
    clock.advance(259200)
    kinds = {(e.target, e.kind) for e in service.tick()}
    assert kinds == {("resolution", "functional"), ("resolution", "breach"), ("resolution", "hierarchical")}
    timeline = service.timeline(inc.id)
    assert timeline[-1].actor == "sla-timer" and "resolution target breached" in timeline[-1].note
