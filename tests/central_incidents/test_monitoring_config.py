"""The shipped Prometheus rules, Alertmanager config and Grafana dashboard, checked
against what the code really exports.

The exported metric names and labels are not listed here by hand: they come
from a real gateway daemon's /metrics (a tracker replayed on a pseudo-terminal,
the uplink and downlink enabled towards a closed loopback port so their metrics
exist), a real fleet-gauge server, the incident service's renderer and the
ingest workers' metric objects. Every metric and label a rule or a panel uses
must be among them, or be a target label prometheus.yml sets.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from replay_harness import RECORDINGS, GatewayProcess, Tracker

import central.ingest._metrics as ingest_metrics
from central.detectors import ALL_DETECTORS
from central.detectors._dead_letter import SUBJECT as DEAD_LETTER_SUBJECT
from central.detectors.settings import DetectorSettings
from central.fleet import (
    EXPORTED_FLEET_METRICS,
    FleetMetrics,
    FleetReport,
    GatewayHealth,
    serve_fleet_metrics,
)
from central.incidents import (
    EXPORTED_METRICS,
    IncidentService,
    SQLiteIncidentStore,
    handle_alertmanager_webhook,
    render_metrics,
)
from central.incidents._alertmanager import ALERTS_AS_DETECTOR_FACTS
from central.incidents.settings import IncidentSettings
from central.settings import IngestSettings
from gateway.settings import MetricsSettings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "packaging" / "prometheus"
RULES = PROMETHEUS / "pulsegate-rules.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTMANAGER = ROOT / "packaging" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "pulsegate-fleet.json"
DETECTORS = ROOT / "central" / "detectors"
RECORDING = RECORDINGS / "fit" / "fitparse__garmin-fenix-5-run.fit"

#: Scrape job of each exporter, and the code's default address it scrapes.
JOBS = {
    "gateway": ("pulsegate-gateway", MetricsSettings().listen_address),
    "incidents": ("pulsegate-incidents", IncidentSettings().listen_address),
    "ingest": ("pulsegate-ingest", IngestSettings().metrics_address),
    "detect": ("pulsegate-detect", DetectorSettings().metrics_address),
}
#: Labels Prometheus adds to every scraped series.
SCRAPE_LABELS = frozenset({"instance", "job"})
AGGREGATIONS = "sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values"
SELECTOR = re.compile(r"\b(pulsegate_[a-z0-9_]+|up)\b(?!\s*\()(\{[^}]*\})?")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY_CLAUSE = re.compile(rf"\b(?:{AGGREGATIONS})\s+by\s*\(([^)]*)\)\s*\(")
ON_CLAUSE = re.compile(r"\b(?:on|ignoring)\s*\(([^)]*)\)")
#: Sample-name suffixes prometheus_client adds per metric type.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}

#: sample name -> label names; None when the family had no sample to show them.
Exported = dict[str, frozenset[str] | None]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: apt-get install {package}"
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _names_of(text: str) -> Exported:
    """Sample names and their labels from Prometheus text format."""
    found: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = found.setdefault(sample.name, set())
            assert labels is not None
            labels.update(sample.labels)
        if not family.samples:  # a labelled metric nothing has used yet: names, no labels
            for suffix in SUFFIXES.get(family.type, ("",)):
                found.setdefault(family.name + suffix, None)
    return {name: None if labels is None else frozenset(labels) for name, labels in found.items()}


# --- what the code exports -----------------------------------------------------


@pytest.fixture(scope="module")
def gateway_scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real gateway daemon reading a replayed tracker."""
    work = tmp_path_factory.mktemp("gateway")
    port, closed_port = _free_port(), _free_port()
    (work / "gateway.toml").write_text(
        f'[gateway]\nid = "gym-probe"\nsite = "probe-site"\n[metrics]\nlisten_address = "127.0.0.1:{port}"\n'
        f'[uplink]\nenabled = true\namqp_url = "amqp://127.0.0.1:{closed_port}/%2F"\n'
    )
    tracker = Tracker(RECORDING, work / "tty", "--speed", "5", log_dir=work)
    gateway = GatewayProcess(work / "state", [work / "tty"], work)
    try:
        tracker.wait_ready()
        gateway.start()
        yield _scrape_when_named(f"http://127.0.0.1:{port}/metrics", gateway)
    finally:
        gateway.stop()
        if tracker.process.poll() is None:
            tracker.process.terminate()
            tracker.process.wait(10)


