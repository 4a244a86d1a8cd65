"""Central's store: telemetry rows and the loss ledger, in SQLite or Cassandra.

Use :func:`open_store` to get a :class:`TelemetryStore` for the configured
backend. Reading, for other parts of central::

    store = open_store(load_settings(path))
    for entry in store.ledger():            # central.ledger.LedgerEntry
        entry.device_id, entry.boot_id, entry.records, entry.gaps, entry.missing
    store.telemetry(device_id, start_us, end_us)   # list[TelemetryRow], oldest first

Errors::

    CentralError
    └── StoreError            permanent: no schema, bad settings
        └── StoreUnavailable  transient: retry the same call later
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from central.store._model import (
    ARRIVAL_HOUR_US,
    COLUMNS,
    RangeRow,
    StoreError,
    StoreUnavailable,
    TelemetryRow,
    TelemetryStore,
    day_of,
    range_rows,
    row_from_record,
    rows_from_records,
)

if TYPE_CHECKING:
    from central.settings import CentralSettings

__all__ = [
    "ARRIVAL_HOUR_US",
    "COLUMNS",
    "RangeRow",
    "StoreError",
    "StoreUnavailable",
    "TelemetryRow",
    "TelemetryStore",
    "day_of",
    "open_store",
    "range_rows",
    "row_from_record",
    "rows_from_records",
    "sqlite_path",
]


def sqlite_path(settings: CentralSettings) -> Path:
    """The embedded store's file for ``settings``."""
    return settings.store.sqlite_path or settings.central.state_dir / "telemetry.sqlite3"


def open_store(settings: CentralSettings, *, create: bool = True) -> TelemetryStore:
    """Open the store ``[store] backend`` names.

    Args:
        settings: Central's settings.
        create: For the embedded store, make its file (and folder) when missing.
            Commands that only read, and ``import``, pass ``False``: a wrong
            ``state_dir`` then fails with one line naming the path instead of
            leaving an empty store behind. Cassandra never creates anything
            here (``init_schema`` does).

    Raises:
        StoreUnavailable: Cassandra cannot be reached.
        StoreError: the settings are unusable; without ``create``, the SQLite
            file is missing or has no tables.
    """
    if settings.store.backend == "cassandra":
        # Imported here: loading the driver costs ~0.3 s, which the SQLite path need not pay.
        from central.store._cassandra import CassandraStore

        return CassandraStore(settings.cassandra)
    from central.store._sqlite import SqliteStore

    hint = "[store] sqlite_path" if settings.store.sqlite_path else "[central] state_dir"
    return SqliteStore(sqlite_path(settings), create=create, config_hint=hint)
