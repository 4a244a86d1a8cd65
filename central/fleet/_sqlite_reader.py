"""Fleet aggregates over the embedded SQLite store's tables.

Read through a connection of its own, opened read-only, so a detect pass
never holds the store's write lock. The aggregates scan the telemetry table:
fine for the embedded store (one site, a demo, a few million rows); a fleet
runs on Cassandra.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path

from central.fleet._activity import Arrival, DeviceActivity, GatewayActivity
from central.store import RangeRow, StoreError, StoreUnavailable

__all__ = ["SqliteFleetReader"]

log = logging.getLogger(__name__)

#: How long a read waits behind a writer's checkpoint before giving up.
_BUSY_TIMEOUT_S = 10.0

# Bare columns beside max(): SQLite takes them from the row holding the maximum.
_NEWEST_SAMPLE = (
    "SELECT device_id, max(timestamp_us), ingested_at_us, gateway_id, site, battery_pct, "
    "(SELECT max(ingested_at_us) FROM telemetry AS t2 WHERE t2.device_id = t1.device_id) "
    "FROM telemetry AS t1 GROUP BY device_id"
)
_LAST_SYNC = "SELECT gateway_id, site, max(ingested_at_us) FROM telemetry GROUP BY gateway_id"
_ARRIVALS = (
    "SELECT gateway_id, site, device_id, ingested_at_us, min(timestamp_us), max(timestamp_us), count(*) "
    "FROM telemetry WHERE ingested_at_us >= ? AND ingested_at_us < ? "
    "GROUP BY gateway_id, site, device_id, ingested_at_us ORDER BY ingested_at_us"
)
_LEDGER = "SELECT device_id, boot_id, first_seq, last_seq, gateway_id, site, written_at_us FROM ledger_ranges"


class SqliteFleetReader:
    """See :class:`central.fleet.FleetReader`.

    Raises:
        StoreError: the store file does not exist yet.
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise StoreError(
                f"the store {str(path)!r} does not exist; run 'pulsegate central db init'"
            )
        self.path = path
        self._conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=_BUSY_TIMEOUT_S,
            check_same_thread=False,
        )

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise StoreError(
                    f"the store {str(self.path)!r} has no tables; run 'pulsegate central db init'"
                ) from exc
            raise StoreUnavailable(f"SQLite read failed on {str(self.path)!r}: {exc}") from exc

    def devices(self) -> list[DeviceActivity]:
        return [DeviceActivity(*row) for row in self._query(_NEWEST_SAMPLE)]

    def gateways(self) -> list[GatewayActivity]:
        return [GatewayActivity(*row) for row in self._query(_LAST_SYNC)]

    def arrivals(self, since_us: int, until_us: int) -> list[Arrival]:
        return [Arrival(*row) for row in self._query(_ARRIVALS, (since_us, until_us))]

    def ledger_rows(self) -> list[RangeRow]:
        return [
            RangeRow(dev, uuid.UUID(boot), first, last, gw, site, written)
            for dev, boot, first, last, gw, site, written in self._query(_LEDGER)
        ]

    def close(self) -> None:
        self._conn.close()
