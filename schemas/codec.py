"""Avro single-object encoding with writer-schema resolution by fingerprint.

Wire format (Avro spec, "Single-object encoding"): the two marker bytes C3 01, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
Canonical Form, then the Avro binary body. A reader looks the writer schema up by
fingerprint among every schema under `schemas/avro/` (current and `history/`) and
resolves it into its own reader schema, so old and new producers coexist.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from prefloop.errors import DecodeError
from schemas.fast_writer import compile_schema

MARKER = b"\xc3\x01"
_FAST_WRITER_REFUSALS = (TypeError, ValueError, KeyError, AttributeError)
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).parent / "avro"


@dataclass(frozen=True)
class RegisteredSchema:
    name: str  # full name, e.g. dev.prefloop.events.Response
    parsed: Any  # for fingerprinting
    # fastavro re-parses a schema parsed with _write_hint=False on every call; these copies are ready.
    writable: Any
    # For decoding: logical types dropped, so timestamps come out as the epoch-millisecond ints
    # the records hold instead of datetimes. The Parsing Canonical Form (and so the
    # fingerprint) ignores logical types, so this is the same schema on the wire.
    readable: Any
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire
    # The body writer compiled for this schema (schemas/fast_writer.py), or None: fastavro writes it.
    fast: Callable[[Mapping[str, Any]], bytes] | None = None

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def schema_fingerprint(parsed: Any) -> bytes:
    # fastavro prints the CRC-64-AVRO value as its little-endian bytes, which is the wire order.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DecodeError(f"schema file {path} is not valid JSON: {exc}") from exc


class SchemaRegistry:
    """Every known writer schema by fingerprint, and one reader schema per record name."""

    def __init__(self, readers: Iterable[dict[str, Any]] = (), writers: Iterable[dict[str, Any]] = ()) -> None:
        self._by_fingerprint: dict[bytes, RegisteredSchema] = {}
        self._readers: dict[str, RegisteredSchema] = {}
        for schema in writers:
            self._add(schema)
        for schema in readers:
            entry = self._add(schema)
            self._readers[entry.name] = entry
            self._readers[entry.short_name] = entry

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> "SchemaRegistry":
        readers = [_load(p) for p in sorted(directory.glob("*.avsc"))]
        writers = [_load(p) for p in sorted((directory / "history").glob("*.avsc"))]
        return cls(readers=readers, writers=writers)

    def _add(self, schema: dict[str, Any]) -> RegisteredSchema:
        parsed = parse_schema(schema, _write_hint=False)
        name = parsed["name"]
        entry = RegisteredSchema(
            name=name, parsed=parsed, writable=parse_schema(schema),
            readable=parse_schema(_without_logical_types(schema)), fingerprint=schema_fingerprint(parsed),
            fast=compile_schema(schema),
        )
        self._by_fingerprint[entry.fingerprint] = entry
        return entry

    def reader(self, name: str) -> RegisteredSchema:
        try:
            return self._readers[name]
        except KeyError:
            raise DecodeError(f"no reader schema named {name!r}; known: {sorted(k for k in self._readers if '.' not in k)}") from None

    def writer_for(self, fp: bytes) -> RegisteredSchema | None:
        return self._by_fingerprint.get(fp)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        entry = self.reader(name)
        if entry.fast is not None:
            try:
                return entry.header + entry.fast(record)
            except _FAST_WRITER_REFUSALS:
                pass  # a value the compiled writer does not take: fastavro encodes it, or raises its error
        buf = io.BytesIO()
        buf.write(MARKER)
        buf.write(entry.fingerprint)
        schemaless_writer(buf, entry.writable, record)
        return buf.getvalue()

    def encode_record(self, record: Any) -> bytes:
        """Single-object bytes of a typed record (schemas.records), read straight from its attributes."""
        entry = self.reader(record.SCHEMA)
        if entry.fast is not None:
            try:
                return entry.header + entry.fast(record.__dict__)
            except _FAST_WRITER_REFUSALS:
                pass
        return self.encode(record.SCHEMA, record.to_avro())

    def decode(self, data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode one single-object record into its reader schema. Returns (short name, record)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise DecodeError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        if data[:2] != MARKER or len(data) < HEADER_LEN:
            raise DecodeError("not Avro single-object encoding: missing C3 01 marker")
        writer = self._by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}")
        reader = self._readers.get(writer.name)
        if reader is None:
            raise DecodeError(f"no reader schema for writer record {writer.name}")
        if expect is not None and reader.short_name != expect and reader.name != expect:
            raise DecodeError(f"expected a {expect} record, got {reader.short_name}")
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        try:
            if writer is reader:  # the common case: no resolution (fastavro compares whole schemas otherwise)
                record = schemaless_reader(body, reader.readable, None)
            else:
                record = schemaless_reader(body, writer.readable, reader.readable)
        except Exception as exc:  # fastavro raises several types for corrupt bodies
            raise DecodeError(f"corrupt {writer.short_name} body: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data):
            raise DecodeError(f"corrupt {writer.short_name} body: {len(data) - body.tell()} trailing bytes")
        return reader.short_name, record


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(v) for v in schema]
    return schema


_default: SchemaRegistry | None = None


def default_registry() -> SchemaRegistry:
    global _default
    if _default is None:
        _default = SchemaRegistry.from_directory()
    return _default
