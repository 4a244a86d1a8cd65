"""Reference codecs for the wire contract, written from the specifications alone.

This module is the second opinion that the test vectors and the tests check
``firmware_shim`` against. It imports nothing of ``firmware_shim`` and none of
the libraries the implementation uses (``crc32c``, ``cobs``, ``fastavro``):
the CRC-32C, COBS, CRC-64-AVRO, Parsing Canonical Form and Avro binary
encoding below follow the papers and the Avro specification directly, so a
shared mistake would have to be made twice, independently.

Sources:
    CRC-32C: Castagnoli, Braeuer, Herrmann, "Optimization of cyclic
        redundancy-check codes with 24 and 32 parity bits", IEEE Trans.
        Commun. 41(6), 1993; parameters as in RFC 3720 appendix B.4.
    COBS: Cheshire and Baker, "Consistent Overhead Byte Stuffing",
        IEEE/ACM Transactions on Networking 7(2), 1999.
    Avro: https://avro.apache.org/docs/1.12.0/specification/ (binary
        encoding, single-object encoding, schema fingerprints, PCF).
"""

from __future__ import annotations

import json
import struct
from typing import Any

# --- CRC-32C --------------------------------------------------------------------

CRC32C_POLYNOMIAL = 0x1EDC6F41
#: The polynomial with its bits reversed, for the LSB-first (reflected) form.
CRC32C_POLYNOMIAL_REFLECTED = 0x82F63B78
CRC32C_INIT = 0xFFFFFFFF
CRC32C_XOROUT = 0xFFFFFFFF
CRC32C_CHECK = 0xE3069283  #: CRC-32C of b"123456789"


def _reflect(value: int, bits: int) -> int:
    return int(f"{value:0{bits}b}"[::-1], 2)


def _crc32c_table() -> list[int]:
    # Derive the reflected polynomial from the normal one rather than trusting
    # the constant; the assert keeps the two in step.
    poly = _reflect(CRC32C_POLYNOMIAL, 32)
    assert poly == CRC32C_POLYNOMIAL_REFLECTED
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli): reflected, init and xorout 0xFFFFFFFF."""
    crc = CRC32C_INIT
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ CRC32C_XOROUT


# --- COBS -----------------------------------------------------------------------


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter appended).

    Canonical form: a final block of exactly 254 non-zero bytes is not
    followed by an empty ``0x01`` block (the paper's C code emits one; both
    decode to the same bytes).
    """
    out = bytearray()
    block = bytearray()
    ended_on_full_block = False
    for byte in data:
        ended_on_full_block = False
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
            continue
        block.append(byte)
        if len(block) == 254:
            out.append(0xFF)
            out += block
            block.clear()
            ended_on_full_block = True
    if not ended_on_full_block:
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Decode one COBS frame (delimiter already removed)."""
    out = bytearray()
    pos = 0
    while pos < len(encoded):
        code = encoded[pos]
        if code == 0:
            raise CobsError(f"zero byte at offset {pos}")
        end = pos + code
        if end > len(encoded):
            raise CobsError(f"code 0x{code:02x} at offset {pos} runs past the end")
        block = encoded[pos + 1 : end]
        if 0 in block:
            raise CobsError("zero byte inside a block")
        out += block
        pos = end
        if code != 0xFF and pos < len(encoded):
            out.append(0)
    return bytes(out)


# --- Frames ---------------------------------------------------------------------

FRAME_VERSION = 1
HEADER_BYTES = 8  # version u8, type u8, seq u32le, length u16le
CRC_BYTES = 4
MAX_PAYLOAD_BYTES = 1024
MAX_RAW_FRAME_BYTES = HEADER_BYTES + MAX_PAYLOAD_BYTES + CRC_BYTES  # 1036
#: COBS adds at most one byte per started run of 254 (Cheshire & Baker, sec. 3).
MAX_ENCODED_FRAME_BYTES = MAX_RAW_FRAME_BYTES + -(-MAX_RAW_FRAME_BYTES // 254)  # 1041
MAX_WIRE_FRAME_BYTES = MAX_ENCODED_FRAME_BYTES + 1  # 1042, with the 0x00 delimiter

FRAME_TYPES = {
    0x01: "HELLO",
    0x02: "TELEMETRY",
    0x03: "ACK",
    0x04: "CUE",
    0x05: "HEARTBEAT",
    0x06: "CUE_ACK",
}
TYPE_CODES = {name: code for code, name in FRAME_TYPES.items()}


def raw_frame(
    type_code: int,
    seq: int,
    payload: bytes,
    *,
    version: int = FRAME_VERSION,
    length: int | None = None,
) -> bytes:
    """The bytes before COBS: header, payload and CRC-32C (over header and payload)."""
    body = struct.pack("<BBIH", version, type_code, seq, len(payload) if length is None else length)
    body += payload
    return body + struct.pack("<I", crc32c(body))


def wire_frame(type_code: int, seq: int, payload: bytes = b"", **overrides: Any) -> bytes:
    """The bytes on the wire: COBS of the raw frame, then the 0x00 delimiter."""
    return cobs_encode(raw_frame(type_code, seq, payload, **overrides)) + b"\x00"


def decode_reason(encoded: bytes) -> tuple[str, dict[str, Any]]:
    """Decode the bytes between two delimiters as PROTOCOL.md prescribes.

    Returns:
        ``("ok", fields)`` or ``(reason, {})`` with the first failing check's
        reason, the checks taken in the order PROTOCOL.md gives.
    """
    if len(encoded) > MAX_ENCODED_FRAME_BYTES:
        return "too_large", {}
    try:
        raw = cobs_decode(encoded)
    except CobsError:
        return "cobs", {}
    if len(raw) > MAX_RAW_FRAME_BYTES:
        return "too_large", {}
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        return "too_short", {}
    body, (carried,) = raw[:-CRC_BYTES], struct.unpack("<I", raw[-CRC_BYTES:])
    if crc32c(body) != carried:
        return "crc", {}
    version, type_code, seq, length = struct.unpack_from("<BBIH", body)
    if version != FRAME_VERSION:
        return "version", {}
    if length != len(body) - HEADER_BYTES:
        return "length", {}
    if type_code not in FRAME_TYPES:
        return "type", {}
    fields = {
        "version": version,
        "type": FRAME_TYPES[type_code],
        "type_code": type_code,
        "seq": seq,
        "payload": body[HEADER_BYTES:],
        "crc32c": carried,
        "raw": raw,
    }
    return "ok", fields


# --- CRC-64-AVRO and Parsing Canonical Form ------------------------------------

CRC64_AVRO_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for index in range(256):
        fp = index
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (``CRC-64-AVRO``)."""
    fp = CRC64_AVRO_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_PCF_KEY_ORDER = ("name", "type", "fields", "symbols", "items", "values", "size")


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def parsing_canonical_form(schema: Any, namespace: str | None = None) -> str:
    """Avro's Parsing Canonical Form: [PRIMITIVES], [FULLNAMES], [STRIP], [ORDER], [WHITESPACE]."""
    if isinstance(schema, str):
        text = schema if schema in _PRIMITIVES else _fullname(schema, namespace)
        return json.dumps(text, ensure_ascii=False)
    if isinstance(schema, list):
        return "[" + ",".join(parsing_canonical_form(s, namespace) for s in schema) + "]"
    kind = schema["type"]
    if kind in _PRIMITIVES or not isinstance(kind, str):
        # {"type": "long", "logicalType": ...} strips down to the primitive.
        return parsing_canonical_form(kind, namespace)
    parts: dict[str, str] = {"type": json.dumps(kind)}
    if kind in ("record", "enum", "fixed"):
        name = _fullname(schema["name"], schema.get("namespace", namespace))
        parts["name"] = json.dumps(name, ensure_ascii=False)
        namespace = name.rpartition(".")[0] or None
    if kind == "record":
        fields = [
            "{"
            + f'"name":{json.dumps(f["name"])},"type":{parsing_canonical_form(f["type"], namespace)}'
            + "}"
            for f in schema["fields"]
        ]
        parts["fields"] = "[" + ",".join(fields) + "]"
    elif kind == "enum":
        parts["symbols"] = json.dumps(schema["symbols"], separators=(",", ":"))
    elif kind == "array":
        parts["items"] = parsing_canonical_form(schema["items"], namespace)
    elif kind == "map":
        parts["values"] = parsing_canonical_form(schema["values"], namespace)
    elif kind == "fixed":
        parts["size"] = str(int(schema["size"]))
    return "{" + ",".join(f'"{key}":{parts[key]}' for key in _PCF_KEY_ORDER if key in parts) + "}"


