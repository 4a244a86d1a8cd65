"""The UI driven by Pilot against a real gateway daemon fed by replayed trackers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveGateway, wait_for
from gateway_harness import FENIX, GATEWAY_ID, RUN_GPX, control_request, wait_until
from textual.widgets import DataTable, Input, Sparkline

from firmware_shim.bundle_format import load_public_key, read_bundle
from tui import FeedMode, PulsegateApp
from tui._device import DeviceScreen
from tui._dialogs import ConfirmDialog, ExportPathDialog, HelpScreen
from tui._incidents import IncidentsScreen
from tui._overview import Banner, OverviewScreen

FENIX_RECORDS = 21  # records in the Fenix 5 recording (tests/fixtures/recordings/expected)


def column(table: DataTable[Any], key: str) -> list[str]:
    """A column's cells as plain text, top to bottom."""
    return [str(cell) for cell in table.get_column(key)]


def notes(app: PulsegateApp) -> list[tuple[str, str, str]]:
    """The notifications raised so far: (severity, title, message)."""
    # Textual keeps them on a private attribute; the toasts on screen are
    # built from the same list.
    return [(n.severity, n.title, n.message) for n in app._notifications]


def banner(app: PulsegateApp) -> str:
    return str(app.screen.query_one(Banner).render())


async def test_overview_shows_trackers_links_and_rate(live_gateway: LiveGateway) -> None:
    """Both trackers appear with the daemon's counts, the finished one's port gone, the streaming one open."""
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        table = app.screen.query_one("#trackers", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, "two trackers")

        assert column(table, "tracker") == [FENIX.stem, RUN_GPX.stem]
        assert column(table, "recv")[0] == str(FENIX_RECORDS)
        link = dict(zip(column(table, "tracker"), column(table, "link"), strict=True))
        assert link[RUN_GPX.stem] == "open"
        assert link[FENIX.stem] in {"reopening", "closed"}  # the emulator unlinked its terminal when done
        assert f"live · gateway {GATEWAY_ID} · site test-gym" in banner(app)

        await wait_for(pilot, lambda: len(app.snapshot.status["ingest"]["records_per_second"]) >= 2, "two rates")
        rates = app.snapshot.status["ingest"]["records_per_second"]
        assert app.screen.query_one("#rate", Sparkline).data == rates
        assert str(app.screen.query_one("#ingest-text").render()).startswith(f"{rates[-1]:,.1f} rec/s")
        assert "uplink disabled" in str(app.screen.query_one("#uplink-text").render())
        airpods_state = app.snapshot.status["airpods"]["state"]  # "no_adapter" on a machine without BlueZ
        assert str(app.screen.query_one("#airpods-text").render()).startswith(airpods_state.replace("_", " "))


