"""The real RabbitMQ and Cassandra for tests: started by the project's service
script, isolated per test by a virtual host and a keyspace of their own."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "packaging" / "services" / "pulsegate-services"


def services(*args: str, timeout_s: float = 600) -> str:
    """Run ``pulsegate-services ARGS`` (start/stop rabbitmq|cassandra, rabbitmqctl ...); fail loudly."""
    done = subprocess.run([str(SERVICES), *args], capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"pulsegate-services {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rabbitmqctl(*args: str) -> str:
    """rabbitmqctl against the local node, retried while another suite restarts the broker."""
    last = None
    for _attempt in range(3):
        done = subprocess.run([str(SERVICES), "rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout
        last = done
        services("start", "rabbitmq")
    raise AssertionError(f"rabbitmqctl {' '.join(args)} failed:\n{last.stdout}\n{last.stderr}")


def drop_keyspace(name: str) -> None:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    services("start", "cassandra")  # another test may have stopped it
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
    cluster = Cluster(["127.0.0.1"], port=9042, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=120)
    finally:
        cluster.shutdown()


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
