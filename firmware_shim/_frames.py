"""The serial frame format: COBS-delimited frames with a CRC-32C.

``PROTOCOL.md`` beside this module is the normative description; this module
is its reference implementation. A frame on the wire is::

    COBS( version:u8 | type:u8 | seq:u32le | length:u16le | payload | crc32c:u32le ) 0x00

Everything here is pure: no I/O, no clocks.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass, field

import crc32c
from cobs import cobs

__all__ = [
    "FRAME_VERSION",
    "MAX_PAYLOAD_BYTES",
    "MAX_WIRE_FRAME_BYTES",
    "FrameType",
    "Frame",
    "Hello",
    "Ack",
    "Cue",
    "HapticPattern",
    "RejectedFrame",
    "StreamDecoder",
    "encode_frame",
    "decode_frame",
    "FrameError",
]

FRAME_VERSION = 1

#: Largest payload a frame may carry. A telemetry record is about 100 bytes;
#: 1 KiB leaves room for schema growth while bounding the decoder's buffer.
MAX_PAYLOAD_BYTES = 1024

_HEADER = struct.Struct("<BBIH")
_CRC = struct.Struct("<I")
_HEADER_BYTES = _HEADER.size  # 8
_MAX_RAW_FRAME_BYTES = _HEADER_BYTES + MAX_PAYLOAD_BYTES + _CRC.size
#: Largest frame on the wire, delimiter included: COBS adds at most one byte
#: per 254 (and at least one), then the 0x00 delimiter.
MAX_WIRE_FRAME_BYTES = _MAX_RAW_FRAME_BYTES + (_MAX_RAW_FRAME_BYTES + 253) // 254 + 1


class FrameType(enum.IntEnum):
    """What a frame carries, and in which direction it travels."""

    HELLO = 0x01  #: tracker -> gateway: who I am (see :class:`Hello`)
    TELEMETRY = 0x02  #: tracker -> gateway: one Avro single-object record
    ACK = 0x03  #: gateway -> tracker: highest contiguous durable seq
    CUE = 0x04  #: gateway -> tracker: a haptic pattern to play
    HEARTBEAT = 0x05  #: either way: I am alive, empty payload
    CUE_ACK = 0x06  #: tracker -> gateway: the cue with this id was played


#: Code -> type, looked up per frame (cheaper than calling the enum).
_FRAME_TYPES = {int(t): t for t in FrameType}


class FrameError(ValueError):
    """A frame could not be decoded; ``reason`` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its type, sequence number and raw payload."""

    type: FrameType
    seq: int
    payload: bytes = b""
    version: int = FRAME_VERSION


def encode_frame(frame_type: FrameType, seq: int, payload: bytes = b"") -> bytes:
    """Return the wire bytes of one frame, delimiter included."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    if not 0 <= seq <= 0xFFFFFFFF:
        raise ValueError(f"seq {seq!r} does not fit in 32 bits")
    body = _HEADER.pack(FRAME_VERSION, int(frame_type), seq, len(payload)) + payload
    raw = body + _CRC.pack(crc32c.crc32c(body))
    return cobs.encode(raw) + b"\x00"


