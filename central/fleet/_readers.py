"""Opening the fleet reader that matches the configured store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from central.fleet._activity import FleetReader

if TYPE_CHECKING:
    from central.settings import CentralSettings

__all__ = ["open_fleet_reader"]


def open_fleet_reader(settings: CentralSettings) -> FleetReader:
    """The :class:`FleetReader` over the store ``[store] backend`` names.

    Raises:
        StoreUnavailable: Cassandra cannot be reached.
        StoreError: the store has no schema yet.
    """
    if settings.store.backend == "cassandra":
        from central.fleet._cassandra_reader import (
            CassandraFleetReader,  # the driver only when needed
        )

        return CassandraFleetReader(settings.cassandra)
    from central.fleet._sqlite_reader import SqliteFleetReader
    from central.store import sqlite_path

    return SqliteFleetReader(sqlite_path(settings))
