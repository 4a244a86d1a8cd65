"""Central's settings: one dataclass per TOML section, loaded by :func:`load_settings`.

Every key can come from the environment as ``PULSEGATE_<SECTION>_<KEY>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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

    def __post_init__(self) -> None:
        if self.backend not in ("sqlite", "cassandra"):
            raise ValueError(f"store.backend must be 'sqlite' or 'cassandra', got {self.backend!r}")


@dataclass
class CassandraSettings:
    """[cassandra]"""

    hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 9042
    keyspace: str = "pulsegate"
    replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    """CQL replication map for ``db init``; production uses NetworkTopologyStrategy."""


@dataclass
class AmqpSettings:
    """[amqp]: the broker central consumes from and publishes cues to."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass
class CentralSettings:
    """All of central's settings."""

    central: CentralSection = field(default_factory=CentralSection)
    store: StoreSettings = field(default_factory=StoreSettings)
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    pagerduty: PagerDutySettings = field(default_factory=PagerDutySettings)
    runbooks: RunbookSettings = field(default_factory=RunbookSettings)


def load_settings(path: str | Path | None = None) -> CentralSettings:
    """Load central's settings from ``path`` (optional) and the environment."""
    return load_config(CentralSettings, path)