def decode_frame(wire: bytes) -> Frame:
    """Decode one frame's bytes (COBS-encoded, with or without the delimiter).

    The checks run in the order PROTOCOL.md gives, and the first that fails
    names the reason.

    Raises:
        FrameError: with a reason of ``too_large``, ``cobs``, ``too_short``,
            ``crc``, ``version``, ``length`` or ``type``.
    """
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    # Checked before decoding so a flood of noise costs nothing; the limit
    # excludes the delimiter, which was stripped above.
    if len(wire) > MAX_WIRE_FRAME_BYTES - 1:
        raise FrameError("too_large", f"{len(wire)} encoded bytes")
    try:
        raw = cobs.decode(wire)
    except cobs.DecodeError as exc:
        raise FrameError("cobs", str(exc)) from exc
    # COBS overhead varies with the data, so a short encoding can still hide
    # a payload over the limit: the decoded size is the one that counts.
    if len(raw) > _MAX_RAW_FRAME_BYTES:
        raise FrameError("too_large", f"{len(raw)} decoded bytes, at most {_MAX_RAW_FRAME_BYTES}")
    if len(raw) < _HEADER_BYTES + _CRC.size:
        raise FrameError("too_short", f"{len(raw)} decoded bytes")
    body, (crc,) = raw[:-4], _CRC.unpack(raw[-4:])
    computed = crc32c.crc32c(body)
    if computed != crc:
        raise FrameError("crc", f"carried 0x{crc:08x}, computed 0x{computed:08x}")
    version, type_code, seq, length = _HEADER.unpack_from(body)
    if version != FRAME_VERSION:
        raise FrameError("version", f"frame version {version}, expected {FRAME_VERSION}")
    if length != len(body) - _HEADER_BYTES:
        raise FrameError(
            "length", f"header says {length} payload bytes, frame has {len(body) - _HEADER_BYTES}"
        )
    frame_type = _FRAME_TYPES.get(type_code)
    if frame_type is None:
        raise FrameError("type", f"unknown frame type 0x{type_code:02x}")
    return Frame(frame_type, seq, body[_HEADER_BYTES:], version)


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """Bytes the decoder threw away, and why."""

    reason: str
    detail: str
    raw: bytes


