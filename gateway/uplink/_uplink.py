"""The uplink thread: keeps a broker session alive and reconnects after outages."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import tenacity
from prometheus_client import CollectorRegistry

from firmware_shim.uplink_format import routing_key
from gateway.errors import GatewayError
from gateway.uplink._connection import connection_parameters
from gateway.uplink._metrics import UplinkMetrics
from gateway.uplink._outbox_queue import OutboxQueue, read_persisted_state
from gateway.uplink._session import AmqpSession, SessionOutcome
from gateway.uplink._status import StatusBoard
from gateway.uplink.settings import UplinkSettings

__all__ = ["Uplink"]

logger = logging.getLogger(__name__)

#: A session that published for at least this long before it was lost earns
#: an immediate reconnect with a fresh backoff; a shorter one counts as a
#: failed attempt, so a broker that accepts and then drops us is not hammered.
_STABLE_SESSION_S = 10.0
#: While waiting out a backoff, refresh the outbox figures this often.
_IDLE_STATS_INTERVAL_S = 2.0
#: Ids become a routing-key word and a message id prefix: no dots, no AMQP wildcards.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class _ConnectFailed(Exception):
    """A connection attempt (or a too-short session) failed; the text is the cause."""


class Uplink:
    """Sends the gateway's outbox to RabbitMQ from a thread of its own.

    Live records first, the backlog behind them; a row leaves the outbox only
    once the broker confirmed its message. Outages are retried with
    exponential backoff and jitter for as long as the uplink runs.

    Args:
        settings: the ``[uplink]`` section.
        outbox_path: the gateway's SQLite file holding the ``outbox`` table.
        gateway_id: this gateway's id (letters, digits, ``-`` and ``_``).
        site: the gym's site id (same alphabet).
        registry: where to register the metrics; the global registry by default.

    Raises:
        GatewayError: an id has characters a routing key cannot carry.
        UplinkConfigError: the TLS files cannot be loaded.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        outbox_path: str | Path,
        gateway_id: str,
        site: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        for name, value in (("gateway id", gateway_id), ("site", site)):
            if not _ID_PATTERN.fullmatch(value):
                raise GatewayError(
                    f"{name} {value!r} cannot be used in a routing key; use 1-64 letters, digits, '-' or '_'"
                )
        pika_logger = logging.getLogger("pika")
        if pika_logger.level == logging.NOTSET:
            # pika logs every refused attempt at ERROR from several modules;
            # the uplink reports each outage once itself (a WARNING, then DEBUG).
            pika_logger.setLevel(logging.CRITICAL)
        self._settings = settings
        self._outbox_path = Path(outbox_path)
        self._gateway_id = gateway_id
        self._site = site
        self._parameters = connection_parameters(settings, gateway_id)
        self._metrics = UplinkMetrics(registry)
        self._board = StatusBoard(gateway_id=gateway_id, broker=settings.broker_address, metrics=self._metrics)
        self._lock = threading.Lock()  # guards _session and _thread
        self._session: AmqpSession | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._outage_started: float | None = None
        self._outbox: OutboxQueue | None = None  # the thread's own connection

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        """Start the uplink thread.

        Raises:
            UplinkStoreError: the outbox file is missing or not a gateway outbox.
            GatewayError: the uplink was already started.
        """
        read_persisted_state(self._outbox_path)  # fail here, in the caller, on a bad file
        with self._lock:
            if self._thread is not None:
                raise GatewayError("the uplink was already started; create a new Uplink to run again")
            self._thread = threading.Thread(target=self._run, name=f"uplink-{self._gateway_id}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the connection after outstanding confirms (at most a few seconds) and end the thread."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            session, thread = self._session, self._thread
        if session is not None:
            session.request_stop()
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("uplink of gateway %s did not stop within %.1f s", self._gateway_id, timeout_s)

    def pause(self) -> None:
        """Stop publishing (the connection stays up, outstanding confirms still settle)."""
        self._board.set_paused(True)
        logger.info("uplink of gateway %s paused", self._gateway_id)
        self._wake_session()

    def resume(self) -> None:
        """Publish again after :meth:`pause`."""
        self._board.set_paused(False)
        logger.info("uplink of gateway %s resumed", self._gateway_id)
        self._wake_session()

    def sync_now(self) -> None:
        """Look at the outbox now; during an outage, retry the broker now instead of after the backoff."""
        self._wake.set()
        self._wake_session()

    def status(self) -> dict[str, Any]:
        """The ``uplink`` key of the gateway's status JSON (see ``uplink_status_from_file`` for the keys)."""
        return self._board.snapshot()

    def __enter__(self) -> Uplink:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _wake_session(self) -> None:
        with self._lock:
            session = self._session
        if session is not None:
            session.wake()

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        outbox = self._outbox = OutboxQueue(self._outbox_path)
        try:
            while not self._stop.is_set():
                try:
                    self._retrying(outbox)(self._one_session, outbox)
                except _ConnectFailed:
                    break  # tenacity gave up because stop() was called
        finally:
            self._board.set_connection("down")
            try:
                self._board.update_outbox(outbox.stats())
                outbox.save_state(self._board.persisted_state())
            except sqlite3.Error as exc:
                logger.warning("uplink of gateway %s could not save its state: %s", self._gateway_id, exc)
            outbox.close()
            logger.info("uplink of gateway %s stopped", self._gateway_id)

    def _retrying(self, outbox: OutboxQueue) -> tenacity.Retrying:
        settings = self._settings
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_ConnectFailed),
            # Full jitter with a floor: a fleet that lost the same broker does
            # not come back in lockstep.
            wait=tenacity.wait_random_exponential(
                multiplier=settings.backoff_min_s, max=settings.backoff_max_s, min=settings.backoff_min_s
            ),
            stop=lambda _state: self._stop.is_set(),
            sleep=lambda seconds: self._backoff_sleep(seconds, outbox),
            before_sleep=self._before_backoff,
            reraise=True,
        )

    def _one_session(self, outbox: OutboxQueue) -> None:
        if self._stop.is_set():
            return
        self._board.set_connection("connecting")
        session = AmqpSession(
            settings=self._settings,
            parameters=self._parameters,
            outbox=outbox,
            board=self._board,
            gateway_id=self._gateway_id,
            site=self._site,
            routing_key=routing_key(self._site, self._gateway_id),
            on_ready=self._on_session_ready,
        )
        with self._lock:
            self._session = session
        started = time.monotonic()
        try:
            outcome = session.run()
        except Exception as exc:  # a bug in a callback must not end the uplink for good
            logger.exception("uplink session of gateway %s failed unexpectedly", self._gateway_id)
            outcome = SessionOutcome(False, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._session = None
        if self._stop.is_set():
            return
        self._board.set_connection("down")
        if outcome.ready:
            self._metrics.connection_losses.inc()
            self._note_outage(f"lost the connection: {outcome.error}")
            if time.monotonic() - started >= _STABLE_SESSION_S:
                return  # a fresh Retrying reconnects at once
        raise _ConnectFailed(outcome.error)

    def _on_session_ready(self, backlog_records: int) -> None:
        self._board.set_connection("connected")
        self._wake.clear()
        if self._outage_started is not None:
            logger.info(
                "uplink of gateway %s is back on broker %s after %.1f s; %d records waiting",
                self._gateway_id, self._settings.broker_address,
                time.monotonic() - self._outage_started, backlog_records,
            )
            self._outage_started = None
        else:
            logger.info(
                "uplink of gateway %s connected to broker %s; %d records waiting",
                self._gateway_id, self._settings.broker_address, backlog_records,
            )

    def _before_backoff(self, retry_state: tenacity.RetryCallState) -> None:
        assert retry_state.outcome is not None and retry_state.next_action is not None
        cause = str(retry_state.outcome.exception())
        self._board.set_connection("down")
        self._note_outage(cause)
        logger.debug(
            "uplink of gateway %s: attempt %d failed (%s); next in %.1f s",
            self._gateway_id, retry_state.attempt_number, cause, retry_state.next_action.sleep,
        )

    def _note_outage(self, cause: str) -> None:
        """Log the first failure of an outage at WARNING; the rest are the DEBUG line above."""
        self._board.record_error(cause)
        if self._outage_started is not None:
            return
        self._outage_started = time.monotonic()
        logger.warning(
            "uplink of gateway %s is down (broker %s): %s; retrying with backoff up to %g s",
            self._gateway_id, self._settings.broker_address, cause, self._settings.backoff_max_s,
        )
        if self._outbox is not None:
            try:  # so `status` without the daemon shows the cause
                self._outbox.save_state(self._board.persisted_state())
            except sqlite3.Error as exc:
                logger.debug("gateway %s could not save uplink state: %s", self._gateway_id, exc)

    def _backoff_sleep(self, seconds: float, outbox: OutboxQueue) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            try:
                self._board.update_outbox(outbox.stats())
            except sqlite3.Error as exc:
                logger.debug("gateway %s outbox stats unavailable: %s", self._gateway_id, exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.wait(min(remaining, _IDLE_STATS_INTERVAL_S)):
                break
        self._wake.clear()
