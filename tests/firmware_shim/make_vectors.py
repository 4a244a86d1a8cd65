"""Generate ``firmware_shim/test_vectors.json`` from the specification alone.

Run from the repository root::

    .venv/bin/python tests/firmware_shim/make_vectors.py

The bytes come from :mod:`shim_reference_codecs` (CRC-32C, COBS, Avro binary
encoding and CRC-64-AVRO written from the papers and the Avro spec), never
from ``firmware_shim``, so the vectors check the implementation instead of
echoing it. The only inputs taken from the product are the schema files, which
are the contract itself. ``test_shim_vectors.py`` regenerates the vectors in
memory and fails if the committed file differs.
"""

from __future__ import annotations

import json
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import shim_reference_codecs as ref  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "firmware_shim" / "schemas"
VECTORS_PATH = REPO / "firmware_shim" / "test_vectors.json"

BOOT_ID = uuid.UUID("3f2a9c4e-0b71-4d05-8e6a-1c9d00b4f7e2")
DEVICE_ID = "trk-0042"
FIRMWARE_VERSION = "shim-fw 2.1.0-\u03b2"  # a non-ASCII character: the field is UTF-8
#: 2011-09-25T13:00:22.123456Z, the start of the Edge 500 recording, with microseconds.
T0_US = 1_316_955_622_123_456
HAPTIC_PATTERNS = {"TAP": 1, "DOUBLE_TAP": 2, "LONG": 3, "ALARM": 4}


def load_schema(version: int) -> Any:
    return json.loads((SCHEMA_DIR / f"telemetry.v{version}.avsc").read_text())


def _describe_frame(type_name: str, seq: int, payload: bytes) -> dict[str, Any]:
    raw = ref.raw_frame(ref.TYPE_CODES[type_name], seq, payload)
    return {
        "version": ref.FRAME_VERSION,
        "type": type_name,
        "type_code": ref.TYPE_CODES[type_name],
        "seq": seq,
        "payload_hex": payload.hex(),
        "raw_hex": raw.hex(),
        "crc32c_hex": raw[-4:][::-1].hex(),
    }


