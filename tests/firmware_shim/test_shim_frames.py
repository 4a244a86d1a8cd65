"""The frame codec and the HELLO/ACK/CUE payloads: round trips, limits, malformed input."""

from __future__ import annotations

import struct
import uuid

import pytest
import shim_reference_codecs as ref
from hypothesis import given, settings
from hypothesis import strategies as st

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
    decode_frame,
    encode_frame,
)

frame_types = st.sampled_from(list(FrameType))
seqs = st.integers(0, 0xFFFFFFFF)
payloads = st.one_of(
    st.binary(max_size=MAX_PAYLOAD_BYTES),
    # Long runs without a zero exercise COBS's 254-byte blocks.
    st.binary(min_size=1, max_size=MAX_PAYLOAD_BYTES).map(lambda b: b.replace(b"\x00", b"\x01")),
)
uuids = st.uuids()
fingerprints = st.binary(min_size=8, max_size=8)
device_ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)
firmware_versions = st.text(max_size=32).filter(lambda s: len(s.encode("utf-8")) <= 32)


# --- frames -----------------------------------------------------------------------


def test_size_limits_follow_from_the_layout() -> None:
    """1024 payload + 8 header + 4 CRC = 1036; COBS adds ceil(1036/254) = 5; plus the delimiter."""
    assert MAX_PAYLOAD_BYTES == 1024
    assert MAX_WIRE_FRAME_BYTES == 1036 + 5 + 1 == ref.MAX_WIRE_FRAME_BYTES
    # The COBS bound is tight: 1036 bytes without a zero take 1041 encoded bytes.
    assert len(ref.cobs_encode(b"\x01" * 1036)) == 1041