def _scrape_when_named(url: str, gateway: GatewayProcess, timeout_s: float = 60) -> str:
    """The first scrape in which the tracker has said HELLO (its port carries a device_id)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert gateway.process is not None and gateway.process.poll() is None, gateway.log
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        if re.search(r'pulsegate_gateway_serial_frames_total\{[^}]*device_id="[^"]+"', text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"no named tracker on the gateway's /metrics within {timeout_s} s:\n{gateway.log}")


def _ingest_exported() -> Exported:
    """The ingest workers' metric objects (module-level, served from the default registry)."""
    found: Exported = {}
    for attribute in ingest_metrics.__all__:
        metric = getattr(ingest_metrics, attribute)
        if not hasattr(metric, "describe"):
            continue  # serve_metrics
        # prometheus_client keeps label names only on the object (_labelnames):
        # a labelled metric shows none in a scrape until first used.
        labels = frozenset(metric._labelnames)
        for family in metric.describe():
            for suffix in SUFFIXES.get(family.type, ("",)):
                found[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


@pytest.fixture(scope="module")
def fleet_scrape() -> str:
    """/metrics of the detect loop's fleet-gauge server, over a one-gateway report."""
    now_s = time.time()
    gateway = GatewayHealth(
        gateway_id="gym-1", site="leeds", online=True, last_sync_us=int(now_s * 1e6), last_sync_age_s=3.0,
        devices=2, devices_online=1, backlog_age_s=12.0, records_missing=4, open_incidents=1,
    )
    metrics = FleetMetrics()
    metrics.update(FleetReport(generated_at_us=int(now_s * 1e6), gateways=[gateway]))
    metrics.record_pass(now_s, 0.25, [("ledger_gap", "raised")])
    host, port = serve_fleet_metrics("127.0.0.1:0", metrics) or ("", 0)
    return urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()


@pytest.fixture(scope="module")
def incidents_scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = SQLiteIncidentStore(tmp_path_factory.mktemp("incidents") / "i.sqlite3")
    try:
        service = IncidentService(store)
        service.raise_incident("k", "s", "x")
        return render_metrics(service).decode()
    finally:
        store.close()


@pytest.fixture(scope="module")
def exported_by_job(gateway_scrape: str, fleet_scrape: str, incidents_scrape: str) -> dict[str, Exported]:
    return {
        "pulsegate-gateway": _names_of(gateway_scrape),
        "pulsegate-detect": _names_of(fleet_scrape),
        "pulsegate-incidents": _names_of(incidents_scrape),
        "pulsegate-ingest": _ingest_exported(),
    }


# --- what the configuration uses -------------------------------------------------


def _target_labels_by_job() -> dict[str, set[str]]:
    """Per scrape job of prometheus.yml, the labels its static_configs set (a pattern: no YAML parser)."""
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n\s*- job_name:\s*", SCRAPE_CONFIG.read_text())[1:]:
        name, _, body = block.partition("\n")
        labels: set[str] = set()
        for group in re.finditer(r"\n(\s+)labels:\n((?:\1\s+\w+:.*\n?)+)", body):
            labels |= set(re.findall(r"^\s+(\w+):", group.group(2), re.M))
        jobs[name.strip()] = labels
    return jobs


def _available(exported_by_job: dict[str, Exported]) -> dict[str, frozenset[str] | None]:
    """Every series name Prometheus will hold, with the labels it will carry."""
    targets = _target_labels_by_job()
    available: dict[str, frozenset[str] | None] = {"up": frozenset(SCRAPE_LABELS | set().union(*targets.values()))}
    for job, exported in exported_by_job.items():
        added = targets[job] | SCRAPE_LABELS
        for name, labels in exported.items():
            if labels is None:
                available[name] = None
            else:  # a label the target also sets is kept as exported_<label>
                available[name] = frozenset(labels | added | {f"exported_{lab}" for lab in labels & added})
    return available


def _rule_alerts() -> dict[str, tuple[str, list[str]]]:
    """alertname -> (expr, label names its annotations use). Rules keep `expr` on one line."""
    alerts = {}
    for block in re.split(r"\n\s*- alert: ", RULES.read_text())[1:]:
        name, _, body = block.partition("\n")
        expr = re.search(r"^\s*expr: (.*)$", body, re.M)
        assert expr and expr.group(1).strip()[0] not in "|>", f"{name}: keep expr on one line"
        alerts[name.strip()] = (expr.group(1).strip(), re.findall(r"\$labels\.(\w+)", body))
    return alerts


def _dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(t["expr"], t.get("legendFormat", "")) for p in dashboard["panels"] for t in p.get("targets", [])]


