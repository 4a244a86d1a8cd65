"""The gateway's settings: one dataclass per TOML section.

Every key can also come from the environment as ``PULSEGATE_<SECTION>_<KEY>``,
e.g. ``PULSEGATE_GATEWAY_ID=gym-12``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from gateway.airpods.settings import AirPodsSettings, CueSettings, VoiceSettings
from gateway.uplink.settings import UplinkSettings
from pulsegate.config import load_config

__all__ = ["GatewaySettings", "GatewaySection", "SerialSettings", "MetricsSettings", "load_settings"]


@dataclass
class GatewaySection:
    """[gateway]"""

    id: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "gateway")
    """This gateway's id, unique in the fleet; defaults to the host name."""
    site: str = "default-site"
    """The gym this gateway serves."""
    state_dir: Path = Path(".state/gateway")
    """Where the SQLite outbox, keys and the control socket live."""

    def __post_init__(self) -> None:
        for name in ("id", "site"):
            value = getattr(self, name)
            if not value or not all(c.isalnum() or c in "-_" for c in value):
                raise ValueError(f"{name} {value!r} must be letters, digits, '-' or '_' (it appears in AMQP routing keys)")


@dataclass
class SerialSettings:
    """[serial]"""

    ports: list[str] = field(default_factory=list)
    """Serial devices to read, e.g. ``/dev/serial/by-id/usb-...``; --port adds to them."""
    baud_rate: int = 115200
    reopen_backoff_max_s: float = 5.0
    """Longest wait between attempts to reopen a port that went away."""
    commit_interval_ms: int = 20
    """Longest a received record waits before its batch is committed and ACKed."""
    commit_batch_max_records: int = 5000
    decode_workers: int = 1
    """Processes that decode and validate records beside the port-reading thread,
    so ingest uses more than one core; 0 decodes in that thread. One suits a
    2-core gateway; more helps only with more cores."""
    missing_port_at_start: str = "fail"
    """``fail``: a port that does not exist at start-up stops the daemon with an error
    (catches typos); ``wait``: start anyway and open it when it appears (an
    appliance whose trackers may be unplugged at boot)."""

    def __post_init__(self) -> None:
        if self.missing_port_at_start not in ("fail", "wait"):
            raise ValueError(f"missing_port_at_start must be 'fail' or 'wait', got {self.missing_port_at_start!r}")
        if self.baud_rate <= 0:
            raise ValueError(f"baud_rate must be positive, got {self.baud_rate}")
        if not 0 <= self.decode_workers <= 16:
            raise ValueError(f"decode_workers must be 0..16 (0 decodes in the reading thread), got {self.decode_workers}")
        if not 1 <= self.commit_interval_ms <= 1000:
            raise ValueError(f"commit_interval_ms must be 1..1000, got {self.commit_interval_ms}")


@dataclass
class MetricsSettings:
    """[metrics]"""

    listen_address: str = "127.0.0.1:9464"
    """Where Prometheus scrapes the gateway; empty to disable. Loopback by default."""

    def __post_init__(self) -> None:
        if self.listen_address:
            host, _, port = self.listen_address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"listen_address {self.listen_address!r} must be HOST:PORT, e.g. 127.0.0.1:9464")


@dataclass
class GatewaySettings:
    """All of the gateway's settings."""

    gateway: GatewaySection = field(default_factory=GatewaySection)
    serial: SerialSettings = field(default_factory=SerialSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    airpods: AirPodsSettings = field(default_factory=AirPodsSettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    cues: CueSettings = field(default_factory=CueSettings)


def load_settings(path: str | Path | None = None) -> GatewaySettings:
    """Load the gateway's settings from ``path`` (optional) and the environment."""
    return load_config(GatewaySettings, path)
