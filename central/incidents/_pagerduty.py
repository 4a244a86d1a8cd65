"""PagerDuty Events API v2: build events from the outbox and send them in order.

The incident service queues ``trigger`` / ``acknowledge`` / ``resolve`` events
in the store's ``pagerduty`` outbox, in the same commit as the change that
causes them. :class:`PagerDutySender` sends them oldest first, one at a time,
so the order per dedup_key (the incident id) holds. A 429, a 5xx or a network
error is retried with exponential back-off and jitter until it succeeds (or
the sender is stopped, leaving the event pending for the next run); a 400 or
other 4xx means the event itself is wrong, so it is dropped, kept in the
dropped table and noted on the incident's timeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import tenacity

from central.incidents._model import OutboxEvent, iso8601
from central.incidents._service import CHANNEL_PAGERDUTY
from central.incidents._store import IncidentStore
from central.incidents.settings import PagerDutySettings

__all__ = ["SEVERITY_BY_PRIORITY", "PagerDutySender", "build_event"]

logger = logging.getLogger(__name__)

SEVERITY_BY_PRIORITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info", "P5": "info"}

MAX_BATCH = 100
"""Events read from the outbox per pass; the rest wait for the next pass."""


class _TransientSendError(Exception):
    """429, 5xx or a network error: worth another try."""


class _Stopped(Exception):
    """The sender was asked to stop while an event was still unsent."""


def build_event(event: OutboxEvent, settings: PagerDutySettings, public_url: str = "") -> dict[str, Any]:
    """The Events API v2 JSON for one outbox event.

    Raises:
        KeyError: the event's service has no routing key any more.
    """
    incident = event.body["incident"]
    message: dict[str, Any] = {
        "routing_key": settings.routing_keys[event.body["service"]],
        "event_action": event.body["event_action"],
        "dedup_key": incident["id"],
    }
    if message["event_action"] != "trigger":
        return message
    summary = f"[{incident['priority']}] {incident['kind']} on {incident['subject']}: {incident['summary']}"
    message["payload"] = {
        "summary": summary[:1024],
        "source": incident.get("gateway_id") or incident["subject"],
        "severity": "critical" if incident.get("major") else SEVERITY_BY_PRIORITY[incident["priority"]],
        "timestamp": iso8601(event.body.get("at", event.created_at)),
        "component": incident["kind"],
        "group": incident.get("site") or incident.get("gateway_id") or "central",
        "class": incident.get("category") or "service",
        "custom_details": {
            key: incident.get(key)
            for key in ("state", "impact", "urgency", "priority", "major", "repeat_count", "gateway_id", "site",
                        "problem_id", "details")
        },
    }
    message["client"] = "Pulsegate central"
    if public_url:
        message["client_url"] = f"{public_url.rstrip('/')}/incidents/{incident['id']}"
    return message


class PagerDutySender:
    """Drains the ``pagerduty`` outbox to the Events API, in order.

    Args:
        store: the incident store holding the outbox.
        settings: [pagerduty] settings (base URL, routing keys, back-off).
        public_url: base URL of the incident UI for ``client_url``.
        on_drop: called with (event, reason) after an event is dropped, e.g. to note it on the incident.
        stop: set it to make a sender in back-off give up now and leave the event pending.
    """

    def __init__(
        self,
        store: IncidentStore,
        settings: PagerDutySettings,
        *,
        public_url: str = "",
        on_drop: Callable[[OutboxEvent, str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.public_url = public_url
        self.on_drop = on_drop
        self.stop = stop or threading.Event()
        self._url = f"{settings.base_url.rstrip('/')}/v2/enqueue"
        self._client = httpx.Client(timeout=settings.timeout_s)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def send_pending(self) -> int:
        """Send every pending event in order; returns how many were delivered or dropped.

        Stops early (leaving the rest pending) only when :attr:`stop` is set.
        """
        handled = 0
        while not self.stop.is_set():
            batch = self.store.outbox_pending(CHANNEL_PAGERDUTY, MAX_BATCH)
            if not batch:
                break
            for event in batch:
                try:
                    self._send_with_retry(event)
                except _Stopped:
                    return handled
                handled += 1
        return handled

    def _send_with_retry(self, event: OutboxEvent) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_TransientSendError),
            # Jitter of up to one initial step spreads retries of many central processes apart.
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.settings.retry_initial_s, jitter=self.settings.retry_initial_s,
                max=self.settings.retry_max_s,
            ),
            stop=lambda state: self.stop.is_set(),
            sleep=self.stop.wait,
            before_sleep=lambda state: self._note_retry(event, state),
            reraise=True,
        )
        try:
            retrying(self._send_once, event)
        except _TransientSendError as exc:
            raise _Stopped() from exc

    def _note_retry(self, event: OutboxEvent, state: tenacity.RetryCallState) -> None:
        error = str(state.outcome.exception()) if state.outcome else "unknown"
        self.store.outbox_retry(event, error)
        level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
        logger.log(level, "PagerDuty %s for incident %s failed (try %d), retrying: %s",
                   event.body["event_action"], event.incident_id, state.attempt_number, error)

    def _send_once(self, event: OutboxEvent) -> None:
        try:
            message = build_event(event, self.settings, self.public_url)
        except KeyError:
            self._drop(event, f"service {event.body.get('service')!r} has no routing key in pagerduty.routing_keys")
            return
        try:
            response = self._client.post(self._url, json=message)
        except httpx.HTTPError as exc:
            raise _TransientSendError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _TransientSendError(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code >= 300:
            self._drop(event, f"HTTP {response.status_code}: {response.text[:500]}")
            return
        self.store.outbox_done(event)
        logger.info("PagerDuty %s sent for incident %s", message["event_action"], event.incident_id)

    def _drop(self, event: OutboxEvent, reason: str) -> None:
        self.store.outbox_drop(event, reason, time.time())
        logger.error("PagerDuty %s for incident %s dropped: %s", event.body["event_action"], event.incident_id, reason)
        if self.on_drop is not None:
            self.on_drop(event, reason)
