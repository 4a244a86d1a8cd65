"""Repeat counting, the audit trail and problem linking."""

from __future__ import annotations

from central.incidents import State


def test_repeat_increments_the_open_incident(service, clock):
    first = service.raise_incident("frames_quarantined", "gateway:gym-3", "bad CRC burst")
    clock.advance(30)
    again = service.raise_incident("frames_quarantined", "gateway:gym-3", "bad CRC burst", details={"count": 7})
    assert again.id == first.id and again.repeat_count == 2
    assert again.last_seen_at == clock.now and again.details == {"count": 7}
    other_kind = service.raise_incident("uplink_down", "gateway:gym-3", "down")
    other_subject = service.raise_incident("frames_quarantined", "gateway:gym-4", "bad CRC")
    assert len({first.id, other_kind.id, other_subject.id}) == 3
    assert [e.action for e in service.timeline(first.id)] == ["create", "repeat"]


def test_repeat_with_higher_priority_raises_it(service):
    inc = service.raise_incident("k", "s", "x", impact="low", urgency="low")
    assert inc.priority == "P4"
    assert service.raise_incident("k", "s", "x", impact="high", urgency="high").priority == "P1"


def test_a_resolved_incident_is_not_reused(service):
    first = service.raise_incident("k", "s", "x")
    service.resolve(first.id, actor="a")
    second = service.raise_incident("k", "s", "x")
    assert second.id != first.id and second.repeat_count == 1


def test_audit_trail_has_who_when_and_before_after(service, clock):
    inc = service.raise_incident("k", "device:TR-1", "x", actor="ledger-detector")
    clock.advance(42)
    service.acknowledge(inc.id, actor="alice", note="on it")
    entries = service.timeline(inc.id)
    create, ack = entries
    assert (create.actor, create.action, create.at) == ("ledger-detector", "create", inc.created_at)
    assert create.changes["state"] == [None, "new"] and create.changes["subject"] == [None, "device:TR-1"]
    assert (ack.actor, ack.action, ack.note, ack.at) == ("alice", "ack", "on it", inc.created_at + 42)
    assert ack.changes["state"] == ["new", "acknowledged"]
    assert ack.changes["responded_at"] == [None, inc.created_at + 42]
    assert "version" not in ack.changes


def test_recurring_incidents_open_a_problem_that_outlives_them(store, clock, make_service):
    service = make_service(store, clock, problem_threshold=3, problem_window_s=3600)
    ids = []
    for _ in range(3):
        inc = service.raise_incident("uplink_down", "gateway:gym-7", "down")
        ids.append(inc.id)
        clock.advance(600)
        service.resolve(inc.id, actor="a")
        service.close(inc.id, actor="a")
    incidents = [service.get(i) for i in ids]
    problem_id = incidents[2].problem_id
    assert problem_id is not None
    assert all(i.problem_id == problem_id for i in incidents)
    problem = service.store.get_problem(problem_id)
    assert problem.incident_ids == ids and problem.state == "open"
    assert all(i.state is State.CLOSED for i in incidents)
    # A fourth within the window joins the same problem.
    fourth = service.raise_incident("uplink_down", "gateway:gym-7", "down")
    assert fourth.problem_id == problem_id
    assert service.store.get_problem(problem_id).incident_ids == [*ids, fourth.id]


def test_incidents_outside_the_window_do_not_make_a_problem(sqlite_store, clock, make_service):
    service = make_service(sqlite_store, clock, problem_threshold=3, problem_window_s=3600)
    for _ in range(3):
        inc = service.raise_incident("uplink_down", "gateway:gym-7", "down")
        service.resolve(inc.id, actor="a")
        clock.advance(2000)
    assert service.get(inc.id).problem_id is None
    assert service.store.list_problems() == []


def test_gateway_notices_are_queued_with_the_gateway_id(service):
    inc = service.raise_incident("uplink_down", "gateway:gym-9", "down", gateway_id="gym-9", site="Leeds")
    service.acknowledge(inc.id, actor="a")
    events = service.store.outbox_pending("gateway", 10)
    assert [(e.body["gateway_id"], e.body["site"], e.body["state"]) for e in events] == [
        ("gym-9", "Leeds", "new"), ("gym-9", "Leeds", "acknowledged")]
    no_gateway = service.raise_incident("ingest_lag", "central:ingest", "lag")
    assert all(e.incident_id != no_gateway.id for e in service.store.outbox_pending("gateway", 10))
