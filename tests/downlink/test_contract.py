"""The downlink contract: what a notice body is, what is refused, and the queue's arguments."""

from __future__ import annotations

import json

import pytest

from downlink.downlink_harness import notice_body
from firmware_shim.downlink_format import (
    MAX_BODY_BYTES,
    MAX_SUMMARY_CHARS,
    IncidentNotice,
    NoticeFormatError,
    decode_notice,
    encode_notice,
    message_properties,
    queue_arguments,
    queue_name,
    routing_key,
)
from firmware_shim.errors import ShimError

GATEWAY = "gym-12"


def test_round_trip_keeps_every_field_and_adds_the_version() -> None:
    body = notice_body(GATEWAY, site=None, major=True, summary="Puls über 190 — bitte anhalten")
    wire = encode_notice(body)
    assert json.loads(wire) == {"version": 1, **body}
    notice = decode_notice(wire)
    assert notice == IncidentNotice(**body)
    assert notice.to_body() == {"version": 1, **body}


def test_device_subject_names_the_tracker_and_others_name_none() -> None:
    assert IncidentNotice.from_body(notice_body(GATEWAY, subject="device:tracker-7")).device_id == "tracker-7"
    assert IncidentNotice.from_body(notice_body(GATEWAY, subject="gateway:gym-12")).device_id is None
    assert IncidentNotice.from_body(notice_body(GATEWAY, subject="device:")).device_id is None


@pytest.mark.parametrize(
    ("state", "is_open"),
    [("new", True), ("acknowledged", True), ("in_progress", True), ("on_hold", True),
     ("resolved", False), ("closed", False)],
)
def test_open_states_are_the_itil_open_ones(state: str, is_open: bool) -> None:
    assert IncidentNotice.from_body(notice_body(GATEWAY, state=state)).is_open is is_open


def test_message_id_is_incident_state_and_time() -> None:
    body = notice_body(GATEWAY, incident_id="INC-00aa", state="in_progress", at="2026-01-01T10:00:00.000Z")
    notice = IncidentNotice.from_body(body)
    assert notice.message_id == "INC-00aa:in_progress:2026-01-01T10:00:00.000Z"
    # A reopen reaches in_progress again later: a new message id, not a redelivery.
    reopened = IncidentNotice.from_body({**body, "at": "2026-01-02T08:00:00.000Z"})
    assert reopened.message_id != notice.message_id


def test_properties_are_persistent_json_with_the_message_id() -> None:
    notice = IncidentNotice.from_body(notice_body(GATEWAY))
    props = message_properties(notice)
    assert props["delivery_mode"] == 2
    assert props["content_type"] == "application/json"
    assert props["message_id"] == notice.message_id
    assert props["headers"] == {"pulsegate-format": "incident-notice/1"}


def test_queue_names_and_arguments() -> None:
    assert queue_name(GATEWAY) == "pulsegate.downlink.gym-12"
    assert routing_key(GATEWAY) == "gym-12"
    args = queue_arguments(GATEWAY)
    assert args["x-queue-type"] == "quorum"
    assert args["x-message-ttl"] == 7 * 86_400_000
    assert args["x-max-length"] == 1000
    assert args["x-overflow"] == "drop-head"
    assert args["x-dead-letter-exchange"] == "pulsegate.dead-letter"
    assert args["x-dead-letter-routing-key"] == "downlink.gym-12"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"gateway_id": "gym 12"}, "gateway_id 'gym 12' is not a gateway id"),
        ({"gateway_id": "gym.12"}, "gateway_id 'gym.12' is not a gateway id"),
        ({"state": "open"}, "state 'open' is not one of new, acknowledged"),
        ({"priority": "P6"}, "priority 'P6' is not one of P1, P2, P3, P4, P5"),
        ({"priority": 1}, "priority 1 is not one of"),
        ({"major": "yes"}, "major must be true or false, got 'yes'"),
        ({"incident_id": ""}, "incident_id must be non-empty text"),
        ({"kind": None}, "kind must be non-empty text"),
        ({"site": 12}, "site must be non-empty text"),
        ({"summary": "x" * (MAX_SUMMARY_CHARS + 1)}, f"summary must be text of at most {MAX_SUMMARY_CHARS}"),
        ({"at": "2026-01-01T10:00:00"}, "at must be ISO 8601 UTC text ending in 'Z'"),
        ({"at": "yesterdayZ"}, "at 'yesterdayZ' is not an ISO 8601 time"),
    ],
)
def test_bad_fields_are_refused_with_the_reason(override: dict, message: str) -> None:
    body = {**notice_body(GATEWAY), **override}
    with pytest.raises(NoticeFormatError, match="^" + message.replace("(", r"\(")):
        encode_notice(body)
    wire = json.dumps({"version": 1, **body}).encode()
    with pytest.raises(NoticeFormatError, match="^" + message.replace("(", r"\(")):
        decode_notice(wire)


def test_missing_keys_are_named() -> None:
    body = notice_body(GATEWAY)
    del body["priority"], body["at"]
    with pytest.raises(NoticeFormatError, match="^notice lacks priority, at$"):
        encode_notice(body)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\xff\xfe", "notice body is not UTF-8 text"),
        (b"{not json", "notice body is not JSON: "),
        (b"[1, 2]", "a notice must be a JSON object, got list"),
        (b'{"incident_id": "INC-1"}', r"notice version None is not supported \(this reader knows version 1\)"),
        (b'{"version": 2}', "notice version 2 is not supported"),
        (b'{"version": true}', "notice version True is not supported"),
        (b"{" + b" " * MAX_BODY_BYTES + b"}", f"notice body is {MAX_BODY_BYTES + 2} bytes; the cap is {MAX_BODY_BYTES}"),
    ],
)
def test_unreadable_bodies_are_refused(wire: bytes, message: str) -> None:
    with pytest.raises(NoticeFormatError, match="^" + message):
        decode_notice(wire)


def test_unknown_keys_of_a_newer_central_are_ignored() -> None:
    body = notice_body(GATEWAY)
    notice = decode_notice(json.dumps({"version": 1, **body, "runbook": "restart-gateway"}).encode())
    assert notice == IncidentNotice(**body)


def test_the_error_is_the_shims_and_a_value_error() -> None:
    with pytest.raises(ShimError):
        decode_notice(b"[]")
    with pytest.raises(ValueError):
        decode_notice(b"[]")
