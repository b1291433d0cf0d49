"""Avro contracts of every prefloop topic: `.avsc` files under `avro/`, typed records, and the codec."""

from __future__ import annotations

from typing import TypeVar

from schemas.codec import SchemaRegistry, default_registry
from schemas.records import (
    RECORD_TYPES,
    Action,
    ActionKind,
    AvroRecord,
    DeadLetter,
    PairSource,
    PreferencePair,
    PromotionDecision,
    PromotionEvent,
    Response,
    TrainingRequest,
    TrainingResult,
    TrainingStatus,
    TriggerReason,
    normalise_text,
    pair_hash,
    prompt_hash,
)

R = TypeVar("R", bound=AvroRecord)


def encode(record: AvroRecord, registry: SchemaRegistry | None = None) -> bytes:
    """Single-object Avro bytes of a typed record."""
    return (registry or default_registry()).encode_record(record)


def decode(data: bytes, expect: type[R] | None = None, registry: SchemaRegistry | None = None) -> AvroRecord:
    """Typed record from single-object Avro bytes; raises DecodeError for anything else."""
    name, raw = (registry or default_registry()).decode(data, expect.SCHEMA if expect else None)
    return RECORD_TYPES[name].from_avro(raw)


__all__ = [
    "Action", "ActionKind", "AvroRecord", "DeadLetter", "PairSource", "PreferencePair", "PromotionDecision",
    "PromotionEvent", "Response", "SchemaRegistry", "TrainingRequest", "TrainingResult", "TrainingStatus",
    "TriggerReason", "decode", "default_registry", "encode", "normalise_text", "pair_hash", "prompt_hash",
]
