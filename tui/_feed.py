"""Where the UI's data comes from: the live daemon, or the read-only fallback.

The daemon's control socket is tried first on every fetch. When it is down,
the status comes from ``gateway.state_reader`` (the one reader the gateway
offers for this), and actions are refused until the socket answers again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.state_reader import read_device, read_status
from tui._client import CONTROL_SOCKET_FILENAME, ControlClient, ProgressCallback
from tui.errors import ControlError, DaemonUnavailableError

__all__ = ["FeedMode", "Snapshot", "GatewayFeed"]

log = logging.getLogger(__name__)


class FeedMode(Enum):
    """Where a snapshot came from."""

    LIVE = "live"
    """From the running daemon, over the control socket."""
    FALLBACK = "fallback"
    """Read-only, from the gateway's SQLite file; the daemon is not running."""
    UNAVAILABLE = "unavailable"
    """Neither: no daemon and no readable database."""


@dataclass(frozen=True)
class Snapshot:
    """One fetch of the gateway's status."""

    mode: FeedMode
    status: dict[str, Any] = field(default_factory=dict)
    """The status document (empty when unavailable)."""
    problem: str = ""
    """Why the daemon is not live (empty when live)."""
    daemon_down: bool = True
    """Not live because no daemon answers (False: it answers, but its status failed)."""
    fetched_at_monotonic_s: float = field(default_factory=time.monotonic)

    @property
    def live(self) -> bool:
        """Whether actions can be sent."""
        return self.mode is FeedMode.LIVE


class GatewayFeed:
    """Fetches status and device detail, live when it can, read-only when it must.

    Args:
        state_dir: The gateway's state directory (socket and SQLite file).
        idle_timeout_s: Longest wait for the daemon's next line on a quick request.
        export_idle_timeout_s: The same for ``export``, whose progress lines
            may be seconds apart on a slow USB stick.
    """

    def __init__(self, state_dir: Path, *, idle_timeout_s: float = 5.0, export_idle_timeout_s: float = 120.0) -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = self.state_dir / CONTROL_SOCKET_FILENAME
        self.idle_timeout_s = idle_timeout_s
        self.export_idle_timeout_s = export_idle_timeout_s
        self._client = ControlClient(self.socket_path, idle_timeout_s=idle_timeout_s)
        self._was_live: bool | None = None

    async def fetch_status(self) -> Snapshot:
        """The gateway's status, from the daemon or else from its database."""
        try:
            status = await self._client.request("status")
        except DaemonUnavailableError as exc:
            self._note_mode(False, str(exc))
            return await self._fallback_status(str(exc))
        except ControlError as exc:
            self._note_mode(False, str(exc))
            return await self._fallback_status(f"the daemon answers but its status failed: {exc}", daemon_down=False)
        self._note_mode(True, "")
        return Snapshot(FeedMode.LIVE, status)

    async def fetch_device(self, device_id: str) -> tuple[FeedMode, dict[str, Any]]:
        """One tracker's detail, from the daemon or else from the database.

        Raises:
            GatewayError: neither source knows the tracker (the message says why).
        """
        try:
            return FeedMode.LIVE, await self._client.request("device", {"device_id": device_id})
        except DaemonUnavailableError:
            try:
                detail = await asyncio.to_thread(read_device, self.state_dir, device_id)
            except sqlite3.Error as exc:
                raise GatewayError(f"cannot read the gateway database in {str(self.state_dir)!r}: {exc}") from exc
            return FeedMode.FALLBACK, detail

    async def run_action(
        self, op: str, args: dict[str, Any] | None = None, *, on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Send one action on a connection of its own, so polling goes on meanwhile.

        Raises:
            DaemonUnavailableError: the daemon is not running.
            DaemonRefusedError: the daemon refused; its reason is the message.
        """
        timeout_s = self.export_idle_timeout_s if op == "export" else self.idle_timeout_s
        client = ControlClient(self.socket_path, idle_timeout_s=timeout_s)
        try:
            log.info("sending %s %s to the gateway daemon", op, args or {})
            return await client.request(op, args, on_progress=on_progress)
        finally:
            await client.close()

    async def close(self) -> None:
        """Close the polling connection."""
        await self._client.close()

    async def _fallback_status(self, why: str, *, daemon_down: bool = True) -> Snapshot:
        try:
            status = await asyncio.to_thread(read_status, self.state_dir)
        except GatewayError as exc:
            return Snapshot(FeedMode.UNAVAILABLE, {}, f"{why}; {exc}", daemon_down)
        except sqlite3.Error as exc:
            # The daemon may be creating or migrating the file right now.
            return Snapshot(FeedMode.UNAVAILABLE, {}, f"{why}; cannot read the gateway database: {exc}", daemon_down)
        return Snapshot(FeedMode.FALLBACK, status, why, daemon_down)

    def _note_mode(self, live: bool, why: str) -> None:
        # One log line per change of mode, not one per poll.
        if live == self._was_live:
            return
        if live:
            log.info("gateway daemon answers on %s: live view", self.socket_path)
        else:
            log.info("gateway daemon not reachable (%s): read-only view from %s", why, self.state_dir)
        self._was_live = live
