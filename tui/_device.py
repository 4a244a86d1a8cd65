"""The device detail screen: one tracker's boots, recent records, gaps and quarantined frames."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from gateway.errors import GatewayError
from tui._display import age, clock_time, count, sync_rows
from tui._feed import FeedMode, Snapshot
from tui._overview import Banner

__all__ = ["DeviceScreen"]

log = logging.getLogger(__name__)

_BOOT_COLUMNS = (("boot", 8), ("recv", 6), ("buf", 6), ("gaps", 5), ("dup", 4), ("quar", 4), ("contig", 7),
                 ("max seq", 7), ("seen", 6))
_RECORD_COLUMNS = (("seq", 6), ("boot", 8), ("time", 8), ("hr", 4), ("speed", 5), ("dist m", 8), ("cad", 4),
                   ("power", 5), ("batt", 4))
_GAP_COLUMNS = (("boot", 8), ("first missing", 13), ("last missing", 13), ("records", 8))
_QUARANTINE_COLUMNS = (("at", 14), ("port", 12), ("reason", 14), ("detail", 28))


def _table(table_id: str, columns: tuple[tuple[str, int], ...]) -> DataTable[Any]:
    table: DataTable[Any] = DataTable(id=table_id, cursor_type="row", zebra_stripes=True)
    for label, width in columns:
        table.add_column(label, key=label, width=width)
    return table


def _number(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def boot_rows(boots: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """One row per boot of the tracker."""
    return {
        b["boot_id"]: (
            b["boot_id"][:8], count(b.get("received")), count(b.get("buffered")),
            Text(count(b.get("gaps")), style="bold red" if b.get("gaps") else ""), count(b.get("duplicates")),
            count(b.get("quarantined")), count(b.get("contiguous_seq")), count(b.get("max_seq")),
            age(b.get("last_seen_age_seconds")),
        )
        for b in boots
    }


def record_rows(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The most recent records, newest first once sorted by seq."""
    return {
        f"{r['boot_id']}:{r['seq']}": (
            int(r["seq"]), str(r["boot_id"])[:8], clock_time(r.get("timestamp_us"))[-8:],
            _number(r.get("heart_rate_bpm"), "d"), _number(r.get("speed_m_s"), ".1f"),
            _number(r.get("distance_m"), ",.0f"), _number(r.get("cadence_rpm"), "d"),
            _number(r.get("power_w"), "d"), "—" if r.get("battery_pct") is None else f"{r['battery_pct']}%",
        )
        for r in records
    }


def gap_rows(boots: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Every missing sequence range, per boot."""
    rows: dict[str, tuple[Any, ...]] = {}
    for b in boots:
        for first, last in b.get("gap_ranges") or []:
            rows[f"{b['boot_id']}:{first}"] = (b["boot_id"][:8], count(first), count(last), count(last - first + 1))
    return rows


def quarantine_rows(quarantine: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Quarantined frames with their reasons (no ids in the API: keyed by content and order)."""
    rows: dict[str, tuple[Any, ...]] = {}
    for q in quarantine:
        base = f"{q.get('at')}|{q.get('port')}|{q.get('reason')}|{q.get('detail')}"
        key, n = base, 1
        while key in rows:
            n += 1
            key = f"{base}|{n}"
        rows[key] = (clock_time(q.get("at")), Path(str(q.get("port") or "—")).name,
                     Text(str(q.get("reason") or "?"), style="yellow"), str(q.get("detail") or ""))
    return rows


class DeviceScreen(Screen[None]):
    """One tracker in detail; refreshed at the app's rate."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        # Tabs say their keys; the footer has no room for them in 80 columns.
        Binding("1", "show_tab('records')", "Records", show=False),
        Binding("2", "show_tab('gaps')", "Gaps", show=False),
        Binding("3", "show_tab('quarantine')", "Quarantine", show=False),
    ]

    def __init__(self, state_dir: Path, device_id: str) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.device_id = device_id
        self.fetches = 0
        """How many detail fetches have been shown (tests wait on it)."""

    def compose(self) -> ComposeResult:
        yield Header(icon="≋")
        yield Banner(id="banner")
        yield Static(self.device_id, id="device-title")
        yield _table("boots", _BOOT_COLUMNS)
        with TabbedContent(id="device-tabs", initial="records"):
            with TabPane("1 Recent records", id="records"):
                yield _table("records-table", _RECORD_COLUMNS)
            with TabPane("2 Gaps", id="gaps"):
                yield _table("gaps-table", _GAP_COLUMNS)
            with TabPane("3 Quarantine", id="quarantine"):
                yield _table("quarantine-table", _QUARANTINE_COLUMNS)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = f"tracker {self.device_id}"
        self.query_one("#records-table", DataTable).focus()
        self.show_snapshot(getattr(self.app, "snapshot", None))
        self._fetch()
        self.set_interval(getattr(self.app, "refresh_interval_s", 1.0), self._fetch)

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        """The app's status tick: only the banner depends on it."""
        self.query_one(Banner).show(snapshot, self.state_dir)

    def selected_device_id(self) -> str:
        """This screen's tracker, for the app's test-cue action."""
        return self.device_id

    def action_show_tab(self, tab_id: str) -> None:
        """Switch to a tab."""
        self.query_one(TabbedContent).active = tab_id
        self.query_one(f"#{tab_id}-table", DataTable).focus()

    def _fetch(self) -> None:
        self.run_worker(self._fetch_and_show(), exclusive=True, group="device-detail")

    async def _fetch_and_show(self) -> None:
        feed = self.app.feed
        title = self.query_one("#device-title", Static)
        try:
            mode, detail = await feed.fetch_device(self.device_id)
        except GatewayError as exc:
            title.update(Text(f"{self.device_id}: {exc}", style="red"))
            self.fetches += 1
            return
        self._show(mode, detail)

    def _show(self, mode: FeedMode, detail: dict[str, Any]) -> None:
        boots = detail.get("boots", [])
        quarantine = detail.get("quarantine", [])
        gaps = sum(b.get("gaps") or 0 for b in boots)
        duplicates = sum(b.get("duplicates") or 0 for b in boots)
        title = Text(self.device_id, style="bold")
        title.append(f"  {len(boots)} boot(s) · {gaps} missing · {duplicates} dup · "
                     f"{sum(b.get('quarantined') or 0 for b in boots)} quar")
        if mode is not FeedMode.LIVE:
            title.append("  (read-only)", style="dim")
        self.query_one("#device-title", Static).update(title)
        sync_rows(self.query_one("#boots", DataTable), boot_rows(boots))
        sync_rows(self.query_one("#records-table", DataTable), record_rows(detail.get("recent_records", [])),
                  sort_column="seq", reverse=True)
        sync_rows(self.query_one("#gaps-table", DataTable), gap_rows(boots))
        sync_rows(self.query_one("#quarantine-table", DataTable), quarantine_rows(quarantine))
        tabs = self.query_one(TabbedContent)
        for tab_id, label in (("gaps", f"2 Gaps ({len(gap_rows(boots))})"),
                              ("quarantine", f"3 Quarantine ({len(quarantine)})")):
            tab = tabs.get_tab(tab_id)
            if str(tab.label) != label:  # relabel only on change: no redraw per tick
                tab.label = label
        self.fetches += 1
