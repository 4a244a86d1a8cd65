"""The ingest worker: a competing consumer of ``pulsegate.ingest`` that writes to the store.

One worker holds no state of its own, so any number can run at once, on one
machine or many. Per round it takes what the broker has handed it (at most
``prefetch_count`` messages), decodes every message, writes all their rows
in one store call, and only then acks them. A message that can never be
ingested is dead-lettered at once; a store that is down makes the worker hold
its messages and retry, never ack, reject or requeue them.

Dead-lettering: the worker publishes a copy of the message to
``pulsegate.dead-letter`` (publisher confirms, ``mandatory``), with the
original headers plus ``x-pulsegate-error`` (the reason, one line),
``x-pulsegate-error-reason`` (a short code) and
``x-pulsegate-original-routing-key``, and then acks the original. If that
publish is refused, it falls back to ``basic.reject(requeue=False)``, which
dead-letters through the queue's DLX with only RabbitMQ's ``x-death`` reason
``rejected``. A crash between the publish and the ack puts the copy in the DLQ
twice; nothing is lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPChannelError, AMQPConnectionError, NackError, UnroutableError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_random_exponential,
)

from central.ingest._broker_login import REFUSALS, refused
from central.ingest._dead_letters import (
    ERROR_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    persistent_copy,
)
from central.ingest._decode import DecodedBatch, PoisonMessage, accept_batches, decode_delivery
from central.ingest._metrics import (
    DEAD_LETTERED,
    INGEST_LAG,
    LEDGER_GAP_RECORDS,
    MESSAGES_ACKED,
    RECORDS_INGESTED,
    STORE_RETRIES,
)
from central.settings import CentralSettings
from central.store import StoreError, StoreUnavailable, TelemetryStore
from firmware_shim.amqp_topology import DEAD_LETTER_EXCHANGE, INGEST_QUEUE, declare_topology
from pulsegate.log_quieting import logger_quieted

__all__ = ["IngestWorker"]

log = logging.getLogger(__name__)

#: Longest error text put in a dead-letter header: headers travel with every
#: copy of the message and show in the management UI.
_MAX_ERROR_HEADER_CHARS = 500
#: How often a busy worker logs one line of throughput.
_SUMMARY_EVERY_S = 60.0

_Delivery = tuple[Any, pika.BasicProperties, bytes]


def _log_broker_retry(state: RetryCallState) -> None:
    """One line per failed attempt (pika's own tracebacks are silenced)."""
    exc = state.outcome.exception() if state.outcome else None
    params = state.args[0] if state.args else None
    where = f" at {params.host}:{params.port}" if isinstance(params, pika.connection.Parameters) else ""
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    delay_s = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "cannot reach the broker%s (%s); attempt %d, retrying in %.1f s",
        where, why, state.attempt_number, delay_s,
    )


class _Stopping(Exception):
    """Raised inside a session when a stop is requested while messages are held."""


