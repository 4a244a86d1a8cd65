"""``pulsegate central fleet``: gateways and trackers, online or not, backlogs, open incidents."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from central.fleet._report import FleetReport

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["fleet"]

#: Devices shown in the table; --json lists them all.
_DEVICES_SHOWN = 200


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def fleet(config_path: Path | None, as_json: bool) -> None:
    """Fleet health: per gateway its site, last sync, backlog and trackers online; open incidents."""
    from central.fleet import build_fleet_report, open_fleet_reader
    from central.incidents import build_service
    from central.settings import load_settings
    from central.store import open_store

    settings = load_settings(config_path)
    # Reading only: a wrong state_dir fails in one line and creates nothing.
    store = open_store(settings, create=False)
    try:
        reader = open_fleet_reader(settings)
        service = build_service(settings)
        try:
            report = build_fleet_report(settings, reader, store, service, time.time())
        finally:
            reader.close()
            service.store.close()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.as_json(settings.fleet.incidents_listed), indent=2))
    else:
        _print_tables(report, settings.fleet.incidents_listed)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _table(id_columns: tuple[str, ...], value_columns: tuple[str, ...]) -> Table:
    """A table whose id columns fold on a narrow terminal (never cropped) and values stay whole."""
    from rich.table import Table

    table = Table()
    for name in id_columns:
        table.add_column(name, overflow="fold")
    for name in value_columns:
        table.add_column(name, no_wrap=True)
    return table


def _print_tables(report: FleetReport, incidents_listed: int) -> None:
    from rich.text import Text

    from pulsegate.console_output import output_console

    console = output_console()
    doc = report.as_json(incidents_listed)
    summary = doc["summary"]
    console.print(
        f"gateways online {summary['gateways_online']}/{summary['gateways']}, "
        f"trackers online {summary['devices_online']}/{summary['devices']}"
    )
    gateways = _table(
        ("gateway", "site"),
        ("online", "last sync", "backlog", "trackers online", "missing", "incidents"),
    )
    for g in report.gateways:
        gateways.add_row(
            Text(g.gateway_id),  # Text: an id is never read as rich markup
            Text(g.site),
            "yes" if g.online else "no",
            f"{_age(g.last_sync_age_s)} ago",
            _age(g.backlog_age_s),
            f"{g.devices_online}/{g.devices}",
            str(g.records_missing),
            str(g.open_incidents),
            style=None if g.online else "red",
        )
    console.print(gateways if report.gateways else "no gateway has delivered anything yet")
    devices = _table(("tracker", "gateway"), ("online", "last seen", "battery", "incidents"))
    for d in report.devices[:_DEVICES_SHOWN]:
        devices.add_row(
            Text(d.device_id),
            Text(d.gateway_id),
            "yes" if d.online else "no",
            f"{_age(d.last_seen_age_s)} ago",
            "" if d.battery_pct is None else f"{d.battery_pct} %",
            str(d.open_incidents),
        )
    if report.devices:
        console.print(devices)
    counts = ", ".join(f"{p} {n}" for p, n in report.incidents_by_priority.items() if n)
    console.print(f"open incidents: {len(report.incidents)}" + (f" ({counts})" if counts else ""))
    for i in doc["incidents"]["list"]:
        console.print(
            f"  {i['id']} {i['priority']} {i['state']} {i['kind']} {i['subject']}: {i['summary']}",
            markup=False,
        )
