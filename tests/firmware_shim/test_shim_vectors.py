"""The shipped test vectors, checked against the implementation in both directions.

The vectors were made by ``make_vectors.py`` from independent reference codecs;
here the implementation must encode each valid vector to exactly its bytes,
decode each to exactly its meaning, and reject each invalid one for exactly its
reason.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import make_vectors
import pytest

import firmware_shim
from firmware_shim import (
    MAX_PAYLOAD_BYTES,
    MAX_WIRE_FRAME_BYTES,
    Ack,
    Cue,
    Frame,
    FrameError,
    FrameType,
    HapticPattern,
    Hello,
    RecordError,
    RejectedFrame,
    StreamDecoder,
    decode_frame,
    decode_record,
    encode_frame,
    encode_record,
    schema,
    validate_record,
)

SHIM_DIR = Path(firmware_shim.__file__).resolve().parent
VECTORS_PATH = SHIM_DIR / "test_vectors.json"
DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
BY_NAME = {v["name"]: v for v in DATA["vectors"]}
FRAMES = [v for v in DATA["vectors"] if v["expect"] == "frame" and "payload_error" not in v]
PAYLOAD_ERRORS = [v for v in DATA["vectors"] if "payload_error" in v]
REJECTS = [v for v in DATA["vectors"] if v["expect"] == "reject"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ids(vector: dict[str, Any]) -> str:
    return vector["name"]


def _wire(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["wire_hex"])


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record in the vectors' JSON terms: UUID as text, time as integer microseconds."""
    out = dict(record)
    out["boot_id"] = str(out["boot_id"])
    if isinstance(out["timestamp_us"], datetime):
        out["timestamp_us"] = (out["timestamp_us"] - _EPOCH) // timedelta(microseconds=1)
    return out


def test_the_committed_vectors_are_what_the_generator_makes() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == make_vectors.render(), (
        "firmware_shim/test_vectors.json is stale: run tests/firmware_shim/make_vectors.py"
    )


def test_the_vectors_cover_every_frame_type_schema_and_reason() -> None:
    assert {v["frame"]["type"] for v in FRAMES} == {t.name for t in FrameType}
    assert {v["fields"]["schema_version"] for v in FRAMES if v["frame"]["type"] == "TELEMETRY"} == {
        1,
        2,
    }
    assert {v["reason"] for v in REJECTS} == {
        "cobs",
        "too_short",
        "too_large",
        "crc",
        "version",
        "length",
        "type",
    }


def test_constants_agree_with_the_implementation() -> None:
    constants = DATA["constants"]
    assert constants["frame_version"] == firmware_shim.FRAME_VERSION
    assert constants["max_payload_bytes"] == MAX_PAYLOAD_BYTES
    assert constants["max_wire_frame_bytes"] == MAX_WIRE_FRAME_BYTES
    assert constants["frame_types"] == {t.name: int(t) for t in FrameType}
    assert constants["haptic_patterns"] == {p.name: int(p) for p in HapticPattern}
    for version, fp_hex in constants["schema_fingerprints_hex"].items():
        assert schema(int(version)).fingerprint.hex() == fp_hex


@pytest.mark.parametrize("vector", [v for v in FRAMES if v["encode"]], ids=_ids)
def test_encode_gives_the_exact_wire_bytes(vector: dict[str, Any]) -> None:
    frame = vector["frame"]
    wire = encode_frame(FrameType[frame["type"]], frame["seq"], bytes.fromhex(frame["payload_hex"]))
    assert wire.hex() == vector["wire_hex"]


@pytest.mark.parametrize("vector", FRAMES + PAYLOAD_ERRORS, ids=_ids)
def test_decode_gives_the_exact_frame(vector: dict[str, Any]) -> None:
    expected = vector["frame"]
    frame = decode_frame(_wire(vector))
    assert frame == Frame(
        FrameType[expected["type"]], expected["seq"], bytes.fromhex(expected["payload_hex"])
    )
    assert frame.version == expected["version"]
    # The same bytes without the delimiter, and through the stream decoder.
    assert decode_frame(_wire(vector)[:-1]) == frame
    assert StreamDecoder().feed(_wire(vector)) == [frame]


