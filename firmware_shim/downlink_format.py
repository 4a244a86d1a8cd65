"""The downlink message format: how central tells a gateway about an incident.

Central's incident service sends a *notice* each time an incident that
concerns a gym changes state (raised, acknowledged, resolved, reopened,
declared major). The gateway lists it for field staff and, for an open
incident about one tracker, cues the wearer (voice in the AirPods, a haptic
pattern on the tracker).

Topology (declared by both sides with the same arguments; whichever comes
first on a fresh broker creates it):

============================================  ==========================================
exchange ``pulsegate.downlink``               direct, durable
queue ``pulsegate.downlink.<gateway_id>``     quorum (durable), one per gateway, bound
                                              with routing key ``<gateway_id>``
dead letters                                  to ``pulsegate.dead-letter`` (the uplink's
                                              dead-letter exchange) with routing key
                                              ``downlink.<gateway_id>``
============================================  ==========================================

Central declares a gateway's queue before its first publish, so a notice for
a gateway that never connected is held, not dropped. The queue's limits:

- **message TTL 7 days** (:data:`MESSAGE_TTL_MS`): a notice is about the
  present; a week is longer than the slowest resolution target (P4, three
  days) plus a long weekend. Older ones are history: they expire into the
  dead-letter queue, where ops can still read them, and the gym sees the
  incident in central's queue instead.
- **at most 1000 notices** (:data:`MAX_QUEUED_NOTICES`), overflow
  ``drop-head``: a gym sees a handful of incidents a day, a few notices each,
  so 1000 is weeks. A flood (a detector in a loop) must not grow the broker
  without bound, and the newest notices matter most, so the oldest go to the
  dead-letter queue. ``reject-publish`` was refused on purpose: the publisher
  would be nacked, and central's single ordered notice outbox would then stall
  every gym behind one full queue.
- **delivery limit 5** (:data:`DELIVERY_LIMIT`): a notice the gateway fails
  to handle five times is dead-lettered instead of looping.

AMQP properties (all set by :func:`message_properties`):

=========================  ==================================================
routing key                the gateway id (:func:`routing_key`)
content_type               ``application/json``
delivery_mode              2 (persistent)
message_id                 ``<incident_id>:<state>:<at>``; a republished notice
                           (central crashed between publish and bookkeeping)
                           carries the same id, a reopen or a new major flag
                           a new one
type                       ``incident-notice``
header ``pulsegate-format``  ``incident-notice/1``
=========================  ==================================================

Body: one UTF-8 JSON object, at most :data:`MAX_BODY_BYTES`:

================  =========================================================
``version``       1; a reader refuses versions it does not know
``incident_id``   central's id, e.g. ``INC-3f2a9c0d1e4b5a67``
``gateway_id``    the gateway addressed (must be the reader's own)
``site``          the gym's site id, or null
``kind``          what happened, e.g. ``heart_rate_high``
``subject``       what it happened to: ``device:<device_id>`` targets a
                  tracker; ``gateway:<id>``, ``site:<id>`` and others are
                  listed but cue nobody's wrist
``state``         ``new``, ``acknowledged``, ``in_progress``, ``on_hold``,
                  ``resolved`` or ``closed``
``priority``      ``P1`` .. ``P5`` (P1, P2 are alarms)
``major``         true for a major incident
``summary``       one line for people, at most :data:`MAX_SUMMARY_CHARS`
``at``            when the state changed, ISO 8601 UTC, e.g.
                  ``2025-03-01T09:30:00.125Z``
================  =========================================================

Unknown keys are ignored (a newer central may add some within version 1).

Nothing here imports pika: :func:`declare_downlink` takes a channel.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from firmware_shim.amqp_topology import DEAD_LETTER_EXCHANGE, declare_topology
from firmware_shim.errors import ShimError

__all__ = [
    "EXCHANGE",
    "EXCHANGE_TYPE",
    "FORMAT",
    "VERSION",
    "CONTENT_TYPE",
    "MESSAGE_TYPE",
    "MESSAGE_TTL_MS",
    "MAX_QUEUED_NOTICES",
    "DELIVERY_LIMIT",
    "MAX_BODY_BYTES",
    "MAX_SUMMARY_CHARS",
    "STATES",
    "OPEN_STATES",
    "PRIORITIES",
    "IncidentNotice",
    "NoticeFormatError",
    "queue_name",
    "routing_key",
    "queue_arguments",
    "encode_notice",
    "decode_notice",
    "message_properties",
    "declare_downlink",
]

EXCHANGE = "pulsegate.downlink"
EXCHANGE_TYPE = "direct"
FORMAT = "incident-notice/1"
VERSION = 1
CONTENT_TYPE = "application/json"
MESSAGE_TYPE = "incident-notice"

#: Notices older than this expire into the dead-letter queue (see the module docstring).
MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000
#: Ready notices one gateway's queue holds; the oldest are dead-lettered beyond it.
MAX_QUEUED_NOTICES = 1000
#: Deliveries of one notice before it is dead-lettered as poison.
DELIVERY_LIMIT = 5
#: Cap on one body: a notice is a few hundred bytes; this leaves room for a
#: long summary and non-ASCII text while keeping a full queue near 8 MB.
MAX_BODY_BYTES = 8 * 1024
#: Cap on the summary: it is one line for a person (the voice cue speaks 120).
MAX_SUMMARY_CHARS = 500

STATES = ("new", "acknowledged", "in_progress", "on_hold", "resolved", "closed")
OPEN_STATES = frozenset({"new", "acknowledged", "in_progress", "on_hold"})
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")

#: Gateway ids become a routing key and a queue name: no dots, no wildcards.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
#: Ids and names are short tokens; a message id must stay under AMQP's 255 bytes.
_MAX_TOKEN_CHARS = 128
_DEVICE_PREFIX = "device:"


class NoticeFormatError(ShimError, ValueError):
    """A notice (or the fields to build one) breaks the downlink contract."""


@dataclass(frozen=True)
class IncidentNotice:
    """One incident notice, validated; build it with :meth:`from_body` or :func:`decode_notice`."""

    incident_id: str
    gateway_id: str
    site: str | None
    kind: str
    subject: str
    state: str
    priority: str
    major: bool
    summary: str
    at: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> IncidentNotice:
        """Validate the keys of a notice body (``version`` optional here) and build the notice.

        Raises:
            NoticeFormatError: a key is missing, has the wrong type, or is out of range.
        """
        if not isinstance(body, Mapping):
            raise NoticeFormatError(f"a notice must be a JSON object, got {type(body).__name__}")
        missing = [name for name in _FIELDS if name not in body]
        if missing:
            raise NoticeFormatError(f"notice lacks {', '.join(missing)}")
        notice = cls(**{name: body[name] for name in _FIELDS})
        notice._validate()
        return notice

    @property
    def device_id(self) -> str | None:
        """The tracker this notice is about (subject ``device:<id>``), else None."""
        if self.subject.startswith(_DEVICE_PREFIX):
            return self.subject[len(_DEVICE_PREFIX):] or None
        return None

    @property
    def is_open(self) -> bool:
        """True while the incident still interrupts the service (not resolved or closed)."""
        return self.state in OPEN_STATES

    @property
    def message_id(self) -> str:
        """``<incident_id>:<state>:<at>``: equal for a republished notice, new for each change."""
        return f"{self.incident_id}:{self.state}:{self.at}"

    def to_body(self) -> dict[str, Any]:
        """The JSON object of this notice, ``version`` first."""
        return {"version": VERSION, **asdict(self)}

    def _validate(self) -> None:
        if not isinstance(self.gateway_id, str) or not _GATEWAY_ID.fullmatch(self.gateway_id):
            raise NoticeFormatError(
                f"gateway_id {self.gateway_id!r} is not a gateway id (1-64 letters, digits, '-' or '_')"
            )
        for name in ("incident_id", "kind", "subject"):
            _check_token(name, getattr(self, name))
        if self.site is not None:
            _check_token("site", self.site)
        if self.state not in STATES:
            raise NoticeFormatError(f"state {self.state!r} is not one of {', '.join(STATES)}")
        if self.priority not in PRIORITIES:
            raise NoticeFormatError(f"priority {self.priority!r} is not one of {', '.join(PRIORITIES)}")
        if not isinstance(self.major, bool):
            raise NoticeFormatError(f"major must be true or false, got {self.major!r}")
        if not isinstance(self.summary, str) or len(self.summary) > MAX_SUMMARY_CHARS:
            raise NoticeFormatError(
                f"summary must be text of at most {MAX_SUMMARY_CHARS} characters, got {_describe(self.summary)}"
            )
        _check_time(self.at)


_FIELDS = ("incident_id", "gateway_id", "site", "kind", "subject", "state", "priority", "major", "summary", "at")


def _check_token(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TOKEN_CHARS:
        raise NoticeFormatError(
            f"{name} must be non-empty text of at most {_MAX_TOKEN_CHARS} characters, got {_describe(value)}"
        )


def _check_time(value: Any) -> None:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise NoticeFormatError(f"at must be ISO 8601 UTC text ending in 'Z', got {_describe(value)}")
    try:
        dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise NoticeFormatError(f"at {value!r} is not an ISO 8601 time, e.g. 2025-03-01T09:30:00.125Z") from None


def _describe(value: Any) -> str:
    if isinstance(value, str) and len(value) > 40:
        return f"{len(value)} characters"
    return repr(value)


def queue_name(gateway_id: str) -> str:
    """The queue that holds ``gateway_id``'s notices."""
    return f"pulsegate.downlink.{gateway_id}"


