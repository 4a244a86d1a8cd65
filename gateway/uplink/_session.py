"""One broker connection of the uplink: publish outbox rows, settle confirms.

A session runs pika's SelectConnection I/O loop in the uplink thread. It
declares the topology, turns on publisher confirms, then keeps a bounded
pipeline of unconfirmed messages: a live one whenever new rows arrived, and
backlog ones behind. A confirmed message's rows are deleted from the outbox;
a nacked or returned message's rows stay and are republished after a delay,
and nothing new is published until they are confirmed.

All methods except :meth:`wake` and :meth:`request_stop` run in the I/O loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.spec

from firmware_shim.amqp_topology import declare_topology_async
from firmware_shim.uplink_format import CONTENT_TYPE, EXCHANGE, FORMAT
from gateway.uplink._connection import describe_error
from gateway.uplink._messages import OutboxRow, OutgoingMessage, build_messages
from gateway.uplink._outbox_queue import OutboxQueue
from gateway.uplink._status import StatusBoard
from gateway.uplink.settings import UplinkSettings

__all__ = ["AmqpSession", "SessionOutcome"]

logger = logging.getLogger(__name__)

#: How often the outbox size and age are refreshed for status and metrics.
_STATS_INTERVAL_S = 2.0
#: On stop, how long to wait for outstanding confirms before closing anyway
#: (unconfirmed rows stay in the outbox and are sent again next start).
_STOP_GRACE_S = 5.0


@dataclass
class SessionOutcome:
    """How a session ended: ``ready`` if it got as far as publishing."""

    ready: bool
    error: str


@dataclass
class _InFlight:
    message: OutgoingMessage
    published_at: float
    retry: bool
    returned_reason: str | None = None


class AmqpSession:
    """One connection's lifetime; create a new session to reconnect."""

    def __init__(
        self,
        *,
        settings: UplinkSettings,
        parameters: pika.ConnectionParameters,
        outbox: OutboxQueue,
        board: StatusBoard,
        gateway_id: str,
        site: str,
        routing_key: str,
        on_ready: Callable[[int], None],
    ) -> None:
        self._settings = settings
        self._parameters = parameters
        self._outbox = outbox
        self._board = board
        self._gateway_id = gateway_id
        self._site = site
        self._routing_key = routing_key
        self._on_ready_hook = on_ready
        self._lock = threading.Lock()  # guards _connection and _stop_requested across threads
        self._connection: pika.SelectConnection | None = None
        self._stop_requested = False
        self._channel: pika.channel.Channel | None = None
        self._ready = False
        self._blocked = False
        self._error: str | None = None
        self._timer: Any = None
        self._next_tag = 0
        self._in_flight: dict[int, _InFlight] = {}  # delivery tag -> message, in tag order
        self._tag_by_message_id: dict[str, int] = {}
        self._live_in_flight = 0
        self._backlog_in_flight = 0
        self._retry_in_flight = 0
        self._retry_ids: list[int] = []
        self._retry_at = 0.0
        self._undeleted_ids: list[int] = []  # confirmed, not yet deleted
        self._delete_failed = False

    # -- called from other threads --------------------------------------------

    def wake(self) -> None:
        """Look at the outbox (and the pause flag) now rather than at the next poll."""
        self._call_in_loop(self._pump)

    def request_stop(self) -> None:
        """Finish outstanding confirms (briefly), then close the connection."""
        with self._lock:
            self._stop_requested = True
        self._call_in_loop(self._begin_stop)

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.ioloop.add_callback_threadsafe(callback)

    # -- lifetime ---------------------------------------------------------------

    def run(self) -> SessionOutcome:
        """Connect, publish until the connection ends, and say how it ended."""
        connection = pika.SelectConnection(
            self._parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
        )
        with self._lock:
            if self._stop_requested:
                return SessionOutcome(False, "stopped")
            self._connection = connection
        try:
            connection.ioloop.start()
        finally:
            with self._lock:
                self._connection = None
            connection.ioloop.close()
        return SessionOutcome(self._ready, self._error or "connection closed")

    def _on_connection_open_error(self, connection: pika.SelectConnection, exc: BaseException) -> None:
        self._error = describe_error(exc)
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        if self._error is None:
            self._error = describe_error(reason)
        connection.ioloop.stop()

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        declare_topology_async(channel, self._on_topology_declared)

    def _on_topology_declared(self) -> None:
        assert self._channel is not None
        self._channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        backlog = self._outbox.start_session()
        self._ready = True
        self._on_ready_hook(backlog)
        self._refresh_stats()
        self._pump()

    def _on_channel_closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        self._error = describe_error(reason)
        self._close_connection()

    def _begin_stop(self) -> None:
        if not self._in_flight:
            self._close_connection()
            return
        assert self._connection is not None
        self._connection.ioloop.call_later(_STOP_GRACE_S, self._close_connection)

    def _close_connection(self) -> None:
        self._cancel_timer()
        connection = self._connection
        if connection is None or connection.is_closing or connection.is_closed:
            return
        try:
            connection.close()
        except pika.exceptions.ConnectionWrongStateError:
            connection.ioloop.stop()

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self._blocked = True
        reason = getattr(frame.method, "reason", None)
        logger.warning("broker blocked publishing from gateway %s: %s", self._gateway_id, reason)
        self._board.set_blocked(True, reason)

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self._blocked = False
        logger.info("broker unblocked publishing from gateway %s", self._gateway_id)
        self._board.set_blocked(False)
        self._pump()

    # -- publishing ---------------------------------------------------------------

    def _pump(self) -> None:
        """Fill the confirm pipeline from the outbox, then schedule the next look."""
        self._cancel_timer()
        if not self._ready or self._stop_requested or self._connection is None:
            return
        if self._blocked or self._board.paused:
            delay = self._settings.poll_interval_s
        elif self._delete_failed:
            # Rows confirmed but not deleted would be sent again after a
            # restart; publish nothing more until SQLite takes the delete.
            delay = self._settings.retry_delay_s
        else:
            try:
                delay = self._publish_what_fits()
            except sqlite3.Error as exc:
                logger.error("gateway %s uplink cannot read its outbox: %s; retrying", self._gateway_id, exc)
                self._board.record_error(f"outbox: {exc}")
                delay = self._settings.retry_delay_s
        # Deleting after publishing lets a live row waiting in the outbox go
        # out before this (slower) write transaction.
        self._delete_undeleted()
        self._timer = self._connection.ioloop.call_later(delay, self._pump)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._connection is not None:
            self._connection.ioloop.remove_timeout(self._timer)
        self._timer = None

    def _publish_what_fits(self) -> float:
        """Publish live rows first, then backlog, while the pipeline has room; return the next poll delay."""
        if self._retry_ids or self._retry_in_flight:
            return self._publish_retries()
        window = self._settings.max_in_flight_messages
        while True:
            # Live messages have a window of their own, so a backlog that
            # fills the pipeline never holds a live record back.
            live_room = self._live_in_flight < window
            backlog_room = self._backlog_in_flight < window
            if not (live_room or backlog_room):
                return self._settings.poll_interval_s
            rows, live = self._outbox.next_rows(
                self._settings.batch_max_records, live=live_room, backlog=backlog_room
            )
            if not rows:
                return self._settings.poll_interval_s
            self._publish_rows(rows, live=live, retry=False)

    def _publish_retries(self) -> float:
        if self._retry_in_flight:
            return self._settings.poll_interval_s  # their confirms pump again
        wait_s = self._retry_at - time.monotonic()
        if wait_s > 0:
            return wait_s
        ids, self._retry_ids = self._retry_ids, []
        rows = self._outbox.rows_by_id(ids)
        for start in range(0, len(rows), self._settings.batch_max_records):
            self._publish_rows(rows[start : start + self._settings.batch_max_records], live=False, retry=True)
        logger.debug("gateway %s republished %d records after a nack or return", self._gateway_id, len(rows))
        return self._settings.poll_interval_s

    def _publish_rows(self, rows: list[OutboxRow], *, live: bool, retry: bool) -> None:
        messages, unknown = build_messages(
            rows, gateway_id=self._gateway_id, codec=self._settings.codec, live=live
        )
        if unknown:
            # The ingest validates fingerprints, so this means a damaged file.
            # The rows stay in the outbox (nothing is dropped) and are skipped
            # until an operator looks; each session reports them once.
            logger.error(
                "gateway %s outbox holds %d rows with an unknown schema fingerprint (ids %d..%d); "
                "they are kept but cannot be sent",
                self._gateway_id, len(unknown), unknown[0].id, unknown[-1].id,
            )
            self._board.record_error(f"{len(unknown)} outbox rows have an unknown schema fingerprint")
        for message in messages:
            self._publish(message, retry)

    def _publish(self, message: OutgoingMessage, retry: bool) -> None:
        assert self._channel is not None
        headers = {
            "pulsegate-format": FORMAT,
            "gateway-id": self._gateway_id,
            "site": self._site,
            "record-count": message.record_count,
            "received-at-us": message.newest_received_at_us,
        }
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            headers=headers,
        )
        self._channel.basic_publish(EXCHANGE, self._routing_key, message.body, properties, mandatory=True)
        self._next_tag += 1
        self._in_flight[self._next_tag] = _InFlight(message, time.monotonic(), retry)
        self._tag_by_message_id[message.message_id] = self._next_tag
        self._count_in_flight(self._in_flight[self._next_tag], +1)
        self._board.record_published(message)

    def _count_in_flight(self, entry: _InFlight, delta: int) -> None:
        if entry.retry:
            self._retry_in_flight += delta
        elif entry.message.live:
            self._live_in_flight += delta
        else:
            self._backlog_in_flight += delta

    # -- confirms -----------------------------------------------------------------

    def _on_return(self, _channel: Any, method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        tag = self._tag_by_message_id.get(properties.message_id or "")
        if tag in self._in_flight:
            self._in_flight[tag].returned_reason = f"{method.reply_code} {method.reply_text}"

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        settled = self._settle_tags(method.delivery_tag, method.multiple)
        acked = isinstance(method, pika.spec.Basic.Ack)
        now = time.monotonic()
        confirmed = [(e.message, now - e.published_at) for e in settled if acked and e.returned_reason is None]
        returned = [e for e in settled if acked and e.returned_reason is not None]
        nacked = [e.message for e in settled if not acked]
        if confirmed:
            self._board.record_confirmed(confirmed)
            self._undeleted_ids.extend(i for message, _ in confirmed for i in message.row_ids)
        if returned:
            self._retry_later([e.message for e in returned], "returned", returned[0].returned_reason or "")
        if nacked:
            self._retry_later(nacked, "nacked", "basic.nack")
        if self._stop_requested:
            self._delete_undeleted()
            if not self._in_flight:
                self._close_connection()
        else:
            self._pump()  # publishes, then deletes the confirmed rows

    def _settle_tags(self, tag: int, multiple: bool) -> list[_InFlight]:
        tags = [t for t in self._in_flight if t <= tag] if multiple else [tag]
        settled = []
        for t in tags:
            entry = self._in_flight.pop(t, None)
            if entry is None:
                continue
            self._tag_by_message_id.pop(entry.message.message_id, None)
            self._count_in_flight(entry, -1)
            settled.append(entry)
        return settled

    def _retry_later(self, messages: list[OutgoingMessage], kind: str, reason: str) -> None:
        logger.warning(
            "broker %s %d message(s) from gateway %s (%s); their records stay in the outbox and are retried",
            kind, len(messages), self._gateway_id, reason,
        )
        self._board.record_failed(messages, kind, reason)
        self._retry_ids.extend(i for message in messages for i in message.row_ids)
        self._retry_at = time.monotonic() + self._settings.retry_delay_s

    def _delete_undeleted(self) -> None:
        if not self._undeleted_ids:
            return
        try:
            self._outbox.delete_confirmed(self._undeleted_ids, self._board.persisted_state())
        except sqlite3.Error as exc:
            # Busy past the 5 s timeout: keep the ids and try again on the next pump.
            logger.warning("gateway %s cannot delete confirmed rows yet: %s", self._gateway_id, exc)
            self._delete_failed = True
            return
        self._undeleted_ids = []
        self._delete_failed = False

    def _refresh_stats(self) -> None:
        if self._connection is None or self._stop_requested:
            return
        try:
            self._board.update_outbox(self._outbox.stats())
        except sqlite3.Error as exc:
            logger.debug("gateway %s outbox stats unavailable: %s", self._gateway_id, exc)
        self._connection.ioloop.call_later(_STATS_INTERVAL_S, self._refresh_stats)