@pytest.mark.parametrize("vector", [v for v in FRAMES if "fields" in v], ids=_ids)
def test_payload_decodes_to_the_fields_and_back(vector: dict[str, Any]) -> None:
    kind, seq = vector["frame"]["type"], vector["frame"]["seq"]
    payload, fields = bytes.fromhex(vector["frame"]["payload_hex"]), vector["fields"]
    if kind == "HELLO":
        hello = Hello.from_payload(payload)
        assert hello == Hello(
            fields["device_id"],
            uuid.UUID(fields["boot_id"]),
            bytes.fromhex(fields["schema_fingerprint_hex"]),
            fields["firmware_version"],
        )
        assert hello.to_payload() == payload
    elif kind == "ACK":
        ack = Ack.from_payload(payload)
        assert ack == Ack(uuid.UUID(fields["boot_id"]), fields["seq"])
        assert ack.to_payload() == payload
    elif kind == "CUE":
        cue = Cue.from_payload(payload)
        assert cue == Cue(HapticPattern[fields["pattern"]], fields["duration_ms"], fields["repeat"])
        assert int(cue.pattern) == fields["pattern_code"] and seq == fields["cue_id"]
        assert cue.to_payload() == payload
    else:
        version = fields["schema_version"]
        record, writer_version = decode_record(payload, reader_version=version)
        assert writer_version == version
        assert _plain(record) == fields["record"]
        assert record["seq"] == seq
        assert payload[2:10].hex() == fields["schema_fingerprint_hex"]
        assert encode_record(fields["record"], version) == payload


@pytest.mark.parametrize("vector", REJECTS, ids=_ids)
def test_invalid_frames_are_rejected_for_the_stated_reason(vector: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(_wire(vector))
    assert caught.value.reason == vector["reason"]
    [rejected] = StreamDecoder().feed(_wire(vector))
    assert isinstance(rejected, RejectedFrame) and rejected.reason == vector["reason"]


def _payload_error(vector: dict[str, Any]) -> str | None:
    """Parse a vector's payload the way a receiver would; the first error's reason, or None."""
    frame = decode_frame(_wire(vector))
    parsers = {
        FrameType.HELLO: Hello.from_payload,
        FrameType.ACK: Ack.from_payload,
        FrameType.CUE: Cue.from_payload,
    }
    try:
        if frame.type in parsers:
            parsers[frame.type](frame.payload)
            return None
        record, _ = decode_record(frame.payload)
    except (FrameError, RecordError) as exc:
        return exc.reason
    # The gateway's two content checks, which PROTOCOL.md names.
    if record["seq"] != frame.seq:
        return "seq_mismatch"
    if validate_record(record) is not None:
        return "out_of_range"
    return None


@pytest.mark.parametrize("vector", PAYLOAD_ERRORS, ids=_ids)
def test_malformed_payloads_are_refused_for_the_stated_reason(vector: dict[str, Any]) -> None:
    assert _payload_error(vector) == vector["payload_error"]


@pytest.mark.parametrize("vector", [v for v in FRAMES if "fields" in v], ids=_ids)
def test_valid_payloads_pass_every_receiver_check(vector: dict[str, Any]) -> None:
    assert _payload_error(vector) is None


def _outcomes(items: list[Frame | RejectedFrame]) -> list[dict[str, str]]:
    frames_by_wire = {decode_frame(_wire(v)): v["name"] for v in FRAMES}
    return [
        {"frame": frames_by_wire[i]} if isinstance(i, Frame) else {"reject": i.reason}
        for i in items
    ]


@pytest.mark.parametrize("stream", DATA["streams"], ids=_ids)
def test_stream_outcome_does_not_depend_on_how_reads_split_it(stream: dict[str, Any]) -> None:
    data = bytes.fromhex(stream["stream_hex"])
    rng = random.Random(20240611)
    splits = [[len(data)], [1] * len(data), [rng.randrange(1, 300) for _ in range(len(data))]]
    for sizes in splits:
        decoder, items, pos = StreamDecoder(), [], 0
        for size in sizes:
            items += decoder.feed(data[pos : pos + size])
            pos += size
            assert decoder.pending_bytes <= MAX_WIRE_FRAME_BYTES
            if pos >= len(data):
                break
        assert _outcomes(items) == stream["expect"]


def test_protocol_md_worked_example_is_the_cue_vector() -> None:
    text = (SHIM_DIR / "PROTOCOL.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- worked-example:begin -->(.*?)<!-- worked-example:end -->", text, re.S)
    assert block, "PROTOCOL.md lost its worked example markers"
    wire = re.search(r"Wire bytes \(hex\): `([0-9A-F ]+)`", block.group(1))
    raw = re.search(r"Raw frame \(hex\): `([0-9A-F ]+)`", block.group(1))
    assert wire and raw
    assert wire.group(1).replace(" ", "").lower() == BY_NAME["cue"]["wire_hex"]
    assert raw.group(1).replace(" ", "").lower() == BY_NAME["cue"]["frame"]["raw_hex"]
