"""A fast reader for binary Avro datums, compiled from a writer and a reader schema.

fastavro interprets the schema for every datum it reads: about 1 µs for each
nullable field, ~24 µs for one telemetry record, which made decoding the
largest cost of serial ingest and of central ingest. This module turns a
(writer, reader) schema pair into the source of one straight-line Python
function, once, and ``exec``s it; reading a telemetry record then costs a
third of that.

It covers the Avro types the telemetry schemas use (null, boolean, int, long,
float, double, string, bytes, records, arrays, unions) and the one resolution
they need: reader fields the writer lacks take the reader's default, and
writer fields the reader lacks are read and dropped. For anything else
:func:`compile_reader` raises :class:`UnsupportedSchema` and callers use
fastavro. The tests check it against fastavro on generated records and on
corrupted bytes.

Strictness matches fastavro's where it matters: a datum cut short, a union
branch out of range or invalid UTF-8 raise :class:`BadDatum`, and nothing is
read past the given buffer. It is stricter in two ways: a negative union
index and a varint over ten bytes are refused (fastavro reads the first from
the end of the branch list and wraps the second); a ten-byte varint wraps to
64 bits as in fastavro and Avro's Java reader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["BadDatum", "UnsupportedSchema", "DatumReader", "compile_reader"]

#: (buffer, start offset) -> (record, offset after it)
DatumReader = Callable[[bytes, int], tuple[Any, int]]

_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from
#: An Avro long is at most ten varint bytes (64 bits, seven per byte).
_MAX_VARINT_BYTES = 10


class BadDatum(ValueError):
    """The bytes are not a datum of the writer schema."""


class UnsupportedSchema(ValueError):
    """The schema pair uses something this compiler does not cover (use fastavro)."""


def _varint_tail(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """Finish a varint whose first byte ``first`` (at ``pos - 1``) had its high bit set.

    Unrolled: timestamps take eight bytes, and a loop costs twice as much.
    """
    value = first & 0x7F
    byte = buf[pos]
    value |= (byte & 0x7F) << 7
    if byte < 0x80:
        return value, pos + 1
    byte = buf[pos + 1]
    value |= (byte & 0x7F) << 14
    if byte < 0x80:
        return value, pos + 2
    byte = buf[pos + 2]
    value |= (byte & 0x7F) << 21
    if byte < 0x80:
        return value, pos + 3
    byte = buf[pos + 3]
    value |= (byte & 0x7F) << 28
    if byte < 0x80:
        return value, pos + 4
    byte = buf[pos + 4]
    value |= (byte & 0x7F) << 35
    if byte < 0x80:
        return value, pos + 5
    byte = buf[pos + 5]
    value |= (byte & 0x7F) << 42
    if byte < 0x80:
        return value, pos + 6
    byte = buf[pos + 6]
    value |= (byte & 0x7F) << 49
    if byte < 0x80:
        return value, pos + 7
    byte = buf[pos + 7]
    value |= (byte & 0x7F) << 56
    if byte < 0x80:
        return value, pos + 8
    byte = buf[pos + 8]
    # The tenth byte holds bit 63; what it has beyond is dropped, as fastavro
    # and the Java implementation do, so the value stays a 64-bit long.
    value = (value | (byte & 0x7F) << 63) & 0xFFFF_FFFF_FFFF_FFFF
    if byte < 0x80:
        return value, pos + 9
    raise BadDatum(f"varint at offset {pos - 1} is longer than {_MAX_VARINT_BYTES} bytes")


def _bad(message: str) -> None:
    raise BadDatum(message)


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


def _type_name(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    return node["type"] if isinstance(node["type"], str) else _type_name(node["type"])


def _strip(node: Any) -> Any:
    """A type without logical types or docs: {"type": "long", "logicalType": ...} -> "long"."""
    if isinstance(node, dict) and node.get("type") in _PRIMITIVES:
        return node["type"]
    return node


class _Compiler:
    """Emits the lines of one reader function; ``_n`` numbers its local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, target: str) -> None:
        b = self.name("b")
        self.emit(indent, f"{b} = buf[pos]; pos += 1")
        self.emit(indent, f"if {b} > 127: {b}, pos = _varint_tail(buf, pos, {b})")
        self.emit(indent, f"{target} = ({b} >> 1) ^ -({b} & 1)")

    def value(self, indent: int, writer: Any, reader: Any, target: str) -> None:
        """Emit code that reads ``writer`` from buf at pos and stores it, as ``reader``, in ``target``."""
        writer, reader = _strip(writer), _strip(reader)
        kind = _type_name(writer)
        if reader is not None and _type_name(reader) != kind:
            raise UnsupportedSchema(f"resolving {kind} to {_type_name(reader)} is not supported")
        if kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            self.emit(indent, "if buf[pos] > 1: _bad(f'boolean byte {buf[pos]} at offset {pos}')")
            self.emit(indent, f"{target} = buf[pos] == 1; pos += 1")
        elif kind in ("int", "long"):
            self.long(indent, target)
        elif kind in ("float", "double"):
            size, unpack = (4, "_FLOAT") if kind == "float" else (8, "_DOUBLE")
            self.emit(indent, f"{target} = {unpack}(buf, pos)[0]; pos += {size}")
        elif kind in ("string", "bytes"):
            n, end = self.name("n"), self.name("e")
            self.long(indent, n)
            self.emit(indent, f"{end} = pos + {n}")
            self.emit(indent, f"if {n} < 0 or {end} > size: _bad(f'{kind} of {{{n}}} bytes at offset {{pos}} overruns the datum')")
            conversion = ".decode()" if kind == "string" else ""
            self.emit(indent, f"{target} = buf[pos:{end}]{conversion}; pos = {end}")
        elif kind == "union":
            self.union(indent, writer, reader, target)
        elif kind == "array":
            self.array(indent, writer, reader, target)
        elif kind == "record":
            self.record(indent, writer, reader, target)
        else:
            raise UnsupportedSchema(f"Avro type {kind!r} is not supported")

    def union(self, indent: int, writer: list, reader: Any, target: str) -> None:
        if reader is not None and [_type_name(_strip(b)) for b in reader] != [_type_name(_strip(b)) for b in writer]:
            raise UnsupportedSchema("unions must have the same branches in writer and reader")
        if len(writer) > 63:
            raise UnsupportedSchema("unions of more than 63 branches are not supported")
        index = self.name("u")
        # A branch index is a zigzag varint: branch i is the raw value 2*i,
        # one byte when written canonically (i < 64), more when padded.
        self.emit(indent, f"{index} = buf[pos]; pos += 1")
        self.emit(indent, f"if {index} > 127: {index}, pos = _varint_tail(buf, pos, {index})")
        for i, branch in enumerate(writer):
            keyword = "if" if i == 0 else "elif"
            self.emit(indent, f"{keyword} {index} == {2 * i}:")
            self.value(indent + 1, branch, None if reader is None else reader[i], target)
        self.emit(indent, "else:")
        self.emit(indent + 1, f"_bad(f'union branch varint {{{index}}} before offset {{pos}} is out of range')")

    def array(self, indent: int, writer: dict, reader: Any, target: str) -> None:
        count, item = self.name("c"), self.name("i")
        self.emit(indent, f"{target} = []")
        self.emit(indent, "while True:")
        self.long(indent + 1, count)
        self.emit(indent + 1, f"if {count} == 0: break")
        self.emit(indent + 1, f"if {count} < 0:")
        self.emit(indent + 2, f"{count} = -{count}")
        self.long(indent + 2, self.name("blocksize"))
        # Every item takes at least one byte: a bigger count is corrupt, and
        # must not make the loop below allocate for it.
        self.emit(indent + 1, f"if {count} > size - pos: _bad(f'array block of {{{count}}} items at offset {{pos}} overruns the datum')")
        self.emit(indent + 1, f"for _ in range({count}):")
        self.value(indent + 2, writer["items"], None if reader is None else reader["items"], item)
        self.emit(indent + 2, f"{target}.append({item})")

    def record(self, indent: int, writer: dict, reader: dict | None, target: str) -> None:
        reader_fields = {f["name"]: f for f in (reader or writer)["fields"]}
        values: dict[str, str] = {}
        for field in writer["fields"]:
            wanted = field["name"] in reader_fields
            local = self.name("v")
            self.value(indent, field["type"], reader_fields[field["name"]]["type"] if wanted and reader else None, local)
            if wanted:
                values[field["name"]] = local
        parts = []
        for name, field in reader_fields.items():
            if name in values:
                parts.append(f"{name!r}: {values[name]}")
            elif "default" in field:
                default = field["default"]
                # A mutable default is copied per record: callers may change records.
                parts.append(f"{name!r}: {default!r}" if not isinstance(default, list | dict) else f"{name!r}: _copy({default!r})")
            else:
                raise UnsupportedSchema(f"reader field {name!r} is not in the writer schema and has no default")
        self.emit(indent, f"{target} = {{{', '.join(parts)}}}")


