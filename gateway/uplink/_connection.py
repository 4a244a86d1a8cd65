"""pika connection parameters from the ``[uplink]`` settings, TLS included."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
)

from gateway.errors import GatewayError
from gateway.uplink.settings import UplinkSettings

__all__ = ["UplinkConfigError", "connection_parameters", "describe_error"]


class UplinkConfigError(GatewayError):
    """The uplink settings cannot make a connection (a bad TLS file, say)."""


def connection_parameters(settings: UplinkSettings, gateway_id: str) -> pika.URLParameters:
    """Build the parameters of one connection attempt.

    Raises:
        UplinkConfigError: a TLS file cannot be loaded.
    """
    params = pika.URLParameters(settings.amqp_url)
    if settings.username is not None and settings.password is not None:
        params.credentials = pika.PlainCredentials(settings.username, settings.password)
    params.heartbeat = settings.heartbeat_s
    params.blocked_connection_timeout = settings.blocked_connection_timeout_s
    params.socket_timeout = settings.connect_timeout_s
    params.stack_timeout = settings.connect_timeout_s
    # The uplink's own loop retries with backoff and jitter; pika's must not.
    params.connection_attempts = 1
    params.client_properties = {"connection_name": f"pulsegate-gateway {gateway_id}"}
    if settings.uses_tls:
        params.ssl_options = pika.SSLOptions(
            _tls_context(settings),
            server_hostname=settings.tls_server_hostname or urlsplit(settings.amqp_url).hostname,
        )
        if urlsplit(settings.amqp_url).port is None:
            params.port = 5671
    return params


def _tls_context(settings: UplinkSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise UplinkConfigError(
            f"uplink TLS files cannot be loaded ({exc}); check uplink.tls_ca_file, "
            "uplink.tls_cert_file and uplink.tls_key_file are PEM files that match"
        ) from exc
    return context


def describe_error(exc: BaseException | None) -> str:
    """One line naming a connection failure and what to check, for logs and the status JSON."""
    if exc is None:
        return "connection closed"
    exc = _innermost(exc)
    text = f"{type(exc).__name__}: {str(exc).strip() or repr(exc)}"
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return f"{text} ({hint})"
    return text


#: What an operator should check for the common failures.
_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (pika.exceptions.ProbableAuthenticationError, "check uplink.username and uplink.password"),
    (pika.exceptions.ProbableAccessDeniedError, "check the vhost in uplink.amqp_url and the user's permissions"),
    (ssl.SSLCertVerificationError, "check uplink.tls_ca_file and uplink.tls_server_hostname"),
    (ConnectionRefusedError, "is the broker running and listening at that address?"),
    (TimeoutError, "is the broker reachable from this network?"),
)


def _innermost(exc: BaseException) -> BaseException:
    # pika wraps a failed attempt's socket or TLS error two or three levels deep.
    for _ in range(5):
        if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(exc, AMQPConnectorPhaseErrorBase):
            exc = exc.exception
        elif isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return exc
