"""Avro binary bodies for prefloop's own schemas, compiled once per schema into plain Python.

fastavro's `schemaless_writer` interprets the schema for every record (a dispatch per field,
a type check per union branch): about a fifth of the HTTP collector's time per event. The
contract schemas use a small part of Avro (strings, longs, ints, doubles, bytes, enums, maps,
and unions of null with one type), so each schema compiles here into a list of small writers
that append the body's pieces; `compile_schema` returns None for a schema using anything else,
and the codec then keeps fastavro for it.

Every writer checks what it writes (a string is a str, a long fits 64 bits, an enum symbol is
known) and raises `TypeError`/`ValueError`/`KeyError` otherwise; the codec then lets fastavro
encode the record, so a bad value fails with fastavro's error as before. tests/test_codec.py
checks with Hypothesis that the bytes are fastavro's for every record of every schema.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Mapping

Writer = Callable[[Any, list], None]  # appends the Avro encoding of a value to a list of bytes

_ONE_BYTE = [bytes([i]) for i in range(128)]
_DOUBLE = struct.Struct("<d").pack
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of a zig-zagged (non-negative) integer."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _long_writer(low: int, high: int) -> Writer:
    def write(value: Any, out: list) -> None:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"not an Avro integer in [{low}, {high}]: {value!r}")
        out.append(_varint((value << 1) ^ (value >> 63)))

    return write


def _write_string(value: Any, out: list) -> None:
    raw = value.encode()  # AttributeError for a non-str: the codec falls back to fastavro
    out.append(_varint(len(raw) << 1))
    out.append(raw)


def _write_bytes(value: Any, out: list) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"not bytes: {type(value).__name__}")
    out.append(_varint(len(value) << 1))
    out.append(bytes(value))


def _write_double(value: Any, out: list) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {type(value).__name__}")
    out.append(_DOUBLE(value))


def _enum_writer(symbols: list[str]) -> Writer:
    index = {symbol: _varint(i << 1) for i, symbol in enumerate(symbols)}

    def write(value: Any, out: list) -> None:
        out.append(index[getattr(value, "value", value)])  # an Enum member or its symbol; KeyError otherwise

    return write


def _map_writer(values: Writer) -> Writer:
    def write(value: Mapping[str, Any], out: list) -> None:
        if value:  # one block of len(value) entries, then the empty block that ends the map
            out.append(_varint(len(value) << 1))
            for key, item in value.items():
                _write_string(key, out)
                values(item, out)
        out.append(b"\x00")

    return write


def _nullable_writer(inner: Writer, null_first: bool) -> Writer:
    null_index, value_index = (b"\x00", b"\x02") if null_first else (b"\x02", b"\x00")

    def write(value: Any, out: list) -> None:
        if value is None:
            out.append(null_index)
        else:
            out.append(value_index)
            inner(value, out)

    return write


def _record_writer(fields: list[tuple[str, Writer]]) -> Callable[[Mapping[str, Any]], bytes]:
    def write(record: Mapping[str, Any]) -> bytes:
        out: list = []
        for name, field_writer in fields:
            field_writer(record[name], out)
        return b"".join(out)

    return write


class _Unsupported(Exception):
    pass


def _writer(schema: Any) -> Writer:
    if isinstance(schema, list):
        if len(schema) == 2 and "null" in schema:
            other = schema[1] if schema[0] == "null" else schema[0]
            return _nullable_writer(_writer(other), null_first=schema[0] == "null")
        raise _Unsupported(f"union {schema}")
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return _enum_writer(schema["symbols"])
        if kind == "map":
            return _map_writer(_writer(schema["values"]))
        if isinstance(kind, str) and kind in _PRIMITIVES:  # {"type": "long", "logicalType": ...}: same bytes
            return _PRIMITIVES[kind]
        raise _Unsupported(f"type {kind}")
    if schema in _PRIMITIVES:
        return _PRIMITIVES[schema]
    raise _Unsupported(f"type {schema}")


_PRIMITIVES: dict[str, Writer] = {
    "string": _write_string,
    "bytes": _write_bytes,
    "long": _long_writer(*_INT64),
    "int": _long_writer(*_INT32),
    "double": _write_double,
}


def compile_schema(schema: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function from a record's field values to its Avro body, or None when the schema uses
    a type this module does not write (the caller keeps fastavro)."""
    if schema.get("type") != "record":
        return None
    try:
        return _record_writer([(f["name"], _writer(f["type"])) for f in schema["fields"]])
    except _Unsupported:
        return None
