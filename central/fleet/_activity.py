"""What central knows of each tracker and gateway, and the reader interface behind it.

The telemetry store answers per-device time ranges; fleet health also needs
per-device and per-gateway aggregates (newest sample, last receive time) and
the arrivals of recent write batches. A :class:`FleetReader` answers those
from the store's own tables, for SQLite or Cassandra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from central.store import RangeRow

__all__ = ["Arrival", "DeviceActivity", "FleetReader", "GatewayActivity"]


@dataclass(frozen=True)
class DeviceActivity:
    """One tracker as central last heard of it.

    Attributes:
        device_id: The tracker.
        newest_sample_us: Sample time of the newest record central holds.
        newest_received_us: When central received (wrote) that newest record.
        gateway_id: The gateway that delivered the newest record.
        site: That gateway's site.
        battery_pct: Battery of the newest record, when it had one.
        last_received_us: When central last received any record of it (a backlog's too).
    """

    device_id: str
    newest_sample_us: int
    newest_received_us: int
    gateway_id: str
    site: str
    battery_pct: int | None
    last_received_us: int

    @property
    def last_seen_us(self) -> int:
        """The newest sample time, capped at its receive time: a clock running ahead cannot look alive."""
        return min(self.newest_sample_us, self.newest_received_us)


@dataclass(frozen=True)
class GatewayActivity:
    """One gateway as central last heard of it.

    Attributes:
        gateway_id: The gateway.
        site: Its site (of its newest delivery).
        last_received_us: When central last wrote a record it delivered: its last sync.
    """

    gateway_id: str
    site: str
    last_received_us: int


@dataclass(frozen=True)
class Arrival:
    """The records of one device in one store write (one batch, one receive time).

    Attributes:
        gateway_id: The gateway that delivered them.
        site: Its site.
        device_id: The tracker.
        received_us: Central's receive (write) time of the batch.
        oldest_sample_us: Sample time of the oldest of these records.
        newest_sample_us: Sample time of the newest of these records.
        records: How many records.
    """

    gateway_id: str
    site: str
    device_id: str
    received_us: int
    oldest_sample_us: int
    newest_sample_us: int
    records: int


class FleetReader(Protocol):
    """Aggregates over the store's tables that fleet health and the detectors need."""

    def devices(self) -> list[DeviceActivity]:
        """Every tracker central holds records of, with its newest record."""

    def gateways(self) -> list[GatewayActivity]:
        """Every gateway that delivered records, with its last sync."""

    def arrivals(self, since_us: int, until_us: int) -> list[Arrival]:
        """Per (gateway, receive time, device): the records central received in ``[since_us, until_us)``."""

    def ledger_rows(self) -> Sequence[RangeRow]:
        """The loss ledger's raw range rows, with the time each was written."""

    def close(self) -> None:
        """Release connections."""
