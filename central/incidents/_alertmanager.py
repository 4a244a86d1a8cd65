"""Alertmanager webhook (payload version "4") → incidents.

A firing alert opens an incident, or counts a repeat on the open one for the
same (subject, kind); a resolved alert resolves it. The subject comes from the
alert's labels (``device_id``, then ``gateway_id``, then ``instance``), and
falls back to the alert's fingerprint, so one alert series maps to one incident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from central.incidents._errors import IncidentError, InvalidIncident
from central.incidents._service import IncidentService

__all__ = ["WebhookResult", "handle_alertmanager_webhook", "subject_for_labels"]

logger = logging.getLogger(__name__)

MAX_ALERTS_PER_PAYLOAD = 1000
"""Alertmanager's max_alerts is unbounded by default; refuse absurd payloads rather than stall the API."""

_LEVELS_BY_SEVERITY = {
    "critical": ("high", "high"),
    "page": ("high", "high"),
    "error": ("high", "medium"),
    "warning": ("medium", "medium"),
    "info": ("low", "low"),
}


@dataclass
class WebhookResult:
    """What one webhook call did, by incident id."""

    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    ignored: int = 0

    def to_doc(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"opened": self.opened, "updated": self.updated, "resolved": self.resolved, "ignored": self.ignored}


def subject_for_labels(labels: dict[str, str], fingerprint: str) -> str:
    """The incident subject an alert's labels name."""
    for label, prefix in (("device_id", "device"), ("gateway_id", "gateway"), ("instance", "instance")):
        if labels.get(label):
            return f"{prefix}:{labels[label]}"
    return f"alert:{fingerprint}"


def _check_payload(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise InvalidIncident("Alertmanager payload must be a JSON object")
    if payload.get("version") != "4":
        raise InvalidIncident(f"unsupported Alertmanager webhook version {payload.get('version')!r}; expected \"4\"")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidIncident("Alertmanager payload has no 'alerts' list")
    if len(alerts) > MAX_ALERTS_PER_PAYLOAD:
        raise InvalidIncident(f"Alertmanager payload has {len(alerts)} alerts; set max_alerts ≤ {MAX_ALERTS_PER_PAYLOAD}")
    for alert in alerts:
        if not isinstance(alert, dict) or alert.get("status") not in ("firing", "resolved"):
            raise InvalidIncident("each alert needs a status of 'firing' or 'resolved'")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels.get("alertname"):
            raise InvalidIncident("each alert needs labels with an alertname")
        if not isinstance(alert.get("fingerprint"), str) or not alert["fingerprint"]:
            raise InvalidIncident(f"alert {labels['alertname']!r} has no fingerprint")
    return alerts


def handle_alertmanager_webhook(service: IncidentService, payload: Any) -> WebhookResult:
    """Apply every alert of one webhook payload to the incident queue.

    Raises:
        InvalidIncident: the payload is not a version "4" webhook (nothing is applied).
    """
    alerts = _check_payload(payload)
    result = WebhookResult()
    for alert in alerts:
        try:
            _apply_alert(service, alert, result)
        except InvalidIncident:
            raise
        except IncidentError as exc:
            # One alert that cannot apply (e.g. a closed incident) must not block the others.
            logger.warning("alert %s (%s) not applied: %s", alert["labels"]["alertname"], alert["fingerprint"], exc)
            result.ignored += 1
    return result


def _apply_alert(service: IncidentService, alert: dict[str, Any], result: WebhookResult) -> None:
    labels: dict[str, str] = {str(k): str(v) for k, v in alert["labels"].items()}
    annotations = alert.get("annotations") or {}
    kind, fingerprint = labels["alertname"], alert["fingerprint"]
    subject = subject_for_labels(labels, fingerprint)
    if alert["status"] == "resolved":
        existing = service.store.find_open(subject, kind)
        if existing is None:
            result.ignored += 1
            return
        service.resolve(existing.id, actor="alertmanager", note=f"alert {fingerprint} resolved at {alert.get('endsAt')}")
        result.resolved.append(existing.id)
        return
    impact, urgency = _LEVELS_BY_SEVERITY.get(labels.get("severity", ""), ("medium", "medium"))
    before = service.store.find_open(subject, kind)
    incident = service.raise_incident(
        kind, subject, str(annotations.get("summary") or annotations.get("description") or kind),
        impact=labels.get("impact", impact), urgency=labels.get("urgency", urgency),
        category=labels.get("category", "monitoring"), gateway_id=labels.get("gateway_id"), site=labels.get("site"),
        details={"labels": labels, "annotations": annotations, "generatorURL": alert.get("generatorURL", "")},
        actor="alertmanager", alert_fingerprint=fingerprint, alert_starts_at=alert.get("startsAt"),
    )
    (result.updated if before is not None else result.opened).append(incident.id)
