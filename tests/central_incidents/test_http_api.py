"""The HTTP API, the Alertmanager webhook and /metrics, on a real loopback server."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from central.incidents import IncidentHTTPServer


@pytest.fixture
def api(service):
    server = IncidentHTTPServer(service, "127.0.0.1", 0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client
    server.stop()


def alert(status: str, fingerprint: str, starts_at: str, **labels: str) -> dict:
    return {
        "status": status,
        "labels": {"alertname": "GatewayUplinkDown", "severity": "critical", **labels},
        "annotations": {"summary": f"gateway {labels.get('gateway_id')} uplink down"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:20:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=pulsegate_gateway_uplink_connected+%3D%3D+0",
        "fingerprint": fingerprint,
    }


def webhook(status: str, alerts: list[dict]) -> dict:
    return {
        "version": "4", "groupKey": '{}:{alertname="GatewayUplinkDown"}', "truncatedAlerts": 0,
        "status": status, "receiver": "pulsegate-incidents", "groupLabels": {"alertname": "GatewayUplinkDown"},
        "commonLabels": {"alertname": "GatewayUplinkDown"}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "alerts": alerts,
    }


def test_alertmanager_firing_opens_and_resolved_resolves(api, service):
    firing = [alert("firing", "aaaa0001", "2026-01-01T00:00:00Z", gateway_id="gym-1", site="Leeds"),
              alert("firing", "aaaa0002", "2026-01-01T00:00:00Z", gateway_id="gym-2")]
    reply = api.post("/alertmanager", json=webhook("firing", firing))
    assert reply.status_code == 200
    opened = reply.json()["opened"]
    assert len(opened) == 2
    shown = api.get(f"/incidents/{opened[0]}").json()["incident"]
    assert (shown["kind"], shown["subject"], shown["priority"], shown["gateway_id"], shown["site"]) == (
        "GatewayUplinkDown", "gateway:gym-1", "P1", "gym-1", "Leeds")
    assert shown["alert_fingerprint"] == "aaaa0001"

    # Alertmanager re-sends the same firing every repeat_interval: not a repeat.
    again = api.post("/alertmanager", json=webhook("firing", firing[:1])).json()
    assert again["updated"] == [opened[0]]
    assert service.get(opened[0]).repeat_count == 1

    resolved = [alert("resolved", "aaaa0001", "2026-01-01T00:00:00Z", gateway_id="gym-1", site="Leeds")]
    assert api.post("/alertmanager", json=webhook("resolved", resolved)).json()["resolved"] == [opened[0]]
    assert service.get(opened[0]).state.value == "resolved"
    assert service.get(opened[1]).state.value == "new"
    timeline = api.get(f"/incidents/{opened[0]}").json()["timeline"]
    assert [(e["actor"], e["action"]) for e in timeline] == [("alertmanager", "create"), ("alertmanager", "resolve")]


def test_a_new_firing_of_the_same_alert_counts_a_repeat(api, service):
    first = api.post("/alertmanager", json=webhook("firing", [alert("firing", "f1", "2026-01-01T00:00:00Z", gateway_id="g")]))
    api.post("/alertmanager", json=webhook("firing", [alert("firing", "f1", "2026-01-01T01:00:00Z", gateway_id="g")]))
    assert service.get(first.json()["opened"][0]).repeat_count == 2


@pytest.mark.parametrize(("payload", "message"), [
    ({"version": "3", "alerts": []}, 'unsupported Alertmanager webhook version \'3\'; expected "4"'),
    ({"version": "4"}, "Alertmanager payload has no 'alerts' list"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {}, "fingerprint": "x"}]},
     "each alert needs labels with an alertname"),
])
def test_bad_webhook_payloads_get_400(api, payload, message):
    reply = api.post("/alertmanager", json=payload)
    assert reply.status_code == 400 and reply.json() == {"error": message}


def test_create_act_and_errors(api):
    created = api.post("/incidents", json={"kind": "ledger_gap", "subject": "device:TR-1", "summary": "gap",
                                           "impact": "high", "urgency": "low", "actor": "detector"})
    assert created.status_code == 201
    incident_id = created.json()["id"]
    assert created.json()["priority"] == "P3"
    assert api.post("/incidents", json={"kind": "ledger_gap", "subject": "device:TR-1"}).json()["repeat_count"] == 2
    assert api.post(f"/incidents/{incident_id}/ack", json={}).status_code == 400  # no actor
    for action, state in [("ack", "acknowledged"), ("hold", "on_hold"), ("start", "in_progress"),
                          ("resolve", "resolved"), ("reopen", "in_progress"), ("resolve", "resolved"),
                          ("close", "closed")]:
        reply = api.post(f"/incidents/{incident_id}/{action}", json={"actor": "alice", "note": action})
        assert (reply.status_code, reply.json()["state"]) == (200, state)
    refused = api.post(f"/incidents/{incident_id}/reopen", json={"actor": "alice"})
    assert refused.status_code == 409 and "closed incidents are final" in refused.json()["error"]
    assert api.get("/incidents/INC-missing").status_code == 404
    assert api.post("/incidents", json={"kind": "k"}).status_code == 400
    assert api.post("/incidents", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    listed = api.get("/incidents", params={"state": "closed"}).json()["incidents"]
    assert [i["id"] for i in listed] == [incident_id]
    assert api.get("/incidents", params={"open": "true"}).json()["incidents"] == []


def test_metrics_show_open_incidents_deadlines_and_breaches(api, service, clock):
    p1 = service.raise_incident("k", "gateway:a", "x", impact="high", urgency="high")
    service.raise_incident("k", "gateway:b", "x", impact="low", urgency="low")
    clock.advance(1000)  # past P1's 900 s response target
    service.tick()
    text = api.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("pulsegate_central_incidents_open", (("major", "false"), ("priority", "P1")))] == 1
    assert samples[("pulsegate_central_incidents_open", (("major", "false"), ("priority", "P4")))] == 1
    assert samples[("pulsegate_central_incidents_open", (("major", "false"), ("priority", "P2")))] == 0
    left = ("pulsegate_central_incident_sla_seconds_left",
            (("incident_id", p1.id), ("kind", "k"), ("priority", "P1"), ("target", "response")))
    assert samples[left] == pytest.approx(-100)
    resolution = (left[0], (("incident_id", p1.id), ("kind", "k"), ("priority", "P1"), ("target", "resolution")))
    assert samples[resolution] == pytest.approx(7200 - 1000)
    assert samples[("pulsegate_central_incident_sla_breaches_total", (("target", "response"),))] == 1
    assert samples[("pulsegate_central_incident_escalations_total",
                    (("level", "hierarchical"), ("target", "response")))] == 1