def routing_key(gateway_id: str) -> str:
    """The routing key of ``gateway_id``'s notices (the id itself)."""
    return gateway_id


def queue_arguments(gateway_id: str) -> dict[str, Any]:
    """The ``queue.declare`` arguments of ``gateway_id``'s queue (both sides must use exactly these)."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": MESSAGE_TTL_MS,
        "x-max-length": MAX_QUEUED_NOTICES,
        "x-overflow": "drop-head",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": f"downlink.{gateway_id}",
    }


def encode_notice(notice: IncidentNotice | Mapping[str, Any]) -> bytes:
    """Validate a notice (or a body with its keys) and return the message body.

    Raises:
        NoticeFormatError: the notice breaks the contract or encodes larger than MAX_BODY_BYTES.
    """
    if not isinstance(notice, IncidentNotice):
        notice = IncidentNotice.from_body(notice)
    else:
        notice._validate()
    body = json.dumps(notice.to_body(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_BODY_BYTES:
        raise NoticeFormatError(f"notice {notice.incident_id} encodes to {len(body)} bytes; the cap is {MAX_BODY_BYTES}")
    return body


def decode_notice(body: bytes) -> IncidentNotice:
    """Read and validate one message body.

    Raises:
        NoticeFormatError: the body is too large, not UTF-8 JSON, of an unknown
            version, or breaks the contract; the message says which.
    """
    if len(body) > MAX_BODY_BYTES:
        raise NoticeFormatError(f"notice body is {len(body)} bytes; the cap is {MAX_BODY_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise NoticeFormatError("notice body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise NoticeFormatError(f"notice body is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict):
        raise NoticeFormatError(f"a notice must be a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise NoticeFormatError(
            f"notice version {version!r} is not supported (this reader knows version {VERSION}); "
            "update the gateway to read newer notices"
        )
    return IncidentNotice.from_body(data)


def message_properties(notice: IncidentNotice) -> dict[str, Any]:
    """Keyword arguments for ``pika.BasicProperties`` of ``notice``'s message."""
    return {
        "content_type": CONTENT_TYPE,
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": notice.message_id,
        "type": MESSAGE_TYPE,
        "headers": {"pulsegate-format": FORMAT},
    }


def declare_downlink(channel: Any, gateway_id: str) -> str:
    """Declare the exchanges, ``gateway_id``'s queue and its binding on a pika ``BlockingChannel``.

    Idempotent. Returns the queue's name.

    Raises:
        NoticeFormatError: ``gateway_id`` cannot be a routing key.
        pika.exceptions.ChannelClosedByBroker: the queue exists with other
            arguments (PRECONDITION_FAILED); delete it or align the broker.
    """
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise NoticeFormatError(f"gateway id {gateway_id!r} cannot be a routing key; use 1-64 letters, digits, '-' or '_'")
    queue = queue_name(gateway_id)
    # The shared topology holds the dead-letter exchange and the queue bound
    # to it; without that queue, dead-lettered notices would vanish.
    declare_topology(channel)
    channel.exchange_declare(exchange=EXCHANGE, exchange_type=EXCHANGE_TYPE, durable=True)
    channel.queue_declare(queue=queue, durable=True, arguments=queue_arguments(gateway_id))
    channel.queue_bind(queue=queue, exchange=EXCHANGE, routing_key=routing_key(gateway_id))
    return queue