@dataclass(slots=True)
class StreamDecoder:
    """Splits a byte stream into frames; never raises on bad input.

    Feed it whatever the serial port returned; it yields :class:`Frame` and
    :class:`RejectedFrame` objects in stream order. Garbage, truncated frames
    and bit flips surface as rejections, and decoding carries on at the next
    0x00 delimiter, which COBS guarantees appears nowhere inside a frame.
    """

    _buffer: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def feed(self, data: bytes) -> list[Frame | RejectedFrame]:
        """Consume ``data`` and return every complete frame or rejection in it."""
        out: list[Frame | RejectedFrame] = []
        buf = self._buffer
        if buf:
            data = bytes(buf) + data
            buf.clear()
        chunks = data.split(b"\x00")
        tail = chunks.pop()  # after the last delimiter: the start of a frame still coming
        for chunk in chunks:
            if self._discarding:
                # The tail of an oversized run we already reported.
                self._discarding = False
                continue
            if not chunk:
                continue  # back-to-back delimiters: a tracker flushing the line
            try:
                out.append(decode_frame(chunk))
            except FrameError as exc:
                out.append(RejectedFrame(exc.reason, exc.detail, chunk))
        # A run of bytes with no delimiter longer than any legal frame can only
        # be noise: report it once, drop it, and skip to the next delimiter so
        # the buffer stays bounded.
        if len(tail) > MAX_WIRE_FRAME_BYTES:
            if not self._discarding:
                out.append(
                    RejectedFrame("too_large", f"no delimiter within {len(tail)} bytes", bytes(tail[:64]))
                )
            self._discarding = True
        else:
            buf += tail
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes held while waiting for the next delimiter."""
        return len(self._buffer)


# --- Payloads -----------------------------------------------------------------

_HELLO_FIXED = struct.Struct("<16s8sB")
#: Limits of the HELLO strings, the same on both sides of the line: the
#: device id is also a record field that ``validate_record`` bounds to 64.
_DEVICE_ID_MAX_BYTES = 64
_FIRMWARE_VERSION_MAX_BYTES = 32
_ACK = struct.Struct("<16sI")
_CUE = struct.Struct("<BHB")


@dataclass(frozen=True, slots=True)
class Hello:
    """A tracker announcing itself after boot or reconnect."""

    device_id: str
    boot_id: uuid.UUID
    schema_fingerprint: bytes  #: 8-byte CRC-64-AVRO fingerprint, as in the SOE header
    firmware_version: str

    def to_payload(self) -> bytes:
        device = self.device_id.encode("ascii")
        firmware = self.firmware_version.encode("utf-8")
        if not 1 <= len(device) <= _DEVICE_ID_MAX_BYTES or not self.device_id.isprintable():
            raise ValueError(f"device id {self.device_id!r} must be 1 to 64 printable ASCII characters")
        if len(firmware) > _FIRMWARE_VERSION_MAX_BYTES:
            raise ValueError(f"firmware version {self.firmware_version!r} exceeds 32 bytes")
        # struct's "8s" would pad or cut a wrong-sized value without a word.
        if len(self.schema_fingerprint) != 8:
            raise ValueError(f"schema fingerprint must be 8 bytes, got {len(self.schema_fingerprint)}")
        return (
            _HELLO_FIXED.pack(self.boot_id.bytes, self.schema_fingerprint, len(device))
            + device
            + bytes([len(firmware)])
            + firmware
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Hello:
        try:
            boot, fingerprint, n_device = _HELLO_FIXED.unpack_from(payload)
            pos = _HELLO_FIXED.size
            device = payload[pos : pos + n_device].decode("ascii")
            pos += n_device
            n_firmware = payload[pos]
            firmware = payload[pos + 1 : pos + 1 + n_firmware].decode("utf-8")
            if len(device) != n_device or pos + 1 + n_firmware != len(payload) or not device:
                raise ValueError("length fields do not match the payload")
        except (struct.error, IndexError, ValueError) as exc:
            raise FrameError("hello", f"malformed HELLO payload: {exc}") from None
        if not device.isprintable():
            raise FrameError("hello", f"device id {device!r} is not printable")
        if n_device > _DEVICE_ID_MAX_BYTES or n_firmware > _FIRMWARE_VERSION_MAX_BYTES:
            raise FrameError(
                "hello", f"device id of {n_device} or firmware version of {n_firmware} bytes is over the limit"
            )
        return cls(device, uuid.UUID(bytes=boot), fingerprint, firmware)


@dataclass(frozen=True, slots=True)
class Ack:
    """The gateway's statement that every seq up to ``seq`` of ``boot_id`` is durable."""

    boot_id: uuid.UUID
    seq: int

    def to_payload(self) -> bytes:
        return _ACK.pack(self.boot_id.bytes, self.seq)

    @classmethod
    def from_payload(cls, payload: bytes) -> Ack:
        if len(payload) != _ACK.size:
            raise FrameError("ack", f"ACK payload is {len(payload)} bytes, expected {_ACK.size}")
        boot, seq = _ACK.unpack(payload)
        return cls(uuid.UUID(bytes=boot), seq)


class HapticPattern(enum.IntEnum):
    """Haptic patterns every tracker firmware must be able to play."""

    TAP = 1  #: one short pulse: acknowledgement, test cue
    DOUBLE_TAP = 2  #: two short pulses: milestone reached
    LONG = 3  #: one long pulse: attention, slow down
    ALARM = 4  #: repeating pulses: stop and check (health or system alarm)


@dataclass(frozen=True, slots=True)
class Cue:
    """A haptic cue for the tracker; the frame's seq is the cue id."""

    pattern: HapticPattern
    duration_ms: int
    repeat: int = 1

    def to_payload(self) -> bytes:
        return _CUE.pack(int(self.pattern), self.duration_ms, self.repeat)

    @classmethod
    def from_payload(cls, payload: bytes) -> Cue:
        if len(payload) != _CUE.size:
            raise FrameError("cue", f"CUE payload is {len(payload)} bytes, expected {_CUE.size}")
        pattern, duration_ms, repeat = _CUE.unpack(payload)
        try:
            return cls(HapticPattern(pattern), duration_ms, repeat)
        except ValueError:
            raise FrameError("cue", f"unknown haptic pattern {pattern}") from None
