"""The gateway notifier: publishes incident notices with confirms and mandatory routing.

The incident daemon calls the notifier from one worker thread for each
pending notice, in order; when it raises, the notice stays in central's
durable outbox and the same notice is offered again on the next pass. The
connection is opened on first use and reopened after a failure or a long
idle spell, so a broker that is down when central starts costs nothing until
a notice has to go out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from central.errors import CentralError
from central.incidents import IncidentError
from firmware_shim.downlink_format import (
    EXCHANGE,
    MAX_SUMMARY_CHARS,
    IncidentNotice,
    NoticeFormatError,
    declare_downlink,
    encode_notice,
    message_properties,
    routing_key,
)

if TYPE_CHECKING:
    from central.settings import CentralSettings

__all__ = ["AmqpGatewayNotifier", "NoticeUndelivered", "notifier_from_settings"]

logger = logging.getLogger(__name__)

#: Gateway queues remembered as declared on the current connection. A fleet
#: has thousands of gateways; past this the set is cleared, which only costs
#: one redundant (idempotent) declaration per gateway.
MAX_DECLARED_GATEWAYS = 10_000
#: Give up waiting for a broker that keeps the connection blocked (memory or
#: disk alarm); the notice stays queued and is retried on the next pass.
BLOCKED_CONNECTION_TIMEOUT_S = 60.0


class NoticeUndelivered(IncidentError):
    """The broker did not take a gateway notice; it stays in central's outbox and is retried."""


