"""Connecting to the broker as an operator wants it told: one line per failure, refusals final.

pika logs every failed connection attempt at ERROR with a traceback (seven
lines or more a retry); the callers here say it once in their own words.
A refused login or an unknown vhost is an answer, not an outage: no retry
can change it, so it ends the command with a line naming what to check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pika
from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError

from central.errors import CentralError
from pulsegate.config import ConfigError

__all__ = ["REFUSALS", "BrokerRefused", "pika_errors_silenced", "refused"]

#: What pika raises when the broker answered and said no.
REFUSALS = (ProbableAccessDeniedError, ProbableAuthenticationError)


class BrokerRefused(CentralError, ConfigError):
    """The broker refused the login or the vhost: fix ``amqp.url`` (a configuration error, exit 2)."""


@contextmanager
def pika_errors_silenced() -> Iterator[None]:
    """Keep pika's ERROR tracebacks and WARNINGs out of the log; the caller reports in one line."""
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        pika_log.setLevel(level)


def refused(params: pika.URLParameters, exc: BaseException) -> BrokerRefused:
    """The one-line error for a refusal: who was refused where, and what to check."""
    return BrokerRefused(
        f"the broker at {params.host}:{params.port} refused user {params.credentials.username!r} on "
        f"virtual host {params.virtual_host!r} ({type(exc).__name__}); check the password and that the "
        "vhost exists (rabbitmqctl list_vhosts), or fix amqp.url"
    )
