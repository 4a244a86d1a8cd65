"""Settings of the detectors (``[detectors]``) and of fleet health (``[fleet]``).

Every key can come from the environment as ``PULSEGATE_DETECTORS_<KEY>`` or
``PULSEGATE_FLEET_<KEY>``. Durations are seconds of *sample time* for the
rules judged on a tracker's samples (heart rate, battery), seconds of
central's receive time for the rules judged on arrivals (backlog, clock
skew), and wall-clock seconds for silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ALL_DETECTORS", "DetectorSettings", "FleetSettings"]

#: Every detector's name, as ``[detectors] enabled`` lists them; also the incident kinds.
ALL_DETECTORS: tuple[str, ...] = (
    "tracker_silent",
    "gateway_silent",
    "gateway_backlog",
    "heart_rate_out_of_band",
    "battery_low",
    "ledger_gap",
    "clock_skew",
    "dead_letter",
)


def _check_loopback_address(name: str, address: str) -> None:
    if not address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{name} must be HOST:PORT or empty, got {address!r}")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(
            f"{name} {address!r} is not a loopback address; the metrics endpoint has no "
            "authentication, so expose it through a proxy instead"
        )


@dataclass
class DetectorSettings:
    """[detectors]: thresholds and hysteresis of ``pulsegate central detect``."""

    enabled: list[str] = field(default_factory=lambda: list(ALL_DETECTORS))
    """Detectors to run, by name (see ALL_DETECTORS)."""
    interval_s: float = 30.0
    """Pause between passes of the detect loop."""
    metrics_address: str = "127.0.0.1:9467"
    """Loopback host:port of the fleet gauges; empty serves none (e.g. a second detect process on a host)."""
    shard_index: int = 0
    """This process judges the subjects whose hash modulo shard_count is shard_index."""
    shard_count: int = 1
    """Detect processes splitting the fleet between them; 1 judges everything."""

    lookback_s: float = 900.0
    """Sample-time window read per tracker, ending at its newest sample."""
    max_lookback_s: float = 21600.0
    """How far back a pass follows an episode that began before the window, to find its start."""
    max_sample_gap_s: float = 120.0
    """Samples further apart than this break a run: a sustained condition needs continuous samples."""
    forget_after_s: float = 7 * 86400.0
    """Trackers and gateways silent for longer are retired: not alerted on, not resolved."""

    tracker_silent_s: float = 600.0
    """A tracker is silent when central holds no sample newer than this while its gateway delivers live data."""
    gateway_silent_s: float = 900.0
    """A gateway is silent when central has received nothing from it for this long."""
    silence_clear_s: float = 60.0
    """A silent tracker or gateway clears after delivering continuously for this long."""

    live_window_s: float = 30.0
    """A record is live when it reached central within this of being sampled."""
    arrival_window_s: float = 3600.0
    """Receive-time window of the arrivals judged for backlog and clock skew."""
    arrival_bucket_s: float = 60.0
    """Arrivals are judged per bucket of receive time (the worst value in it), so live records
    sent ahead of a draining backlog do not hide the backlog."""

    backlog_limit_s: float = 3600.0
    """A gateway is backlogged when records reach central older than this."""
    backlog_fire_after_s: float = 300.0
    backlog_clear_after_s: float = 300.0

    heart_rate_low_bpm: int = 40
    heart_rate_high_bpm: int = 185
    heart_rate_hysteresis_bpm: int = 0
    """Heart rate must come back this far inside the band to count as clear."""
    heart_rate_fire_after_s: float = 30.0
    heart_rate_clear_after_s: float = 30.0

    battery_low_pct: int = 15
    """Fire below this."""
    battery_clear_pct: int = 20
    """Clear above this."""
    battery_fire_after_s: float = 60.0
    battery_clear_after_s: float = 60.0

    gap_grace_s: float = 300.0
    """A ledger gap is loss once central has known of it this long (live data overtakes backlog)."""
    gap_p2_records: int = 100
    """Missing records from which a gap is P2 rather than P3."""

    clock_skew_limit_s: float = 120.0
    clock_skew_fire_after_s: float = 300.0
    clock_skew_clear_after_s: float = 300.0

    dead_letter: str = "auto"
    """``on``, ``off`` or ``auto`` (on when [store] backend is cassandra, i.e. a broker exists)."""
    dead_letter_min_messages: int = 1
    """Messages in pulsegate.dead-letter that raise an incident."""
    amqp_timeout_s: float = 5.0
    """Connect timeout of the dead-letter depth check."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.enabled) - set(ALL_DETECTORS))
        if unknown:
            raise ValueError(
                f"detectors.enabled names unknown detectors {unknown}; known: {', '.join(ALL_DETECTORS)}"
            )
        if self.shard_count < 1 or not 0 <= self.shard_index < self.shard_count:
            raise ValueError(
                f"detectors.shard_index must be in 0..shard_count-1, got {self.shard_index} of {self.shard_count}"
            )
        if self.dead_letter not in ("auto", "on", "off"):
            raise ValueError(
                f"detectors.dead_letter must be auto, on or off, got {self.dead_letter!r}"
            )
        if self.battery_clear_pct < self.battery_low_pct:
            raise ValueError("detectors.battery_clear_pct must be at least battery_low_pct")
        if self.heart_rate_low_bpm >= self.heart_rate_high_bpm:
            raise ValueError("detectors.heart_rate_low_bpm must be below heart_rate_high_bpm")
        if self.interval_s <= 0 or self.arrival_bucket_s <= 0 or self.lookback_s <= 0:
            raise ValueError(
                "detectors.interval_s, lookback_s and arrival_bucket_s must be positive"
            )
        _check_loopback_address("detectors.metrics_address", self.metrics_address)


@dataclass
class FleetSettings:
    """[fleet]: what ``pulsegate central fleet`` and the fleet gauges call online."""

    device_online_s: float = 120.0
    """A tracker is online when central holds a sample of it no older than this."""
    gateway_online_s: float = 300.0
    """A gateway is online when central received data from it no longer ago than this."""
    incidents_listed: int = 50
    """Open incidents listed by ``fleet`` (the counts cover all of them)."""
