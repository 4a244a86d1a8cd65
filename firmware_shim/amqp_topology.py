"""The RabbitMQ topology gateways publish into and central consumes from.

Both sides declare the same exchanges and queues with the same arguments, so
whichever starts first on a fresh broker creates them and nothing a gateway
publishes routes into the void. RabbitMQ refuses a redeclaration with other
arguments (PRECONDITION_FAILED), so the names and arguments live here only.

=============================  =====================================================
``pulsegate.telemetry``        topic exchange, durable: gateways publish here
``pulsegate.ingest``           quorum queue bound with ``telemetry.#``: central's
                               ingest workers consume it
``pulsegate.dead-letter``      topic exchange, durable: where the ingest queue
                               puts a message delivered more than 5 times
``pulsegate.dead-letter``      quorum queue bound with ``#`` that keeps those
                               messages for ops to inspect
=============================  =====================================================

Nothing here imports pika: the functions take a channel, so a tracker that
never talks AMQP can still import this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_shim.uplink_format import EXCHANGE

__all__ = [
    "EXCHANGE",
    "EXCHANGE_TYPE",
    "INGEST_QUEUE",
    "INGEST_BINDING_KEY",
    "INGEST_QUEUE_ARGUMENTS",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DELIVERY_LIMIT",
    "declare_topology",
    "declare_topology_async",
]

EXCHANGE_TYPE = "topic"
INGEST_QUEUE = "pulsegate.ingest"
#: Every gateway's routing key, ``telemetry.<site>.<gateway_id>``, matches.
INGEST_BINDING_KEY = "telemetry.#"
DEAD_LETTER_EXCHANGE = "pulsegate.dead-letter"
DEAD_LETTER_QUEUE = "pulsegate.dead-letter"
#: A message that failed this many deliveries is a poison message: it goes to
#: the dead-letter queue instead of blocking the ingest workers forever.
#: RabbitMQ 3.10 has no default limit, 4.x defaults to 20; set it explicitly.
DELIVERY_LIMIT = 5

INGEST_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-delivery-limit": DELIVERY_LIMIT,
}
_DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class _Declaration:
    """One declare or bind call, in the order the topology needs them."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


_DECLARATIONS: tuple[_Declaration, ...] = (
    _Declaration("exchange_declare", {"exchange": EXCHANGE, "exchange_type": EXCHANGE_TYPE, "durable": True}),
    _Declaration(
        "exchange_declare",
        {"exchange": DEAD_LETTER_EXCHANGE, "exchange_type": "topic", "durable": True},
    ),
    _Declaration(
        "queue_declare",
        {"queue": DEAD_LETTER_QUEUE, "durable": True, "arguments": _DEAD_LETTER_QUEUE_ARGUMENTS},
    ),
    _Declaration(
        "queue_bind",
        {"queue": DEAD_LETTER_QUEUE, "exchange": DEAD_LETTER_EXCHANGE, "routing_key": "#"},
    ),
    _Declaration(
        "queue_declare",
        {"queue": INGEST_QUEUE, "durable": True, "arguments": INGEST_QUEUE_ARGUMENTS},
    ),
    _Declaration(
        "queue_bind",
        {"queue": INGEST_QUEUE, "exchange": EXCHANGE, "routing_key": INGEST_BINDING_KEY},
    ),
)


def declare_topology(channel: Any) -> None:
    """Declare the exchanges, queues and bindings on a pika ``BlockingChannel``.

    Idempotent: declaring what already exists with the same arguments is a no-op.

    Raises:
        pika.exceptions.ChannelClosedByBroker: an existing queue or exchange has
            other arguments (PRECONDITION_FAILED); delete it or align the broker.
    """
    for step in _DECLARATIONS:
        getattr(channel, step.method)(**step.kwargs)


def declare_topology_async(channel: Any, on_done: Callable[[], None]) -> None:
    """Declare the topology on an asynchronous pika ``Channel`` (SelectConnection).

    Each declaration waits for the broker's reply before the next; ``on_done``
    runs after the last. A refused declaration closes the channel, which the
    caller sees through its channel close callback.
    """

    def run(index: int) -> None:
        if index == len(_DECLARATIONS):
            on_done()
            return
        step = _DECLARATIONS[index]
        getattr(channel, step.method)(callback=lambda _frame: run(index + 1), **step.kwargs)

    run(0)
