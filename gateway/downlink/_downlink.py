"""The downlink thread: consumes this gateway's incident notices from RabbitMQ.

One ``BlockingConnection`` per session, in a thread of its own. Each notice
is decoded and handed to the daemon's callback; it is acked only after the
callback returned, so a crash in between gets it redelivered. A malformed
notice is rejected without requeue (the queue dead-letters it); a notice the
callback fails on goes back to the queue, which dead-letters it after
``DELIVERY_LIMIT`` attempts. Outages are retried with the uplink's backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import tenacity
from pika.adapters.blocking_connection import BlockingChannel
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from firmware_shim.downlink_format import (
    DELIVERY_LIMIT,
    IncidentNotice,
    NoticeFormatError,
    declare_downlink,
    decode_notice,
    queue_name,
)
from gateway.errors import GatewayError
from gateway.uplink import UplinkSettings

# The uplink owns the broker settings; the downlink dials the same broker the same way.
from gateway.uplink._connection import connection_parameters, describe_error

__all__ = ["MAX_REMEMBERED_NOTICES", "PREFETCH_COUNT", "Downlink", "NoticeHandler"]

logger = logging.getLogger(__name__)

NoticeHandler = Callable[[IncidentNotice], None]
"""The daemon's callback for one notice; raising sends the notice back to the queue."""

#: Notices the broker hands over before the first is acked. Notices are rare
#: and handled in order in one thread; a small window only hides the round trip.
PREFETCH_COUNT = 4
#: Message ids of notices already handled, to recognise a redelivery (a lost
#: ack, a reconnect). A gym gets a few notices an hour; 1024 is weeks of them.
MAX_REMEMBERED_NOTICES = 1024
#: How long one wait for broker traffic lasts: the bound on how late stop() is seen.
_POLL_S = 0.5
#: A session that lasted this long earns a fresh backoff when it is lost.
_STABLE_SESSION_S = 10.0


class _ConnectFailed(Exception):
    """A session could not start, or ended too soon; the text is the cause."""


class _Counters:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = REGISTRY if registry is None else registry
        self.notices = Counter(
            "pulsegate_gateway_downlink_notices",
            "Incident notices from central by outcome: handled, duplicate (a redelivery, acked unseen), "
            "rejected (malformed, dead-lettered) or failed (the handler raised; requeued).",
            ["outcome"], registry=registry,
        )
        self.connected = Gauge(
            "pulsegate_gateway_downlink_connected",
            "1 while the downlink consumes from the broker, else 0.", registry=registry,
        )


