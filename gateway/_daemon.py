"""The gateway daemon: wires serial ingest, the outbox, metrics and the control API."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from firmware_shim import Frame, FrameType
from gateway._metrics import GatewayCollector, start_metrics_server
from gateway._outbox import Outbox
from gateway._serial_ingest import INGEST_QUEUE_MAX_ITEMS, IngestWriter, PortReader, PortState
from gateway.errors import GatewayError
from gateway.settings import GatewaySettings
from gateway.state_reader import read_status

__all__ = ["GatewayDaemon", "StateDirLockedError"]

log = logging.getLogger(__name__)

LOCK_FILENAME = "gateway.lock"


class StateDirLockedError(GatewayError):
    """Another gateway daemon already runs on this state directory."""


class GatewayDaemon:
    """One gateway: reads its serial ports into the outbox until stopped."""

    def __init__(self, settings: GatewaySettings, extra_ports: list[str] | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(settings.gateway.state_dir)
        self.ports = list(dict.fromkeys([*settings.serial.ports, *(extra_ports or [])]))
        self.started_at = time.time()
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._inbox: queue.Queue = queue.Queue(maxsize=INGEST_QUEUE_MAX_ITEMS)
        self.readers: dict[str, PortReader] = {}
        self.writer: IngestWriter | None = None
        self._metrics_server: Any = None

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open everything; raise a GatewayError for what the operator must fix."""
        if not self.ports:
            raise GatewayError("no serial port to read: pass --port PATH or set serial.ports in the config")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        outbox = Outbox(self.state_dir)
        serial_settings = self.settings.serial
        for path in self.ports:
            reader = PortReader(
                path, self._inbox, baud_rate=serial_settings.baud_rate,
                reopen_backoff_max_s=serial_settings.reopen_backoff_max_s,
                on_frame=self._on_frame, stop_event=self._stop,
            )
            reader.open_first()
            self.readers[path] = reader
        self.writer = IngestWriter(
            outbox, self._inbox, self.readers, commit_interval_ms=serial_settings.commit_interval_ms,
            batch_max_records=serial_settings.commit_batch_max_records, stop_event=self._stop,
        )
        if self.settings.metrics.listen_address:
            self._metrics_server = start_metrics_server(self.settings.metrics.listen_address, GatewayCollector(self))
        self.writer.start()
        for reader in self.readers.values():
            reader.start()
        log.info("gateway %s (site %s) reading %d port(s) into %s", self.settings.gateway.id,
                 self.settings.gateway.site, len(self.readers), self.state_dir)

    def _take_lock(self) -> None:
        fd = os.open(self.state_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirLockedError(
                f"another gateway is running on {str(self.state_dir)!r}; stop it first or use another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        while not self._stop.wait(0.5):
            pass
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for reader in self.readers.values():
            reader.join(timeout=2)
        if self.writer is not None:
            self.writer.join(timeout=10)
            self.writer.outbox.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("gateway %s stopped", self.settings.gateway.id)

    # --- frames other than telemetry ----------------------------------------

    def _on_frame(self, port: PortState, frame: Frame) -> None:
        if frame.type is FrameType.HEARTBEAT:
            return
        log.debug("frame %s seq %d from %s", frame.type.name, frame.seq, port.path)

    # --- status --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The stored status plus what only the running daemon knows."""
        status = read_status(self.state_dir)
        stats = self.writer.stats if self.writer else None
        status["daemon"] = {
            "running": True,
            "pid": os.getpid(),
            "gateway_id": self.settings.gateway.id,
            "site": self.settings.gateway.site,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }
        status["ports"] = [
            {"path": r.state.path, "state": r.state.state, "device_id": r.state.device_id,
             "boot_id": r.state.boot_id, "firmware_version": r.state.firmware_version,
             "frames": r.state.frames, "rejected": r.state.rejected, "reopen_count": r.state.reopen_count,
             "last_frame_age_seconds": round(time.time() - r.state.last_frame_at, 3) if r.state.last_frame_at else None,
             "last_error": r.state.last_error}
            for r in self.readers.values()
        ]
        if stats is not None:
            history = stats.history
            rates = [
                round((b[1] - a[1]) / max(1e-6, b[0] - a[0]), 1) for a, b in zip(history, history[1:], strict=False)
            ]
            status["ingest"] = {
                "records_committed": stats.records_committed,
                "commits": stats.commits,
                "records_per_second": rates[-60:],
            }
        return status