class AmqpGatewayNotifier:
    """A ``GatewayNotifier`` for :class:`central.incidents.IncidentDaemon` over RabbitMQ.

    Args:
        url: the broker, ``amqp://user:password@host:5672/vhost``.
        heartbeat_s: AMQP heartbeat. The connection idles between notices and
            pika answers heartbeats only while it is used, so a connection idle
            longer than this is replaced before the next publish.
        connect_timeout_s: give up one connection attempt after this.
    """

    def __init__(self, url: str, *, heartbeat_s: int = 30, connect_timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise CentralError(f"amqp.url {url!r} must look like amqp://user:password@host:5672/%2F")
        self._parameters = pika.URLParameters(url)
        self._parameters.heartbeat = heartbeat_s
        self._parameters.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT_S
        self._parameters.socket_timeout = connect_timeout_s
        self._parameters.stack_timeout = connect_timeout_s
        self._parameters.connection_attempts = 1  # the incident daemon's next pass is the retry
        self._parameters.client_properties = {"connection_name": "pulsegate-central downlink"}
        self.broker = f"{parts.scheme}://{parts.hostname}:{parts.port or self._parameters.port}{parts.path or '/'}"
        self._max_idle_s = float(heartbeat_s) if heartbeat_s > 0 else float("inf")
        self._lock = threading.Lock()  # one publish at a time: a BlockingConnection is not thread-safe
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()  # capped at MAX_DECLARED_GATEWAYS
        self._last_used = 0.0
        self._failing_since: float | None = None
        self.published_total = 0
        self.dropped_total = 0
        _quiet_pika()

    def __call__(self, body: Mapping[str, Any]) -> None:
        """Publish one notice body and wait for the broker's confirm.

        A body that breaks the contract (a gateway id that cannot be routed,
        say) is logged as an error and dropped instead of raised: raising would
        block every later notice to every gym behind it in the ordered outbox.
        The incident itself is unaffected.

        Raises:
            NoticeUndelivered: the broker is unreachable, nacked the notice or
                could not route it.
        """
        notice = self._notice(body)
        if notice is None:
            return
        payload = encode_notice(notice)
        with self._lock:
            self._publish_with_one_retry(notice, payload)
        self.published_total += 1
        logger.info("incident %s (%s, %s) sent to gateway %s", notice.incident_id, notice.state,
                    notice.priority, notice.gateway_id)

    def close(self) -> None:
        """Close the broker connection (a later notice opens a new one)."""
        with self._lock:
            self._discard_connection()

    def _notice(self, body: Mapping[str, Any]) -> IncidentNotice | None:
        fields = dict(body)
        summary = fields.get("summary")
        if isinstance(summary, str) and len(summary) > MAX_SUMMARY_CHARS:
            fields["summary"] = summary[: MAX_SUMMARY_CHARS - 1] + "…"
        try:
            return IncidentNotice.from_body(fields)
        except NoticeFormatError as exc:
            self.dropped_total += 1
            logger.error("notice for incident %s dropped, it cannot be sent to a gateway: %s",
                         body.get("incident_id"), exc)
            return None

    def _publish_with_one_retry(self, notice: IncidentNotice, payload: bytes) -> None:
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                self._publish(notice, payload)
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._discard_connection()
                if attempt == 1 and reused:
                    # The broker may have restarted since the last notice: one
                    # fresh connection before reporting the notice undelivered.
                    logger.debug("downlink connection to %s failed (%s); reconnecting", self.broker, _describe(exc))
                    continue
                self._note_failure(exc)
                raise NoticeUndelivered(
                    f"notice for incident {notice.incident_id} not delivered to gateway {notice.gateway_id} "
                    f"via {self.broker}: {_describe(exc)}; it stays queued and is retried"
                ) from exc
            self._note_success()
            return

    def _publish(self, notice: IncidentNotice, payload: bytes) -> None:
        channel = self._open_channel()
        if notice.gateway_id not in self._declared:
            # Declaring the queue before the first publish makes the broker hold
            # notices for a gateway that has never connected.
            declare_downlink(channel, notice.gateway_id)
            if len(self._declared) >= MAX_DECLARED_GATEWAYS:
                self._declared.clear()
            self._declared.add(notice.gateway_id)
        properties = pika.BasicProperties(timestamp=int(time.time()), **message_properties(notice))
        try:
            channel.basic_publish(EXCHANGE, routing_key(notice.gateway_id), payload, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            self._declared.discard(notice.gateway_id)  # its queue was deleted: declare it again
            raise
        self._last_used = time.monotonic()

    def _open_channel(self) -> BlockingChannel:
        idle_s = time.monotonic() - self._last_used
        if self._connection is not None and (not self._connection.is_open or idle_s > self._max_idle_s):
            self._discard_connection()
        if self._connection is None or self._channel is None or not self._channel.is_open:
            self._discard_connection()
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            self._last_used = time.monotonic()
        return self._channel

    def _discard_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._declared.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.debug("closing the downlink connection to %s: %s", self.broker, exc)

    def _note_failure(self, exc: BaseException) -> None:
        """WARNING for the first failure of an outage, DEBUG for the rest."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning("gateway notices cannot reach broker %s: %s; they stay queued in central's outbox "
                           "and are retried", self.broker, _describe(exc))
        else:
            logger.debug("gateway notices still cannot reach broker %s: %s", self.broker, _describe(exc))

    def _note_success(self) -> None:
        if self._failing_since is not None:
            logger.info("gateway notices reach broker %s again after %.0f s", self.broker,
                        time.monotonic() - self._failing_since)
            self._failing_since = None


def notifier_from_settings(
    settings: CentralSettings, config_path: Path | None, env: Mapping[str, str] | None = None
) -> AmqpGatewayNotifier | None:
    """An :class:`AmqpGatewayNotifier` when ``[amqp] url`` is configured, else None.

    ``amqp.url`` has a default, so "configured" means set in the config file or
    as ``PULSEGATE_AMQP_URL``: the embedded setup without a broker keeps its
    gateway notices queued in the store, as it did before the downlink existed.
    """
    env = os.environ if env is None else env
    configured = "PULSEGATE_AMQP_URL" in env
    if not configured and config_path is not None:
        # load_settings already read this file, so it exists and is TOML.
        data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        configured = isinstance(data.get("amqp"), dict) and "url" in data["amqp"]
    if not configured:
        return None
    return AmqpGatewayNotifier(settings.amqp.url, heartbeat_s=settings.amqp.heartbeat_s)


def _describe(exc: BaseException) -> str:
    """One line for a pika failure, unwrapping the connection workflow's nesting."""
    if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
        exc = exc.exceptions[-1]
    inner = getattr(exc, "exception", None)
    if isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _quiet_pika() -> None:
    pika_logger = logging.getLogger("pika")
    if pika_logger.level == logging.NOTSET:
        # pika logs every refused connection at ERROR from several modules; the
        # notifier reports an outage once itself (a WARNING, then DEBUG).
        pika_logger.setLevel(logging.CRITICAL)
