"""Building the service from central's settings, and running it: ``incidents serve``.

:class:`IncidentDaemon` runs the HTTP API plus one worker thread per job: the
SLA timer, the PagerDuty sender, the runbook runner and (when the caller gives
a notifier) the gateway notices. Each outbox worker holds a lease in the store,
so with several central processes only one drains a channel at a time, which
keeps the per-incident order.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from central.incidents._errors import IncidentError, MissingIncidentStore
from central.incidents._http import IncidentHTTPServer
from central.incidents._model import OutboxEvent
from central.incidents._pagerduty import PagerDutySender
from central.incidents._runbooks import RunbookRunner
from central.incidents._service import CHANNEL_GATEWAY, Clock, IncidentService
from central.incidents._store import IncidentStore, SQLiteIncidentStore

if TYPE_CHECKING:  # central.settings imports this package's settings: no import cycle at run time
    from central.settings import CentralSettings

__all__ = ["GatewayNotifier", "IncidentDaemon", "build_service", "open_store"]

logger = logging.getLogger(__name__)

GatewayNotifier = Callable[[dict], None]
"""Delivers one gateway notice (the outbox event body); raises to have it retried later."""

MAX_GATEWAY_BATCH = 100
"""Gateway notices delivered per pass."""


def open_store(settings: CentralSettings, *, create: bool = True) -> IncidentStore:
    """The incident store that ``settings.store.backend`` names.

    Args:
        settings: Central's settings.
        create: Make the store when it is missing (the service, the detectors,
            ``raise``). Commands that work on existing incidents pass False: a
            wrong state dir or keyspace is then refused, not made.

    Raises:
        IncidentStoreError: the store cannot be opened.
        MissingIncidentStore: without ``create``, there is no store.
    """
    if settings.store.backend == "cassandra":
        from central.incidents._cassandra_store import (
            CassandraIncidentStore,  # needs the driver only here
        )

        return CassandraIncidentStore.connect(settings.cassandra, create=create)
    path = incident_db_path(settings)
    if not create and not path.is_file():
        raise MissingIncidentStore(
            f"no incident store at {str(path)!r}; check [central] state_dir "
            "(the store is made by 'central incidents serve', 'detect' or 'raise')"
        )
    return SQLiteIncidentStore(path)


def build_service(
    settings: CentralSettings, clock: Clock = time.time, *, create: bool = True
) -> IncidentService:
    """An :class:`IncidentService` over the configured store (see :func:`open_store` for ``create``)."""
    return IncidentService(
        open_store(settings, create=create), settings.incidents, pagerduty=settings.pagerduty,
        runbooks=settings.runbooks, clock=clock,
    )


def incident_db_path(settings: CentralSettings) -> Path:
    """The embedded incident store's SQLite file."""
    return Path(settings.central.state_dir) / settings.incidents.db_file


class IncidentDaemon:
    """The HTTP API and the background workers of one central process.

    Args:
        service: the incident service.
        work_root: where runbook working directories go.
        gateway_notifier: delivers gateway notices (the lead wires AMQP here); None leaves them queued.
    """

    def __init__(self, service: IncidentService, work_root: Path, gateway_notifier: GatewayNotifier | None = None) -> None:
        self.service = service
        self.stop_event = threading.Event()
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        host, _, port = service.settings.listen_address.rpartition(":")
        self.http = IncidentHTTPServer(service, host.strip("[]"), int(port))
        self.sender = PagerDutySender(
            service.store, service.pagerduty, public_url=service.settings.public_url,
            on_drop=self._note_drop, stop=self.stop_event,
        )
        self.runner = RunbookRunner(service, service.runbooks, work_root)
        self.gateway_notifier = gateway_notifier
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the API and the workers on background threads."""
        self.http.start()
        interval_s = self.service.settings.tick_interval_s
        jobs: list[tuple[str, Callable[[], object]]] = [("sla", self.service.tick)]
        if self.service.pagerduty.enabled:
            jobs.append(("pagerduty", self._leased("pagerduty", self.sender.send_pending)))
        if self.service.runbooks.enabled:
            jobs.append(("runbook", self._leased("runbook", self.runner.run_pending)))
        if self.gateway_notifier is not None:
            jobs.append(("gateway", self._leased("gateway", self._notify_gateways)))
        for name, job in jobs:
            thread = threading.Thread(target=self._loop, args=(name, job, interval_s), name=f"incident-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers and the API."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.http.stop()
        self.sender.close()

    def _loop(self, name: str, job: Callable[[], object], interval_s: float) -> None:
        while not self.stop_event.is_set():
            try:
                job()
            except IncidentError as exc:
                logger.warning("incident %s worker: %s", name, exc)
            except Exception:
                logger.exception("incident %s worker failed; retrying in %g s", name, interval_s)
            self.stop_event.wait(interval_s)

    def _leased(self, name: str, job: Callable[[], object]) -> Callable[[], object]:
        ttl_s = max(60.0, 4 * self.service.settings.tick_interval_s)

        def run() -> object:
            if not self.service.store.acquire_lease(f"outbox:{name}", self.holder, ttl_s, time.time()):
                return 0
            return job()

        return run

    def _notify_gateways(self) -> int:
        assert self.gateway_notifier is not None
        events = self.service.store.outbox_pending(CHANNEL_GATEWAY, MAX_GATEWAY_BATCH)
        for event in events:
            self.gateway_notifier(event.body)  # raises → the event stays pending, the order holds
            self.service.store.outbox_done(event)
        return len(events)

    def _note_drop(self, event: OutboxEvent, reason: str) -> None:
        try:
            self.service.add_note(event.incident_id, actor="pagerduty", action="pagerduty_dropped",
                                  note=f"{event.body['event_action']} not accepted: {reason}")
        except IncidentError as exc:
            logger.error("could not note dropped page on incident %s: %s", event.incident_id, exc)