def _argument(expr: str, open_paren: int) -> str:
    """The text inside the parenthesis that opens at ``open_paren``."""
    depth = 0
    for index in range(open_paren, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[index], 0)
        if depth == 0:
            return expr[open_paren + 1 : index]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def _label_list(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def _label_problems(expr: str, available: dict[str, frozenset[str] | None]) -> list[str]:
    """What in ``expr`` names a series or a label nothing exports."""
    problems = []
    if re.search(r"\)\s*(by|without)\s*\(", expr):
        problems.append("write `by (...)` before the aggregated expression")
    selectors = [(m.group(1), MATCHER_LABEL.findall(m.group(2) or "")) for m in SELECTOR.finditer(expr)]
    for name, labels in selectors:
        if name not in available:
            problems.append(f"{name} is not exported")
        elif labels and available[name] is None:
            problems.append(f"{name}: labels {labels} cannot be checked (no sample in the scrape)")
        elif labels and set(labels) - available[name]:
            problems.append(f"{name} has no label {sorted(set(labels) - available[name])}")
    scoped = [(_label_list(m.group(1)), _argument(expr, m.end() - 1)) for m in BY_CLAUSE.finditer(expr)]
    scoped += [(_label_list(m.group(1)), expr) for m in ON_CLAUSE.finditer(expr)]
    for labels, scope in scoped:
        for match in SELECTOR.finditer(scope):
            have = available.get(match.group(1))
            if have is not None and labels - have:
                problems.append(f"{match.group(1)} has no label {sorted(labels - have)} to group or match by")
    return problems


def _output_labels(expr: str, available: dict[str, frozenset[str] | None]) -> set[str]:
    """The labels ``expr``'s result can carry (an approximation good for these files)."""
    outer = re.match(rf"\s*(?:\w+\(\d+(?:\.\d+)?,\s*)?({AGGREGATIONS})\s+by\s*\(([^)]*)\)", expr)
    if outer:
        return _label_list(outer.group(2))
    if re.match(rf"\s*(?!topk|bottomk)({AGGREGATIONS})\s*\(", expr) or re.match(r"\s*\(\s*sum\(", expr):
        return set()
    return set().union(*(available.get(m.group(1)) or set() for m in SELECTOR.finditer(expr)))


# --- the checks ----------------------------------------------------------------


def test_scrape_config_targets_every_exporter_at_its_default_address():
    text = SCRAPE_CONFIG.read_text()
    for job, address in JOBS.values():
        block = re.search(rf"- job_name: {job}\n(.*?)(?=\n  - job_name:|\Z)", text, re.S)
        assert block, f"prometheus.yml has no job {job}"
        assert f'"{address}"' in block.group(1), f"{job} does not scrape {address}"


def test_every_metric_and_label_in_the_rules_is_exported(exported_by_job):
    available = _available(exported_by_job)
    problems = {}
    for alert, (expr, annotation_labels) in _rule_alerts().items():
        found = _label_problems(expr, available)
        missing = set(annotation_labels) - _output_labels(expr, available)
        found += [f"annotations use {sorted(missing)}, which the expression drops"] if missing else []
        jobs = set(re.findall(r'\bjob="([^"]+)"', expr)) - set(_target_labels_by_job())
        found += [f"no scrape job {sorted(jobs)}"] if jobs else []
        if found:
            problems[alert] = found
    assert problems == {}


def test_every_metric_and_label_on_the_dashboard_is_exported(exported_by_job):
    available = _available(exported_by_job)
    problems = {}
    for expr, legend in _dashboard_targets():
        found = _label_problems(expr, available)
        missing = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) - _output_labels(expr, available)
        found += [f"legend uses {sorted(missing)}, which the expression drops"] if missing else []
        if found:
            problems[expr] = found
    assert problems == {}


