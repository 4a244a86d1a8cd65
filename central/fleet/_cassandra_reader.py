"""Fleet aggregates over the Cassandra store's tables.

Cassandra has no cross-partition aggregates, so the reader works from the
ledger (one scan of ``ledger_ranges``, as ``pulsegate central ledger`` does)
and reads each device's newest telemetry partition with concurrent queries.

Known limit: the telemetry table is keyed by sample time, not by receive
time, so :meth:`CassandraFleetReader.arrivals` finds records received in the
window only if their sample time is at most one window older than the window
start. A backlog older than that is not seen in arrivals (the backlog
detector misses it); a per-batch arrivals table written by ingest would
close this.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date, timedelta
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from central.fleet._activity import Arrival, DeviceActivity, GatewayActivity
from central.settings import CassandraSettings
from central.store import (
    RangeRow,
    StoreError,
    StoreUnavailable,
    cassandra_driver_errors_quiet,
    day_of,
)

__all__ = ["CassandraFleetReader"]

log = logging.getLogger(__name__)

#: Days of telemetry partitions searched (newest first) for a device's newest
#: record; a device silent for longer shows only in the ledger.
NEWEST_LOOKBACK_DAYS = 8
#: Partitions read at once: bounds the driver's in-flight requests.
_CONCURRENCY = 64


class CassandraFleetReader:
    """See :class:`central.fleet.FleetReader`.

    Raises:
        StoreUnavailable: Cassandra cannot be reached.
    """

    def __init__(self, settings: CassandraSettings, clock: Callable[[], float] = time.time) -> None:
        self.keyspace = settings.keyspace
        self._clock = clock
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
            with cassandra_driver_errors_quiet():  # the StoreError below says it in one line
                self._newest = self._session.prepare(
                    f"SELECT device_id, timestamp_us, ingested_at_us, gateway_id, site, sample.battery_pct "
                    f"FROM {ks}.telemetry WHERE device_id = ? AND day = ? LIMIT 1"
                )
                self._window = self._session.prepare(
                    f"SELECT gateway_id, site, device_id, ingested_at_us, timestamp_us FROM {ks}.telemetry "
                    "WHERE device_id = ? AND day = ? AND timestamp_us >= ? AND timestamp_us < ?"
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
        pending = sorted(last_received)
        # Tomorrow too: a tracker whose clock runs ahead writes there.
        first_day = day_of(int(self._clock() * 1_000_000)) + timedelta(days=1)
        found: list[DeviceActivity] = []
        for back in range(NEWEST_LOOKBACK_DAYS + 1):
            if not pending:
                break
            day = first_day - timedelta(days=back)
            results = self._concurrent(self._newest, [(device, day) for device in pending])
            missing = []
            for device, rows in zip(pending, results, strict=True):
                if rows:
                    found.append(DeviceActivity(*rows[0], last_received[device]))
                else:
                    missing.append(device)
            pending = missing
        return found

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
        devices = sorted(
            {row.device_id for row in self.ledger_rows() if (row.written_at_us or 0) >= since_us}
        )
        sample_start_us = since_us - (until_us - since_us)
        params = [
            (device, day, sample_start_us, until_us + (until_us - since_us))
            for device in devices
            for day in _days(sample_start_us, until_us + (until_us - since_us))
        ]
        groups: dict[tuple[str, str, str, int], list[int]] = defaultdict(list)
        for rows in self._concurrent(self._window, params):
            for gateway_id, site, device_id, received_us, sample_us in rows:
                if since_us <= received_us < until_us:
                    groups[(gateway_id, site, device_id, received_us)].append(sample_us)
        return [
            Arrival(gw, site, dev, received, min(samples), max(samples), len(samples))
            for (gw, site, dev, received), samples in sorted(
                groups.items(), key=lambda item: item[0][3]
            )
        ]

    def close(self) -> None:
        self._cluster.shutdown()


def _days(start_us: int, end_us: int) -> Iterable[date]:
    first, last = day_of(start_us), day_of(end_us - 1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
