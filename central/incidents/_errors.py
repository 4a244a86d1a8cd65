"""The incident service's exceptions, all under :class:`central.errors.CentralError`.

::

    CentralError
    └── IncidentError                 base of this package
        ├── IncidentNotFound          no incident or problem with that id
        ├── IllegalTransition         the lifecycle forbids that change from the current state
        ├── InvalidIncident           a field value is unusable (bad impact, empty kind, ...)
        ├── StaleIncident             someone else changed the incident first (optimistic lock)
        ├── DuplicateOpenIncident     an open incident already exists for (subject, kind)
        └── IncidentStoreError        the store (SQLite file, Cassandra) failed
"""

from __future__ import annotations

from central.errors import CentralError
from pulsegate.config import ConfigError

__all__ = [
    "DuplicateOpenIncident",
    "IllegalTransition",
    "IncidentError",
    "IncidentNotFound",
    "IncidentStoreError",
    "InvalidIncident",
    "MissingIncidentStore",
    "StaleIncident",
]


class IncidentError(CentralError):
    """Base of the incident service's expected failures."""


class IncidentNotFound(IncidentError):
    """No incident (or problem) has the requested id."""


class IllegalTransition(IncidentError):
    """The requested action is not allowed from the incident's current state."""


class InvalidIncident(IncidentError):
    """A value given for an incident is unusable."""


class StaleIncident(IncidentError):
    """The incident changed between read and write; reload and try again."""


class DuplicateOpenIncident(IncidentError):
    """An open incident already exists for this (subject, kind)."""

    def __init__(self, message: str, existing_id: str | None = None) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class IncidentStoreError(IncidentError):
    """The incident store could not be read or written."""


class MissingIncidentStore(IncidentStoreError, ConfigError):
    """A command that only reads or changes incidents found no incident store: a wrong state dir or keyspace (exit 2)."""