def test_the_dashboard_shows_every_fleet_and_incident_metric():
    named = {m.group(1) for expr, _ in _dashboard_targets() for m in SELECTOR.finditer(expr)}
    assert set(EXPORTED_FLEET_METRICS) - named == set()
    assert set(EXPORTED_METRICS) - named == set()


def test_the_checks_catch_the_drift_they_exist_for(exported_by_job):
    """The old CentralLedgerGap and DeviceSilent rules, and a gauge read by a label it lacks."""
    available = _available(exported_by_job)
    assert _label_problems("sum by (device_id) (pulsegate_central_ledger_gap_records) > 0", available) == [
        "pulsegate_central_ledger_gap_records has no label ['device_id'] to group or match by"]
    assert _label_problems("increase(pulsegate_gateway_records_received_total[30m]) == 0", available) == [
        "pulsegate_gateway_records_received_total is not exported"]
    assert _label_problems('pulsegate_central_ingest_lag_seconds{queue="q"}', available) == [
        "pulsegate_central_ingest_lag_seconds has no label ['queue']"]
    assert "queue" not in _output_labels("max(pulsegate_central_ingest_lag_seconds)", available)


def test_exported_metrics_lists_match_the_scrapes(fleet_scrape, incidents_scrape):
    assert set(_names_of(incidents_scrape)) == set(EXPORTED_METRICS)
    assert set(_names_of(fleet_scrape)) == set(EXPORTED_FLEET_METRICS)


def test_the_gateway_scrape_is_real(gateway_scrape):
    """Guards the fixture: a daemon with a tracker, its uplink and its AirPods link."""
    exported = _names_of(gateway_scrape)
    assert exported["pulsegate_gateway_serial_frames_total"] == {"gateway_id", "port", "device_id"}
    assert exported["pulsegate_gateway_uplink_connected"] == frozenset()
    assert exported["pulsegate_gateway_airpods_link_state"] == {"state"}


# --- promtool and amtool -------------------------------------------------------