class IngestWorker:
    """Consume ``pulsegate.ingest`` into a store until :meth:`stop` is called.

    Args:
        settings: Central's settings ([amqp], [ingest]).
        store: Where rows go; shared with nothing else in this process.
        stop: An event that stops the worker when set (e.g. by a signal handler).
    """

    def __init__(
        self,
        settings: CentralSettings,
        store: TelemetryStore,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._stop = stop or threading.Event()
        self._pending: list[_Delivery] = []
        self._pending_records = 0
        self._next_ledger_refresh = 0.0
        self._summary_at = time.monotonic() + _SUMMARY_EVERY_S
        self._summary_records = 0

    def stop(self) -> None:
        """Ask the worker to finish its round and return from :meth:`run` (thread- and signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped, reconnecting to the broker with backoff.

        Raises:
            StoreError: the store refused a write permanently (no schema); the
                messages held are returned to the queue unacked.
            BrokerRefused: the broker refused the login or the vhost.
        """
        while not self._stop.is_set():
            try:
                connection = self._connect()
            except AMQPConnectionError:
                return  # only when stopped while waiting to reconnect
            try:
                self._consume(connection)
            except _Stopping:
                log.info(
                    "stopping with %d messages unacked; the broker requeues them",
                    len(self._pending),
                )
            except (AMQPConnectionError, AMQPChannelError) as exc:
                log.warning("lost the broker (%s: %s); reconnecting", type(exc).__name__, exc)
            finally:
                self._pending.clear()
                self._pending_records = 0
                if connection.is_open:
                    try:
                        connection.close()
                    except Exception:  # noqa: BLE001 - already broken; closing is best effort
                        log.debug("closing a broken connection failed", exc_info=True)

    def _connect(self) -> pika.BlockingConnection:
        params = pika.URLParameters(self.settings.amqp.url)
        params.heartbeat = self.settings.amqp.heartbeat_s
        params.blocked_connection_timeout = 60
        retrying = Retrying(
            # A refused login or vhost is an answer, not an outage: it ends the worker.
            retry=retry_if_exception_type(AMQPConnectionError) & retry_if_not_exception_type(REFUSALS),
            wait=wait_random_exponential(multiplier=0.5, max=self.settings.ingest.max_backoff_s),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._stop.wait,
            before_sleep=_log_broker_retry,
            reraise=True,
        )
        try:
            with logger_quieted("pika"):
                connection = retrying(pika.BlockingConnection, params)
        except REFUSALS as exc:
            raise refused(params, exc) from None
        log.info("connected to the broker at %s:%s", params.host, params.port)
        return connection

    def _on_message(
        self, _channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        self._pending.append((method, properties, body))
        count = (properties.headers or {}).get("record-count")
        self._pending_records += count if isinstance(count, int) else 1

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()  # for the dead-letter copies
        channel.basic_qos(prefetch_count=self.settings.ingest.prefetch_count)
        channel.basic_consume(INGEST_QUEUE, self._on_message)
        log.info("consuming %s (prefetch %d)", INGEST_QUEUE, self.settings.ingest.prefetch_count)
        while not self._stop.is_set():
            connection.process_data_events(time_limit=1.0)
            if self._pending:
                self._gather(connection)
                deliveries, self._pending, self._pending_records = self._pending, [], 0
                self._handle(connection, channel, deliveries)
            self._refresh_ledger_gauge()

    def _gather(self, connection: pika.BlockingConnection) -> None:
        """Wait briefly for more messages so one store write carries many."""
        deadline = time.monotonic() + self.settings.ingest.batch_wait_ms / 1000
        while (
            self._pending_records < self.settings.ingest.batch_max_records
            and len(self._pending) < self.settings.ingest.prefetch_count
            and (left := deadline - time.monotonic()) > 0
        ):
            connection.process_data_events(time_limit=left)

    def _handle(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        deliveries: list[_Delivery],
    ) -> None:
        decoded: list[tuple[int, DecodedBatch]] = []
        oldest_us: int | None = None
        for method, properties, body in deliveries:
            try:
                batch = decode_delivery(body, properties.headers)
            except PoisonMessage as exc:
                self._dead_letter(channel, method, properties, body, exc)
                continue
            decoded.append((method.delivery_tag, batch))
            sent_us = (
                batch.gateway_received_at_us or (properties.timestamp or 0) * 1_000_000 or None
            )
            if sent_us is not None:
                oldest_us = sent_us if oldest_us is None else min(oldest_us, sent_us)
        if not decoded:
            return
        written = self._write(connection, [batch for _, batch in decoded])
        for tag, _ in decoded:
            channel.basic_ack(tag)
        MESSAGES_ACKED.inc(len(decoded))
        RECORDS_INGESTED.inc(written)
        if oldest_us is not None:
            INGEST_LAG.set(max(0.0, time.time() - oldest_us / 1e6))
        self._summarise(written)

    def _write(self, connection: pika.BlockingConnection, batches: list[DecodedBatch]) -> int:
        """Write until the store accepts; while it is down, hold the messages and back off."""
        attempt = 0
        while True:
            try:
                written = accept_batches(self.store, batches)
            except StoreUnavailable as exc:
                attempt += 1
                STORE_RETRIES.inc()
                delay_s = min(
                    self.settings.ingest.max_backoff_s, 0.25 * 2**attempt
                ) * random.uniform(0.5, 1.0)
                level = logging.WARNING if attempt == 1 else logging.DEBUG
                log.log(
                    level,
                    "store unavailable, holding %d messages unacked, retry %d in %.1f s: %s",
                    len(batches),
                    attempt,
                    delay_s,
                    exc,
                )
                if self._stop.is_set():
                    raise _Stopping from exc
                connection.sleep(delay_s)  # keeps heartbeats going while we wait
                continue
            if attempt:
                log.warning(
                    "store back after %d retries; wrote the %d held messages", attempt, len(batches)
                )
            return written

    def _dead_letter(
        self,
        channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
        exc: PoisonMessage,
    ) -> None:
        headers = dict(properties.headers or {})
        gateway = headers.get("gateway-id", "?")
        headers[ERROR_HEADER] = str(exc)[:_MAX_ERROR_HEADER_CHARS]
        headers[REASON_HEADER] = exc.reason
        headers[ROUTING_KEY_HEADER] = method.routing_key
        copy_properties = persistent_copy(properties, headers)
        try:
            channel.basic_publish(
                DEAD_LETTER_EXCHANGE, method.routing_key, body, copy_properties, mandatory=True
            )
        except (UnroutableError, NackError) as publish_exc:
            log.error(
                "cannot publish to %s (%s); rejecting message %s so the queue dead-letters it",
                DEAD_LETTER_EXCHANGE,
                type(publish_exc).__name__,
                properties.message_id,
            )
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)
        DEAD_LETTERED.labels(exc.reason).inc()
        log.warning(
            "dead-lettered message %s from gateway %s: %s", properties.message_id, gateway, exc
        )

    def _refresh_ledger_gauge(self) -> None:
        interval_s = self.settings.ingest.ledger_refresh_s
        now = time.monotonic()
        if interval_s <= 0 or now < self._next_ledger_refresh:
            return
        self._next_ledger_refresh = now + interval_s
        try:
            self.store.compact_ledger()
            gaps = sum(entry.gaps for entry in self.store.ledger())
        except StoreError as exc:
            log.info("ledger refresh skipped: %s", exc)
            return
        LEDGER_GAP_RECORDS.set(gaps)

    def _summarise(self, written: int) -> None:
        self._summary_records += written
        now = time.monotonic()
        if now >= self._summary_at:
            log.info(
                "ingested %d records in the last %.0f s", self._summary_records, _SUMMARY_EVERY_S
            )
            self._summary_at, self._summary_records = now + _SUMMARY_EVERY_S, 0
