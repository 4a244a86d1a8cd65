"""Central's settings: one dataclass per TOML section, loaded by :func:`load_settings`.

Every key can come from the environment as ``PULSEGATE_<SECTION>_<KEY>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from central.detectors.settings import DetectorSettings, FleetSettings
from central.incidents.settings import IncidentSettings, PagerDutySettings, RunbookSettings
from pulsegate.config import load_config


@dataclass
class CentralSection:
    """[central]"""

    state_dir: Path = Path(".state/central")
    """Where the embedded SQLite store and outboxes live."""


@dataclass
class StoreSettings:
    """[store]: where telemetry, the ledger and incidents are kept."""

    backend: str = "sqlite"
    """``sqlite`` (embedded, under central.state_dir) or ``cassandra``."""
    sqlite_path: Path | None = None
    """The embedded store's file; default ``<central.state_dir>/telemetry.sqlite3``."""

    def __post_init__(self) -> None:
        if self.backend not in ("sqlite", "cassandra"):
            raise ValueError(f"store.backend must be 'sqlite' or 'cassandra', got {self.backend!r}")


#: The native protocol counts a batch's statements in an unsigned short.
_MAX_BATCH_STATEMENTS = 0xFFFF


@dataclass
class CassandraSettings:
    """[cassandra]"""

    hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 9042
    keyspace: str = "pulsegate"
    replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    """CQL replication map for ``db init``; production uses NetworkTopologyStrategy."""
    local_dc: str = ""
    """Data centre the driver prefers; empty lets it take the first contact point's."""
    consistency: str = "LOCAL_QUORUM"
    """Consistency of writes and ledger reads: a message is acked only after this level accepted it."""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    concurrency: int = 64
    """Requests in flight per ingest process (``execute_concurrent``)."""
    rows_per_batch: int = 200
    """Rows of one partition sent as one single-partition UNLOGGED BATCH; 1 sends row by row.
    200 costs Cassandra ~50 µs of CPU a row against ~75 µs at 50 (benchmarks/central_ingest.py);
    single-partition batches are exempt from Cassandra's batch size warning and limit."""
    telemetry_ttl_s: int = 0
    """``default_time_to_live`` of the telemetry table set by ``db init``; 0 keeps rows forever."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", self.keyspace):
            raise ValueError(f"cassandra.keyspace must be a lower-case CQL identifier, got {self.keyspace!r}")
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError(f"cassandra.port must be 1 to 65535, got {self.port}")
        if self.concurrency < 1 or self.rows_per_batch < 1:
            raise ValueError("cassandra.concurrency and cassandra.rows_per_batch must be at least 1")
        if self.rows_per_batch > _MAX_BATCH_STATEMENTS:
            raise ValueError(
                f"cassandra.rows_per_batch must be at most {_MAX_BATCH_STATEMENTS} "
                f"(the native protocol's limit), got {self.rows_per_batch}"
            )


@dataclass
class AmqpSettings:
    """[amqp]: the broker central consumes from and publishes cues to."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    heartbeat_s: int = 30
    """AMQP heartbeat; the ingest loop services it between batches and while it backs off."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"url must start with amqp:// or amqps://, got {self.url!r}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            raise ValueError(f"url {self.url!r} needs a host and a numeric port, e.g. amqp://user:pass@HOST:5672/%2F")


@dataclass
class IngestSettings:
    """[ingest]: the ingest workers (``pulsegate central ingest``)."""

    prefetch_count: int = 64
    """Unacked messages the broker hands one worker; bounds its memory and its redelivery on a crash.
    About two rounds of ``batch_max_records`` at 200 records a message. Much more lets the first
    worker to connect take a whole backlog while the others idle: with two workers on a backlog,
    512 gave 13,500 records/s and 64 gave 19,000-20,600 (benchmarks/central_ingest.py)."""
    batch_max_records: int = 5000
    """Records gathered from several messages into one store write."""
    batch_wait_ms: int = 50
    """How long a worker waits for more messages before writing a partial batch."""
    metrics_address: str = "127.0.0.1:9466"
    """host:port of the Prometheus endpoint; empty disables it (e.g. for a second worker on one host)."""
    ledger_refresh_s: float = 30.0
    """How often a worker compacts the ledger and refreshes pulsegate_central_ledger_gap_records; 0 never."""
    max_backoff_s: float = 30.0
    """Longest wait between retries when the store or the broker is down."""

    def __post_init__(self) -> None:
        # AMQP carries the prefetch count in an unsigned short; 0 would mean unlimited.
        if not 1 <= self.prefetch_count <= 0xFFFF:
            raise ValueError(f"ingest.prefetch_count must be 1 to 65535, got {self.prefetch_count}")
        if self.batch_max_records < 1:
            raise ValueError(f"ingest.batch_max_records must be at least 1, got {self.batch_max_records}")
        if self.batch_wait_ms < 0 or self.ledger_refresh_s < 0:
            raise ValueError("ingest.batch_wait_ms and ingest.ledger_refresh_s must not be negative")
        if self.max_backoff_s <= 0:
            raise ValueError(f"ingest.max_backoff_s must be above 0, got {self.max_backoff_s}")


@dataclass
class BundleSettings:
    """[bundle]: importing signed bundle files (``pulsegate central import``)."""

    trusted_keys_dir: Path | None = None
    """Folder of trusted gateway keys, ``<gateway_id>.pub``; default ``<central.state_dir>/trusted-keys``."""
    import_chunk_records: int = 5000
    """Records written per store call while importing."""


@dataclass
class CentralSettings:
    """All of central's settings."""

    central: CentralSection = field(default_factory=CentralSection)
    store: StoreSettings = field(default_factory=StoreSettings)
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    pagerduty: PagerDutySettings = field(default_factory=PagerDutySettings)
    runbooks: RunbookSettings = field(default_factory=RunbookSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)


def load_settings(path: str | Path | None = None) -> CentralSettings:
    """Load central's settings from ``path`` (optional) and the environment."""
    return load_config(CentralSettings, path)
