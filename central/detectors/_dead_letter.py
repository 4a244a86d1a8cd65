"""dead_letter: messages waiting in ``pulsegate.dead-letter``.

The depth comes from a passive ``queue.declare`` (it creates nothing and
changes nothing). An incident opens when the queue holds at least
``dead_letter_min_messages``; it is updated (a repeat, with the new depth)
whenever the queue has grown since, and resolved once ops have emptied it.
With the embedded store there is no broker, so ``dead_letter = "auto"``
leaves this detector off.
"""

from __future__ import annotations

import logging

from central.detectors._pass import DetectionPass
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE

__all__ = ["dead_letter_depth", "judge_dead_letter"]

log = logging.getLogger(__name__)

SUBJECT = f"queue:{DEAD_LETTER_QUEUE}"


def dead_letter_depth(amqp_url: str, timeout_s: float) -> int | None:
    """Messages ready in the dead-letter queue; 0 if it does not exist; None if the broker is unreachable."""
    import pika
    from pika.exceptions import AMQPError, ChannelClosedByBroker

    params = pika.URLParameters(amqp_url)
    params.socket_timeout = params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(params)
    except (AMQPError, OSError) as exc:
        log.warning(
            "dead-letter check skipped: cannot reach the broker (%s: %s)", type(exc).__name__, exc
        )
        return None
    try:
        frame = connection.channel().queue_declare(queue=DEAD_LETTER_QUEUE, passive=True)
        return int(frame.method.message_count)
    except ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # nothing was ever dead-lettered on this broker
            return 0
        log.warning("dead-letter check failed: %s", exc)
        return None
    finally:
        try:
            connection.close()
        except AMQPError:
            pass


def judge_dead_letter(p: DetectionPass, amqp_url: str) -> None:
    """Raise, update or resolve the dead_letter incident from the queue's depth."""
    if not p.mine(SUBJECT):
        return
    depth = dead_letter_depth(amqp_url, p.settings.amqp_timeout_s)
    if depth is None:
        return  # no evidence either way
    existing = p.open_incident("dead_letter", SUBJECT)
    if depth < p.settings.dead_letter_min_messages:
        if existing is not None:
            p.resolve("dead_letter", SUBJECT, f"{DEAD_LETTER_QUEUE} holds {depth} messages")
        return
    summary = f"{depth} messages dead-lettered in {DEAD_LETTER_QUEUE}; inspect them and re-publish or drop"
    fields = dict(impact="medium", urgency="medium", category="data", details={"depth": depth})
    if existing is None:
        p.ensure_open("dead_letter", SUBJECT, summary, **fields)
    elif depth > int(existing.details.get("depth", 0)):
        p.update_open(existing, summary, **fields)
