"""Fixtures for central ingest: SQLite settings, and real servers isolated per test.

Server tests get their own RabbitMQ virtual host and Cassandra keyspace, so
they never touch (or see) what other tests on the shared servers do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from central.settings import CentralSettings, load_settings
from central_ingest.testdata import write_config


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "central.toml", tmp_path / "state", ingest={"metrics_address": ""}
    )


@pytest.fixture
def sqlite_settings(sqlite_config: Path) -> CentralSettings:
    return load_settings(sqlite_config)


@pytest.fixture
def cassandra_config(tmp_path: Path, keyspace: str, amqp_url: str) -> Path:
    return write_config(
        tmp_path / "central.toml",
        tmp_path / "state",
        store={"backend": "cassandra"},
        cassandra={"keyspace": keyspace, "request_timeout_s": 5.0},
        amqp={"url": amqp_url},
        ingest={
            "metrics_address": "",
            "batch_wait_ms": 20,
            "max_backoff_s": 2.0,
            "ledger_refresh_s": 0,
        },
    )
