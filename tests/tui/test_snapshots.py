"""SVG snapshots of the main screens over a prepared state dir (the daemon stopped).

The data is real (two recordings replayed into a real gateway); what changes
from run to run (random boot ids, ages that grow with the wall clock) is
masked by a feed that wraps the real one. The app is run on the relative
path ``state`` so the banner's path is the same everywhere.

Create or refresh the SVGs with ``pytest tests/tui --snapshot-update``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tui import FeedMode, GatewayFeed, PulsegateApp, Snapshot
from tui._device import DeviceScreen

#: What every age shows as in the snapshots.
MASKED_AGE_S = 42.0


def _mask_boots(rows: list[dict[str, Any]], boot_ids: dict[str, str]) -> None:
    for row in rows:
        row["boot_id"] = boot_ids.setdefault(row["boot_id"], f"boot{len(boot_ids) + 1:04d}-masked")
        if "last_seen_age_seconds" in row:
            row["last_seen_age_seconds"] = MASKED_AGE_S


class MaskedFeed(GatewayFeed):
    """The real feed; boot ids and ages replaced by fixed values after each real read."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self._boot_ids: dict[str, str] = {}

    async def fetch_status(self) -> Snapshot:
        snapshot = await super().fetch_status()
        status = snapshot.status
        _mask_boots(status.get("devices", []), self._boot_ids)
        if "outbox" in status:
            status["outbox"]["oldest_age_seconds"] = MASKED_AGE_S * 60
        return snapshot

    async def fetch_device(self, device_id: str) -> tuple[FeedMode, dict[str, Any]]:
        mode, detail = await super().fetch_device(device_id)
        _mask_boots(detail["boots"], self._boot_ids)
        _mask_boots(detail["recent_records"], self._boot_ids)
        return mode, detail


@pytest.fixture
def app(prepared_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> PulsegateApp:
    monkeypatch.chdir(prepared_state_dir.parent)
    return PulsegateApp(Path("state"), feed=MaskedFeed(Path("state")), refresh_interval_s=60)


async def _first_snapshot(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, PulsegateApp)
    while app.snapshots_shown < 1:
        await asyncio.sleep(0.05)
    await pilot.pause()


async def _device_detail(pilot: Pilot[None]) -> None:
    await _first_snapshot(pilot)
    await pilot.press("down", "enter")  # the second tracker: the TCX file, 384 records
    while not (isinstance(pilot.app.screen, DeviceScreen) and pilot.app.screen.fetches):
        await asyncio.sleep(0.05)
    await pilot.pause()


def test_overview_read_only(app: PulsegateApp, snap_compare: Any) -> None:
    """The overview with the daemon stopped: banner, trackers from SQLite, live-only panels say so."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=_first_snapshot)


def test_overview_read_only_wide(app: PulsegateApp, snap_compare: Any) -> None:
    """The same on a wide terminal."""
    assert snap_compare(app, terminal_size=(120, 32), run_before=_first_snapshot)


def test_device_detail(app: PulsegateApp, snap_compare: Any) -> None:
    """A tracker's boots and its 20 most recent records, newest first."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=_device_detail)


def test_incidents(app: PulsegateApp, snap_compare: Any) -> None:
    """Incidents and cues: empty, and saying they need the daemon."""
    assert snap_compare(app, press=["i"], terminal_size=(80, 24), run_before=_first_snapshot)


def test_help(app: PulsegateApp, snap_compare: Any) -> None:
    """The help screen over the overview."""
    assert snap_compare(app, press=["question_mark"], terminal_size=(80, 24), run_before=_first_snapshot)
