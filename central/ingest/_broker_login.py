"""Connecting to the broker as an operator wants it told: one line per failure, refusals final.

Callers quiet pika's own logging while they connect
(:func:`pulsegate.log_quieting.logger_quieted`) and say each failure once
in their own words. A refused login or an unknown vhost is an answer, not
an outage: no retry can change it, so it ends the command with a line
naming what to check.
"""

from __future__ import annotations

import pika
from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError

from central.errors import CentralError
from pulsegate.config import ConfigError

__all__ = ["REFUSALS", "BrokerRefused", "refused"]

#: What pika raises when the broker answered and said no.
REFUSALS = (ProbableAccessDeniedError, ProbableAuthenticationError)


class BrokerRefused(CentralError, ConfigError):
    """The broker refused the login or the vhost: fix ``amqp.url`` (a configuration error, exit 2)."""


def refused(params: pika.URLParameters, exc: BaseException) -> BrokerRefused:
    """The one-line error for a refusal: who was refused where, and what to check."""
    return BrokerRefused(
        f"the broker at {params.host}:{params.port} refused user {params.credentials.username!r} on "
        f"virtual host {params.virtual_host!r} ({type(exc).__name__}); check the password and that the "
        "vhost exists (rabbitmqctl list_vhosts), or fix amqp.url"
    )
