"""Prometheus metrics of the uplink."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["UplinkMetrics"]

#: Confirm latency of one message. A quorum queue confirms after an fsync on a
#: majority; milliseconds on a healthy node, seconds under an alarm.
_PUBLISH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Receive-to-confirm delay of a message's newest record: how stale central's
#: view of this gym is. Hours during an outage; sub-second when healthy.
_DELAY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0)


class UplinkMetrics:
    """The uplink's metrics, registered in one registry (the global one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.connected = Gauge(
            "pulsegate_gateway_uplink_connected",
            "1 while the uplink holds a ready connection to the broker, else 0.",
            registry=registry,
        )
        self.records_published = Counter(
            "pulsegate_gateway_uplink_records_published",
            "Records published to the broker (a record republished after a failure counts again).",
            registry=registry,
        )
        self.records_confirmed = Counter(
            "pulsegate_gateway_uplink_records_confirmed",
            "Records the broker confirmed; they have left the outbox.",
            registry=registry,
        )
        self.records_nacked = Counter(
            "pulsegate_gateway_uplink_records_nacked",
            "Records in messages the broker nacked; they stay in the outbox and are retried.",
            registry=registry,
        )
        self.records_returned = Counter(
            "pulsegate_gateway_uplink_records_returned",
            "Records in messages the broker returned as unroutable; they stay and are retried.",
            registry=registry,
        )
        self.connection_losses = Counter(
            "pulsegate_gateway_uplink_connection_losses",
            "Times a ready broker connection was lost.",
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "pulsegate_gateway_uplink_publish_seconds",
            "Time from publishing a message to the broker's confirm.",
            buckets=_PUBLISH_BUCKETS_S,
            registry=registry,
        )
        self.record_delay_seconds = Histogram(
            "pulsegate_gateway_uplink_record_delay_seconds",
            "Time from the gateway receiving a message's newest record to the broker confirming it.",
            buckets=_DELAY_BUCKETS_S,
            registry=registry,
        )
        # The outbox gauges (records, oldest age) come from the daemon's own
        # collector (gateway/_metrics.py), with the gateway_id label: one source.
