"""The overview screen: trackers and ports, ingest rate, buffer and uplink, AirPods, alarms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Sparkline, Static

from tui._display import age, clock_time, count, percent, state_text, sync_rows
from tui._feed import FeedMode, Snapshot

__all__ = ["OverviewScreen", "Banner", "tracker_rows"]

#: Row keys of serial ports that have no tracker yet start with this.
PORT_ROW_PREFIX = "port:"


class Banner(Static):
    """One line under the header: live, or why the view is read-only."""

    def show(self, snapshot: Snapshot | None, state_dir: Path) -> None:
        """Say where the data comes from."""
        if snapshot is None:
            self.update(f"connecting to the gateway daemon in {state_dir} …")
            self.set_classes("waiting")
        elif snapshot.mode is FeedMode.LIVE:
            daemon = snapshot.status.get("daemon", {})
            self.update(
                f"● live · gateway {daemon.get('gateway_id', '?')} · site {daemon.get('site', '?')}"
                f" · pid {daemon.get('pid', '?')} · up {age(daemon.get('uptime_seconds'))}"
            )
            self.set_classes("live")
        elif snapshot.mode is FeedMode.FALLBACK and not snapshot.daemon_down:
            self.update(f"gateway daemon in trouble — read-only view from {state_dir}: {snapshot.problem}")
            self.set_classes("fallback")
        elif snapshot.mode is FeedMode.FALLBACK:
            self.update(f"gateway daemon not running — read-only view from {state_dir}")
            self.set_classes("fallback")
        else:
            self.update(f"gateway daemon not running and no data: {snapshot.problem}")
            self.set_classes("unavailable")


def _aggregate_devices(devices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One entry per tracker, summing over its boots."""
    totals: dict[str, dict[str, Any]] = {}
    for row in devices:
        entry = totals.setdefault(row["device_id"], {
            "received": 0, "buffered": 0, "gaps": 0, "duplicates": 0, "quarantined": 0, "seen_s": None,
        })
        for name in ("received", "buffered", "gaps", "duplicates", "quarantined"):
            entry[name] += row.get(name) or 0
        seen = row.get("last_seen_age_seconds")
        if seen is not None and (entry["seen_s"] is None or seen < entry["seen_s"]):
            entry["seen_s"] = seen
    return totals


def tracker_rows(status: dict[str, Any], live: bool) -> dict[str, tuple[Any, ...]]:
    """The trackers table: one row per tracker, plus one per port no tracker has spoken on yet."""
    totals = _aggregate_devices(status.get("devices", []))
    ports = status.get("ports", [])
    port_of = {p["device_id"]: p for p in ports if p.get("device_id")}
    rows: dict[str, tuple[Any, ...]] = {}
    for device_id in sorted(totals):
        entry, port = totals[device_id], port_of.get(device_id)
        link = port["state"] if port else ("no port" if live else "—")
        seen = entry["seen_s"]
        if port and port.get("last_frame_age_seconds") is not None:
            seen = port["last_frame_age_seconds"] if seen is None else min(seen, port["last_frame_age_seconds"])
        gaps = entry["gaps"]
        rows[device_id] = (
            device_id, state_text(link), count(entry["received"]), count(entry["buffered"]),
            Text(count(gaps), style="bold red" if gaps else ""), count(entry["duplicates"]),
            Text(count(entry["quarantined"]), style="yellow" if entry["quarantined"] else ""), age(seen),
        )
    for port in ports:
        device_id = port.get("device_id")
        if device_id in totals:
            continue
        label = device_id or f"({Path(port['path']).name})"
        rows[device_id or PORT_ROW_PREFIX + port["path"]] = (
            label, state_text(port.get("state")), "0", "0", Text("0"), "0", Text(count(port.get("rejected"))),
            age(port.get("last_frame_age_seconds")),
        )
    return rows


