"""The tracker side and the wire contract.

Everything that crosses a boundary between Pulsegate's parts has its home
here: the Avro telemetry schemas (``schemas/``), the serial frame format
(``PROTOCOL.md``, :mod:`firmware_shim._frames`), the uplink message and bundle
formats (:mod:`firmware_shim.uplink_format`), and the tracker emulator that
replays real recordings over a serial port. Nothing here imports the gateway,
central or the UI: this is what a tracker runs.
"""

from firmware_shim._frames import (
    FRAME_VERSION,
    MAX_PAYLOAD_BYTES,
    MAX_WIRE_FRAME_BYTES,
    Ack,
    Cue,
    Frame,
    FrameError,
    FrameType,
    HapticPattern,
    Hello,
    RejectedFrame,
    StreamDecoder,
    decode_frame,
    encode_frame,
)
from firmware_shim._recordings import Recording, RecordingError, read_recording
from firmware_shim._records import (
    LATEST_SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    SOE_MARKER,
    RecordError,
    SchemaInfo,
    decode_datum,
    decode_record,
    encode_record,
    schema,
    schema_by_fingerprint,
    split_soe,
    validate_record,
)

__all__ = [
    "FRAME_VERSION",
    "MAX_PAYLOAD_BYTES",
    "MAX_WIRE_FRAME_BYTES",
    "Ack",
    "Cue",
    "Frame",
    "FrameError",
    "FrameType",
    "HapticPattern",
    "Hello",
    "RejectedFrame",
    "StreamDecoder",
    "decode_frame",
    "encode_frame",
    "LATEST_SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "SOE_MARKER",
    "RecordError",
    "SchemaInfo",
    "decode_datum",
    "decode_record",
    "encode_record",
    "schema",
    "schema_by_fingerprint",
    "split_soe",
    "validate_record",
    "Recording",
    "RecordingError",
    "read_recording",
]
