"""The gateway's Prometheus metrics, computed at scrape time from live state."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway._outbox import open_database
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway._daemon import GatewayDaemon

__all__ = ["GatewayCollector", "start_metrics_server"]

log = logging.getLogger(__name__)


class GatewayCollector(Collector):
    """Reads the daemon's counters and the outbox when Prometheus scrapes."""

    def __init__(self, daemon: GatewayDaemon) -> None:
        self._daemon = daemon

    def collect(self) -> Any:
        daemon = self._daemon
        writer = daemon.writer
        gateway_id = daemon.settings.gateway.id
        labels = ["gateway_id"]
        if writer is not None:
            stats = writer.stats
            for name, value, help_text in (
                ("records_committed", stats.records_committed, "Records committed to the outbox."),
                ("records_duplicate", stats.duplicates, "Records dropped as duplicates (same device, boot, seq)."),
                ("frames_quarantined", stats.quarantined, "Frames refused and kept in quarantine."),
                ("outbox_commits", stats.commits, "Outbox transactions committed."),
            ):
                family = CounterMetricFamily(f"pulsegate_gateway_{name}", help_text, labels=labels)
                family.add_metric([gateway_id], value)
                yield family
            family = CounterMetricFamily("pulsegate_gateway_outbox_commit_seconds", "Time spent committing.", labels=labels)
            family.add_metric([gateway_id], stats.commit_seconds)
            yield family
            # A connection of its own: the writer's is in the middle of its
            # transactions, and WAL lets this reader see the last commit.
            conn = open_database(daemon.state_dir, readonly=True)
            try:
                records, oldest_us = conn.execute("SELECT count(*), min(received_at_us) FROM outbox").fetchone()
            finally:
                conn.close()
            gauge = GaugeMetricFamily("pulsegate_gateway_outbox_records", "Records waiting in the outbox.", labels=labels)
            gauge.add_metric([gateway_id], records)
            yield gauge
            gauge = GaugeMetricFamily("pulsegate_gateway_outbox_oldest_age_seconds",
                                      "Age of the oldest record in the outbox.", labels=labels)
            gauge.add_metric([gateway_id], (time.time() - oldest_us / 1e6) if oldest_us else 0.0)
            yield gauge
        ports = GaugeMetricFamily("pulsegate_gateway_serial_port_open", "1 while a serial port is open.",
                                  labels=["gateway_id", "port", "device_id"])
        frames = CounterMetricFamily("pulsegate_gateway_serial_frames", "Frames decoded per port.",
                                     labels=["gateway_id", "port", "device_id"])
        rejected = CounterMetricFamily("pulsegate_gateway_serial_frames_rejected",
                                       "Frames rejected by the decoder per port.", labels=["gateway_id", "port", "device_id"])
        for reader in daemon.readers.values():
            state = reader.state
            label_values = [gateway_id, state.path, state.device_id or ""]
            ports.add_metric(label_values, 1.0 if state.state == "open" else 0.0)
            frames.add_metric(label_values, state.frames)
            rejected.add_metric(label_values, state.rejected)
        yield ports
        yield frames
        yield rejected


def start_metrics_server(listen_address: str, registry: CollectorRegistry) -> Any:
    """Serve ``registry`` at http://listen_address/metrics; returns the server."""
    host, _, port = listen_address.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        raise GatewayError(
            f"cannot serve metrics on {listen_address}: {exc.strerror}; set metrics.listen_address to a free port"
        ) from None
    log.info("metrics on http://%s/metrics", listen_address)
    return server