class Downlink:
    """Receives incident notices for one gateway from a thread of its own.

    Args:
        settings: the ``[uplink]`` section: the broker, credentials, TLS,
            heartbeat and backoff are shared with the uplink.
        gateway_id: this gateway's id; its queue is ``pulsegate.downlink.<id>``.
        on_notice: called in the downlink thread for each new notice.
        registry: where to register the metrics; the global registry by default.

    Raises:
        UplinkConfigError: the TLS files cannot be loaded.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        gateway_id: str,
        on_notice: NoticeHandler,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._gateway_id = gateway_id
        self._on_notice = on_notice
        self._parameters = connection_parameters(settings, gateway_id)
        self._parameters.client_properties = {"connection_name": f"pulsegate-gateway {gateway_id} downlink"}
        self._counters = _Counters(registry)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the status fields below
        self._state = "stopped"
        self._counts = {"handled": 0, "duplicate": 0, "rejected": 0, "failed": 0}
        self._last_notice: dict[str, Any] | None = None
        self._last_error: str | None = None
        self._outage_started: float | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()  # capped at MAX_REMEMBERED_NOTICES

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        """Start the downlink thread.

        Raises:
            GatewayError: it was already started.
        """
        if self._thread is not None:
            raise GatewayError("the downlink was already started; create a new Downlink to run again")
        self._set_state("connecting")
        self._thread = threading.Thread(target=self._run, name=f"downlink-{self._gateway_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the connection (unacked notices go back to the queue) and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("downlink of gateway %s did not stop within %.1f s", self._gateway_id, timeout_s)

    def status(self) -> dict[str, Any]:
        """The ``downlink`` key of the gateway's status JSON."""
        with self._lock:
            return {
                "state": self._state,
                "broker": self._settings.broker_address,
                "queue": queue_name(self._gateway_id),
                "notices": dict(self._counts),
                "last_notice": dict(self._last_notice) if self._last_notice else None,
                "last_error": self._last_error,
            }

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state
        self._counters.connected.set(1 if state == "connected" else 0)

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._retrying()(self._one_session)
                except _ConnectFailed:
                    break  # tenacity gave up because stop() was called
        finally:
            self._set_state("stopped")
            logger.info("downlink of gateway %s stopped", self._gateway_id)

    def _retrying(self) -> tenacity.Retrying:
        settings = self._settings
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_ConnectFailed),
            # Full jitter with a floor, like the uplink: a fleet that lost the
            # same broker does not come back in lockstep.
            wait=tenacity.wait_random_exponential(
                multiplier=settings.backoff_min_s, max=settings.backoff_max_s, min=settings.backoff_min_s
            ),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._stop.wait,
            before_sleep=self._before_backoff,
            reraise=True,
        )

    def _one_session(self) -> None:
        if self._stop.is_set():
            return
        self._set_state("connecting")
        started = time.monotonic()
        consumed = False
        try:
            connection = pika.BlockingConnection(self._parameters)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise _ConnectFailed(describe_error(exc)) from exc
        try:
            channel = connection.channel()
            queue = declare_downlink(channel, self._gateway_id)
            channel.basic_qos(prefetch_count=PREFETCH_COUNT)
            channel.basic_consume(queue, self._on_message, auto_ack=False)
            consumed = True
            self._on_connected(queue)
            while not self._stop.is_set():
                connection.process_data_events(time_limit=_POLL_S)
        except (pika.exceptions.AMQPError, OSError) as exc:
            error = describe_error(exc)
        else:
            error = None
        finally:
            _close_quietly(connection)
        if self._stop.is_set():
            return
        self._set_state("down")
        self._note_outage(f"lost the connection: {error}" if consumed else str(error))
        if consumed and time.monotonic() - started >= _STABLE_SESSION_S:
            return  # a fresh Retrying reconnects at once
        raise _ConnectFailed(str(error))

    def _on_connected(self, queue: str) -> None:
        self._set_state("connected")
        with self._lock:
            self._last_error = None
        if self._outage_started is not None:
            logger.info("downlink of gateway %s is back on broker %s after %.1f s", self._gateway_id,
                        self._settings.broker_address, time.monotonic() - self._outage_started)
            self._outage_started = None
        else:
            logger.info("downlink of gateway %s consuming %s on broker %s", self._gateway_id, queue,
                        self._settings.broker_address)

    def _before_backoff(self, retry_state: tenacity.RetryCallState) -> None:
        assert retry_state.outcome is not None and retry_state.next_action is not None
        cause = str(retry_state.outcome.exception())
        self._set_state("down")
        self._note_outage(cause)
        logger.debug("downlink of gateway %s: attempt %d failed (%s); next in %.1f s", self._gateway_id,
                     retry_state.attempt_number, cause, retry_state.next_action.sleep)

    def _note_outage(self, cause: str) -> None:
        """Log the first failure of an outage at WARNING; the rest are the DEBUG line above."""
        with self._lock:
            self._last_error = cause
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            logger.warning("downlink of gateway %s is down (broker %s): %s; retrying with backoff up to %g s",
                           self._gateway_id, self._settings.broker_address, cause, self._settings.backoff_max_s)

    # -- one notice -------------------------------------------------------------------

    def _on_message(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        tag = method.delivery_tag
        try:
            notice = decode_notice(body)
            if notice.gateway_id != self._gateway_id:
                raise NoticeFormatError(f"it is addressed to gateway {notice.gateway_id!r}")
        except NoticeFormatError as exc:
            logger.warning("gateway %s rejected notice %r (dead-lettered): %s", self._gateway_id,
                           properties.message_id, exc)
            channel.basic_reject(tag, requeue=False)
            self._count("rejected")
            return
        if notice.message_id in self._seen:
            logger.debug("gateway %s: notice %s redelivered; already handled", self._gateway_id, notice.message_id)
            channel.basic_ack(tag)
            self._count("duplicate")
            return
        try:
            self._on_notice(notice)
        except Exception:  # the handler is the daemon's code; a bug there must not kill the downlink
            logger.exception("gateway %s could not handle notice %s; it goes back to the queue "
                             "(dead-lettered after %d deliveries)", self._gateway_id, notice.message_id, DELIVERY_LIMIT)
            channel.basic_reject(tag, requeue=True)
            self._count("failed")
            return
        channel.basic_ack(tag)
        self._remember(notice)

    def _remember(self, notice: IncidentNotice) -> None:
        self._seen[notice.message_id] = None
        while len(self._seen) > MAX_REMEMBERED_NOTICES:
            self._seen.popitem(last=False)
        with self._lock:
            self._last_notice = {"incident_id": notice.incident_id, "state": notice.state,
                                 "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._count("handled")
        logger.info("gateway %s got incident %s (%s, %s) on %s", self._gateway_id, notice.incident_id,
                    notice.state, notice.priority, notice.subject)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1
        self._counters.notices.labels(outcome).inc()


def _close_quietly(connection: pika.BlockingConnection) -> None:
    if connection.is_open:
        try:
            connection.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            logger.debug("closing the downlink connection: %s", exc)
