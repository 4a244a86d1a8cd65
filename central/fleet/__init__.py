"""Fleet health: which trackers and gateways are online, backlogs, open incidents.

Entry points::

    reader = open_fleet_reader(settings)            # aggregates over the store
    report = build_fleet_report(settings, reader, store, service, now_s)
    report.as_json()                                  # what ``pulsegate central fleet --json`` prints
    FleetMetrics().update(report); serve_fleet_metrics(address, metrics)
"""

from central.fleet._activity import Arrival, DeviceActivity, FleetReader, GatewayActivity
from central.fleet._metrics import EXPORTED_FLEET_METRICS, FleetMetrics, serve_fleet_metrics
from central.fleet._readers import open_fleet_reader
from central.fleet._report import DeviceHealth, FleetReport, GatewayHealth, build_fleet_report

__all__ = [
    "Arrival",
    "DeviceActivity",
    "DeviceHealth",
    "EXPORTED_FLEET_METRICS",
    "FleetMetrics",
    "FleetReader",
    "FleetReport",
    "GatewayActivity",
    "GatewayHealth",
    "build_fleet_report",
    "open_fleet_reader",
    "serve_fleet_metrics",
]
