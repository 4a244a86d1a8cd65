"""The Textual app: polls the gateway, shows the screens, sends the actions."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import ModalScreen

from tui._dialogs import ConfirmDialog, ExportPathDialog, ExportProgressDialog, HelpScreen
from tui._display import count
from tui._feed import GatewayFeed, Snapshot
from tui._incidents import IncidentsScreen
from tui._overview import OverviewScreen
from tui.errors import ControlError, DaemonRefusedError

__all__ = ["PulsegateApp"]

log = logging.getLogger(__name__)

#: Actions that go to the daemon: disabled (shown dimmed) in the read-only view.
DAEMON_ACTIONS = frozenset({"pause_uplink", "resume_uplink", "sync_now", "export", "test_cue",
                            "rescan_bluetooth", "ack_alarm"})

#: Where a USB stick is likely mounted, most specific first.
_MOUNT_ROOTS = (Path("/media") / os.environ.get("USER", "root"), Path("/media"), Path("/mnt"))


class PulsegateApp(App[None]):
    """The field staff's view of one gateway.

    Args:
        state_dir: The gateway's state directory.
        refresh_interval_s: How often the status is fetched.
        feed: Where data comes from; defaults to a :class:`GatewayFeed` on ``state_dir``.
    """

    CSS_PATH = "pulsegate.tcss"
    TITLE = "Pulsegate"
    # Every command has a key shown in the footer and in help (?); the palette
    # would only take footer room in 80 columns.
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("i", "incidents", "Incidents"),
        Binding("p", "pause_uplink", "Pause"),
        Binding("r", "resume_uplink", "Resume"),
        Binding("s", "sync_now", "Sync"),
        Binding("e", "export", "Export"),
        Binding("t", "test_cue", "Cue"),
        Binding("b", "rescan_bluetooth", "BT"),
        Binding("a", "ack_alarm", "Ack"),
    ]

    def __init__(self, state_dir: Path, *, refresh_interval_s: float = 1.0, feed: GatewayFeed | None = None) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.refresh_interval_s = refresh_interval_s
        self.feed = feed or GatewayFeed(self.state_dir)
        self.snapshot: Snapshot | None = None
        """The latest status fetch; None until the first one."""
        self.snapshots_shown = 0
        """How many fetches have been shown (tests wait on it)."""
        self._wake = asyncio.Event()

    def on_mount(self) -> None:
        self.sub_title = str(self.state_dir)
        self.push_screen(OverviewScreen(self.state_dir))
        self.run_worker(self._poll_forever(), name="status-poll", group="feed")

    async def on_unmount(self) -> None:
        await self.feed.close()

    # --- the status tick -----------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            self._apply(await self.feed.fetch_status())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.refresh_interval_s)
            except TimeoutError:
                pass

    def refresh_now(self) -> None:
        """Fetch the status now instead of at the next tick (after an action)."""
        self._wake.set()

    def _apply(self, snapshot: Snapshot) -> None:
        previous, self.snapshot = self.snapshot, snapshot
        if previous is None or previous.live != snapshot.live:
            self.refresh_bindings()
            if previous is not None and snapshot.live:
                self.notify("gateway daemon is back: live view", title="reconnected")
            elif previous is not None and previous.live:
                self.notify("gateway daemon stopped: read-only view, actions disabled", severity="warning")
        daemon = snapshot.status.get("daemon", {}) if snapshot.live else {}
        self.sub_title = (f"gateway {daemon.get('gateway_id', '?')} · {daemon.get('site', '?')}" if daemon
                          else str(self.state_dir))
        for screen in self.screen_stack:
            show = getattr(screen, "show_snapshot", None)
            if show is None or not screen.is_mounted:
                continue
            try:
                show(snapshot)
            except NoMatches:
                # The screen is being composed or torn down (quitting): its
                # widgets come or go; the next tick shows it.
                log.debug("skipped a tick for %s: widgets not mounted", type(screen).__name__)
        self.snapshots_shown += 1

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide actions a screen cannot do; dim daemon actions in the read-only view."""
        if action in DAEMON_ACTIONS or action in {"incidents", "help"}:
            if isinstance(self.screen, ModalScreen):
                return False
        if action == "ack_alarm" and not hasattr(self.screen, "selected_alarm_id"):
            return False
        if action == "test_cue" and not hasattr(self.screen, "selected_device_id"):
            return False
        if action in DAEMON_ACTIONS and not (self.snapshot and self.snapshot.live):
            return None
        return True

    # --- screens -------------------------------------------------------------

    def action_help(self) -> None:
        """Show the keys."""
        self.push_screen(HelpScreen())

    def action_incidents(self) -> None:
        """Show incidents and cues from central."""
        if not isinstance(self.screen, IncidentsScreen):
            self.push_screen(IncidentsScreen(self.state_dir))

    # --- actions sent to the daemon ------------------------------------------

    def action_pause_uplink(self) -> None:
        """Pause the uplink, after asking."""
        question = ("Pause the uplink?\n\nRecords keep being received and buffered on this gateway, "
                    "but nothing goes to central until you resume (r).")
        self.push_screen(ConfirmDialog(question, "Pause"),
                         lambda yes: self._send("pause_uplink", done=lambda r: f"uplink {r.get('state', 'paused')}")
                         if yes else None)

    def action_resume_uplink(self) -> None:
        """Resume the uplink."""
        self._send("resume_uplink", done=lambda r: f"uplink {r.get('state', 'resumed')}")

    def action_sync_now(self) -> None:
        """Wake the uplink now."""
        self._send("sync_now", done=lambda r: f"sync requested; uplink {r.get('state', '?')}")

    def action_rescan_bluetooth(self) -> None:
        """Look for the AirPods again."""
        self._send("rescan_bluetooth", done=lambda r: f"Bluetooth rescan: {r.get('state', 'started')}")

    def action_test_cue(self) -> None:
        """Send a test cue to the selected tracker (and the AirPods, if in an ear)."""
        device_id = self.screen.selected_device_id() if hasattr(self.screen, "selected_device_id") else None
        args = {"device_id": device_id} if device_id else {}
        self._send("test_cue", args,
                   done=lambda r: f"test cue {str(r.get('cue_id', '?'))[:8]} sent to {r.get('device_id', '?')}")

    def action_ack_alarm(self) -> None:
        """Acknowledge the selected alarm, or the oldest new one."""
        alarm_id = self.screen.selected_alarm_id() if hasattr(self.screen, "selected_alarm_id") else None
        if alarm_id is None:
            self.notify("no alarm to acknowledge", severity="warning")
            return
        self._send("ack_alarm", {"alarm_id": alarm_id}, done=lambda r: f"alarm {r.get('alarm_id')} acknowledged")

    def action_export(self) -> None:
        """Ask for a path, confirm, then export with a progress bar."""
        self.push_screen(ExportPathDialog(str(self._suggest_export_path())), self._confirm_export)

    def _confirm_export(self, path: Path | None) -> None:
        if path is None:
            return
        records = (self.snapshot.status.get("outbox", {}).get("records") if self.snapshot else None)
        question = (f"Export {count(records)} buffered records to\n{path} ?\n\n"
                    "This can take a while for a big backlog; the view keeps updating meanwhile.")
        self.push_screen(ConfirmDialog(question, "Export"),
                         lambda yes: self.push_screen(ExportProgressDialog(path), self._export_done) if yes else None)

    def _export_done(self, result: dict[str, Any] | None) -> None:
        if result is not None:
            self.notify(f"exported {count(result.get('records'))} records to {result.get('path')}",
                        title="export done", timeout=10)
        self.refresh_now()

    def _suggest_export_path(self) -> Path:
        folder = Path.cwd()
        for root in _MOUNT_ROOTS:
            mounts = sorted(p for p in root.glob("*") if p.is_dir() and os.path.ismount(p)) if root.is_dir() else []
            if mounts:
                folder = mounts[0]
                break
        gateway_id = (self.snapshot.status.get("daemon", {}).get("gateway_id") if self.snapshot else None) or "gateway"
        return folder / f"pulsegate-{gateway_id}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.bundle"

    def _send(self, op: str, args: dict[str, Any] | None = None, *, done: Callable[[dict[str, Any]], str]) -> None:
        self.run_worker(self._send_and_report(op, args, done), group="actions")

    async def _send_and_report(self, op: str, args: dict[str, Any] | None,
                               done: Callable[[dict[str, Any]], str]) -> None:
        try:
            result = await self.feed.run_action(op, args)
        except DaemonRefusedError as exc:
            self.notify(exc.reason, title=f"{op.replace('_', ' ')} refused", severity="error", timeout=10)
            return
        except ControlError as exc:
            self.notify(str(exc), title=f"{op.replace('_', ' ')} failed", severity="error", timeout=10)
            return
        self.notify(done(result), title=op.replace("_", " "))
        self.refresh_now()
