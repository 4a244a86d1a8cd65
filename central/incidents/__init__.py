"""ITIL incident management: incidents, SLAs, escalation, problems, PagerDuty, runbooks.

Entry points::

    build_service(central_settings) -> IncidentService     # over the configured store
    service.raise_incident(kind, subject, summary, ..., gateway_id=None, site=None)
    service.resolve_matching(kind, subject)                 # a detector's all-clear
    IncidentDaemon(service, work_root).start()              # HTTP API + workers
    central.incidents.cli.incidents                         # the click group
"""

from central.incidents._alertmanager import (
    WebhookResult,
    handle_alertmanager_webhook,
    subject_for_labels,
)
from central.incidents._daemon import GatewayNotifier, IncidentDaemon, build_service, open_store
from central.incidents._errors import (
    DuplicateOpenIncident,
    IllegalTransition,
    IncidentError,
    IncidentNotFound,
    IncidentStoreError,
    InvalidIncident,
    StaleIncident,
)
from central.incidents._http import IncidentHTTPServer, incident_view
from central.incidents._metrics import EXPORTED_METRICS, IncidentMetricsCollector, render_metrics
from central.incidents._model import (
    OPEN_STATES,
    TRANSITIONS,
    AuditEntry,
    Incident,
    OutboxEvent,
    Problem,
    SlaEvent,
    State,
)
from central.incidents._pagerduty import SEVERITY_BY_PRIORITY, PagerDutySender, build_event
from central.incidents._runbooks import RunbookRunner, find_binary
from central.incidents._service import (
    CHANNEL_GATEWAY,
    CHANNEL_PAGERDUTY,
    CHANNEL_RUNBOOK,
    Clock,
    IncidentService,
)
from central.incidents._store import (
    Change,
    IncidentFilter,
    IncidentStore,
    OutboxStats,
    SQLiteIncidentStore,
)

__all__ = [
    "AuditEntry", "CHANNEL_GATEWAY", "CHANNEL_PAGERDUTY", "CHANNEL_RUNBOOK", "Change", "Clock",
    "DuplicateOpenIncident", "EXPORTED_METRICS", "GatewayNotifier", "IllegalTransition", "Incident",
    "IncidentDaemon", "IncidentError", "IncidentFilter", "IncidentHTTPServer", "IncidentMetricsCollector",
    "IncidentNotFound", "IncidentService", "IncidentStore", "IncidentStoreError", "InvalidIncident",
    "OPEN_STATES", "OutboxEvent", "OutboxStats", "PagerDutySender", "Problem", "RunbookRunner",
    "SEVERITY_BY_PRIORITY", "SQLiteIncidentStore", "SlaEvent", "StaleIncident", "State", "TRANSITIONS",
    "WebhookResult", "build_event", "build_service", "find_binary", "handle_alertmanager_webhook",
    "incident_view", "open_store", "render_metrics", "subject_for_labels",
]
