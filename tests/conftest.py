"""Fixtures shared by the whole suite."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from replay_harness import PROVENANCE, ProvenanceFacts
from server_harness import drop_keyspace, rabbitmqctl, services


@pytest.fixture(scope="session")
def provenance() -> dict[str, ProvenanceFacts]:
    """Sample counts and time spans per recording (device id = file stem)."""
    assert len(PROVENANCE) == 28, "PROVENANCE.md's parse-check table changed shape"
    return PROVENANCE


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list]:
    """A list to register Tracker/GatewayProcess objects or Popens in; all are stopped at the end."""
    started: list = []
    yield started
    for item in started:
        proc = getattr(item, "process", item)  # a Tracker/GatewayProcess, or a plain Popen
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def servers_up() -> None:
    """Start both servers (a no-op when they run; fault tests stop and restart them)."""
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
    """A fresh Cassandra keyspace name, dropped afterwards."""
    name = f"pg_test_{uuid.uuid4().hex[:10]}"
    yield name
    drop_keyspace(name)
