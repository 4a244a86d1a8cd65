"""Human-readable rendering of the gateway status (``gateway status``, the demo)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pulsegate.console_output import output_console

__all__ = ["render_status"]

#: Widest the device column grows on a terminal before long ids fold onto a
#: second line, leaving room for the counters beside it.
_DEVICE_COLUMN_MAX_CHARS = 34


def render_status(status: dict[str, Any], console: Console | None = None) -> None:
    """Print the trackers table and the outbox/quarantine summary.

    On a terminal the table fits its width, folding long device ids onto more
    lines; piped, every row is printed whole on one line.
    """
    console = output_console(console)
    table = Table(title="Trackers", title_justify="left")
    table.add_column(
        "device",
        overflow="fold",
        max_width=_DEVICE_COLUMN_MAX_CHARS if console.is_terminal else None,
    )
    table.add_column("boot", no_wrap=True, min_width=8)
    for column in ("received", "buffered", "dup", "gaps", "quar"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    table.add_column("last seen", no_wrap=True, min_width=14)
    for device in status["devices"]:
        gaps = device["gaps"]
        table.add_row(
            Text(device["device_id"]),  # Text: an id is never read as rich markup
            device["boot_id"][:8], str(device["received"]), str(device["buffered"]),
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
        # "stopped": no daemon, so no uplink is running; that is not a broker outage.
        state = uplink.get("state", "unknown")
        shown = "not running (the daemon is stopped)" if state == "stopped" else state
        console.print(f"uplink: {shown}, backlog {uplink.get('backlog_records', '-')} records{error}")
