"""The dead-letter queue: what is in it, and putting messages back on the ingest path.

A message lands in ``pulsegate.dead-letter`` in one of two ways: an ingest
worker found it unprocessable and republished it with the reason in its
headers (``x-pulsegate-error-reason``, ``x-pulsegate-error``,
``x-pulsegate-original-routing-key``), or RabbitMQ moved it there after the
ingest queue's delivery limit (an ``x-death`` header; RabbitMQ 3.10 counts a
worker crash as a failed delivery, so a valid message can end up here).

Replaying publishes each message again to the telemetry exchange under its
original routing key, with publisher confirms, and acks it in the
dead-letter queue only once the broker confirmed the copy: a failure halfway
leaves every message in one queue or the other, never in neither. Ingest
writes are idempotent, so replaying a message that was stored already
changes nothing, and a poison message simply comes back with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPConnectionError,
    ChannelClosedByBroker,
    NackError,
    UnroutableError,
)
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from central.errors import CentralError
from central.ingest._broker_login import REFUSALS, refused
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE, EXCHANGE
from pulsegate.log_quieting import logger_quieted

__all__ = [
    "DeadLetter",
    "ReplayResult",
    "ERROR_HEADER",
    "REASON_HEADER",
    "ROUTING_KEY_HEADER",
    "open_channel",
    "peek_dead_letters",
    "persistent_copy",
    "replay_dead_letters",
]

log = logging.getLogger(__name__)

#: The headers an ingest worker adds when it dead-letters a message.
ERROR_HEADER = "x-pulsegate-error"
REASON_HEADER = "x-pulsegate-error-reason"
ROUTING_KEY_HEADER = "x-pulsegate-original-routing-key"
#: Headers that describe the dead-lettering, dropped from a replayed copy so
#: that a second failure records only its own reason.
_DEAD_LETTER_HEADERS = frozenset({
    ERROR_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
    "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
})
#: Connection attempts before a command gives up on the broker.
_CONNECT_ATTEMPTS = 4


@dataclass(frozen=True)
class DeadLetter:
    """One message in the dead-letter queue, as an operator sees it."""

    message_id: str | None
    gateway_id: str
    reason: str  #: the worker's reason code, or ``delivery_limit`` when RabbitMQ moved it
    error: str
    routing_key: str  #: where it was first published, and where a replay sends it


@dataclass(frozen=True)
class ReplayResult:
    replayed: int
    skipped: int  #: left in place by the ``reason`` filter
    remaining: int  #: of the messages there at the start, those still there


def open_channel(amqp_url: str) -> tuple[pika.BlockingConnection, BlockingChannel]:
    """Connect (retrying with backoff) and return a channel; nothing is declared.

    Raises:
        CentralError: the broker stayed unreachable.
    """
    params = pika.URLParameters(amqp_url)
    try:
        with logger_quieted("pika"):
            connection = Retrying(
                retry=retry_if_exception_type(AMQPConnectionError)
                & retry_if_not_exception_type(REFUSALS),
                wait=wait_exponential(multiplier=0.5, max=4),
                stop=stop_after_attempt(_CONNECT_ATTEMPTS),
                reraise=True,
            )(pika.BlockingConnection, params)
    except REFUSALS as exc:
        raise refused(params, exc) from None
    except AMQPConnectionError as exc:
        raise CentralError(
            f"cannot reach the broker at {params.host}:{params.port} after {_CONNECT_ATTEMPTS} attempts "
            f"({type(exc).__name__}); is RabbitMQ running? check amqp.url"
        ) from None
    return connection, connection.channel()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def describe(method: Any, properties: pika.BasicProperties) -> DeadLetter:
    """Who sent a dead-lettered message, why it is here, and where it was going."""
    headers = properties.headers or {}
    deaths = headers.get("x-death") or []
    first_death = deaths[-1] if deaths and isinstance(deaths[-1], dict) else {}
    routing_key = headers.get(ROUTING_KEY_HEADER)
    if routing_key is None and first_death.get("routing-keys"):
        routing_key = first_death["routing-keys"][0]
    reason = headers.get(REASON_HEADER)
    if reason is None:
        reason = "delivery_limit" if first_death else "unknown"
    error = headers.get(ERROR_HEADER) or f"{_text(first_death.get('reason', 'no reason recorded'))} in " \
        f"{_text(first_death.get('queue', '?'))}"
    return DeadLetter(properties.message_id, _text(headers.get("gateway-id", "?")), _text(reason), _text(error),
                      _text(routing_key or method.routing_key))


def _dead_letter_count(channel: BlockingChannel) -> int:
    try:
        with logger_quieted("pika"):  # pika logs the broker's 404 as a WARNING; the line below says it
            return channel.queue_declare(DEAD_LETTER_QUEUE, passive=True).method.message_count
    except ChannelClosedByBroker:
        raise CentralError(
            f"no queue {DEAD_LETTER_QUEUE!r} on this broker and virtual host: no ingest worker has run "
            "against it yet, or amqp.url names another vhost"
        ) from None


def peek_dead_letters(channel: BlockingChannel, limit: int) -> tuple[int, list[DeadLetter]]:
    """The queue's length and its first ``limit`` messages, all left in place."""
    total = _dead_letter_count(channel)
    seen, last_tag = [], None
    for _ in range(min(limit, total)):
        method, properties, _body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=False)
        if method is None:
            break
        seen.append(describe(method, properties))
        last_tag = method.delivery_tag
    if last_tag is not None:
        channel.basic_nack(last_tag, multiple=True, requeue=True)
    return total, seen


