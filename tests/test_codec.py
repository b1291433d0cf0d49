"""Avro single-object encoding: round trips, schema evolution both ways, undecodable bytes, validation."""

from __future__ import annotations

import copy
import json
import struct

import pytest

import schemas
from prefloop.errors import DecodeError, ValidationError
from schemas import (
    Action,
    ActionKind,
    DeadLetter,
    PairSource,
    PreferencePair,
    PromotionDecision,
    PromotionEvent,
    Response,
    SchemaRegistry,
    TrainingRequest,
    TrainingResult,
    TrainingStatus,
    TriggerReason,
)
from schemas.codec import HEADER_LEN, MARKER, SCHEMA_DIR, schema_fingerprint

RECORDS = [
    Response(response_id="r1", prompt="Capital of France?", response="Paris.", model_version="v1",
             user_id="u1", tags={"app": "chat", "locale": "fr-FR"}),
    Response(response_id="r2", prompt="Ünïcödé ✓ prompt", response="", model_version="v2", prompt_id="group-7"),
    Action(response_id="r1", kind=ActionKind.THUMBS_UP, user_id="u1"),
    Action(response_id="r1", kind=ActionKind.RATING, rating=5),
    Action(response_id="r1", kind=ActionKind.EDIT, edited_text="Paris is the capital."),
    Action(response_id="r1", kind=ActionKind.CHOICE, rejected_response_id="r2"),
    PreferencePair(prompt_id="g", prompt="p", chosen="good", rejected="bad", chosen_response_id="r1",
                   chosen_model_version="v1", rejected_model_version="v0", source=PairSource.CHOICE,
                   rejected_response_id="r2", weight=0.5),
    PromotionEvent(candidate_version="v2", baseline_version="v1", decision=PromotionDecision.ADVANCE,
                   traffic_fraction=0.25, metrics={"win_rate": 0.61}, reason="canary healthy"),
    TrainingRequest(snapshot_id="s1", reason=TriggerReason.NEW_PAIRS, pair_count=128, metrics={"psi": 0.1}),
    TrainingResult(request_id="q1", status=TrainingStatus.SUCCEEDED, version="v3", adapter_path="/a"),
    DeadLetter(source_topic="feedback.actions", source_partition=3, source_offset=42, reason="decode",
               payload=b"\x00\xff junk"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{type(r).__name__}")
def test_round_trip_of_every_record_type(record):
    data = schemas.encode(record)
    assert data[:2] == MARKER
    writer = schemas.default_registry().reader(record.SCHEMA)
    assert data[2:HEADER_LEN] == writer.fingerprint
    assert schemas.decode(data) == record
    assert schemas.decode(data, expect=type(record)) == record


def test_decode_with_wrong_expected_type_is_a_decode_error():
    data = schemas.encode(RECORDS[0])
    with pytest.raises(DecodeError, match="expected a Action record, got Response"):
        schemas.decode(data, expect=Action)


def test_fingerprint_is_crc64_avro_of_the_canonical_form():
    # The Avro spec's CRC-64-AVRO ("Rabin") fingerprint, computed independently of fastavro.
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)

    def rabin(text: bytes) -> int:
        fp = empty
        for byte in text:
            fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
        return fp

    assert schema_fingerprint("int") == struct.pack("<Q", rabin(b'"int"'))
    from fastavro.schema import to_parsing_canonical_form

    parsed = schemas.default_registry().reader("Response").parsed
    canonical = to_parsing_canonical_form(parsed).encode()
    assert schemas.default_registry().reader("Response").fingerprint == struct.pack("<Q", rabin(canonical))


# --- schema evolution ------------------------------------------------------------------

V1 = {
    "type": "record", "name": "Thing", "namespace": "test.evolution",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "long"},
    ],
}
V2 = copy.deepcopy(V1)
V2["fields"].append({"name": "label", "type": ["null", "string"], "default": None})
V2["fields"].append({"name": "score", "type": "double", "default": 1.5})


def test_old_writer_new_reader_fills_added_fields_with_defaults():
    old = SchemaRegistry(readers=[V1])
    new = SchemaRegistry(readers=[V2], writers=[V1])
    data = old.encode("Thing", {"id": "a", "count": 3})
    name, record = new.decode(data)
    assert name == "Thing"
    assert record == {"id": "a", "count": 3, "label": None, "score": 1.5}


