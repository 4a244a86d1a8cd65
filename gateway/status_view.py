"""Human-readable rendering of the gateway status (``gateway status``, the demo)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["output_console", "render_status"]

#: Width for output that is not a terminal (a pipe, a file): wider than any
#: row the status prints, so piped output is never cropped or folded. A table
#: still takes only its natural width; rich just needs a number.
_PIPED_WIDTH_CHARS = 100_000
#: Widest the device column grows on a terminal before long ids fold onto a
#: second line, leaving room for the counters beside it.
_DEVICE_COLUMN_MAX_CHARS = 34


def output_console(console: Console | None = None) -> Console:
    """The console to print on: ``console`` (or stdout) on a TTY, an unlimited-width one when piped.

    Args:
        console: Where the caller prints; a new stdout console when None.

    Returns:
        ``console`` itself on a terminal; otherwise a console on the same file
        whose width never crops a row.
    """
    console = console or Console()
    if console.is_terminal:
        return console
    return Console(file=console.file, width=_PIPED_WIDTH_CHARS)


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
        console.print(f"uplink: {uplink.get('state', 'unknown')}, backlog {uplink.get('backlog_records', '-')} records{error}")