def compile_reader(writer: dict, reader: dict | None = None) -> DatumReader:
    """Return a function reading one datum written with ``writer``, as ``reader`` resolves it.

    Args:
        writer: the writer's record schema (plain JSON form, as in an .avsc file).
        reader: the reader's record schema; None reads as the writer wrote.

    Returns:
        ``read(buf, pos) -> (record, next_pos)``. It raises :class:`BadDatum`,
        ``IndexError`` or ``struct.error`` (cut short), or ``UnicodeDecodeError``.

    Raises:
        UnsupportedSchema: the pair needs a feature this compiler lacks.
    """
    compiler = _Compiler()
    compiler.record(1, writer, reader, "record")
    # The helpers are bound as defaults: locals are faster to reach than globals.
    source = (
        "def read(buf, pos, _varint_tail=_varint_tail, _bad=_bad, _FLOAT=_FLOAT, _DOUBLE=_DOUBLE, _copy=_copy):\n"
        "    size = len(buf)\n" + "\n".join(compiler.lines) + "\n    return record, pos\n"
    )
    namespace: dict[str, Any] = {
        "_varint_tail": _varint_tail,
        "_bad": _bad,
        "_FLOAT": _FLOAT,
        "_DOUBLE": _DOUBLE,
        "_copy": _deep_copy,
    }
    exec(compile(source, f"<avro reader {writer.get('name', 'record')}>", "exec"), namespace)  # noqa: S102
    read = namespace["read"]
    read.source = source  # for debugging: print(reader.source)
    return read


def _deep_copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return value
