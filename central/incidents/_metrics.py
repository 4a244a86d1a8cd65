"""Prometheus metrics of the incident service, computed from the store at scrape time.

Reading the store (not process-local counters) keeps the numbers right when
several central processes share one store, and across restarts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from central.incidents._service import (
    CHANNEL_GATEWAY,
    CHANNEL_PAGERDUTY,
    CHANNEL_RUNBOOK,
    IncidentService,
)
from central.incidents.settings import PRIORITIES

__all__ = ["EXPORTED_METRICS", "IncidentMetricsCollector", "render_metrics"]

MAX_SLA_SERIES = 500
"""Per-incident SLA series exported at most (the nearest deadlines first), to bound label cardinality."""

EXPORTED_METRICS = (
    "pulsegate_central_incidents_open",
    "pulsegate_central_incident_sla_seconds_left",
    "pulsegate_central_incident_sla_breaches_total",
    "pulsegate_central_incident_escalations_total",
    "pulsegate_central_incident_outbox_pending",
    "pulsegate_central_incident_outbox_oldest_age_seconds",
    "pulsegate_central_incident_outbox_dropped_total",
)
"""Sample names this module exports (the dashboard and rule tests check against it)."""


class IncidentMetricsCollector:
    """A prometheus-client collector over an :class:`IncidentService`."""

    def __init__(self, service: IncidentService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called on each scrape)."""
        now = self.service.clock()
        open_incidents = self.service.store.open_incidents()
        by_priority = GaugeMetricFamily(
            "pulsegate_central_incidents_open", "Open incidents (not resolved or closed) by priority.",
            labels=["priority", "major"])
        for priority in PRIORITIES:
            for major in (False, True):
                count = sum(1 for i in open_incidents if i.priority == priority and i.major == major)
                by_priority.add_metric([priority, str(major).lower()], count)
        yield by_priority

        left = GaugeMetricFamily(
            "pulsegate_central_incident_sla_seconds_left",
            "Seconds until an open incident's unmet SLA target is breached (negative once breached).",
            labels=["incident_id", "kind", "priority", "target"])
        series = sorted(
            ((deadline - now, incident, target) for incident in open_incidents
             for target, deadline in self.service.deadlines(incident, now).items()),
            key=lambda item: item[0],
        )
        for seconds_left, incident, target in series[:MAX_SLA_SERIES]:
            left.add_metric([incident.id, incident.kind, incident.priority, target], seconds_left)
        yield left
        yield from self._sla_counters()
        yield from self._outbox_metrics(now)

    def _sla_counters(self) -> Iterator[Metric]:
        counts = self.service.store.sla_event_counts()
        breaches = CounterMetricFamily(
            "pulsegate_central_incident_sla_breaches", "SLA targets breached, each recorded once.", labels=["target"])
        escalations = CounterMetricFamily(
            "pulsegate_central_incident_escalations", "Escalations made, by target and level.",
            labels=["target", "level"])
        for target in ("response", "resolution"):
            breaches.add_metric([target], counts.get((target, "breach"), 0))
            for level in ("functional", "hierarchical"):
                escalations.add_metric([target, level], counts.get((target, level), 0))
        yield breaches
        yield escalations

    def _outbox_metrics(self, now: float) -> Iterator[Metric]:
        stats = self.service.store.outbox_stats()
        pending = GaugeMetricFamily(
            "pulsegate_central_incident_outbox_pending", "Outbound events not yet delivered.", labels=["channel"])
        oldest = GaugeMetricFamily(
            "pulsegate_central_incident_outbox_oldest_age_seconds", "Age of the oldest undelivered event.",
            labels=["channel"])
        dropped = CounterMetricFamily(
            "pulsegate_central_incident_outbox_dropped", "Outbound events dropped as undeliverable (e.g. HTTP 400).",
            labels=["channel"])
        for channel in (CHANNEL_PAGERDUTY, CHANNEL_GATEWAY, CHANNEL_RUNBOOK):
            stat = stats.get(channel)
            pending.add_metric([channel], stat.pending if stat else 0)
            age = now - stat.oldest_created_at if stat and stat.oldest_created_at is not None else 0.0
            oldest.add_metric([channel], max(0.0, age))
            dropped.add_metric([channel], stat.dropped if stat else 0)
        yield pending
        yield oldest
        yield dropped


def render_metrics(service: IncidentService) -> bytes:
    """The service's metrics in Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IncidentMetricsCollector(service))
    return generate_latest(registry)
