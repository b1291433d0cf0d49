"""Pure parts of streams/batching.py; the consumer itself runs in every pipeline test against real Kafka."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.serializers import codecs

from streams.batching import CODEC, BatchingApp, RecordBatch, records


def msg(topic: str, offset: int, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value)


def test_records_flattens_batches_and_keeps_plain_events():
    batch = RecordBatch([msg("feedback.actions", 5, b"a"), msg("feedback.actions", 6, b"b")])
    bundle = msg("internal", 9, b"bundle")
    events = [SimpleNamespace(value=batch, message=msg("feedback.actions", 6, b"")),
              SimpleNamespace(value=b"bundle", message=bundle)]
    assert [(m.topic, m.offset, m.value) for m in records(events)] == [
        ("feedback.actions", 5, b"a"), ("feedback.actions", 6, b"b"), ("internal", 9, b"bundle")]


def test_codec_passes_batches_and_bytes_and_refuses_anything_else():
    codec = codecs.get_codec(CODEC)
    batch = RecordBatch([])
    assert codec.loads(batch) is batch
    assert codec.loads(b"raw") == b"raw"
    with pytest.raises(TypeError, match="expected a RecordBatch or bytes, got str"):
        codec.loads("text")
    with pytest.raises(TypeError, match="read-only"):
        codec.dumps(b"x")


def test_batch_topic_names_what_is_wrong():
    app = BatchingApp("batching-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    with pytest.raises(ValueError, match=r"batched topics should be among \['a', 'b'\], got \['c'\]"):
        app.batch_topic("a", "b", batched=["c"])
    app.batch_topic("a", "b", batched=["a"])
    assert app.batch_topics == frozenset({"a"})
