"""Fleet gauges in Prometheus format, served by the detect loop.

The gauges describe shared state (the store), so every detect process
exports the same values: aggregate them with ``max``, not ``sum``. Served from
a registry of their own, on a loopback address.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from central.fleet._report import FleetReport

__all__ = ["EXPORTED_FLEET_METRICS", "FleetMetrics", "serve_fleet_metrics"]

log = logging.getLogger(__name__)

EXPORTED_FLEET_METRICS = (
    "pulsegate_central_devices",
    "pulsegate_central_devices_online",
    "pulsegate_central_gateways",
    "pulsegate_central_gateways_online",
    "pulsegate_central_gateway_online",
    "pulsegate_central_gateway_last_sync_timestamp_seconds",
    "pulsegate_central_gateway_backlog_seconds",
    "pulsegate_central_gateway_devices_online",
    "pulsegate_central_gateway_records_missing",
    "pulsegate_central_detect_last_pass_timestamp_seconds",
    "pulsegate_central_detect_pass_duration_seconds",
    "pulsegate_central_detect_actions_total",
)


class FleetMetrics:
    """A Prometheus collector over the latest fleet report and the detect loop's own counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: FleetReport | None = None
        self._pass_end_s: float | None = None
        self._pass_duration_s: float | None = None
        self._actions: Counter[tuple[str, str]] = Counter()

    def update(self, report: FleetReport) -> None:
        with self._lock:
            self._report = report

    def record_pass(self, end_s: float, duration_s: float, actions: list[tuple[str, str]]) -> None:
        """Note a finished pass and its (kind, verb) actions."""
        with self._lock:
            self._pass_end_s, self._pass_duration_s = end_s, duration_s
            self._actions.update(actions)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            report, end_s, duration_s, actions = (
                self._report,
                self._pass_end_s,
                self._pass_duration_s,
                dict(self._actions),
            )
        if report is not None:
            yield from _report_metrics(report)
        if end_s is not None and duration_s is not None:
            yield GaugeMetricFamily(
                "pulsegate_central_detect_last_pass_timestamp_seconds",
                "End of the last detect pass.",
                value=end_s,
            )
            yield GaugeMetricFamily(
                "pulsegate_central_detect_pass_duration_seconds",
                "Duration of the last detect pass.",
                value=duration_s,
            )
        counter = CounterMetricFamily(
            "pulsegate_central_detect_actions",
            "Incidents raised, repeated, resolved or recorded by this process.",
            labels=["kind", "action"],
        )
        for (kind, verb), count in sorted(actions.items()):
            counter.add_metric([kind, verb], count)
        yield counter


def _report_metrics(report: FleetReport) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "pulsegate_central_devices", "Trackers central holds records of.", value=len(report.devices)
    )
    yield GaugeMetricFamily(
        "pulsegate_central_devices_online",
        "Trackers with a recent sample.",
        value=sum(d.online for d in report.devices),
    )
    yield GaugeMetricFamily(
        "pulsegate_central_gateways", "Gateways that delivered records.", value=len(report.gateways)
    )
    yield GaugeMetricFamily(
        "pulsegate_central_gateways_online",
        "Gateways that delivered recently.",
        value=sum(g.online for g in report.gateways),
    )
    labels = ["gateway_id", "site"]
    families = {
        "online": GaugeMetricFamily(
            "pulsegate_central_gateway_online",
            "1 when the gateway delivered recently.",
            labels=labels,
        ),
        "sync": GaugeMetricFamily(
            "pulsegate_central_gateway_last_sync_timestamp_seconds",
            "When central last received from the gateway.",
            labels=labels,
        ),
        "backlog": GaugeMetricFamily(
            "pulsegate_central_gateway_backlog_seconds",
            "Oldest age on arrival in the gateway's latest delivery (absent without recent deliveries).",
            labels=labels,
        ),
        "devices": GaugeMetricFamily(
            "pulsegate_central_gateway_devices_online",
            "Online trackers last seen through the gateway.",
            labels=labels,
        ),
        "missing": GaugeMetricFamily(
            "pulsegate_central_gateway_records_missing",
            "Records the ledger still expects from the gateway's trackers.",
            labels=labels,
        ),
    }
    for g in report.gateways:
        key = [g.gateway_id, g.site]
        families["online"].add_metric(key, 1.0 if g.online else 0.0)
        families["sync"].add_metric(key, g.last_sync_us / 1e6)
        if g.backlog_age_s is not None:
            families["backlog"].add_metric(key, g.backlog_age_s)
        families["devices"].add_metric(key, g.devices_online)
        families["missing"].add_metric(key, g.records_missing)
    yield from families.values()


def serve_fleet_metrics(address: str, metrics: FleetMetrics) -> tuple[str, int] | None:
    """Serve ``metrics`` on ``host:port`` (port 0 picks a free one); empty serves nothing.

    Returns:
        The bound (host, port), or None when nothing is served.

    Raises:
        OSError: the port is taken.
    """
    if not address:
        return None
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=True)
    registry.register(metrics)
    server, _thread = start_http_server(
        int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry
    )
    bound = server.server_address[:2]
    log.info("fleet metrics on http://%s:%d/metrics", bound[0], bound[1])
    return str(bound[0]), int(bound[1])
