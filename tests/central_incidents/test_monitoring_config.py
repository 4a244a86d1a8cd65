"""The shipped Prometheus rules, Alertmanager config and Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from central.incidents import EXPORTED_METRICS, IncidentService, SQLiteIncidentStore, render_metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "packaging" / "prometheus"
RULES = PROMETHEUS / "pulsegate-rules.yml"
ALERTMANAGER = ROOT / "packaging" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "pulsegate-fleet.json"

# Metrics other parts export (names agreed in the team brief); the gateway and
# central ingest/ledger engineers own them, this list must follow their code.
OTHER_PARTS_METRICS = {
    "pulsegate_gateway_outbox_records",
    "pulsegate_gateway_outbox_oldest_age_seconds",
    "pulsegate_gateway_uplink_connected",
    "pulsegate_gateway_records_received_total",
    "pulsegate_gateway_frames_quarantined_total",
    "pulsegate_central_ingest_lag_seconds",
    "pulsegate_central_dead_lettered_total",
    "pulsegate_central_ledger_gap_records",
}
METRIC_NAME = re.compile(r"\bpulsegate_[a-z0-9_]+")


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: apt-get install {package}"
    return found


def test_promtool_rule_unit_tests_pass():
    promtool = _tool("promtool", "prometheus")
    tests = sorted(p.name for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool tests found"
    done = subprocess.run([promtool, "test", "rules", *tests], cwd=PROMETHEUS / "tests",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def test_every_alert_has_a_promtool_test_that_expects_it_to_fire():
    # No YAML parser in the venv: the files are regular enough for a pattern.
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M))
    tested = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        tested |= set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels:", path.read_text()))
    assert len(alerts) == 10 and alerts - tested == set()


def test_prometheus_config_and_rules_check():
    promtool = _tool("promtool", "prometheus")
    done = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_config_is_valid_and_routes_to_the_webhook():
    amtool = _tool("amtool", "prometheus-alertmanager")
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    routes = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER), "alertname=GatewayUplinkDown"],
        capture_output=True, text=True, timeout=60)
    assert routes.stdout.strip() == "pulsegate-incidents", routes.stdout + routes.stderr
    fallback = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER), "alertname=IncidentPagingStuck",
         "route=fallback"], capture_output=True, text=True, timeout=60)
    assert fallback.stdout.strip() == "ops-fallback-pagerduty", fallback.stdout + fallback.stderr
    text = ALERTMANAGER.read_text()
    assert "url: http://127.0.0.1:9465/alertmanager" in text and "send_resolved: true" in text


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_is_valid_and_every_panel_has_a_query():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pulsegate-fleet"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_metric_named_in_rules_and_dashboard_is_exported():
    rules_text = RULES.read_text()
    named = set(METRIC_NAME.findall(rules_text)) | {m for e in _dashboard_exprs() for m in METRIC_NAME.findall(e)}
    unknown = named - set(EXPORTED_METRICS) - OTHER_PARTS_METRICS
    assert unknown == set()
    # The dashboard covers every metric this service exports.
    assert set(EXPORTED_METRICS) - named == set()


def test_exported_metrics_list_matches_the_scrape(tmp_path):
    store = SQLiteIncidentStore(tmp_path / "i.sqlite3")
    service = IncidentService(store)
    service.raise_incident("k", "s", "x")
    text = render_metrics(service).decode()
    scraped = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    store.close()
    assert scraped == set(EXPORTED_METRICS)

