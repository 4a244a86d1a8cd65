"""Turning outbox rows into uplink messages: one OCF block per writer schema."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from firmware_shim import SchemaInfo, schema_by_fingerprint
from firmware_shim.uplink_format import MAX_MESSAGE_BYTES, build_message

__all__ = ["OutboxRow", "OutgoingMessage", "build_messages"]

#: Room kept in a message for the OCF header (the writer schema's JSON is
#: added separately), block counts and the sync markers.
_HEADER_RESERVE_BYTES = 512


class OutboxRow(NamedTuple):
    """The columns of one outbox row that the uplink sends.

    A named tuple, not a dataclass: a drain builds a million of them, and a
    tuple is made straight from the SQLite row at a fraction of the cost.
    """

    id: int
    fingerprint: bytes
    datum: bytes
    received_at_us: int


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready to publish, and the outbox rows it carries."""

    message_id: str
    row_ids: tuple[int, ...]
    body: bytes
    newest_received_at_us: int
    oldest_received_at_us: int
    live: bool

    @property
    def record_count(self) -> int:
        return len(self.row_ids)


def build_messages(
    rows: Sequence[OutboxRow], *, gateway_id: str, codec: str, live: bool
) -> tuple[list[OutgoingMessage], list[OutboxRow]]:
    """Group ``rows`` by writer schema and cut each group into messages that fit.

    Args:
        rows: outbox rows in id order.
        gateway_id: prefix of every message id.
        codec: the OCF block codec, ``null`` or ``deflate``.
        live: mark the messages as carrying live (not backlog) records.

    Returns:
        The messages, in the order of their first row, and the rows whose
        schema fingerprint no known schema has (they cannot be sent).
    """
    groups: dict[bytes, list[OutboxRow]] = {}
    for row in rows:
        groups.setdefault(row.fingerprint, []).append(row)
    messages: list[OutgoingMessage] = []
    unknown: list[OutboxRow] = []
    for fingerprint, group in groups.items():
        writer = schema_by_fingerprint(fingerprint)
        if writer is None:
            unknown.extend(group)
            continue
        for chunk in _chunks_that_fit(writer, group, codec):
            messages.extend(_encode(writer, chunk, gateway_id, codec, live))
    messages.sort(key=lambda message: message.row_ids[0])
    return messages, unknown


def _chunks_that_fit(writer: SchemaInfo, rows: list[OutboxRow], codec: str) -> list[list[OutboxRow]]:
    # Budget the raw datums; deflate at level 1 expands incompressible data by
    # well under 1 %, which the 1/64 margin covers.
    budget = MAX_MESSAGE_BYTES - _HEADER_RESERVE_BYTES - len(json.dumps(writer.json))
    if codec == "deflate":
        budget -= budget // 64
    chunks: list[list[OutboxRow]] = [[]]
    size = 0
    for row in rows:
        if chunks[-1] and size + len(row.datum) > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += len(row.datum)
    return chunks


def _encode(
    writer: SchemaInfo, rows: list[OutboxRow], gateway_id: str, codec: str, live: bool
) -> list[OutgoingMessage]:
    body = build_message(writer, [row.datum for row in rows], codec)
    if len(body) > MAX_MESSAGE_BYTES and len(rows) > 1:
        # The budget above makes this unreachable for real records; halve
        # rather than send a message the format forbids.
        half = len(rows) // 2
        return _encode(writer, rows[:half], gateway_id, codec, live) + _encode(
            writer, rows[half:], gateway_id, codec, live
        )
    received = [row.received_at_us for row in rows]
    return [
        OutgoingMessage(
            message_id=f"{gateway_id}:{rows[0].id}-{rows[-1].id}",
            row_ids=tuple(row.id for row in rows),
            body=body,
            newest_received_at_us=max(received),
            oldest_received_at_us=min(received),
            live=live,
        )
    ]