def valid(
    name: str,
    description: str,
    type_name: str,
    seq: int,
    payload: bytes = b"",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    wire = ref.wire_frame(ref.TYPE_CODES[type_name], seq, payload)
    vector = {
        "name": name,
        "description": description,
        "expect": "frame",
        "encode": True,
        "wire_hex": wire.hex(),
        "frame": _describe_frame(type_name, seq, payload),
    }
    if fields is not None:
        vector["fields"] = fields
    return vector


def invalid(name: str, description: str, encoded: bytes, reason: str) -> dict[str, Any]:
    got, _ = ref.decode_reason(encoded)
    assert got == reason, f"{name}: the reference decoder says {got!r}, the vector {reason!r}"
    return {
        "name": name,
        "description": description,
        "expect": "reject",
        "reason": reason,
        "wire_hex": (encoded + b"\x00").hex(),
    }


# --- payloads -------------------------------------------------------------------


def hello_payload(device_id: str, boot_id: uuid.UUID, fingerprint: bytes, firmware: str) -> bytes:
    device, firm = device_id.encode("ascii"), firmware.encode("utf-8")
    return boot_id.bytes + fingerprint + bytes([len(device)]) + device + bytes([len(firm)]) + firm


def ack_payload(boot_id: uuid.UUID, seq: int) -> bytes:
    return boot_id.bytes + struct.pack("<I", seq)


def cue_payload(pattern: int, duration_ms: int, repeat: int) -> bytes:
    return struct.pack("<BHB", pattern, duration_ms, repeat)


def telemetry_record(version: int, seq: int, **overrides: Any) -> dict[str, Any]:
    """A complete record as the writer hands it to the encoder (every field present)."""
    record: dict[str, Any] = {
        "device_id": DEVICE_ID,
        "boot_id": str(BOOT_ID),
        "seq": seq,
        "timestamp_us": T0_US + seq * 1_000_000,
        "heart_rate_bpm": 161,
        "cadence_rpm": 71,
        "speed_m_s": 5.875,
        "distance_m": 1234.5,
        "latitude_deg": 43.71234567,
        "longitude_deg": -79.3987654,
        "altitude_m": 75.25,
        "power_w": None,
        "temperature_c": 21.5,
        "steps": None,
        "battery_pct": 97,
        "host": {"uptime_s": 3600, "cpu_load": 0.375, "free_memory_bytes": 268_435_456},
    }
    if version >= 2:
        record.update(rr_intervals_ms=[812, 790, 805], respiration_rate_bpm=14.5, sport="cycling")
    record.update(overrides)
    return record


def telemetry_fields(version: int, record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    schema = load_schema(version)
    payload = ref.single_object(schema, record)
    fields = {
        "schema_version": version,
        "schema_fingerprint_hex": ref.schema_fingerprint(schema).hex(),
        "datum_hex": payload[10:].hex(),
        "record": record,
    }
    return payload, fields


# --- the vectors ----------------------------------------------------------------


def control_vectors() -> list[dict[str, Any]]:
    fp_v2 = ref.schema_fingerprint(load_schema(2))
    return [
        valid(
            "hello",
            "A tracker announcing itself: boot id, v2 schema fingerprint, device id, firmware version.",
            "HELLO",
            0,
            hello_payload(DEVICE_ID, BOOT_ID, fp_v2, FIRMWARE_VERSION),
            {
                "device_id": DEVICE_ID,
                "boot_id": str(BOOT_ID),
                "schema_fingerprint_hex": fp_v2.hex(),
                "firmware_version": FIRMWARE_VERSION,
            },
        ),
        valid(
            "ack",
            "The gateway: every seq up to 1234 of this boot is durable.",
            "ACK",
            0,
            ack_payload(BOOT_ID, 1234),
            {"boot_id": str(BOOT_ID), "seq": 1234},
        ),
        valid(
            "ack-nothing-yet",
            "The answer to the HELLO of a boot the gateway holds nothing of: seq 0.",
            "ACK",
            0,
            ack_payload(BOOT_ID, 0),
            {"boot_id": str(BOOT_ID), "seq": 0},
        ),
        valid(
            "cue",
            "Haptic cue id 7: DOUBLE_TAP, 120 ms, twice. The worked example of PROTOCOL.md.",
            "CUE",
            7,
            cue_payload(2, 120, 2),
            {
                "cue_id": 7,
                "pattern": "DOUBLE_TAP",
                "pattern_code": 2,
                "duration_ms": 120,
                "repeat": 2,
            },
        ),
        valid(
            "cue-alarm-large-id",
            "Cue id 0xFFFFFFFE: ALARM, 300 ms, five times; every seq byte is non-zero.",
            "CUE",
            0xFFFFFFFE,
            cue_payload(4, 300, 5),
            {
                "cue_id": 0xFFFFFFFE,
                "pattern": "ALARM",
                "pattern_code": 4,
                "duration_ms": 300,
                "repeat": 5,
            },
        ),
        valid("cue-ack", "The tracker played cue 7.", "CUE_ACK", 7),
        valid("heartbeat", "I am alive; empty payload, seq 0.", "HEARTBEAT", 0),
    ]


def _telemetry_valid(
    name: str, description: str, version: int, record: dict[str, Any]
) -> dict[str, Any]:
    payload, fields = telemetry_fields(version, record)
    return valid(name, description, "TELEMETRY", record["seq"], payload, fields)


def _full_block_record() -> dict[str, Any]:
    # Find a sport string that makes the raw frame end in a run of exactly 254
    # non-zero bytes: COBS's one ambiguous corner (see PROTOCOL.md).
    for length in range(230, 260):
        for filler in "abcdefghijklmnopqrstuvwxyz":
            record = telemetry_record(2, 5, sport=filler * length)
            payload, _ = telemetry_fields(2, record)
            raw = ref.raw_frame(ref.TYPE_CODES["TELEMETRY"], 5, payload)
            if len(raw) - 1 - raw.rindex(0) == 254:
                return record
    raise AssertionError("no sport string makes a 254-byte run at the end")


def _max_payload_record() -> dict[str, Any]:
    for length in range(800, 1024):
        record = telemetry_record(2, 6, sport="x" * length)
        if len(telemetry_fields(2, record)[0]) == ref.MAX_PAYLOAD_BYTES:
            return record
    raise AssertionError("no sport string makes a 1024-byte payload")


def telemetry_vectors() -> list[dict[str, Any]]:
    minimal = telemetry_record(
        2,
        3,
        **{
            k: None
            for k in (
                "heart_rate_bpm",
                "cadence_rpm",
                "speed_m_s",
                "distance_m",
                "latitude_deg",
                "longitude_deg",
                "altitude_m",
                "temperature_c",
                "battery_pct",
                "respiration_rate_bpm",
                "sport",
            )
        },
        rr_intervals_ms=[],
    )
    v1 = telemetry_record(1, 1)
    full_block = _full_block_record()
    vectors = [
        _telemetry_valid("telemetry-v1", "One sample written with schema v1.", 1, v1),
        _telemetry_valid(
            "telemetry-v2",
            "One sample written with schema v2: R-R intervals, respiration, sport.",
            2,
            telemetry_record(2, 2),
        ),
        _telemetry_valid(
            "telemetry-v2-minimal",
            "Schema v2 with every optional field null and no R-R intervals.",
            2,
            minimal,
        ),
        _telemetry_valid(
            "telemetry-v2-cobs-full-block-at-end",
            "The raw frame ends in exactly 254 non-zero bytes: canonical COBS ends with the "
            "0xFF block and adds no empty 0x01 block.",
            2,
            full_block,
        ),
        _telemetry_valid(
            "telemetry-v2-max-payload",
            "A payload of exactly 1024 bytes, the largest allowed.",
            2,
            _max_payload_record(),
        ),
    ]
    # The same frame as the paper's C encoder writes it, with the empty block:
    # receivers must accept it; encoders should not produce it.
    lenient = dict(
        vectors[3],
        name="telemetry-v2-cobs-trailing-empty-block",
        encode=False,
        description="The full-block frame above with a trailing 0x01 block, as the COBS paper's "
        "C code encodes it. Decoders accept it; it is not what an encoder must emit.",
    )
    lenient["wire_hex"] = vectors[3]["wire_hex"][:-2] + "0100"
    return vectors + [lenient]


def _frame_bytes(type_name: str | int, seq: int, payload: bytes = b"", **overrides: Any) -> bytes:
    code = ref.TYPE_CODES[type_name] if isinstance(type_name, str) else type_name
    return ref.cobs_encode(ref.raw_frame(code, seq, payload, **overrides))


def invalid_vectors() -> list[dict[str, Any]]:
    cue = ref.raw_frame(ref.TYPE_CODES["CUE"], 7, cue_payload(2, 120, 2))
    bad_crc = cue[:-1] + bytes([cue[-1] ^ 0x01])
    ack = bytearray(ref.raw_frame(ref.TYPE_CODES["ACK"], 0, ack_payload(BOOT_ID, 1234)))
    ack[12] ^= 0x10  # one bit of the boot id
    hello = _frame_bytes("HELLO", 0, hello_payload(DEVICE_ID, BOOT_ID, bytes(8), FIRMWARE_VERSION))
    heartbeat = _frame_bytes("HEARTBEAT", 0)
    # Zeros encode to one byte each, so this 1037-byte frame encodes in 1038
    # bytes, under the encoded limit: only the decoded size gives it away.
    oversized = ref.raw_frame(ref.TYPE_CODES["TELEMETRY"], 9, bytes(1025))
    return [
        invalid(
            "bad-crc",
            "The cue frame with the last CRC byte's low bit flipped.",
            ref.cobs_encode(bad_crc),
            "crc",
        ),
        invalid(
            "bit-flip-in-payload",
            "An ACK with one bit of its payload flipped.",
            ref.cobs_encode(bytes(ack)),
            "crc",
        ),
        invalid(
            "bad-cobs-code-past-end",
            "A COBS code byte (0x05) that points past the end of the frame.",
            bytes.fromhex("051122"),
            "cobs",
        ),
        invalid(
            "truncated-mid-payload",
            "A HELLO whose last 12 encoded bytes were lost on the line.",
            hello[:-12],
            "cobs",
        ),
        invalid(
            "truncated-at-block-boundary",
            "The same HELLO cut after 30 encoded bytes, where a COBS block "
            "ends: the bytes decode, the CRC does not match.",
            hello[:30],
            "crc",
        ),
        invalid(
            "truncated-in-header",
            "A heartbeat cut after 3 encoded bytes: 2 bytes decoded.",
            heartbeat[:3],
            "too_short",
        ),
        invalid(
            "empty-frame", "The COBS encoding of zero bytes.", bytes.fromhex("01"), "too_short"
        ),
        invalid(
            "wrong-version",
            "A heartbeat with version 2 and a valid CRC.",
            _frame_bytes("HEARTBEAT", 0, version=2),
            "version",
        ),
        invalid(
            "length-mismatch",
            "A cue whose length field says 5 but which carries 4 payload bytes.",
            _frame_bytes("CUE", 7, cue_payload(2, 120, 2), length=5),
            "length",
        ),
        invalid(
            "unknown-type",
            "Type 0x07, which no version-1 peer knows, with a valid CRC.",
            _frame_bytes(0x07, 0),
            "type",
        ),
        invalid("type-zero", "Type 0x00 is reserved.", _frame_bytes(0x00, 0), "type"),
        invalid(
            "oversized-payload",
            "A 1025-byte payload with a matching length field and a valid CRC.",
            ref.cobs_encode(oversized),
            "too_large",
        ),
        invalid(
            "oversized-encoding",
            "1042 encoded bytes between delimiters, more than any frame can need.",
            b"\x01" * 1042,
            "too_large",
        ),
    ]


def _payload_invalid(
    name: str, description: str, type_name: str, seq: int, payload: bytes, error: str
) -> dict[str, Any]:
    vector = valid(name, description, type_name, seq, payload)
    vector["payload_error"] = error
    return vector


def payload_invalid_vectors() -> list[dict[str, Any]]:
    fp_v2 = ref.schema_fingerprint(load_schema(2))
    hello = hello_payload(DEVICE_ID, BOOT_ID, fp_v2, FIRMWARE_VERSION)
    v2_payload, _ = telemetry_fields(2, telemetry_record(2, 8))
    out_of_range, _ = telemetry_fields(2, telemetry_record(2, 10, heart_rate_bpm=300))
    return [
        _payload_invalid(
            "hello-truncated",
            "A HELLO without its firmware-version length byte.",
            "HELLO",
            0,
            hello[: 25 + len(DEVICE_ID)],
            "hello",
        ),
        _payload_invalid(
            "hello-trailing-byte",
            "A HELLO with one byte after the firmware version.",
            "HELLO",
            0,
            hello + b"!",
            "hello",
        ),
        _payload_invalid(
            "hello-empty-device-id",
            "A HELLO whose device id has length 0.",
            "HELLO",
            0,
            hello_payload("", BOOT_ID, fp_v2, "fw"),
            "hello",
        ),
        _payload_invalid(
            "hello-device-id-not-printable",
            "A device id holding a BEL (0x07) character.",
            "HELLO",
            0,
            hello_payload("trk\x07", BOOT_ID, fp_v2, "fw"),
            "hello",
        ),
        _payload_invalid(
            "hello-device-id-too-long",
            "A 65-character device id (the limit is 64).",
            "HELLO",
            0,
            hello_payload("d" * 65, BOOT_ID, fp_v2, "fw"),
            "hello",
        ),
        _payload_invalid(
            "ack-short",
            "An ACK payload of 19 bytes instead of 20.",
            "ACK",
            0,
            ack_payload(BOOT_ID, 5)[:-1],
            "ack",
        ),
        _payload_invalid(
            "cue-unknown-pattern",
            "A cue with haptic pattern 9, which no tracker knows.",
            "CUE",
            8,
            cue_payload(9, 100, 1),
            "cue",
        ),
        _payload_invalid(
            "cue-short",
            "A cue payload of 3 bytes instead of 4.",
            "CUE",
            8,
            cue_payload(1, 100, 1)[:3],
            "cue",
        ),
        _payload_invalid(
            "telemetry-not-avro",
            "A payload without the C3 01 marker.",
            "TELEMETRY",
            8,
            b"\xc3\x02" + v2_payload[2:],
            "not_avro",
        ),
        _payload_invalid(
            "telemetry-unknown-schema",
            "The marker, then a fingerprint of no known schema.",
            "TELEMETRY",
            8,
            v2_payload[:2] + bytes(8) + v2_payload[10:],
            "unknown_schema",
        ),
        _payload_invalid(
            "telemetry-truncated-datum",
            "A v2 record whose datum lost its last 3 bytes.",
            "TELEMETRY",
            8,
            v2_payload[:-3],
            "bad_datum",
        ),
        _payload_invalid(
            "telemetry-trailing-byte",
            "A v2 record followed by one stray byte.",
            "TELEMETRY",
            8,
            v2_payload + b"\x00",
            "bad_datum",
        ),
        _payload_invalid(
            "telemetry-seq-mismatch",
            "Frame seq 9 carrying the record with seq 8.",
            "TELEMETRY",
            9,
            v2_payload,
            "seq_mismatch",
        ),
        _payload_invalid(
            "telemetry-out-of-range",
            "A well-formed record with a heart rate of 300 bpm.",
            "TELEMETRY",
            10,
            out_of_range,
            "out_of_range",
        ),
    ]


def stream_vectors() -> list[dict[str, Any]]:
    cue = ref.raw_frame(ref.TYPE_CODES["CUE"], 7, cue_payload(2, 120, 2))
    bad_crc_cue = ref.cobs_encode(cue[:-1] + bytes([cue[-1] ^ 0x01])) + b"\x00"
    noise_run = bytes(
        (i * 37) % 255 + 1 for i in range(1100)
    )  # no zero: no delimiter for 1100 bytes
    parts = [
        (b"\x00\x00", []),
        (bytes.fromhex("11223300"), [{"reject": "cobs"}]),
        (ref.wire_frame(ref.TYPE_CODES["HEARTBEAT"], 0), [{"frame": "heartbeat"}]),
        (bad_crc_cue, [{"reject": "crc"}]),
        (ref.wire_frame(ref.TYPE_CODES["ACK"], 0, ack_payload(BOOT_ID, 1234)), [{"frame": "ack"}]),
        (noise_run + b"\x00", [{"reject": "too_large"}]),
        (b"\x00", []),
        (ref.wire_frame(ref.TYPE_CODES["CUE_ACK"], 7), [{"frame": "cue-ack"}]),
    ]
    stream = b"".join(data for data, _ in parts)
    return [
        {
            "name": "resynchronisation",
            "description": "Flush delimiters, line noise, frames, a bad CRC and an 1100-byte run without a delimiter. "
            "The outcome is the same however the stream is split into reads.",
            "stream_hex": stream.hex(),
            "expect": [outcome for _, outcomes in parts for outcome in outcomes],
        }
    ]


def constants() -> dict[str, Any]:
    return {
        "frame_version": ref.FRAME_VERSION,
        "header_bytes": ref.HEADER_BYTES,
        "crc_bytes": ref.CRC_BYTES,
        "max_payload_bytes": ref.MAX_PAYLOAD_BYTES,
        "max_raw_frame_bytes": ref.MAX_RAW_FRAME_BYTES,
        "max_encoded_frame_bytes": ref.MAX_ENCODED_FRAME_BYTES,
        "max_wire_frame_bytes": ref.MAX_WIRE_FRAME_BYTES,
        "crc32c": {
            "polynomial": "0x1EDC6F41",
            "polynomial_reflected": "0x82F63B78",
            "init": "0xFFFFFFFF",
            "xorout": "0xFFFFFFFF",
            "reflected": True,
            "check_123456789": "0xE3069283",
        },
        "frame_types": dict(sorted(ref.TYPE_CODES.items(), key=lambda item: item[1])),
        "haptic_patterns": HAPTIC_PATTERNS,
        "schema_fingerprints_hex": {
            str(v): ref.schema_fingerprint(load_schema(v)).hex() for v in (1, 2)
        },
    }


def build_vectors() -> dict[str, Any]:
    """Every vector, as the JSON file holds them."""
    return {
        "about": "Pulsegate serial frame test vectors; see firmware_shim/PROTOCOL.md. Generated by "
        "tests/firmware_shim/make_vectors.py from independent reference codecs.",
        "constants": constants(),
        "vectors": control_vectors()
        + telemetry_vectors()
        + invalid_vectors()
        + payload_invalid_vectors(),
        "streams": stream_vectors(),
    }


def render() -> str:
    return json.dumps(build_vectors(), indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {VECTORS_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