def test_promtool_rule_unit_tests_pass():
    promtool = _tool("promtool", "prometheus")
    tests = sorted(p.name for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool tests found"
    done = subprocess.run([promtool, "test", "rules", *tests], cwd=PROMETHEUS / "tests",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def test_every_alert_has_a_promtool_test_that_expects_it_to_fire():
    alerts = set(_rule_alerts())
    assert len(alerts) == RULES.read_text().count("- alert: ")
    tested = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        tested |= set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels:", path.read_text()))
    assert alerts - tested == set()


def test_prometheus_config_and_rules_check():
    promtool = _tool("promtool", "prometheus")
    done = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _route(amtool: str, *labels: str) -> str:
    done = subprocess.run([amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER), *labels],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() + done.stderr.replace("Warning: --config.file flag overrides the --alertmanager.url.", "").strip()


def test_alertmanager_config_is_valid_and_routes_to_the_webhook():
    amtool = _tool("amtool", "prometheus-alertmanager")
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _route(amtool, "alertname=GatewayUplinkDown") == "pulsegate-incidents"
    assert _route(amtool, "alertname=CentralDeadLettering") == "pulsegate-incidents"
    assert _route(amtool, "alertname=IncidentPagingStuck", "route=fallback") == "ops-fallback-pagerduty"
    text = ALERTMANAGER.read_text()
    assert "url: http://127.0.0.1:9465/alertmanager" in text and "send_resolved: true" in text
    assert f"http://{JOBS['incidents'][1]}/alertmanager" in text


def test_dashboard_is_valid_and_every_panel_has_a_query():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pulsegate-fleet"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# --- alerts that stand for a detector's fact ------------------------------------


def test_alerts_mapped_to_detector_kinds_exist_and_carry_their_subject_labels(exported_by_job):
    available = _available(exported_by_job)
    alerts = _rule_alerts()
    for alertname, fact in ALERTS_AS_DETECTOR_FACTS.items():
        assert alertname in alerts, f"{alertname} is mapped but not a rule"
        assert fact.kind in ALL_DETECTORS
        needed = set(re.findall(r"\{(\w+)\}", fact.subject))
        assert needed <= _output_labels(alerts[alertname][0], available), alertname


def _detector_subject_prefixes(kind: str) -> set[str]:
    """Subject prefixes (device, gateway, ...) in the detector modules that raise ``kind``."""
    prefixes = set()
    for path in DETECTORS.glob("_*.py"):
        source = path.read_text()
        if f'"{kind}"' in source:
            prefixes |= set(re.findall(r'f"(\w+):\{', source))
    return prefixes


def test_mapped_alerts_use_the_detectors_subjects():
    for alertname, fact in ALERTS_AS_DETECTOR_FACTS.items():
        prefix = fact.subject.split(":")[0]
        if fact.kind == "dead_letter":
            assert fact.subject == DEAD_LETTER_SUBJECT
        elif alertname == "CentralLedgerGap":
            # The fleet-wide gauge cannot name a tracker: the rule stands back while detect passes run.
            assert "unless on () (time() - max(pulsegate_central_detect_last_pass_timestamp_seconds)" in (
                _rule_alerts()[alertname][0])
        else:
            assert prefix in _detector_subject_prefixes(fact.kind), (alertname, fact)


def _alert(alertname: str, status: str, fingerprint: str, **labels: str) -> dict:
    return {
        "status": status, "labels": {"alertname": alertname, "severity": "warning", **labels},
        "annotations": {"summary": f"{alertname} {status}"}, "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T00:20:00Z", "generatorURL": "", "fingerprint": fingerprint,
    }


def _webhook(*alerts: dict) -> dict:
    return {"version": "4", "status": alerts[0]["status"], "receiver": "pulsegate-incidents", "alerts": list(alerts)}


def test_an_alert_repeats_the_incident_its_detector_opened(service):
    incident = service.raise_incident("tracker_silent", "device:TR-1", "device TR-1 silent", gateway_id="gym-1")
    firing = _alert("DeviceSilent", "firing", "f1", device_id="TR-1", gateway_id="gym-1", port="/dev/pulsegate/a")
    result = handle_alertmanager_webhook(service, _webhook(firing))
    assert (result.opened, result.updated) == ([], [incident.id])
    assert service.get(incident.id).repeat_count == 2
    resolved = handle_alertmanager_webhook(service, _webhook({**firing, "status": "resolved"}))
    assert resolved.resolved == [incident.id]


def test_dead_lettering_opens_the_detectors_incident_and_leaves_resolving_to_it(service):
    firing = _alert("CentralDeadLettering", "firing", "d1", category="data")
    (opened,) = handle_alertmanager_webhook(service, _webhook(firing)).opened
    assert service.store.find_open(DEAD_LETTER_SUBJECT, "dead_letter").id == opened
    # The queue still holds the messages after 15 quiet minutes: only the detector resolves.
    assert handle_alertmanager_webhook(service, _webhook({**firing, "status": "resolved"})).ignored == 1
    assert service.store.find_open(DEAD_LETTER_SUBJECT, "dead_letter").id == opened
    assert service.resolve_matching("dead_letter", DEAD_LETTER_SUBJECT, note="queue empty").id == opened


def test_a_mapped_alert_without_its_subject_label_stays_an_incident_of_its_own(service, caplog):
    firing = _alert("DeviceSilent", "firing", "f2", gateway_id="gym-1")
    (opened,) = handle_alertmanager_webhook(service, _webhook(firing)).opened
    incident = service.get(opened)
    assert (incident.kind, incident.subject) == ("DeviceSilent", "gateway:gym-1")
    assert "alert DeviceSilent has no device_id label for subject device:{device_id}" in caplog.text
