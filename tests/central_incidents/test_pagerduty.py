"""PagerDuty events kept in step with incidents, through the durable outbox, to a real loopback receiver."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from central.incidents import PagerDutySender
from central.incidents.settings import PagerDutySettings

sys.path.insert(0, str(Path(__file__).parent))
from pagerduty_receiver import PagerDutyReceiver, validate_event  # noqa: E402

KEY_OPS = "0PS0PS0PS0PS0PS0PS0PS0PS0PS0PS0P"
KEY_NET = "NETNETNETNETNETNETNETNETNETNETNE"


def pd_settings(base_url: str) -> PagerDutySettings:
    return PagerDutySettings(
        enabled=True, base_url=base_url, routing_keys={"ops": KEY_OPS, "network": KEY_NET},
        service_by_kind={"uplink_down": "network"}, default_service="ops",
        timeout_s=2.0, retry_initial_s=0.02, retry_max_s=0.2,
    )


@pytest.fixture
def receiver():
    started = PagerDutyReceiver().start()
    yield started
    started.stop()


def test_trigger_ack_resolve_with_the_incident_id_as_dedup_key(store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(store, clock, pagerduty=settings, public_url="https://ops.example/")
    inc = service.raise_incident("uplink_down", "gateway:gym-1", "uplink down for 5 min", impact="high",
                                 urgency="high", gateway_id="gym-1", site="Leeds")
    service.acknowledge(inc.id, actor="alice")
    service.resolve(inc.id, actor="alice")
    sender = PagerDutySender(store, settings, public_url="https://ops.example/")
    assert sender.send_pending() == 3
    assert receiver.rejected == []
    assert [(e["event_action"], e["dedup_key"], e["routing_key"]) for e in receiver.accepted] == [
        ("trigger", inc.id, KEY_NET), ("acknowledge", inc.id, KEY_NET), ("resolve", inc.id, KEY_NET)]
    trigger = receiver.accepted[0]
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "gym-1" and trigger["payload"]["group"] == "Leeds"
    assert trigger["payload"]["summary"] == "[P1] uplink_down on gateway:gym-1: uplink down for 5 min"
    assert trigger["payload"]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert trigger["client_url"] == f"https://ops.example/incidents/{inc.id}"
    assert receiver.alerts == {(KEY_NET, inc.id): "resolved"}
    assert store.outbox_pending("pagerduty", 10) == []


@pytest.mark.parametrize(("impact", "urgency", "severity"),
                         [("high", "medium", "error"), ("medium", "medium", "warning")])
def test_severity_follows_priority(sqlite_store, clock, make_service, receiver, impact, urgency, severity):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    service.raise_incident("ingest_lag", "central:ingest", "lag", impact=impact, urgency=urgency)
    PagerDutySender(sqlite_store, settings).send_pending()
    assert [e["payload"]["severity"] for e in receiver.accepted] == [severity]
    assert receiver.accepted[0]["routing_key"] == KEY_OPS


def test_p4_does_not_page_until_declared_major(sqlite_store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    inc = service.raise_incident("k", "s", "x", impact="low", urgency="low")
    assert sqlite_store.outbox_pending("pagerduty", 10) == []
    service.declare_major(inc.id, actor="lead")
    PagerDutySender(sqlite_store, settings).send_pending()
    assert [(e["event_action"], e["payload"]["severity"]) for e in receiver.accepted] == [("trigger", "critical")]


def test_reopen_triggers_a_new_alert_and_acknowledges_it(sqlite_store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    inc = service.raise_incident("k", "s", "x", impact="high", urgency="high")
    service.resolve(inc.id, actor="a")
    service.reopen(inc.id, actor="a")
    PagerDutySender(sqlite_store, settings).send_pending()
    assert [e["event_action"] for e in receiver.accepted] == ["trigger", "resolve", "trigger", "acknowledge"]
    assert receiver.alerts == {(KEY_OPS, inc.id): "acknowledged"}


def test_429_and_5xx_are_retried_in_order(sqlite_store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    inc = service.raise_incident("k", "s", "x", impact="high", urgency="high")
    service.acknowledge(inc.id, actor="a")
    receiver.scripted = [429, 500, 503]
    assert PagerDutySender(sqlite_store, settings).send_pending() == 2
    assert receiver.requests == 5
    assert [e["event_action"] for e in receiver.accepted] == ["trigger", "acknowledge"]


def test_400_drops_the_event_records_it_and_goes_on(sqlite_store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    first = service.raise_incident("k", "s1", "x", impact="high", urgency="high")
    second = service.raise_incident("k", "s2", "y", impact="high", urgency="high")
    receiver.scripted = [400]
    dropped: list[tuple[str, str]] = []
    sender = PagerDutySender(sqlite_store, settings, on_drop=lambda e, reason: dropped.append((e.incident_id, reason)))
    assert sender.send_pending() == 2
    assert [e["dedup_key"] for e in receiver.accepted] == [second.id]
    assert dropped == [(first.id, 'HTTP 400: {"status": "error", "message": "scripted 400"}')]
    assert sqlite_store.outbox_stats()["pagerduty"].dropped == 1


def test_receiver_down_then_up_gets_every_event_once_in_order(store, clock, make_service):
    with socket.socket() as probe:  # a port with nothing listening yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = pd_settings(f"http://127.0.0.1:{port}")
    service = make_service(store, clock, pagerduty=settings)
    expected = []
    for n in range(4):
        inc = service.raise_incident("k", f"device:TR-{n}", "x", impact="high", urgency="medium")
        expected.append(("trigger", inc.id))
        if n % 2 == 0:
            service.acknowledge(inc.id, actor="a")
            expected.append(("acknowledge", inc.id))
        service.resolve(inc.id, actor="a")
        expected.append(("resolve", inc.id))
    sender = PagerDutySender(store, settings)
    sent: list[int] = []
    worker = threading.Thread(target=lambda: sent.append(sender.send_pending()))
    worker.start()
    time.sleep(1.0)  # refused connections, retried with back-off
    assert store.outbox_stats()["pagerduty"].pending == len(expected)
    receiver = PagerDutyReceiver(port).start()
    try:
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        receiver.stop()
    assert sent == [len(expected)]
    received = [(e["event_action"], e["dedup_key"]) for e in receiver.accepted]
    # PagerDuty applies events per dedup_key, so that order is the contract;
    # events of different incidents may interleave once the receiver is back.
    assert sorted(received) == sorted(expected)
    for key in {k for _, k in expected}:
        assert [a for a, k in received if k == key] == [a for a, k in expected if k == key]
    assert receiver.rejected == [] and receiver.requests == len(expected)
    assert store.outbox_pending("pagerduty", 100) == []


def test_stopping_a_sender_in_back_off_keeps_the_event(sqlite_store, clock, make_service, receiver):
    settings = pd_settings(receiver.base_url)
    service = make_service(sqlite_store, clock, pagerduty=settings)
    service.raise_incident("k", "s", "x", impact="high", urgency="high")
    receiver.scripted = [503] * 1000
    sender = PagerDutySender(sqlite_store, settings)
    threading.Timer(0.5, sender.stop.set).start()
    assert sender.send_pending() == 0
    pending = sqlite_store.outbox_pending("pagerduty", 10)
    assert len(pending) == 1 and pending[0].attempts >= 1 and "503" in pending[0].last_error


def test_the_receiver_rejects_what_the_api_rejects():
    good = {"routing_key": KEY_OPS, "event_action": "trigger", "dedup_key": "INC-1",
            "payload": {"summary": "s", "source": "x", "severity": "info", "timestamp": "2026-01-01T00:00:00Z"}}
    assert validate_event(good) == []
    assert validate_event({**good, "routing_key": "short"}) == ["routing_key must be a 32-character string"]
    assert validate_event({**good, "dedup_key": "x" * 256}) == ["dedup_key must be a string of at most 255 characters"]
    long_summary = {**good, "payload": {**good["payload"], "summary": "x" * 1025}}
    assert validate_event(long_summary) == ["payload.summary must be 1..1024 characters"]
    bad_severity = {**good, "payload": {**good["payload"], "severity": "fatal"}}
    assert validate_event(bad_severity) == ["payload.severity must be one of ('critical', 'error', 'warning', 'info')"]
    bad_time = {**good, "payload": {**good["payload"], "timestamp": "yesterday"}}
    assert validate_event(bad_time) == ["payload.timestamp must be ISO 8601"]
    assert validate_event({"routing_key": KEY_OPS, "event_action": "resolve"}) == ["resolve needs a dedup_key"]
