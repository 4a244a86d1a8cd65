"""Human-readable rendering of the gateway status (``gateway status``, the demo)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_status"]


def render_status(status: dict[str, Any], console: Console | None = None) -> None:
    """Print the trackers table and the outbox/quarantine summary."""
    console = console or Console()
    table = Table(title="Trackers", title_justify="left")
    table.add_column("device", no_wrap=True, overflow="ellipsis", max_width=34)
    table.add_column("boot", no_wrap=True, min_width=8)
    for column in ("received", "buffered", "dup", "gaps", "quar"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    table.add_column("last seen", no_wrap=True, min_width=14)
    for device in status["devices"]:
        gaps = device["gaps"]
        table.add_row(
            device["device_id"], device["boot_id"][:8], str(device["received"]), str(device["buffered"]),
            str(device["duplicates"]), f"[red]{gaps}[/red]" if gaps else "0", str(device["quarantined"]),
            (device["last_seen"] or "-").replace("T", " ").rstrip("Z")[5:],
        )
    console.print(table)
    outbox, quarantine = status["outbox"], status["quarantine"]
    console.print(
        f"outbox: {outbox['records']} records, oldest {outbox['oldest_age_seconds']:.0f} s; "
        f"quarantine: {quarantine['frames']} frames"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(quarantine.get('by_reason', {}).items()))})"
           if quarantine["frames"] else "")
    )
    daemon = status.get("daemon")
    if daemon is not None:
        console.print(f"daemon: running (pid {daemon['pid']})" if daemon["running"] else "daemon: not running")
    if "uplink" in status:
        uplink = status["uplink"]
        error = f"; last error: {uplink['last_error']}" if uplink.get("last_error") else ""
        console.print(f"uplink: {uplink.get('state', 'unknown')}, backlog {uplink.get('backlog_records', '-')} records{error}")