def test_new_writer_old_reader_drops_added_fields():
    new = SchemaRegistry(readers=[V2])
    old = SchemaRegistry(readers=[V1], writers=[V2])
    data = new.encode("Thing", {"id": "b", "count": 4, "label": "x", "score": 9.0})
    assert old.decode(data) == ("Thing", {"id": "b", "count": 4})


def test_reader_without_the_writer_schema_rejects_by_fingerprint():
    new = SchemaRegistry(readers=[V2])
    old_only = SchemaRegistry(readers=[V1])
    data = new.encode("Thing", {"id": "b", "count": 4, "label": None, "score": 0.0})
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint"):
        old_only.decode(data)


def test_contract_reader_resolves_an_older_response_without_tags():
    current = json.loads((SCHEMA_DIR / "Response.avsc").read_text())
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] != "tags"]
    producer = SchemaRegistry(readers=[older])
    consumer = SchemaRegistry(readers=[current], writers=[older])
    raw = {"event_id": "e", "occurred_at": 1_700_000_000_000, "response_id": "r", "prompt_id": "g",
           "prompt": "p", "response": "a", "model_version": "v0", "user_id": None}
    record = schemas.decode(producer.encode("Response", raw), registry=consumer)
    assert isinstance(record, Response)
    assert record.tags == {}
    assert record.occurred_at == 1_700_000_000_000
    assert record.model_version == "v0"


# --- undecodable bytes -----------------------------------------------------------------

def _good() -> bytes:
    return schemas.encode(RECORDS[0])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "missing C3 01 marker"),
        (b"\xc3\x01\x00", "missing C3 01 marker"),  # shorter than the header
        (b"\x00\x01" + _good()[2:], "missing C3 01 marker"),
        (b'{"json": "not avro"}', "missing C3 01 marker"),
        (MARKER + b"\x01\x02\x03\x04\x05\x06\x07\x08" + _good()[HEADER_LEN:], "unknown writer schema fingerprint"),
        (_good()[:-5], "corrupt Response body"),  # truncated
        (_good()[:HEADER_LEN] + b"\x7f" * 3, "corrupt Response body"),  # string length past the end
        (_good() + b"\x00\x00", "2 trailing bytes"),
    ],
    ids=["empty", "short", "bad-marker", "json", "unknown-fingerprint", "truncated", "corrupt", "trailing"],
)
def test_undecodable_bytes_raise_decode_error(data, message):
    with pytest.raises(DecodeError, match=message):
        schemas.decode(data)


def test_non_bytes_raise_decode_error():
    with pytest.raises(DecodeError, match="expected bytes, got str"):
        schemas.decode("C3 01")  # type: ignore[arg-type]


# --- validation names the field --------------------------------------------------------

@pytest.mark.parametrize(
    "build, field, message",
    [
        (lambda: Action(response_id="r", kind=ActionKind.RATING, rating=9), "rating", "must be between 1 and 5, got 9"),
        (lambda: Action(response_id="r", kind=ActionKind.RATING), "rating", "is required for kind RATING"),
        (lambda: Action(response_id="r", kind="LIKE"), "kind", "must be one of"),
        (lambda: Action(response_id="r", kind=ActionKind.EDIT), "edited_text", "is required for kind EDIT"),
        (lambda: Action(response_id="r", kind=ActionKind.CHOICE, rejected_response_id="r"), "rejected_response_id", "must differ"),
        (lambda: Action(response_id=" ", kind=ActionKind.ACCEPT), "response_id", "must not be empty"),
        (lambda: Response(response_id="r", prompt="p", response="a", model_version=""), "model_version", "must not be empty"),
        (lambda: Response(response_id="r", prompt="p", response=7, model_version="v"), "response", "must be a string, got int"),  # type: ignore[arg-type]
        (lambda: Response(response_id="r", prompt="p", response="a", model_version="v", tags={"k": 1}), "tags.k", "must be str"),  # type: ignore[dict-item]
        (lambda: Response(response_id="r", prompt="p", response="a", model_version="v", occurred_at=-1), "occurred_at", ">= 0"),
    ],
)
def test_validation_errors_name_the_field(build, field, message):
    with pytest.raises(ValidationError) as info:
        build().validate()
    fields = {e.field: e.message for e in info.value.errors}
    assert field in fields, info.value
    assert message in fields[field]
    assert field in str(info.value)


def test_from_json_reports_every_bad_field_at_once():
    with pytest.raises(ValidationError) as info:
        Action.from_json({"kind": "RATING", "rating": "five", "colour": "red"})
    fields = {e.field for e in info.value.errors}
    assert fields == {"response_id", "rating", "colour"}

