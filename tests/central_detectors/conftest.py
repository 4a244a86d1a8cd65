"""Fixtures for the detector and fleet tests: a real SQLite store and incident store, a fake clock."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# See tests/central_ingest/conftest.py: the repo root first, so the real packages win.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from central.detectors import Detectors  # noqa: E402
from central.incidents import Incident, IncidentFilter  # noqa: E402
from central.settings import CentralSettings, load_settings  # noqa: E402
from central.store import TelemetryStore, open_store  # noqa: E402


class FakeClock:
    """Wall-clock seconds that tests move by hand; starts at the real time, whole seconds.

    It starts at the real time because the store stamps ledger rows with the
    real clock.
    """

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def now_us(self) -> int:
        return int(self.now * 1_000_000)


def write_config(path: Path, state_dir: Path, **sections: dict[str, object]) -> Path:
    """A TOML config with ``[central] state_dir`` and the given sections."""
    lines = ["[central]", f'state_dir = "{state_dir}"']
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            elif isinstance(value, list):
                text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                text = f'"{value}"'
            lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "central.toml", tmp_path / "state", detectors={"metrics_address": ""}
    )


@pytest.fixture
def settings(config_path: Path) -> CentralSettings:
    return load_settings(config_path)


@pytest.fixture
def store(settings: CentralSettings) -> Iterator[TelemetryStore]:
    opened = open_store(settings)
    opened.init_schema()
    yield opened
    opened.close()


@pytest.fixture
def detectors(
    settings: CentralSettings, store: TelemetryStore, clock: FakeClock
) -> Iterator[Detectors]:
    opened = Detectors.open(settings, clock)
    yield opened
    opened.close()


def incidents_of(detectors: Detectors, kind: str, subject: str | None = None) -> list[Incident]:
    """Every incident (any state) of ``kind`` (on ``subject``), oldest first."""
    found = detectors.service.list_incidents(IncidentFilter(kind=kind, subject=subject, limit=1000))
    return sorted(found, key=lambda i: i.created_at)
