"""Response.latency_ms / error: schema evolution both ways, and the feedback_events columns (migration 0003)."""

from __future__ import annotations

import json
import uuid

import schemas
from schemas.codec import SCHEMA_DIR, SchemaRegistry
from schemas.records import Response
from streams_helpers import produce, wait_for

V1 = json.loads((SCHEMA_DIR / "history" / "Response.v1.avsc").read_text())
CURRENT = json.loads((SCHEMA_DIR / "Response.avsc").read_text())


def old_bytes(response_id: str, prompt: str) -> bytes:
    """A Response as a producer built before latency_ms and error existed writes it."""
    old = SchemaRegistry(readers=[V1])
    return old.encode("Response", {
        "event_id": uuid.uuid4().hex, "occurred_at": 1_700_000_000_000, "response_id": response_id, "prompt_id": "g-old",
        "prompt": prompt, "response": "an old answer", "model_version": "v0.9", "user_id": "u-old", "tags": {"app": "old"},
    })


def test_old_schema_bytes_decode_with_the_new_fields_empty():
    record = schemas.decode(old_bytes("r-old", "p"))
    assert isinstance(record, Response)
    assert (record.latency_ms, record.error) == (None, None)
    assert (record.response_id, record.model_version, record.tags) == ("r-old", "v0.9", {"app": "old"})


def test_an_old_reader_decodes_new_bytes_without_the_new_fields():
    new = Response(response_id="r-new", prompt="p", response="", model_version="v1.0", latency_ms=42, error="timeout: slow")
    old_reader = SchemaRegistry(readers=[V1], writers=[CURRENT])
    name, data = old_reader.decode(schemas.encode(new))
    assert name == "Response" and "latency_ms" not in data and "error" not in data
    assert data["response_id"] == "r-new"


def test_feedback_events_get_latency_and_error_columns(worker, services, store):
    tag = uuid.uuid4().hex[:8]
    old_id, new_id = f"old-{tag}", f"new-{tag}"
    new = Response(response_id=new_id, prompt=f"p {tag}", response="", model_version="v1.0", latency_ms=1234,
                   error="crash: CUDA error")
    produce(services, [("feedback.responses", b"g-old", old_bytes(old_id, f"p {tag}")), new])
    sql = (f"SELECT response_id, latency_ms, error FROM feedback_events FINAL WHERE response_id IN ('{old_id}', '{new_id}') "
           "ORDER BY response_id")
    rows = wait_for(lambda: (r := store.query(sql).dicts()) and len(r) == 2 and r, 60, what="both rows")
    assert rows == [{"response_id": new_id, "latency_ms": 1234, "error": "crash: CUDA error"},
                    {"response_id": old_id, "latency_ms": None, "error": None}]
