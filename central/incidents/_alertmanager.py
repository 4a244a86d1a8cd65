"""Alertmanager webhook (payload version "4") → incidents.

A firing alert opens an incident, or counts a repeat on the open one for the
same (subject, kind); a resolved alert resolves it. The kind is the alertname
and the subject comes from the alert's labels (``device_id``, then
``gateway_id``, then ``instance``, falling back to the alert's fingerprint),
so one alert series maps to one incident; except for the alerts in
:data:`ALERTS_AS_DETECTOR_FACTS`, which measure a fact a detector also
judges and so take the detector's kind and subject, so that one fact opens
one incident whichever of the two sees it first.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass, field
from typing import Any

from central.incidents._errors import IncidentError, InvalidIncident
from central.incidents._service import IncidentService
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE

__all__ = [
    "ALERTS_AS_DETECTOR_FACTS",
    "DetectorFact",
    "WebhookResult",
    "handle_alertmanager_webhook",
    "incident_key_for_alert",
    "subject_for_labels",
]

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


@dataclass(frozen=True)
class DetectorFact:
    """The detector incident an alert stands for."""

    kind: str
    """The detector's incident kind (one of ``central.detectors.ALL_DETECTORS``)."""
    subject: str
    """The detector's subject, as a template over the alert's labels, e.g. ``device:{device_id}``."""
    alert_resolves: bool = True
    """Whether the alert's resolution resolves the incident; False leaves that to the
    detector, whose all-clear is the stronger one."""


# One table, kept beside the rules (packaging/prometheus/pulsegate-rules.yml)
# and checked against them and against central/detectors by
# tests/central_incidents/test_monitoring_config.py. An alert belongs here
# when it measures what a detector measures, from another vantage point (the
# gateway's own metrics, or an ingest worker's), so that whichever sees the
# fact first opens the incident and the other counts a repeat on it. Alerts
# about something no detector judges (uplink down, ingest lag, the paging
# path) keep their alertname as the kind.
ALERTS_AS_DETECTOR_FACTS: dict[str, DetectorFact] = {
    # The gateway holds records older than an hour: its delivery to central is
    # behind, which the detector sees as records arriving that old.
    "GatewayOutboxBacklogOld": DetectorFact("gateway_backlog", "gateway:{gateway_id}"),
    # No frame from a tracker on its gateway's serial port; the detector sees
    # no sample of it reaching central.
    "DeviceSilent": DetectorFact("tracker_silent", "device:{device_id}"),
    # Ingest workers dead-lettered messages. The alert clears after 15 quiet
    # minutes, but the messages still sit in the queue until ops deal with
    # them: the detector, which watches the queue's depth, resolves.
    "CentralDeadLettering": DetectorFact(
        "dead_letter", f"queue:{DEAD_LETTER_QUEUE}", alert_resolves=False
    ),
    # The ingest workers' ledger gauge is a fleet-wide total with no device
    # label, so it cannot name the tracker the detector's per-device incident
    # names. The rule fires only while no detect pass runs (the backstop for
    # a stopped detect loop), so it never doubles the detector's incidents;
    # it opens a fleet-wide one of the same kind, routed and searched alike.
    "CentralLedgerGap": DetectorFact("ledger_gap", "fleet:all"),
}


def incident_key_for_alert(labels: dict[str, str], fingerprint: str) -> tuple[str, str]:
    """The (kind, subject) of the incident an alert opens or repeats.

    Args:
        labels: The alert's labels, with ``alertname``.
        fingerprint: Alertmanager's fingerprint of the alert.

    Returns:
        The detector's kind and subject for an alert of
        :data:`ALERTS_AS_DETECTOR_FACTS`, else the alertname and the subject its
        labels name. A mapped alert without the label its subject needs falls
        back to the latter (and is logged), so it still opens an incident.
    """
    alertname = labels["alertname"]
    fact = ALERTS_AS_DETECTOR_FACTS.get(alertname)
    if fact is not None:
        needed = [name for _, name, _, _ in string.Formatter().parse(fact.subject) if name]
        missing = [name for name in needed if not labels.get(name)]
        if not missing:
            return fact.kind, fact.subject.format_map(labels)
        logger.warning(
            "alert %s has no %s label for subject %s; kept as an incident of its own",
            alertname, ", ".join(missing), fact.subject,
        )
    return alertname, subject_for_labels(labels, fingerprint)


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
    fingerprint = alert["fingerprint"]
    kind, subject = incident_key_for_alert(labels, fingerprint)
    if alert["status"] == "resolved":
        existing = service.store.find_open(subject, kind)
        fact = ALERTS_AS_DETECTOR_FACTS.get(labels["alertname"])
        if existing is None or (fact is not None and fact.kind == kind and not fact.alert_resolves):
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
