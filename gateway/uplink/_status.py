"""The uplink's counters and state, shared between its thread and the status readers."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.uplink._messages import OutgoingMessage
from gateway.uplink._metrics import UplinkMetrics
from gateway.uplink._outbox_queue import OutboxStats, read_persisted_state

__all__ = ["StatusBoard", "uplink_status_from_file", "STATES"]

#: What ``status()["state"]`` can say.
STATES = ("connected", "connecting", "down", "paused", "blocked")

#: The drain rate is averaged over this window.
_RATE_WINDOW_S = 10.0
#: Confirm events kept for the drain rate. Confirms come at most a few
#: hundred a second (one per message), so this covers the window with room;
#: the cap only bounds memory if that ever stops holding.
_RATE_EVENTS_CAP = 8192

_COUNTERS = ("published", "confirmed", "nacked", "returned")


def _iso(epoch_us: int | None) -> str | None:
    if epoch_us is None:
        return None
    return datetime.fromtimestamp(epoch_us / 1e6, UTC).isoformat(timespec="milliseconds")


class StatusBoard:
    """Thread-safe state and counters of one uplink; feeds its metrics."""

    def __init__(self, *, gateway_id: str, broker: str, metrics: UplinkMetrics) -> None:
        self._lock = threading.Lock()
        self._gateway_id = gateway_id
        self._broker = broker
        self._metrics = metrics
        self._connection = "connecting"  # connecting | connected | down
        self._paused = False
        self._blocked = False
        self._totals = dict.fromkeys(_COUNTERS, 0)
        self._in_flight_records = 0
        self._last_confirm_us: int | None = None
        self._last_error: str | None = None
        self._last_error_us: int | None = None
        self._outbox = OutboxStats(0, None)
        self._confirm_events: deque[tuple[float, int]] = deque(maxlen=_RATE_EVENTS_CAP)

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused

    def set_connection(self, state: str) -> None:
        with self._lock:
            self._connection = state
            if state != "connected":
                self._blocked = False
                self._in_flight_records = 0
        self._metrics.connected.set(1 if state == "connected" else 0)

    def set_blocked(self, blocked: bool, reason: str | None = None) -> None:
        with self._lock:
            self._blocked = blocked
        if blocked:
            self.record_error(f"broker blocked publishing: {reason or 'resource alarm'}")

    def record_error(self, text: str) -> None:
        with self._lock:
            self._last_error = text
            self._last_error_us = time.time_ns() // 1000

    def record_published(self, message: OutgoingMessage) -> None:
        with self._lock:
            self._totals["published"] += message.record_count
            self._in_flight_records += message.record_count
        self._metrics.records_published.inc(message.record_count)

    def record_confirmed(self, messages: Sequence[tuple[OutgoingMessage, float]]) -> None:
        """Count confirmed messages, each with its publish-to-confirm latency."""
        now_us = time.time_ns() // 1000
        records = sum(message.record_count for message, _ in messages)
        for message, latency_s in messages:
            self._metrics.publish_seconds.observe(latency_s)
            self._metrics.record_delay_seconds.observe(max(0.0, (now_us - message.newest_received_at_us) / 1e6))
        self._metrics.records_confirmed.inc(records)
        with self._lock:
            self._totals["confirmed"] += records
            self._in_flight_records -= records
            self._last_confirm_us = now_us
            self._confirm_events.append((time.monotonic(), records))
            # Until the next full refresh, the confirmed rows are known to be gone.
            self._outbox = OutboxStats(max(0, self._outbox.records - records), self._outbox.oldest_received_at_us)

    def record_failed(self, messages: Sequence[OutgoingMessage], kind: str, reason: str) -> None:
        """Count messages the broker nacked (``kind`` "nacked") or returned ("returned")."""
        records = sum(message.record_count for message in messages)
        counter = self._metrics.records_nacked if kind == "nacked" else self._metrics.records_returned
        counter.inc(records)
        with self._lock:
            self._totals[kind] += records
            self._in_flight_records -= records
        self.record_error(f"broker {kind} {len(messages)} message(s), {records} records kept for retry: {reason}")

    def update_outbox(self, stats: OutboxStats) -> None:
        with self._lock:
            self._outbox = stats

    def persisted_state(self) -> dict[str, str]:
        with self._lock:
            return self._persisted_locked()

    def _persisted_locked(self) -> dict[str, str]:
        state = {f"{name}_records_total": str(value) for name, value in self._totals.items()}
        state["broker"] = self._broker
        state["gateway_id"] = self._gateway_id
        state["last_confirm_at_us"] = "" if self._last_confirm_us is None else str(self._last_confirm_us)
        state["last_error"] = self._last_error or ""
        state["last_error_at_us"] = "" if self._last_error_us is None else str(self._last_error_us)
        return state

    def snapshot(self) -> dict[str, Any]:
        """The ``uplink`` key of the gateway's status JSON."""
        now = time.monotonic()
        with self._lock:
            if self._paused:
                state = "paused"
            elif self._connection == "connected" and self._blocked:
                state = "blocked"
            else:
                state = self._connection
            recent = sum(count for at, count in self._confirm_events if now - at <= _RATE_WINDOW_S)
            return {
                "running": True,
                "state": state,
                "connected": self._connection == "connected",
                "gateway_id": self._gateway_id,
                "broker": self._broker,
                "last_confirm_at": _iso(self._last_confirm_us),
                "backlog_records": self._outbox.records,
                "backlog_oldest_age_s": self._outbox.oldest_age_s(),
                "drain_rate_records_per_s": round(recent / _RATE_WINDOW_S, 1),
                "in_flight_records": self._in_flight_records,
                **{f"{name}_records_total": value for name, value in self._totals.items()},
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_us),
            }


def uplink_status_from_file(outbox_path: str | Path) -> dict[str, Any]:
    """The ``uplink`` status computed from the outbox file alone (daemon not running).

    Same keys as :meth:`Uplink.status`; ``running`` is False, ``state`` is
    ``down``, the totals are those of the uplink's last run.

    Raises:
        UplinkStoreError: the file is missing or not a gateway outbox.
    """
    stats, saved = read_persisted_state(Path(outbox_path))

    def saved_int(key: str) -> int | None:
        value = saved.get(key, "")
        return int(value) if value else None

    return {
        "running": False,
        "state": "down",
        "connected": False,
        "gateway_id": saved.get("gateway_id") or None,
        "broker": saved.get("broker") or None,
        "last_confirm_at": _iso(saved_int("last_confirm_at_us")),
        "backlog_records": stats.records,
        "backlog_oldest_age_s": stats.oldest_age_s(),
        "drain_rate_records_per_s": 0.0,
        "in_flight_records": 0,
        **{f"{name}_records_total": saved_int(f"{name}_records_total") or 0 for name in _COUNTERS},
        "last_error": saved.get("last_error") or None,
        "last_error_at": _iso(saved_int("last_error_at_us")),
    }
