"""The ``[uplink]`` section of the gateway's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from firmware_shim.uplink_format import MAX_MESSAGE_BYTES

__all__ = ["UplinkSettings"]

_CODECS = ("null", "deflate")


@dataclass
class UplinkSettings:
    """How the gateway sends its outbox to RabbitMQ.

    Every key can also come from ``PULSEGATE_UPLINK_<KEY>`` in the environment.
    """

    enabled: bool = False
    """Run the uplink. Off by default: the embedded setup has no broker and
    carries bundles instead."""

    amqp_url: str = "amqp://127.0.0.1:5672/%2F"
    """Broker address, ``amqp://host:port/vhost`` or ``amqps://`` for TLS. A
    user and password in the URL are used unless ``username`` is set."""

    username: str | None = None
    """This gateway's own broker user (per-gateway credentials)."""

    password: str | None = None
    """The password of ``username``. Prefer ``PULSEGATE_UPLINK_PASSWORD`` to a file."""

    tls_ca_file: Path | None = None
    """PEM file of the CA that signed the broker's certificate. Setting it (or
    an ``amqps://`` URL) turns TLS on; without it the system CAs are trusted."""

    tls_cert_file: Path | None = None
    """PEM client certificate, for brokers that authenticate gateways by certificate."""

    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""

    tls_server_hostname: str | None = None
    """Name to check the broker's certificate against; defaults to the URL's host."""

    batch_max_records: int = 2000
    """Most records in one message. Bigger batches drain faster but each
    occupies the confirm pipeline longer, delaying live records behind it."""

    max_in_flight_messages: int = 4
    """Messages published but not yet confirmed. A deeper pipeline hides the
    broker's round trip; a shallower one lets a live record overtake sooner."""

    codec: str = "deflate"
    """Avro block codec of each message: ``deflate`` or ``null``."""

    poll_interval_s: float = 0.05
    """How often an idle uplink looks for new rows (``sync_now`` looks at once)."""

    backoff_min_s: float = 0.5
    """First wait after a failed connection attempt."""

    backoff_max_s: float = 60.0
    """Longest wait between connection attempts during an outage."""

    retry_delay_s: float = 1.0
    """Wait before republishing rows whose message the broker nacked or returned."""

    heartbeat_s: int = 30
    """AMQP heartbeat; a dead peer is noticed after about twice this."""

    connect_timeout_s: float = 10.0
    """Give up one connection attempt (TCP, TLS and AMQP handshake) after this."""

    blocked_connection_timeout_s: float = 300.0
    """Drop and redial a connection the broker has kept blocked (memory or disk
    alarm) for this long."""

    def __post_init__(self) -> None:
        scheme = urlsplit(self.amqp_url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(
                f"amqp_url must start with amqp:// or amqps://, got {self.amqp_url!r}"
            )
        if not urlsplit(self.amqp_url).hostname:
            raise ValueError(f"amqp_url {self.amqp_url!r} names no host; use amqp://HOST:5672/")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither (then the URL's are used)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        if self.codec not in _CODECS:
            raise ValueError(f"codec must be one of {', '.join(_CODECS)}, got {self.codec!r}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        if not 1 <= self.batch_max_records <= MAX_MESSAGE_BYTES // 16:
            raise ValueError(
                f"batch_max_records must be 1..{MAX_MESSAGE_BYTES // 16}, got {self.batch_max_records}"
            )
        if not 1 <= self.max_in_flight_messages <= 1000:
            raise ValueError(f"max_in_flight_messages must be 1..1000, got {self.max_in_flight_messages}")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError(
                f"need 0 < backoff_min_s <= backoff_max_s, got {self.backoff_min_s} and {self.backoff_max_s}"
            )
        for name in ("poll_interval_s", "retry_delay_s", "connect_timeout_s", "blocked_connection_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.heartbeat_s < 0:
            raise ValueError(f"heartbeat_s must be 0 (off) or more, got {self.heartbeat_s}")

    @property
    def uses_tls(self) -> bool:
        """True when the connection must be TLS."""
        return urlsplit(self.amqp_url).scheme == "amqps" or self.tls_ca_file is not None

    @property
    def broker_address(self) -> str:
        """The broker's URL without credentials (safe to show), e.g. ``amqp://10.0.0.5:5672/%2F``."""
        parts = urlsplit(self.amqp_url)
        port = parts.port or (5671 if self.uses_tls else 5672)
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return f"{'amqps' if self.uses_tls else 'amqp'}://{parts.hostname}:{port}/{quote(vhost, safe='')}"