def replay_dead_letters(
    channel: BlockingChannel,
    *,
    limit: int | None = None,
    reason: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Publish dead-lettered messages again to the telemetry exchange (see the module doc).

    Args:
        limit: replay at most this many; None for every message there now.
        reason: replay only messages with this reason code.
        progress: called with (messages looked at, messages to look at).

    Raises:
        CentralError: the broker refused a copy (the message stays dead-lettered).
    """
    total = _dead_letter_count(channel)
    channel.confirm_delivery()
    replayed = skipped = 0
    last_skipped_tag = None
    # Only what is there now: a poison message replayed and dead-lettered
    # again while this runs must not be picked up a second time.
    for looked in range(1, total + 1):
        if limit is not None and replayed >= limit:
            break
        method, properties, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=False)
        if method is None:
            break
        letter = describe(method, properties)
        if reason is not None and letter.reason != reason:
            skipped += 1
            last_skipped_tag = method.delivery_tag  # held unacked, so basic_get moves past it
        else:
            _republish(channel, letter, properties, body)
            channel.basic_ack(method.delivery_tag)
            replayed += 1
        if progress is not None:
            progress(looked, total)
    if last_skipped_tag is not None:
        channel.basic_nack(last_skipped_tag, multiple=True, requeue=True)
    remaining = total - replayed  # of what was there at the start; the broker's count lags the requeue
    log.info("replayed %d dead-lettered messages to %s (%d skipped, %d remain)", replayed, EXCHANGE, skipped,
             remaining)
    return ReplayResult(replayed, skipped, remaining)


def persistent_copy(properties: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    """The properties a message keeps when it is moved to or from the dead-letter queue, with ``headers``."""
    return pika.BasicProperties(
        content_type=properties.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        headers=headers,
    )


def _republish(channel: BlockingChannel, letter: DeadLetter, properties: pika.BasicProperties, body: bytes) -> None:
    headers = {k: v for k, v in (properties.headers or {}).items() if k not in _DEAD_LETTER_HEADERS}
    copy = persistent_copy(properties, headers)
    try:
        channel.basic_publish(EXCHANGE, letter.routing_key, body, copy, mandatory=True)
    except (UnroutableError, NackError) as exc:
        raise CentralError(
            f"the broker refused the replayed copy of message {letter.message_id} to {EXCHANGE} "
            f"with routing key {letter.routing_key!r} ({type(exc).__name__}); it stays in {DEAD_LETTER_QUEUE}"
        ) from None
