"""The ITIL lifecycle: allowed transitions, refused ones, reopen, closed is final."""

from __future__ import annotations

import pytest

from central.incidents import DuplicateOpenIncident, IllegalTransition, IncidentNotFound, State


def test_full_lifecycle_records_each_step(service, clock):
    """new → acknowledged → in_progress → on_hold → in_progress → resolved → closed."""
    inc = service.raise_incident("ledger_gap", "device:TR-1", "gap of 12 records")
    assert inc.state is State.NEW
    steps = [("acknowledge", State.ACKNOWLEDGED), ("start", State.IN_PROGRESS), ("hold", State.ON_HOLD),
             ("start", State.IN_PROGRESS), ("resolve", State.RESOLVED), ("close", State.CLOSED)]
    for method, expected in steps:
        clock.advance(60)
        inc = getattr(service, method)(inc.id, actor="alice")
        assert inc.state is expected
    stored = service.get(inc.id)
    assert stored.state is State.CLOSED
    assert stored.responded_at == pytest.approx(stored.created_at + 60)
    assert stored.resolved_at == pytest.approx(stored.created_at + 300)
    assert stored.closed_at == pytest.approx(stored.created_at + 360)
    assert stored.held_s == pytest.approx(60)
    actions = [e.action for e in service.timeline(inc.id)]
    assert actions == ["create", "ack", "start", "hold", "start", "resolve", "close"]


@pytest.mark.parametrize(
    ("path", "action"),
    [([], "hold"), ([], "close"), ([], "reopen"), (["acknowledge"], "ack"),
     (["resolve"], "hold"), (["resolve"], "start"), (["resolve", "close"], "reopen"),
     (["resolve", "close"], "resolve")],
    ids=["hold-new", "close-new", "reopen-new", "ack-twice", "hold-resolved", "start-resolved",
         "reopen-closed", "resolve-closed"],
)
def test_illegal_transitions_are_refused_and_change_nothing(service, path, action):
    inc = service.raise_incident("uplink_down", "gateway:gym-1", "uplink down")
    for step in path:
        getattr(service, step)(inc.id, actor="bob")
    before = service.get(inc.id)
    method = {"ack": "acknowledge"}.get(action, action)
    with pytest.raises(IllegalTransition, match=f"cannot {action} incident {inc.id} while it is {before.state.value}"):
        getattr(service, method)(inc.id, actor="bob")
    after = service.get(inc.id)
    assert after.version == before.version and after.state is before.state


def test_closed_is_final_and_says_what_to_do(service):
    inc = service.raise_incident("uplink_down", "gateway:gym-1", "uplink down")
    service.resolve(inc.id, actor="a")
    service.close(inc.id, actor="a")
    with pytest.raises(IllegalTransition, match="closed incidents are final"):
        service.reopen(inc.id, actor="a")


def test_reopen_restarts_the_resolution_clock(service, clock):
    inc = service.raise_incident("uplink_down", "gateway:gym-1", "uplink down", impact="high", urgency="high")
    clock.advance(3600)
    service.resolve(inc.id, actor="a")
    clock.advance(600)
    reopened = service.reopen(inc.id, actor="a", note="came back")
    assert reopened.state is State.IN_PROGRESS and reopened.round == 1
    # P1 resolution target is 2 h from the reopen, not from the creation.
    assert service.deadlines(reopened)["resolution"] == pytest.approx(clock.now + 7200)


def test_reopen_refused_when_another_is_open_for_the_same_subject_and_kind(service):
    first = service.raise_incident("uplink_down", "gateway:gym-1", "uplink down")
    service.resolve(first.id, actor="a")
    second = service.raise_incident("uplink_down", "gateway:gym-1", "down again")
    assert second.id != first.id
    with pytest.raises(DuplicateOpenIncident, match=second.id):
        service.reopen(first.id, actor="a")
    assert service.get(first.id).state is State.RESOLVED


def test_unknown_incident_is_a_clear_error(service):
    with pytest.raises(IncidentNotFound, match="no incident 'INC-nope'"):
        service.acknowledge("INC-nope", actor="a")