@settings(max_examples=300, deadline=None)
@given(frame_types, seqs, payloads)
def test_encode_decode_round_trip(frame_type: FrameType, seq: int, payload: bytes) -> None:
    wire = encode_frame(frame_type, seq, payload)
    assert wire == ref.wire_frame(int(frame_type), seq, payload)  # the independent encoder agrees
    assert wire.index(0) == len(wire) - 1  # one delimiter, at the end
    assert len(wire) <= MAX_WIRE_FRAME_BYTES
    assert decode_frame(wire) == Frame(frame_type, seq, payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_decode_frame_refuses_noise_with_frame_error_only(noise: bytes) -> None:
    expected, _ = ref.decode_reason(noise[:-1] if noise.endswith(b"\x00") else noise)
    try:
        decode_frame(noise)
    except FrameError as exc:
        assert exc.reason == expected
    else:
        assert expected == "ok"


def test_encode_refuses_an_oversized_payload_and_out_of_range_seq() -> None:
    encode_frame(FrameType.TELEMETRY, 1, bytes(MAX_PAYLOAD_BYTES))
    with pytest.raises(ValueError, match="1025 bytes exceeds the 1024-byte limit"):
        encode_frame(FrameType.TELEMETRY, 1, bytes(MAX_PAYLOAD_BYTES + 1))
    for seq in (-1, 2**32):
        with pytest.raises(ValueError, match="does not fit in 32 bits"):
            encode_frame(FrameType.TELEMETRY, seq, b"")


def test_frame_error_names_reason_and_detail() -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(ref.wire_frame(0x05, 0, version=9))
    assert caught.value.reason == "version"
    assert str(caught.value) == "version: frame version 9, expected 1"


# --- HELLO ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(device_ids, uuids, fingerprints, firmware_versions)
def test_hello_round_trip(
    device_id: str, boot_id: uuid.UUID, fingerprint: bytes, firmware: str
) -> None:
    hello = Hello(device_id, boot_id, fingerprint, firmware)
    payload = hello.to_payload()
    device, firm = device_id.encode(), firmware.encode()
    assert (
        payload
        == boot_id.bytes + fingerprint + bytes([len(device)]) + device + bytes([len(firm)]) + firm
    )
    assert Hello.from_payload(payload) == hello


@pytest.mark.parametrize(
    ("device_id", "fingerprint", "firmware"),
    [
        ("", bytes(8), "fw"),
        ("d" * 65, bytes(8), "fw"),
        ("trk\x07", bytes(8), "fw"),
        ("trk-\u00e9", bytes(8), "fw"),
        ("trk", bytes(8), "v" * 33),
        ("trk", bytes(8), "\u00e9" * 17),  # 17 characters, 34 bytes
        ("trk", bytes(7), "fw"),
        ("trk", bytes(9), "fw"),
    ],
    ids=[
        "empty-id",
        "long-id",
        "control-char",
        "non-ascii-id",
        "long-firmware",
        "long-utf8-firmware",
        "short-fingerprint",
        "long-fingerprint",
    ],
)
def test_hello_refuses_to_encode_what_the_format_cannot_carry(
    device_id: str, fingerprint: bytes, firmware: str
) -> None:
    with pytest.raises(ValueError):
        Hello(device_id, uuid.uuid4(), fingerprint, firmware).to_payload()


def _hello_bytes(device: bytes, firmware: bytes) -> bytes:
    return (
        uuid.uuid4().bytes
        + bytes(8)
        + bytes([len(device)])
        + device
        + bytes([len(firmware)])
        + firmware
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        bytes(24),  # no device id length
        _hello_bytes(b"", b"fw"),
        _hello_bytes(b"trk\x00", b"fw"),
        _hello_bytes(b"tr\xc3\xa9", b"fw"),
        _hello_bytes(b"d" * 65, b"fw"),
        _hello_bytes(b"trk", b"v" * 33),
        _hello_bytes(b"trk", b"\xff\xfe"),
        _hello_bytes(b"trk", b"fw") + b"!",
    ],
    ids=[
        "empty",
        "no-device-length",
        "empty-id",
        "nul-in-id",
        "non-ascii-id",
        "long-id",
        "long-firmware",
        "firmware-not-utf8",
        "trailing-byte",
    ],
)
def test_hello_from_malformed_payload(payload: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        Hello.from_payload(payload)
    assert caught.value.reason == "hello"


def test_every_truncation_of_a_hello_is_refused() -> None:
    payload = Hello("trk-0042", uuid.uuid4(), bytes(range(8)), "fw 1").to_payload()
    for cut in range(len(payload)):
        with pytest.raises(FrameError):
            Hello.from_payload(payload[:cut])


# --- ACK and CUE ------------------------------------------------------------------


@given(uuids, seqs)
def test_ack_round_trip(boot_id: uuid.UUID, seq: int) -> None:
    payload = Ack(boot_id, seq).to_payload()
    assert payload == boot_id.bytes + seq.to_bytes(4, "little")
    assert Ack.from_payload(payload) == Ack(boot_id, seq)


@pytest.mark.parametrize("size", [0, 16, 19, 21, 40])
def test_ack_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(FrameError) as caught:
        Ack.from_payload(bytes(size))
    assert caught.value.reason == "ack"


def test_ack_seq_must_fit_in_32_bits() -> None:
    with pytest.raises(struct.error):
        Ack(uuid.uuid4(), 2**32).to_payload()


@given(st.sampled_from(list(HapticPattern)), st.integers(0, 0xFFFF), st.integers(0, 0xFF))
def test_cue_round_trip(pattern: HapticPattern, duration_ms: int, repeat: int) -> None:
    payload = Cue(pattern, duration_ms, repeat).to_payload()
    assert payload == bytes([pattern]) + duration_ms.to_bytes(2, "little") + bytes([repeat])
    assert Cue.from_payload(payload) == Cue(pattern, duration_ms, repeat)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x01\x78\x00",
        b"\x01\x78\x00\x01\x00",
        b"\x00\x78\x00\x01",
        b"\x05\x78\x00\x01",
        b"\xff\x78\x00\x01",
    ],
    ids=["empty", "short", "long", "pattern-0", "pattern-5", "pattern-255"],
)
def test_malformed_cue_is_refused(payload: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        Cue.from_payload(payload)
    assert caught.value.reason == "cue"


def test_cue_fields_must_fit_their_sizes() -> None:
    with pytest.raises(struct.error):
        Cue(HapticPattern.TAP, 65536, 1).to_payload()
    with pytest.raises(struct.error):
        Cue(HapticPattern.TAP, 100, 256).to_payload()
