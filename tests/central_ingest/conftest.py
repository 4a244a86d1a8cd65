"""Fixtures for central ingest: SQLite settings, and real servers isolated per test.

Server tests get their own RabbitMQ virtual host and Cassandra keyspace, so
they never touch (or see) what other tests on the shared servers do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.settings import CentralSettings, load_settings
from central_ingest.testdata import rabbitmqctl, services, write_config


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "central.toml", tmp_path / "state", ingest={"metrics_address": ""}
    )


@pytest.fixture
def sqlite_settings(sqlite_config: Path) -> CentralSettings:
    return load_settings(sqlite_config)


@pytest.fixture
def servers_up() -> None:
    """Start both servers (a no-op when they run): other suites stop and restart them too."""
    services("start", "rabbitmq")
    services("start", "cassandra")


@pytest.fixture
def amqp_url(servers_up: None) -> Iterator[str]:
    """A fresh virtual host of the real broker, deleted afterwards."""
    vhost = f"pulsegate-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def keyspace(servers_up: None) -> Iterator[str]:
    """A fresh keyspace name, dropped afterwards."""
    name = f"pg_test_{uuid.uuid4().hex[:10]}"
    yield name
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    services("start", "cassandra")  # another test may have stopped it
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
    cluster = Cluster(
        ["127.0.0.1"],
        port=9042,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=120)
    finally:
        cluster.shutdown()


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
