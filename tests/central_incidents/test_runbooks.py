"""Remediation runbooks with the real terraform/tofu binary on the shipped runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.incidents import IllegalTransition, RunbookRunner
from central.incidents.settings import RunbookSettings

RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "packaging" / "terraform" / "scale-ingest-workers"
KIND = "CentralIngestLagHigh"



def runbook_settings(policy: str, **extra: object) -> RunbookSettings:
    return RunbookSettings(enabled=True, runbooks={KIND: {
        "directory": str(RUNBOOK_DIR), "policy": policy, "variables": {"current_replicas": 2, "max_replicas": 8},
        "detail_variables": ["backlog_records"]}}, **extra)  # type: ignore[arg-type]


def test_plan_then_approved_apply(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("approve")
    service = make_service(sqlite_store, clock, runbooks=settings)
    # 5,000,000 records at 2000 records/s per worker within 600 s → ceil(4.17) = 5 workers.
    inc = service.raise_incident(KIND, "central:ingest", "lag 900 s", details={"backlog_records": 5_000_000})
    assert inc.runbook_status == "planning"
    runner = RunbookRunner(service, settings, tmp_path / "runbooks")
    assert runner.run_pending() == 1
    planned = service.get(inc.id)
    assert planned.runbook_status == "planned"
    plan_entry = service.timeline(inc.id)[-1]
    assert plan_entry.action == "runbook_plan"
    assert '"desired_replicas": 5' in plan_entry.note and "(exit 0)" in plan_entry.note
    assert not (RUNBOOK_DIR / ".terraform").exists()  # the shipped directory stays clean

    service.approve_runbook(inc.id, actor="carol")
    assert runner.run_pending() == 1
    applied = service.get(inc.id)
    assert applied.runbook_status == "applied"
    apply_entry = service.timeline(inc.id)[-1]
    assert apply_entry.action == "runbook_apply" and "apply (exit 0)" in apply_entry.note
    assert '"desired_replicas": 5' in apply_entry.note.split(" output (exit 0)")[1]
    assert [e.action for e in service.timeline(inc.id)] == [
        "create", "runbook_plan", "approve_runbook", "runbook_apply"]


def test_plan_only_refuses_approval(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("plan_only")
    service = make_service(sqlite_store, clock, runbooks=settings)
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": 10})
    RunbookRunner(service, settings, tmp_path).run_pending()
    with pytest.raises(IllegalTransition, match="policy is 'plan_only'"):
        service.approve_runbook(inc.id, actor="carol")


def test_approval_before_a_plan_is_refused(sqlite_store, clock, make_service):
    service = make_service(sqlite_store, clock, runbooks=runbook_settings("approve"))
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": 10})
    with pytest.raises(IllegalTransition, match="no plan waiting for approval"):
        service.approve_runbook(inc.id, actor="carol")


def test_auto_policy_applies_after_plan(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("auto")
    service = make_service(sqlite_store, clock, runbooks=settings)
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": 100_000_000})
    runner = RunbookRunner(service, settings, tmp_path)
    runner.run_pending()
    runner.run_pending()
    assert service.get(inc.id).runbook_status == "applied"
    # 100 M / 1.2 M = 84 workers, capped at max_replicas 8.
    assert '"capped_at_max": true' in service.timeline(inc.id)[1].note
    assert '"desired_replicas": 8' in service.timeline(inc.id)[1].note


def test_failing_plan_is_recorded_not_raised(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("approve")
    service = make_service(sqlite_store, clock, runbooks=settings)
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": -5})
    RunbookRunner(service, settings, tmp_path).run_pending()
    assert service.get(inc.id).runbook_status == "plan_failed"
    note = service.timeline(inc.id)[-1].note
    assert "backlog_records must not be negative" in note and "plan (exit 1)" in note


def test_timeout_is_recorded(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("approve", timeout_s=0.001)
    service = make_service(sqlite_store, clock, runbooks=settings)
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": 1})
    RunbookRunner(service, settings, tmp_path).run_pending()
    assert service.get(inc.id).runbook_status == "plan_failed"
    assert "init: timed out after 0.001 s" in service.timeline(inc.id)[-1].note


def test_missing_binary_is_recorded(sqlite_store, clock, make_service, tmp_path):
    settings = runbook_settings("approve", binary="no-such-terraform")
    service = make_service(sqlite_store, clock, runbooks=settings)
    inc = service.raise_incident(KIND, "central:ingest", "lag", details={"backlog_records": 1})
    RunbookRunner(service, settings, tmp_path).run_pending()
    assert "neither tofu nor terraform is on PATH" in service.timeline(inc.id)[-1].note
