"""The fleet health report: trackers and gateways, online or not, backlogs, open incidents."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from central.fleet._activity import FleetReader
from central.incidents import Incident, IncidentService
from central.store import TelemetryStore

if TYPE_CHECKING:
    from central.settings import CentralSettings

__all__ = ["DeviceHealth", "FleetReport", "GatewayHealth", "build_fleet_report"]

_US = 1_000_000
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")


def _iso(time_us: int | None) -> str | None:
    if time_us is None:
        return None
    return datetime.fromtimestamp(time_us / _US, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeviceHealth:
    """One tracker in the report."""

    device_id: str
    gateway_id: str
    site: str
    online: bool
    last_seen_us: int
    last_seen_age_s: float
    battery_pct: int | None
    open_incidents: int


@dataclass
class GatewayHealth:
    """One gateway in the report.

    ``backlog_age_s`` is the oldest age on arrival (central receive time minus
    sample time) in the gateway's latest delivery bucket: how far behind
    what it is sending now is. ``records_missing`` counts the ledger's gaps
    of the boots it delivered last: records central still expects.
    """

    gateway_id: str
    site: str
    online: bool
    last_sync_us: int
    last_sync_age_s: float
    devices: int
    devices_online: int
    backlog_age_s: float | None
    records_missing: int
    open_incidents: int


@dataclass
class FleetReport:
    """What ``pulsegate central fleet`` shows."""

    generated_at_us: int
    gateways: list[GatewayHealth] = field(default_factory=list)
    devices: list[DeviceHealth] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)

    @property
    def incidents_by_priority(self) -> dict[str, int]:
        counts = Counter(i.priority for i in self.incidents)
        return {p: counts.get(p, 0) for p in PRIORITIES}

    def as_json(self, incidents_listed: int = 50) -> dict[str, Any]:
        """The shape ``fleet --json`` prints; times are ISO 8601 UTC."""

        def gateway(g: GatewayHealth) -> dict[str, Any]:
            doc = asdict(g)
            doc["last_sync"] = _iso(doc.pop("last_sync_us"))
            return doc

        def device(d: DeviceHealth) -> dict[str, Any]:
            doc = asdict(d)
            doc["last_seen"] = _iso(doc.pop("last_seen_us"))
            return doc

        return {
            "generated_at": _iso(self.generated_at_us),
            "summary": {
                "gateways": len(self.gateways),
                "gateways_online": sum(g.online for g in self.gateways),
                "devices": len(self.devices),
                "devices_online": sum(d.online for d in self.devices),
            },
            "gateways": [gateway(g) for g in self.gateways],
            "devices": [device(d) for d in self.devices],
            "incidents": {
                "open": len(self.incidents),
                "by_priority": self.incidents_by_priority,
                "list": [_incident(i) for i in self.incidents[:incidents_listed]],
            },
        }


def _incident(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "priority": i.priority,
        "state": i.state.value,
        "kind": i.kind,
        "subject": i.subject,
        "gateway_id": i.gateway_id,
        "site": i.site,
        "summary": i.summary,
        "opened": _iso(int(i.created_at * _US)),
    }


def build_fleet_report(
    settings: CentralSettings,
    reader: FleetReader,
    store: TelemetryStore,
    service: IncidentService,
    now_s: float,
) -> FleetReport:
    """Compute the fleet's health as of ``now_s`` (epoch seconds).

    Raises:
        StoreError: the store cannot be read (StoreUnavailable: try again later).
    """
    now_us = int(now_s * _US)
    fleet = settings.fleet
    incidents = sorted(service.store.open_incidents(), key=lambda i: (i.priority, i.created_at))
    by_subject = Counter(i.subject for i in incidents)
    by_gateway = Counter(
        i.gateway_id for i in incidents if i.gateway_id and not i.subject.startswith("gateway:")
    )

    devices = []
    for d in sorted(reader.devices(), key=lambda d: d.device_id):
        age_s = (now_us - d.last_seen_us) / _US
        devices.append(
            DeviceHealth(
                d.device_id,
                d.gateway_id,
                d.site,
                age_s <= fleet.device_online_s,
                d.last_seen_us,
                round(age_s, 3),
                d.battery_pct,
                by_subject[f"device:{d.device_id}"],
            )
        )
    per_gateway: dict[str, list[DeviceHealth]] = defaultdict(list)
    for d in devices:
        per_gateway[d.gateway_id].append(d)
    missing: Counter[str] = Counter()
    for entry in store.ledger():
        missing[entry.gateway_id or ""] += entry.gaps + entry.head_missing
    backlog = _latest_backlog_s(
        reader, now_us, settings.detectors.arrival_window_s, settings.detectors.arrival_bucket_s
    )

    gateways = []
    for g in sorted(reader.gateways(), key=lambda g: g.gateway_id):
        age_s = (now_us - g.last_received_us) / _US
        mine = per_gateway[g.gateway_id]
        gateways.append(
            GatewayHealth(
                g.gateway_id,
                g.site,
                age_s <= fleet.gateway_online_s,
                g.last_received_us,
                round(age_s, 3),
                len(mine),
                sum(d.online for d in mine),
                backlog.get(g.gateway_id),
                missing[g.gateway_id],
                by_subject[f"gateway:{g.gateway_id}"] + by_gateway[g.gateway_id],
            )
        )
    return FleetReport(now_us, gateways, devices, incidents)


def _latest_backlog_s(
    reader: FleetReader, now_us: int, window_s: float, bucket_s: float
) -> dict[str, float]:
    """Per gateway: the oldest age on arrival within its latest receive-time bucket."""
    latest: dict[str, tuple[int, int]] = {}
    bucket_us = int(bucket_s * _US)
    for a in reader.arrivals(now_us - int(window_s * _US), now_us + 1):
        bucket = a.received_us - a.received_us % bucket_us
        age_us = a.received_us - a.oldest_sample_us
        seen = latest.get(a.gateway_id)
        if seen is None or bucket > seen[0]:
            latest[a.gateway_id] = (bucket, age_us)
        elif bucket == seen[0]:
            latest[a.gateway_id] = (bucket, max(age_us, seen[1]))
    return {gw: round(age_us / _US, 3) for gw, (_, age_us) in latest.items()}