def schema_fingerprint(schema: Any) -> bytes:
    """The 8 bytes of the single-object header: CRC-64-AVRO of the PCF, little-endian."""
    return crc64_avro(parsing_canonical_form(schema).encode("utf-8")).to_bytes(8, "little")


# --- Avro binary encoding -------------------------------------------------------


def _varint_zigzag(value: int) -> bytes:
    zigzag = value << 1 if value >= 0 else ((-value) << 1) - 1
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _union_branch(branches: list[Any], value: Any) -> int:
    wanted = {
        type(None): {"null"},
        bool: {"boolean"},
        int: {"int", "long"},
        float: {"float", "double"},
        str: {"string"},
        bytes: {"bytes"},
        list: {"array"},
        dict: {"record", "map"},
    }[type(value)]
    for index, branch in enumerate(branches):
        kind = branch if isinstance(branch, str) else branch["type"]
        if kind in wanted:
            return index
    raise ValueError(f"no union branch of {branches} takes {value!r}")


def avro_binary(schema: Any, value: Any) -> bytes:
    """Avro binary encoding of ``value``; the types the telemetry schemas use."""
    if isinstance(schema, list):
        index = _union_branch(schema, value)
        return _varint_zigzag(index) + avro_binary(schema[index], value)
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, (dict, list)):
        return avro_binary(kind, value)
    if kind == "null":
        return b""
    if kind == "boolean":
        return b"\x01" if value else b"\x00"
    if kind in ("int", "long"):
        return _varint_zigzag(value)
    if kind == "float":
        return struct.pack("<f", value)
    if kind == "double":
        return struct.pack("<d", value)
    if kind in ("string", "bytes"):
        data = value.encode("utf-8") if kind == "string" else value
        return _varint_zigzag(len(data)) + data
    if kind == "record":
        return b"".join(avro_binary(f["type"], value[f["name"]]) for f in schema["fields"])
    if kind == "array":
        if not value:
            return b"\x00"
        items = b"".join(avro_binary(schema["items"], item) for item in value)
        return _varint_zigzag(len(value)) + items + b"\x00"
    raise ValueError(f"avro type {kind!r} is not needed by the telemetry schemas")


SOE_MARKER = b"\xc3\x01"


def single_object(schema: Any, record: dict[str, Any]) -> bytes:
    """Avro single-object encoding: marker C3 01, fingerprint, binary datum."""
    return SOE_MARKER + schema_fingerprint(schema) + avro_binary(schema, record)
