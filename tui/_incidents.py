"""The incidents and cues screen: what central sent to this gym."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from tui._display import clock_time, state_text, sync_rows
from tui._feed import Snapshot
from tui._overview import Banner

__all__ = ["IncidentsScreen"]

#: Priority colours, ITIL P1 (critical) to P5 (planning).
_PRIORITY_STYLES = {"P1": "bold white on red", "P2": "bold red", "P3": "yellow", "P4": "", "P5": "dim"}


def incident_rows(incidents: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """One row per incident central sent, in the order received."""
    return {
        str(i["incident_id"]): (
            Text(str(i.get("priority", "?")), style=_PRIORITY_STYLES.get(str(i.get("priority")), "")),
            state_text(i.get("state")), str(i.get("kind", "")), str(i.get("subject", "")),
            str(i.get("summary", "")), clock_time(i.get("received_at")),
        )
        for i in incidents
    }


def cue_rows(cues: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """One row per recent haptic cue."""
    return {
        str(c["cue_id"]): (
            str(c["cue_id"])[:8], str(c.get("device_id", "")), str(c.get("pattern", "")),
            state_text(c.get("state")), str(c.get("attempts", "")), clock_time(c.get("at")),
        )
        for c in cues
    }


class IncidentsScreen(Screen[None]):
    """Incidents and cues, refreshed with the app's status tick."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = state_dir

    def compose(self) -> ComposeResult:
        yield Header(icon="≋")
        yield Banner(id="banner")
        incidents: DataTable[Any] = DataTable(id="incidents", cursor_type="row", zebra_stripes=True)
        incidents.border_title = "Incidents from central"
        for label, width in (("prio", 4), ("state", 11), ("kind", 12), ("subject", 14), ("summary", 20),
                             ("received", 14)):
            incidents.add_column(label, key=label, width=width)
        yield incidents
        cues: DataTable[Any] = DataTable(id="cues", cursor_type="row", zebra_stripes=True)
        cues.border_title = "Haptic cues"
        for label, width in (("cue", 8), ("tracker", 20), ("pattern", 10), ("state", 12), ("tries", 5),
                             ("at", 14)):
            cues.add_column(label, key=label, width=width)
        yield cues
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "incidents and cues"
        self.query_one("#incidents", DataTable).focus()
        self.show_snapshot(getattr(self.app, "snapshot", None))

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        """Update both tables in place."""
        self.query_one(Banner).show(snapshot, self.state_dir)
        status = snapshot.status if snapshot else {}
        live = bool(snapshot and snapshot.live)
        incidents, cues = status.get("incidents", []), status.get("cues", [])
        sync_rows(self.query_one("#incidents", DataTable), incident_rows(incidents))
        sync_rows(self.query_one("#cues", DataTable), cue_rows(cues))
        suffix = "" if live else " (shown when the daemon runs)"
        self.query_one("#incidents", DataTable).border_title = f"Incidents from central ({len(incidents)}){suffix}"
        self.query_one("#cues", DataTable).border_title = f"Haptic cues ({len(cues)}){suffix}"