async def test_rows_are_updated_in_place_each_tick(live_gateway: LiveGateway) -> None:
    """Ticks update cells of the same rows: the cursor stays, no row is rebuilt."""
    app = PulsegateApp(live_gateway.state_dir, refresh_interval_s=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#trackers", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, "two trackers")
        await pilot.press("down")
        keys_before = [row.key for row in table.ordered_rows]
        shown = app.snapshots_shown
        await wait_for(pilot, lambda: app.snapshots_shown >= shown + 5, "five more ticks")
        assert [row.key for row in table.ordered_rows] == keys_before
        assert table.cursor_row == 1


async def test_device_detail_lists_recent_records_and_no_loss(live_gateway: LiveGateway) -> None:
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#trackers", DataTable).row_count == 2, "trackers")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen) and app.screen.fetches > 0, "detail")
        screen = app.screen
        assert isinstance(screen, DeviceScreen) and screen.device_id == FENIX.stem

        records = screen.query_one("#records-table", DataTable)
        # The 20 most recent of 21 records, newest first.
        assert column(records, "seq") == [str(n) for n in range(FENIX_RECORDS, 1, -1)]
        assert "0 missing · 0 dup · 0 quar" in str(screen.query_one("#device-title").render())
        await pilot.press("2")
        assert screen.query_one("#gaps-table", DataTable).row_count == 0
        await pilot.press("3")
        assert screen.query_one("#quarantine-table", DataTable).row_count == 0

        await pilot.press("escape")
        assert isinstance(app.screen, OverviewScreen)


async def test_test_cue_reaches_the_selected_tracker(live_gateway: LiveGateway) -> None:
    """The cue goes to the tracker under the cursor; the emulator logs receiving it."""
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#trackers", DataTable).row_count == 2, "trackers")
        await pilot.press("down", "t")  # the streaming tracker, whose port is open
        await wait_for(pilot, lambda: notes(app), "the cue notification")
        severity, _, message = notes(app)[-1]
        assert severity == "information", message
        assert message.startswith("test cue ") and message.endswith(f"sent to {RUN_GPX.stem}")

        cue_log = live_gateway.streaming.link.parent / "cues.jsonl"
        wait_until(lambda: cue_log.exists() and cue_log.read_text().strip(), 15, "the tracker to log the cue")
        received = [json.loads(line) for line in cue_log.read_text().splitlines()]
        assert [c["device_id"] for c in received] == [RUN_GPX.stem]

        await pilot.press("i")
        assert isinstance(app.screen, IncidentsScreen)
        cues = app.screen.query_one("#cues", DataTable)
        await wait_for(pilot, lambda: cues.row_count == 1, "the cue in the cues table")
        assert column(cues, "tracker") == [RUN_GPX.stem]


async def test_cue_to_a_finished_tracker_is_refused_with_the_daemons_reason(live_gateway: LiveGateway) -> None:
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#trackers", DataTable).row_count == 2, "trackers")
        await pilot.press("t")  # cursor on the Fenix tracker, whose port is gone
        await wait_for(pilot, lambda: any(s == "error" for s, _, _ in notes(app)), "an error notification")
        severity, title, message = notes(app)[-1]
        assert title == "test cue refused"
        assert message.startswith(f"tracker {FENIX.stem!r} is not connected")
        assert app.is_running


async def test_pause_asks_first_then_shows_the_refusal(live_gateway: LiveGateway) -> None:
    """Cancel sends nothing; confirm sends pause_uplink, which this gateway refuses (no uplink configured)."""
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert isinstance(app.screen, OverviewScreen) and notes(app) == []

        await pilot.press("p")
        await pilot.press("y")
        await wait_for(pilot, lambda: notes(app), "the daemon's answer")
        assert notes(app) == [("error", "pause uplink refused",
                               "the uplink is not enabled; set uplink.enabled = true and uplink.amqp_url")]
        assert isinstance(app.screen, OverviewScreen) and app.is_running


@pytest.mark.parametrize(("key", "title", "reason"), [
    ("s", "sync now refused", "the uplink is not enabled"),
    ("r", "resume uplink refused", "the uplink is not enabled"),
    ("a", None, "no alarm to acknowledge"),
])
async def test_actions_show_refusals_as_notifications(
    live_gateway: LiveGateway, key: str, title: str | None, reason: str
) -> None:
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        await pilot.press(key)
        await wait_for(pilot, lambda: notes(app), "a notification")
        severity, got_title, message = notes(app)[-1]
        assert severity in {"error", "warning"} and message.startswith(reason)
        if title is not None:
            assert got_title == title


async def test_rescan_bluetooth_reports_what_the_daemon_answers(live_gateway: LiveGateway) -> None:
    """Whatever the daemon says to rescan_bluetooth (no adapter here, or a state) is what the UI shows."""
    expected = control_request(live_gateway.state_dir, "rescan_bluetooth")
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        await pilot.press("b")
        await wait_for(pilot, lambda: notes(app), "a notification")
        severity, title, message = notes(app)[-1]
    if expected["ok"]:
        assert severity == "information" and message.startswith("Bluetooth rescan: ")
    else:
        assert (severity, title, message) == ("error", "rescan bluetooth refused", expected["error"])


async def test_export_asks_for_a_path_confirms_and_shows_progress(live_gateway: LiveGateway, tmp_path: Path) -> None:
    out = tmp_path / "usb" / "gym.bundle"
    out.parent.mkdir()
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        await pilot.press("e")
        assert isinstance(app.screen, ExportPathDialog)
        app.screen.query_one(Input).value = str(tmp_path / "not-mounted" / "x.bundle")
        await pilot.press("enter")
        assert isinstance(app.screen, ExportPathDialog)  # refused in the dialog, nothing sent
        assert "is the USB stick mounted?" in str(app.screen.query_one("#export-path-error").render())

        app.screen.query_one(Input).value = str(out)
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: any(t == "export done" for _, t, _ in notes(app)), "the export to finish")
        assert isinstance(app.screen, OverviewScreen)

    message = next(m for _, t, m in notes(app) if t == "export done")
    key = load_public_key(next(live_gateway.state_dir.rglob("*.pub")))
    metadata, records = read_bundle(out, {GATEWAY_ID: key})
    per_device = Counter(r["device_id"] for r in records)
    assert per_device[FENIX.stem] == FENIX_RECORDS
    assert message == f"exported {sum(per_device.values())} records to {out}"


