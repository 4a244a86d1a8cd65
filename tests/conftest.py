"""Fixtures shared by the whole suite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from replay_harness import PROVENANCE, ProvenanceFacts


@pytest.fixture(scope="session")
def provenance() -> dict[str, ProvenanceFacts]:
    """Sample counts and time spans per recording (device id = file stem)."""
    assert len(PROVENANCE) == 28, "PROVENANCE.md's parse-check table changed shape"
    return PROVENANCE


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list]:
    """A list to register Tracker/GatewayProcess objects in; all are stopped at the end."""
    started: list = []
    yield started
    for item in started:
        proc = item.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
