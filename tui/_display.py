"""How values read on screen: ages, counts, times, states, and table rows kept in place."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

__all__ = ["age", "count", "clock_time", "state_text", "percent", "sync_rows"]

#: Colour per state word across the UI: green is fine, yellow is degraded or
#: waiting, red needs a person.
STATE_STYLES: dict[str, str] = {
    "open": "green", "connected": "green", "in_ear": "green", "near": "green", "acknowledged": "green",
    "live": "green", "resolved": "green", "closed": "red",
    "reopening": "yellow", "connecting": "yellow", "scanning": "yellow", "paused": "yellow", "sent": "yellow",
    "away": "yellow", "new": "yellow", "in_progress": "yellow",
    "down": "red", "blocked": "red", "failed": "red", "no_adapter": "red",
    "disabled": "dim", "unknown": "dim", "—": "dim",
}


def age(seconds: float | None) -> str:
    """A short age: ``"4s"``, ``"12m"``, ``"3h05m"``, ``"6d"``; ``"—"`` when unknown."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def count(value: int | None) -> str:
    """A count with thousands separators; ``"—"`` when unknown."""
    return "—" if value is None else f"{value:,}"


def percent(value: float | int | None) -> str:
    """A battery level, ``"80%"``; ``"—"`` when unknown."""
    return "—" if value is None else f"{int(value)}%"


def clock_time(value: str | int | float | None) -> str:
    """A UTC ``"MM-DD HH:MM:SS"`` from an ISO string, or from seconds or microseconds since the epoch."""
    if value is None or value == "":
        return "—"
    if isinstance(value, (int, float)):
        # Anything past 1e12 is microseconds: 1e12 s lies in the year 33658.
        seconds = value / 1_000_000 if value > 1e12 else value
        return time.strftime("%m-%d %H:%M:%S", time.gmtime(seconds))
    text = str(value)
    # "2024-05-01T10:11:12Z" or with fractions/offsets: keep month-day and time.
    if "T" in text:
        day, _, rest = text.partition("T")
        return f"{day[5:]} {rest[:8]}"
    return text


def state_text(state: str | None) -> Text:
    """A state word in its colour."""
    word = state or "unknown"
    return Text(word.replace("_", " "), style=STATE_STYLES.get(word, ""))


def sync_rows(
    table: DataTable[Any], rows: Mapping[Hashable, Sequence[Any]], *, sort_column: str | None = None,
    reverse: bool = False,
) -> bool:
    """Make ``table`` show ``rows`` by changing only what changed.

    Rows are keyed; a kept row has only its changed cells updated, so the
    cursor and scroll position stay put and nothing redraws needlessly.

    Args:
        table: A table whose columns were added with keys.
        rows: Row key to cell values, in column order.
        sort_column: Re-sort by this column key when rows were added.
        reverse: Sort descending.

    Returns:
        Whether rows were added or removed.
    """
    column_keys = [column.key for column in table.ordered_columns]
    current = {row_key.value for row_key in table.rows}
    wanted = {str(key) for key in rows}
    for gone in current - wanted:
        table.remove_row(gone)
    added = False
    for key, values in rows.items():
        row_key = str(key)
        if row_key not in current:
            table.add_row(*values, key=row_key)
            added = True
            continue
        for column_key, value in zip(column_keys, values, strict=True):
            if table.get_cell(row_key, column_key) != value:
                table.update_cell(row_key, column_key, value)
    if added and sort_column is not None:
        table.sort(sort_column, reverse=reverse)
    return added or bool(current - wanted)
