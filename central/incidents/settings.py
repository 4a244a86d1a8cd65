"""Settings of the incident service: sections [incidents], [pagerduty], [runbooks].

The defaults follow the ITIL 4 examples in the project's reference notes: a 3×3
impact × urgency matrix giving P1–P4 (P5, "planning", is only set explicitly),
and response / resolution targets of 15 min / 2 h for P1 down to 4 h / 3 days
for P4. All of them are organisational choices, so all are configurable.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LEVELS",
    "PRIORITIES",
    "RUNBOOK_POLICIES",
    "IncidentSettings",
    "PagerDutySettings",
    "RunbookSettings",
]

LEVELS = ("high", "medium", "low")
"""Allowed impact and urgency values."""

PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
"""Priorities, most urgent first."""

RUNBOOK_POLICIES = ("plan_only", "approve", "auto")
"""``plan_only``: never apply; ``approve``: apply once a person approves; ``auto``: apply right after plan."""

_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")


def _default_matrix() -> dict[str, dict[str, str]]:
    return {
        "high": {"high": "P1", "medium": "P2", "low": "P3"},
        "medium": {"high": "P2", "medium": "P3", "low": "P4"},
        "low": {"high": "P3", "medium": "P4", "low": "P4"},
    }


def _default_response_targets() -> dict[str, float]:
    return {"P1": 900, "P2": 3600, "P3": 7200, "P4": 14400, "P5": 86400}


def _default_resolution_targets() -> dict[str, float]:
    return {"P1": 7200, "P2": 14400, "P3": 86400, "P4": 259200, "P5": 604800}


def _check_targets(name: str, targets: dict[str, Any]) -> None:
    missing = [p for p in PRIORITIES if p not in targets]
    if missing:
        raise ValueError(f"incidents.{name} lacks {', '.join(missing)}; give seconds for each of {', '.join(PRIORITIES)}")
    for priority, value in targets.items():
        if priority not in PRIORITIES:
            raise ValueError(f"incidents.{name} has unknown priority {priority!r}; use {', '.join(PRIORITIES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"incidents.{name}.{priority} must be a positive number of seconds, got {value!r}")


def _check_loopback(listen_address: str) -> None:
    host, sep, port = listen_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"incidents.listen_address must be HOST:PORT, got {listen_address!r}")
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # The API has no authentication of its own: it must sit behind a proxy that has.
        raise ValueError(
            f"incidents.listen_address {listen_address!r} is not a loopback address; the API has no "
            "authentication, so bind it to 127.0.0.1 and put an authenticating proxy in front"
        )


@dataclass
class IncidentSettings:
    """[incidents]: the incident queue, its SLAs, escalation and HTTP API."""

    listen_address: str = "127.0.0.1:9465"
    """Loopback HOST:PORT of the HTTP API, the Alertmanager webhook and ``/metrics`` (port 0 picks one)."""

    db_file: str = "incidents.sqlite3"
    """SQLite file name under ``central.state_dir`` when ``store.backend`` is ``sqlite``."""

    public_url: str = ""
    """Base URL people open incidents at (put into PagerDuty's ``client_url``); empty leaves it out."""

    priority_matrix: dict = field(default_factory=_default_matrix)
    """impact → urgency → priority, e.g. ``high = {high = "P1", medium = "P2", low = "P3"}``."""

    response_target_s: dict = field(default_factory=_default_response_targets)
    """Seconds from creation to first response (acknowledge or start), per priority."""

    resolution_target_s: dict = field(default_factory=_default_resolution_targets)
    """Seconds from creation to resolution, per priority; time on hold does not count."""

    escalation_fraction: float = 0.8
    """Escalate when this fraction of a target has elapsed without meeting it."""

    functional_escalation_group: str = "L2"
    """Group that a functional escalation assigns the incident to."""

    hierarchical_escalation_contact: str = "service-owner"
    """Who a hierarchical escalation (P1, major, or a breached resolution target) notifies."""

    problem_threshold: int = 3
    """This many incidents of one kind on one subject within ``problem_window_s`` open a problem."""

    problem_window_s: float = 86400.0
    """Window for counting recurring incidents."""

    tick_interval_s: float = 15.0
    """How often ``serve`` checks SLA timers and drains the outboxes."""

    def __post_init__(self) -> None:
        _check_loopback(self.listen_address)
        for impact in LEVELS:
            row = self.priority_matrix.get(impact)
            if not isinstance(row, dict) or any(row.get(u) not in PRIORITIES for u in LEVELS):
                raise ValueError(
                    f"incidents.priority_matrix.{impact} must map each urgency ({', '.join(LEVELS)}) "
                    f"to one of {', '.join(PRIORITIES)}, got {row!r}"
                )
        _check_targets("response_target_s", self.response_target_s)
        _check_targets("resolution_target_s", self.resolution_target_s)
        if not 0 < self.escalation_fraction < 1:
            raise ValueError(f"incidents.escalation_fraction must be between 0 and 1, got {self.escalation_fraction!r}")
        if self.problem_threshold < 2:
            raise ValueError(f"incidents.problem_threshold must be at least 2, got {self.problem_threshold!r}")
        if self.problem_window_s <= 0 or self.tick_interval_s <= 0:
            raise ValueError("incidents.problem_window_s and incidents.tick_interval_s must be positive")
        if not self.db_file or "/" in self.db_file:
            raise ValueError(f"incidents.db_file must be a plain file name, got {self.db_file!r}")


@dataclass
class PagerDutySettings:
    """[pagerduty]: paging on-call through the Events API v2."""

    enabled: bool = False
    """Send trigger / acknowledge / resolve events for pageable incidents."""

    base_url: str = "https://events.pagerduty.com"
    """Events API base; events go to ``{base_url}/v2/enqueue``."""

    routing_keys: dict = field(default_factory=dict)
    """Service name → 32-character integration (routing) key."""

    service_by_kind: dict = field(default_factory=dict)
    """Incident kind → service name; kinds not listed go to ``default_service``."""

    default_service: str = "default"
    """Service for kinds not in ``service_by_kind``."""

    page_priorities: list[str] = field(default_factory=lambda: ["P1", "P2", "P3"])
    """Priorities that page; others stay in the queue only."""

    timeout_s: float = 10.0
    """HTTP timeout of one send."""

    retry_initial_s: float = 1.0
    """First back-off after a 429, 5xx or network error; it doubles (with jitter) up to ``retry_max_s``."""

    retry_max_s: float = 60.0
    """Longest back-off between two tries of the same event."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"pagerduty.base_url must start with http:// or https://, got {self.base_url!r}")
        for service, key in self.routing_keys.items():
            if not isinstance(key, str) or not _ROUTING_KEY.match(key):
                raise ValueError(
                    f"pagerduty.routing_keys.{service} must be the 32-character integration key from "
                    "the PagerDuty service's Events API v2 integration"
                )
        for kind, service in self.service_by_kind.items():
            if service not in self.routing_keys:
                raise ValueError(f"pagerduty.service_by_kind.{kind} names service {service!r}, which has no routing key")
        if self.enabled and self.default_service not in self.routing_keys:
            raise ValueError(
                f"pagerduty is enabled but default_service {self.default_service!r} has no entry in pagerduty.routing_keys"
            )
        bad = [p for p in self.page_priorities if p not in PRIORITIES]
        if bad:
            raise ValueError(f"pagerduty.page_priorities has unknown {bad!r}; use {', '.join(PRIORITIES)}")
        if self.timeout_s <= 0 or self.retry_initial_s <= 0 or self.retry_max_s < self.retry_initial_s:
            raise ValueError("pagerduty timeouts must be positive and retry_max_s at least retry_initial_s")


@dataclass
class RunbookSettings:
    """[runbooks]: Terraform/OpenTofu remediation per incident kind."""

    enabled: bool = False
    """Plan (and where allowed, apply) a runbook when an incident of a mapped kind opens."""

    binary: str = ""
    """``tofu`` or ``terraform`` (a name on PATH or a path); empty tries ``tofu`` then ``terraform``."""

    timeout_s: float = 300.0
    """Longest one init / plan / apply may run before it is stopped and the failure recorded."""

    runbooks: dict = field(default_factory=dict)
    """Kind → table with ``directory`` (working directory of .tf files), ``policy``
    (plan_only | approve | auto; default approve), ``variables`` (table of fixed values)
    and ``detail_variables`` (list of incident detail keys passed as variables)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"runbooks.timeout_s must be positive, got {self.timeout_s!r}")
        for kind, runbook in self.runbooks.items():
            if not isinstance(runbook, dict) or not isinstance(runbook.get("directory"), str):
                raise ValueError(f"runbooks.runbooks.{kind} must be a table with a 'directory' string")
            unknown = set(runbook) - {"directory", "policy", "variables", "detail_variables"}
            if unknown:
                raise ValueError(f"runbooks.runbooks.{kind} has unknown keys {sorted(unknown)!r}")
            policy = runbook.get("policy", "approve")
            if policy not in RUNBOOK_POLICIES:
                raise ValueError(f"runbooks.runbooks.{kind}.policy must be one of {', '.join(RUNBOOK_POLICIES)}, got {policy!r}")
            if not isinstance(runbook.get("variables", {}), dict) or not isinstance(runbook.get("detail_variables", []), list):
                raise ValueError(f"runbooks.runbooks.{kind}: variables must be a table and detail_variables a list")