def alarm_rows(alarms: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The alarms table, unacknowledged ones marked."""
    rows: dict[str, tuple[Any, ...]] = {}
    for alarm in alarms:
        acknowledged = bool(alarm.get("acknowledged"))
        rows[str(alarm["id"])] = (
            Text("ack" if acknowledged else "NEW", style="dim" if acknowledged else "bold red"),
            alarm.get("kind", ""), alarm.get("subject", ""), alarm.get("message", ""),
            clock_time(alarm.get("raised_at"))[-8:],
        )
    return rows


class OverviewScreen(Screen[None]):
    """What field staff see first."""

    BINDINGS = [
        # Not in the footer (80 columns are full); the table's title and help say it.
        Binding("d", "open_device", "Detail", show=False),
    ]

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = state_dir
        self._drain_peak_records = 0

    def compose(self) -> ComposeResult:
        yield Header(icon="≋")
        yield Banner(id="banner")
        with Horizontal(id="summary"):
            with Vertical(id="ingest-box", classes="box"):
                yield Static(id="ingest-text")
                yield Sparkline([0], id="rate", summary_function=max)
            with Vertical(id="buffer-box", classes="box"):
                yield Static(id="buffer-text")
                yield Static(id="uplink-text")
                yield ProgressBar(total=1, show_eta=False, id="drain")
            with Vertical(id="airpods-box", classes="box"):
                yield Static(id="airpods-text")
        trackers: DataTable[Any] = DataTable(id="trackers", cursor_type="row", zebra_stripes=True)
        trackers.border_title = "Trackers · enter: detail"
        for label, key, width in (("tracker", "tracker", 21), ("link", "link", 9), ("recv", "recv", 6),
                                  ("buf", "buf", 6), ("gaps", "gaps", 4), ("dup", "dup", 4), ("quar", "quar", 4),
                                  ("seen", "seen", 6)):
            trackers.add_column(label, key=key, width=width)
        yield trackers
        alarms: DataTable[Any] = DataTable(id="alarms", cursor_type="row")
        alarms.border_title = "Local alarms"
        for label, key, width in (("", "ack", 3), ("kind", "kind", 14), ("subject", "subject", 16),
                                  ("message", "message", 26), ("raised", "raised", 8)):
            alarms.add_column(label, key=key, width=width)
        yield alarms
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#ingest-box").border_title = "Ingest"
        self.query_one("#buffer-box").border_title = "Buffer · uplink"
        self.query_one("#airpods-box").border_title = "AirPods"
        self.query_one("#trackers", DataTable).focus()
        self.show_snapshot(getattr(self.app, "snapshot", None))

    # --- what the app calls each tick ----------------------------------------

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        """Update every panel in place from one status fetch."""
        self.query_one(Banner).show(snapshot, self.state_dir)
        status = snapshot.status if snapshot else {}
        live = bool(snapshot and snapshot.live)
        self._show_ingest(status, live)
        self._show_buffer(status, live)
        self._show_airpods(status, live)
        sync_rows(self.query_one("#trackers", DataTable), tracker_rows(status, live), sort_column="tracker")
        alarms_table = self.query_one("#alarms", DataTable)
        sync_rows(alarms_table, alarm_rows(status.get("alarms", [])))
        if live:
            unacked = sum(not a.get("acknowledged") for a in status.get("alarms", []))
            alarms_table.border_title = f"Local alarms ({unacked} new)" if unacked else (
                f"Local alarms ({alarms_table.row_count}, all acknowledged)" if alarms_table.row_count
                else "Local alarms (none)")
        else:
            alarms_table.border_title = "Local alarms (shown when the daemon runs)"

    def _show_ingest(self, status: dict[str, Any], live: bool) -> None:
        ingest = status.get("ingest", {})
        rates = [float(r) for r in ingest.get("records_per_second", [])]
        text = self.query_one("#ingest-text", Static)
        if live and rates:
            text.update(f"{rates[-1]:,.1f} rec/s · peak {max(rates):,.0f}")
        elif live:
            text.update("0 rec/s")
        else:
            text.update(Text("— (daemon down)", style="dim"))
        sparkline = self.query_one("#rate", Sparkline)
        sparkline.display = live
        sparkline.data = rates or [0.0]

    def _show_buffer(self, status: dict[str, Any], live: bool) -> None:
        outbox, uplink = status.get("outbox", {}), status.get("uplink", {})
        self.query_one("#buffer-text", Static).update(
            f"{count(outbox.get('records'))} buffered · oldest {age(outbox.get('oldest_age_seconds'))}"
            if outbox else "outbox unknown"
        )
        line = Text("uplink ")
        if not live:
            line.append("unknown (daemon down)", style="dim")
        elif not uplink:
            line.append("not reported", style="dim")
        else:
            line.append_text(state_text(uplink.get("state")))
            rate = uplink.get("drain_rate_records_per_second")
            if rate:
                line.append(f" · {float(rate):,.0f}/s")
        self.query_one("#uplink-text", Static).update(line)
        backlog = uplink.get("backlog_records") if live else None
        self._show_drain(None if backlog is None else int(backlog))

    def _show_drain(self, backlog_records: int | None) -> None:
        # Progress of the current drain: how much of the biggest backlog seen
        # since it was last empty has gone out. No backlog figure (uplink
        # disabled, daemon down): no bar.
        bar = self.query_one("#drain", ProgressBar)
        bar.display = backlog_records is not None
        if backlog_records is None:
            return
        if backlog_records == 0:
            self._drain_peak_records = 0
        self._drain_peak_records = max(self._drain_peak_records, backlog_records)
        if self._drain_peak_records:
            bar.update(total=self._drain_peak_records, progress=self._drain_peak_records - backlog_records)
        else:
            bar.update(total=1, progress=1)

    def _show_airpods(self, status: dict[str, Any], live: bool) -> None:
        text = self.query_one("#airpods-text", Static)
        airpods = status.get("airpods")
        if not live:
            text.update(Text("— (daemon down)", style="dim"))
            return
        if not airpods:
            text.update(Text("not reported", style="dim"))
            return
        line = Text.assemble(state_text(airpods.get("state")), "\n", Text(str(airpods.get("model") or ""), style="dim"))
        battery = airpods.get("battery") or {}
        if any(battery.get(k) is not None for k in ("left", "right", "case")):
            line.append(f"\nL {percent(battery.get('left'))} R {percent(battery.get('right'))}"
                        f" case {percent(battery.get('case'))}")
        text.update(line)

    # --- selection, for the app's actions ------------------------------------

    def selected_device_id(self) -> str | None:
        """The tracker under the trackers table's cursor, if it has an id."""
        table = self.query_one("#trackers", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None or key.startswith(PORT_ROW_PREFIX) else key

    def selected_alarm_id(self) -> str | None:
        """The alarm under the alarms table's cursor, else the oldest unacknowledged one."""
        table = self.query_one("#alarms", DataTable)
        if not table.row_count:
            return None
        if table.has_focus:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        alarms = getattr(self.app, "snapshot", None)
        for alarm in (alarms.status.get("alarms", []) if alarms else []):
            if not alarm.get("acknowledged"):
                return str(alarm["id"])
        return None

    def action_open_device(self) -> None:
        """Open the selected tracker's detail."""
        device_id = self.selected_device_id()
        if device_id is None:
            self.notify("no tracker selected (a port without a tracker has no detail)", severity="warning")
            return
        from tui._device import DeviceScreen

        self.app.push_screen(DeviceScreen(self.state_dir, device_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "trackers":
            self.action_open_device()
