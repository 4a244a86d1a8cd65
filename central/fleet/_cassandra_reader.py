"""Fleet aggregates over the Cassandra store's tables.

Cassandra has no cross-partition aggregates, so the reader works from the
ledger (one scan of ``ledger_ranges``, as ``pulsegate central ledger`` does)
and reads each device's newest telemetry partition with concurrent queries.

The telemetry table is keyed by sample time, so two small tables the store
writes beside it answer what the fleet asks by other keys: ``device_days``
(each device's newest partition, however old its samples) and ``arrivals``
(what central wrote in a window of receive time).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from central.fleet._activity import Arrival, DeviceActivity, GatewayActivity
from central.settings import CassandraSettings
from central.store import (
    ARRIVAL_HOUR_US,
    RangeRow,
    StoreError,
    StoreUnavailable,
)
from pulsegate.log_quieting import logger_quieted

__all__ = ["CassandraFleetReader"]

log = logging.getLogger(__name__)

#: Partitions read at once: bounds the driver's in-flight requests.
_CONCURRENCY = 64


class CassandraFleetReader:
    """See :class:`central.fleet.FleetReader`.

    Raises:
        StoreUnavailable: Cassandra cannot be reached.
    """

    def __init__(self, settings: CassandraSettings) -> None:
        self.keyspace = settings.keyspace
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=settings.local_dc or None)
            ),
            request_timeout=settings.request_timeout_s,
            row_factory=tuple_factory,
        )
        self._cluster = Cluster(
            contact_points=list(settings.hosts),
            port=settings.port,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=settings.connect_timeout_s,
        )
        try:
            self._session = self._cluster.connect()
        except NoHostAvailable as exc:
            self._cluster.shutdown()
            raise StoreUnavailable(
                f"cannot reach Cassandra at {', '.join(settings.hosts)}:{settings.port}; "
                "start it ('packaging/services/pulsegate-services start cassandra') or fix [cassandra] hosts"
            ) from exc
        ks = self.keyspace
        try:
            with logger_quieted("cassandra.cluster"):  # the StoreError below says it in one line
                self._newest_day = self._session.prepare(
                    f"SELECT day FROM {ks}.device_days WHERE device_id = ? LIMIT 1"
                )
                self._arrivals = self._session.prepare(
                    f"SELECT gateway_id, site, device_id, ingested_at_us, oldest_sample_us, newest_sample_us, "
                    f"records FROM {ks}.arrivals WHERE hour = ? AND ingested_at_us >= ? AND ingested_at_us < ?"
                )
                self._newest = self._session.prepare(
                    f"SELECT device_id, timestamp_us, ingested_at_us, gateway_id, site, sample.battery_pct "
                    f"FROM {ks}.telemetry WHERE device_id = ? AND day = ? LIMIT 1"
                )
        except Exception as exc:  # InvalidRequest when the tables are missing
            self._cluster.shutdown()
            raise StoreError(
                f"keyspace {ks!r} lacks central's tables ({exc}); run 'pulsegate central db init'"
            ) from exc

    def _read(self, cql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self._session.execute(cql))
        except Exception as exc:  # the driver's errors share no base class
            raise StoreUnavailable(f"Cassandra read failed: {type(exc).__name__}: {exc}") from exc

    def _concurrent(
        self, statement: Any, params: Sequence[tuple[Any, ...]]
    ) -> list[list[tuple[Any, ...]]]:
        results = execute_concurrent_with_args(
            self._session, statement, params, concurrency=_CONCURRENCY, raise_on_first_error=False
        )
        out = []
        for ok, result in results:
            if not ok:
                raise StoreUnavailable(f"Cassandra read failed: {type(result).__name__}: {result}")
            out.append(list(result))
        return out

    def ledger_rows(self) -> list[RangeRow]:
        rows = self._read(
            f"SELECT device_id, boot_id, first_seq, last_seq, gateway_id, site, written_at_us "
            f"FROM {self.keyspace}.ledger_ranges"
        )
        return [RangeRow(*row) for row in rows]

    def devices(self) -> list[DeviceActivity]:
        last_received: dict[str, int] = defaultdict(int)
        for row in self.ledger_rows():
            last_received[row.device_id] = max(last_received[row.device_id], row.written_at_us or 0)
        devices = sorted(last_received)
        newest_days = self._concurrent(self._newest_day, [(device,) for device in devices])
        partitions = [
            (device, days[0][0]) for device, days in zip(devices, newest_days, strict=True) if days
        ]
        return [
            DeviceActivity(*rows[0], last_received[device])
            for (device, _), rows in zip(partitions, self._concurrent(self._newest, partitions), strict=True)
            if rows
        ]

    def gateways(self) -> list[GatewayActivity]:
        newest: dict[str, GatewayActivity] = {}
        for row in self.ledger_rows():
            if row.gateway_id and (
                row.gateway_id not in newest
                or row.written_at_us > newest[row.gateway_id].last_received_us
            ):
                newest[row.gateway_id] = GatewayActivity(
                    row.gateway_id, row.site or "", row.written_at_us
                )
        return list(newest.values())

    def arrivals(self, since_us: int, until_us: int) -> list[Arrival]:
        hours = range(since_us // ARRIVAL_HOUR_US, (until_us - 1) // ARRIVAL_HOUR_US + 1)
        found = [
            Arrival(*row)
            for rows in self._concurrent(self._arrivals, [(hour, since_us, until_us) for hour in hours])
            for row in rows
        ]
        return sorted(found, key=lambda arrival: arrival.received_us)

    def close(self) -> None:
        self._cluster.shutdown()

