"""The gateway daemon: wires serial ingest, the outbox, metrics and the control API."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from firmware_shim import Frame, FrameType, HapticPattern
from gateway._alarms import Alarm, LocalAlarms
from gateway._control import ControlServer
from gateway._decode_pool import DecodePool
from gateway._haptics import HapticSender
from gateway._metrics import GatewayCollector, start_metrics_server
from gateway._outbox import DB_FILENAME, Outbox
from gateway._serial_ingest import (
    INGEST_QUEUE_MAX_ITEMS,
    IngestWriter,
    PortLoop,
    PortReader,
    PortState,
)
from gateway._wearer import WearerCues
from gateway.errors import GatewayError
from gateway.settings import GatewaySettings
from gateway.state_reader import read_device, read_status

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
        self._running = False
        self._inbox: queue.Queue = queue.Queue(maxsize=INGEST_QUEUE_MAX_ITEMS)
        self.readers: dict[str, PortReader] = {}
        self.writer: IngestWriter | None = None
        self.port_loop: PortLoop | None = None
        self._decode_pool: DecodePool | None = None
        self._metrics_server: Any = None
        self.haptics = HapticSender(self._send_to_device)
        #: The registry /metrics serves: the daemon's collector and every part's metrics.
        self.registry = CollectorRegistry()
        #: Cues for the wearer; made in start(), once the ports are known good,
        #: so a configuration error is not preceded by audio-device warnings.
        self.wearer: WearerCues | None = None
        self.alarms = LocalAlarms(settings.gateway.id)
        self.control = ControlServer(self, self.state_dir)
        self._housekeeping = threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True)
        #: Optional parts, wired when configured: the uplink to RabbitMQ and
        #: the AirPods link. None means disabled.
        self.uplink: Any = None
        if settings.uplink.enabled:
            from gateway.uplink import Uplink

            self.uplink = Uplink(settings.uplink, outbox_path=self.state_dir / DB_FILENAME,
                                 gateway_id=settings.gateway.id, site=settings.gateway.site, registry=self.registry)
        self.incidents: list[dict[str, Any]] = []
        #: Incident notices from central on the uplink's broker; None when the uplink is disabled.
        self.downlink: Any = None
        if settings.uplink.enabled:
            from gateway.downlink import Downlink

            self.downlink = Downlink(settings.uplink, gateway_id=settings.gateway.id,
                                     on_notice=self._on_notice, registry=self.registry)

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open everything; raise a GatewayError for what the operator must fix."""
        if not self.ports:
            raise GatewayError("no serial port to read: pass --port PATH or set serial.ports in the config")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        outbox = Outbox(self.state_dir)
        outbox.record_identity(self.settings.gateway.id, self.settings.gateway.site,
                               uplink_enabled=self.settings.uplink.enabled)
        serial_settings = self.settings.serial
        for path in self.ports:
            reader = PortReader(
                path, baud_rate=serial_settings.baud_rate,
                reopen_backoff_max_s=serial_settings.reopen_backoff_max_s,
                on_frame=self._on_frame,
            )
            if serial_settings.missing_port_at_start == "fail" or Path(path).exists():
                reader.open_first()
            else:
                log.warning("serial port %s does not exist yet; waiting for it (serial.missing_port_at_start = wait)", path)
                reader.state.state = "reopening"
            self.readers[path] = reader
        self.writer = IngestWriter(
            outbox, self._inbox, self.readers, commit_interval_ms=serial_settings.commit_interval_ms,
            batch_max_records=serial_settings.commit_batch_max_records, stop_event=self._stop,
            on_commit=self._on_commit,
        )
        self.registry.register(GatewayCollector(self))
        if self.settings.metrics.listen_address:
            self._metrics_server = start_metrics_server(self.settings.metrics.listen_address, self.registry)
        if serial_settings.decode_workers:
            self._decode_pool = DecodePool(serial_settings.decode_workers)
        self.port_loop = PortLoop(self.readers, self._inbox, stop_event=self._stop, decode_pool=self._decode_pool)
        self.writer.start()
        self.port_loop.start()
        self.wearer = WearerCues(
            self.settings.airpods, self.settings.voice, self.settings.cues,
            haptic_sink=lambda device_id, pattern, key: self.haptics.send(device_id, pattern, key),
            registry=self.registry,
        )
        self.control.start()
        self.wearer.start()
        if self.uplink is not None:
            self.uplink.start()
        if self.downlink is not None:
            self.downlink.start()
        self._housekeeping.start()
        self._running = True
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
        self.control.stop()
        if self.downlink is not None:
            self.downlink.stop()
        if self.wearer is not None:
            self.wearer.stop()
        if self.uplink is not None:
            self.uplink.stop()
        if self.port_loop is not None and self.port_loop.ident is not None:
            self.port_loop.join(timeout=2)
        if self.writer is not None:
            if self.writer.ident is not None:
                self.writer.join(timeout=10)
            self.writer.outbox.close()
        if self._decode_pool is not None:
            self._decode_pool.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._running:
            self._running = False
            log.info("gateway %s stopped", self.settings.gateway.id)

    # --- frames other than telemetry ----------------------------------------

    def _on_frame(self, port: PortState, frame: Frame) -> None:
        if frame.type is FrameType.CUE_ACK:
            self.haptics.on_cue_ack(frame.seq)
        elif frame.type is not FrameType.HEARTBEAT:
            log.debug("unexpected %s frame from %s", frame.type.name, port.path)

    def _on_commit(self, records: list) -> None:
        if self.uplink is not None:
            self.uplink.sync_now()  # live records go out at once, not at the next poll
        if self.wearer is not None:
            self.wearer.feed([r.record for r in records if r.record is not None])

    def _on_notice(self, notice: Any) -> None:
        """An incident notice from central (downlink thread): list it; cue the wearer if it is news."""
        from gateway.downlink import apply_notice

        if apply_notice(self.incidents, notice) and self.wearer is not None:
            self.wearer.incident(notice.incident_id, notice.summary, notice.priority, notice.device_id)

    def _send_to_device(self, device_id: str, wire: bytes) -> bool:
        for reader in self.readers.values():
            if reader.state.device_id == device_id and reader.state.state == "open":
                return reader.send(wire)
        return False

    # --- housekeeping: cue retries and local alarms ------------------------

    #: A port closed this long, or a tracker silent this long, raises an alarm.
    PORT_DOWN_ALARM_S = 30.0
    TRACKER_SILENT_ALARM_S = 120.0

    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.haptics.retry_due()
                self.alarms.update(self._alarm_conditions())
                uplink_up = None if self.uplink is None else self.uplink.status().get("state") == "connected"
                if self.wearer is not None:
                    self.wearer.tick(uplink_up=uplink_up, buffer_fill_pct=self._disk_used_pct())
            except Exception:  # keep the daemon up; a bug here must not stop ingest
                log.exception("housekeeping failed")

    def _alarm_conditions(self) -> list[Alarm]:
        now = time.time()
        active = []
        for reader in self.readers.values():
            state = reader.state
            since = state.last_frame_at or self.started_at
            if state.state != "open" and now - since > self.PORT_DOWN_ALARM_S:
                active.append(Alarm("port_down", state.path, f"serial port {state.path} is {state.state}: {state.last_error}"))
            elif state.device_id and now - since > self.TRACKER_SILENT_ALARM_S:
                active.append(Alarm("tracker_silent", state.device_id,
                                    f"tracker {state.device_id} silent for {now - since:.0f} s on {state.path}"))
        if self.uplink is not None:
            uplink = self.uplink.status()
            if uplink.get("state") == "down":
                active.append(Alarm("uplink_down", self.settings.gateway.id, f"uplink down: {uplink.get('last_error')}"))
        return active

    def _disk_used_pct(self) -> float:
        # The outbox grows until the disk is full: that is the buffer's limit.
        usage = shutil.disk_usage(self.state_dir)
        return 100.0 * usage.used / usage.total if usage.total else 0.0

    # --- operations of the control API -------------------------------------

    def device(self, device_id: str) -> dict[str, Any]:
        return read_device(self.state_dir, device_id)

    def uplink_action(self, action: str) -> dict[str, Any]:
        if self.uplink is None:
            raise GatewayError("the uplink is not enabled; set uplink.enabled = true and uplink.amqp_url")
        getattr(self.uplink, action)()
        return {"state": self.uplink.status().get("state")}

    def export(self, out: Path, progress: Any) -> dict[str, Any]:
        from gateway.bundle_export import export_bundle

        count = export_bundle(self.settings, out, progress=progress)
        return {"path": str(out), "records": count}

    def test_cue(self, device_id: str | None, *, voice: bool = True) -> dict[str, Any]:
        connected = [r.state.device_id for r in self.readers.values() if r.state.device_id and r.state.state == "open"]
        if device_id is None:
            if not connected:
                raise GatewayError("no tracker is connected to send a test cue to")
            device_id = connected[0]
        elif device_id not in connected:
            raise GatewayError(f"tracker {device_id!r} is not connected; connected: {', '.join(connected) or 'none'}")
        cue = self.haptics.send(device_id, HapticPattern.TAP, key="test")
        if voice and self.wearer is not None:
            self.wearer.test_cue(None)  # the voice half; the tap went above
        log.info("test cue %d sent to %s", cue.cue_id, device_id)
        return {"cue_id": cue.cue_id, "device_id": device_id}

    def rescan_bluetooth(self) -> dict[str, Any]:
        if not self.settings.airpods.enabled:
            raise GatewayError("the AirPods link is not enabled; set airpods.enabled = true")
        if self.wearer is None:
            raise GatewayError("the gateway is still starting; try again in a moment")
        self.wearer.rescan()
        return {"state": self.wearer.status().get("state")}

    def ack_alarm(self, alarm_id: str) -> dict[str, Any]:
        if not self.alarms.acknowledge(alarm_id):
            raise GatewayError(f"no raised alarm {alarm_id!r}")
        return {"alarm_id": alarm_id, "acknowledged": True}

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
        status["uplink"] = self.uplink.status() if self.uplink is not None else {"state": "disabled"}
        status["downlink"] = self.downlink.status() if self.downlink is not None else {"state": "disabled"}
        status["airpods"] = self.wearer.status() if self.wearer is not None else {"state": "starting"}
        status["alarms"] = self.alarms.as_list()
        status["cues"] = self.haptics.recent()
        status["incidents"] = list(self.incidents)
        return status