async def test_help_and_incidents_screens(live_gateway: LiveGateway) -> None:
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "i")
        assert isinstance(app.screen, IncidentsScreen)
        # No central is connected to this gateway: empty, and said so.
        assert app.screen.query_one("#incidents", DataTable).border_title == "Incidents from central (0)"
        await pilot.press("escape")
        assert isinstance(app.screen, OverviewScreen)


async def test_survives_the_daemon_restarting(live_gateway: LiveGateway) -> None:
    """Kill the daemon: read-only banner, actions off; start it again: live data returns by itself."""
    app = PulsegateApp(live_gateway.state_dir, refresh_interval_s=0.3)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.live, "a live snapshot")
        first_pid = app.snapshot.status["daemon"]["pid"]

        live_gateway.gateway.kill()
        await wait_for(pilot, lambda: app.snapshot.mode is FeedMode.FALLBACK, "the read-only view")
        assert banner(app) == f"gateway daemon not running — read-only view from {live_gateway.state_dir}"
        assert app.check_action("pause_uplink", ()) is None  # shown dimmed, does nothing
        await pilot.press("p", "e")
        assert isinstance(app.screen, OverviewScreen)
        table = app.screen.query_one("#trackers", DataTable)
        assert column(table, "recv")[0] == str(FENIX_RECORDS)  # still there, read from SQLite
        assert ("warning", "", "gateway daemon stopped: read-only view, actions disabled") in notes(app)

        # The daemon refuses to start on a port that does not exist, and the
        # finished tracker's port is gone: restart it on the streaming one.
        live_gateway.gateway.ports = [live_gateway.streaming.link]
        live_gateway.gateway.start()
        await wait_for(pilot, lambda: app.snapshot.live, "live data to return")
        assert app.snapshot.status["daemon"]["pid"] not in (first_pid, None)
        assert banner(app).startswith("● live")
        assert app.check_action("pause_uplink", ()) is True


@pytest.mark.slow
async def test_acknowledge_a_local_alarm(live_gateway: LiveGateway) -> None:
    """The finished tracker's port stays gone; after the daemon's 30 s the port_down alarm is raised and acked."""
    app = PulsegateApp(live_gateway.state_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        alarms = app.screen.query_one("#alarms", DataTable)
        await wait_for(pilot, lambda: alarms.row_count >= 1, "the port_down alarm", timeout_s=60)
        assert column(alarms, "kind")[0] == "port_down"
        assert column(alarms, "ack")[0] == "NEW"
        await pilot.press("a")
        await wait_for(pilot, lambda: column(alarms, "ack")[0] == "ack", "the alarm to show acknowledged")

    status = control_request(live_gateway.state_dir, "status")["result"]
    assert [a["acknowledged"] for a in status["alarms"]] == [True]  # type: ignore[index]
