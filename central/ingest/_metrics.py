"""The ingest workers' Prometheus metrics.

With several workers, counters add up across them (``sum``), while the two
gauges describe the same shared state from each worker: read them with
``max``, not ``sum``.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, start_http_server

__all__ = [
    "RECORDS_INGESTED",
    "MESSAGES_ACKED",
    "DEAD_LETTERED",
    "STORE_RETRIES",
    "INGEST_LAG",
    "LEDGER_GAP_RECORDS",
    "serve_metrics",
]

log = logging.getLogger(__name__)

RECORDS_INGESTED = Counter(
    "pulsegate_central_records_ingested", "Records written to the store (redeliveries count again)."
)
MESSAGES_ACKED = Counter(
    "pulsegate_central_messages_acked", "AMQP messages acked after the store accepted them."
)
DEAD_LETTERED = Counter(
    "pulsegate_central_dead_lettered",
    "Messages sent to the dead-letter queue, by reason.",
    ["reason"],
)
STORE_RETRIES = Counter(
    "pulsegate_central_store_retries", "Store writes that failed transiently and were retried."
)
INGEST_LAG = Gauge(
    "pulsegate_central_ingest_lag_seconds",
    "Age of the oldest message of the last batch written: now minus its gateway receive time.",
)
LEDGER_GAP_RECORDS = Gauge(
    "pulsegate_central_ledger_gap_records",
    "Records missing between the first and last held, summed over every boot.",
)


def serve_metrics(address: str) -> None:
    """Serve the metrics on ``host:port``; an empty address serves nothing.

    Raises:
        ValueError: ``address`` is not ``host:port``.
        OSError: the port is taken.
    """
    if not address:
        return
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    log.info("ingest metrics on http://%s/metrics", address)
