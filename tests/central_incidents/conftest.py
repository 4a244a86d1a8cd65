"""Fixtures for the incident service tests: a fake clock, real stores, a service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.incidents import IncidentService, IncidentStore, SQLiteIncidentStore
from central.incidents.settings import IncidentSettings, PagerDutySettings, RunbookSettings

T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z, the fake clock's start."""


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def cassandra_store() -> Iterator[IncidentStore]:
    """One keyspace of its own for the test session on the real server at 127.0.0.1:9042."""
    from central.incidents._cassandra_store import CassandraIncidentStore
    from central.settings import CassandraSettings

    # Schema changes are slow on Cassandra: one keyspace per session, emptied per test.
    settings = CassandraSettings(keyspace=f"pg_incidents_test_{uuid.uuid4().hex[:10]}")
    created = CassandraIncidentStore.connect(settings, drop_on_close=True)
    yield created
    created.close()


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.servers)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IncidentStore]:
    """Each real store: an SQLite file, and (marked servers) Cassandra on 127.0.0.1:9042."""
    if request.param == "cassandra":
        from central.incidents._cassandra_store import TABLE_NAMES

        shared = request.getfixturevalue("cassandra_store")
        for table in TABLE_NAMES:
            shared._session.execute(f"TRUNCATE {shared.keyspace}.{table}")
        yield shared
        return
    created = SQLiteIncidentStore(tmp_path / "incidents.sqlite3")
    yield created
    created.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteIncidentStore]:
    created = SQLiteIncidentStore(tmp_path / "incidents.sqlite3")
    yield created
    created.close()


def _make_service(
    store: IncidentStore,
    clock: FakeClock,
    *,
    pagerduty: PagerDutySettings | None = None,
    runbooks: RunbookSettings | None = None,
    **settings: object,
) -> IncidentService:
    return IncidentService(
        store, IncidentSettings(**settings), pagerduty=pagerduty, runbooks=runbooks, clock=clock  # type: ignore[arg-type]
    )


@pytest.fixture
def service(store: IncidentStore, clock: FakeClock) -> IncidentService:
    return _make_service(store, clock)


@pytest.fixture
def make_service():
    """Build a service with custom [incidents] settings: ``make_service(store, clock, **settings)``."""
    return _make_service
