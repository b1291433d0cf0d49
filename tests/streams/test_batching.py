"""Pure parts of consumer batching (streams/batching.py, streams/compat/faust.py); the consumer itself runs in every pipeline test against real Kafka."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.serializers import codecs

from streams.batching import CODEC, RecordBatch, records
from streams.compat.faust import BatchingApp


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


# --- the fetch in flight across a rebalance (the recovery stall) ------------------------------------------
def _two_partition_topic(settings, name: str) -> None:
    import asyncio

    from prefloop.kafka_admin import create_topics
    from prefloop.settings import TopicSpec

    asyncio.run(create_topics(settings.bootstrap_servers, [TopicSpec(name, 2)]))


@pytest.mark.services
def test_aiokafka_reads_an_emptied_partition_set_as_every_partition(services):
    """Why `BatchingConsumer._getmany` hands aiokafka a copy: a fetch that waits on Faust's own set,
    emptied meanwhile (a rebalance pauses every partition), returns and consumes the records of
    partitions nobody asked for, such as the changelog partitions a recovery just positioned."""
    import asyncio
    import uuid

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = f"batching-empty-set-{uuid.uuid4().hex[:8]}"
    _two_partition_topic(services, topic)
    asked, other = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def scenario(live: set) -> dict:
        consumer = AIOKafkaConsumer(bootstrap_servers=services.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=services.bootstrap_servers)
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([asked, other])
            await consumer.seek_to_end(asked, other)
            fetch = asyncio.ensure_future(consumer._fetcher.fetched_records(live, timeout=10))
            await asyncio.sleep(0.5)  # the fetch waits: nothing new on the partition it asked for
            live.clear()
            await producer.send_and_wait(topic, b"changelog record", partition=1)
            return await fetch
        finally:
            await producer.stop()
            await consumer.stop()

    got = asyncio.run(scenario({asked}))
    assert [r.value for r in got.get(other, [])] == [b"changelog record"]


def test_fetch_hands_aiokafka_a_copy_of_the_active_partitions(monkeypatch):
    """The fix: what aiokafka is asked for is fixed when the fetch starts, and an empty set is never sent."""
    import asyncio

    from faust.types import TP

    from streams.compat.faust import BatchingConsumer

    seen: list = []

    async def fake_super_getmany(self, active_partitions, timeout):
        seen.append(active_partitions)
        return {}

    monkeypatch.setattr("faust.transport.drivers.aiokafka.Consumer._getmany", fake_super_getmany)
    consumer = BatchingConsumer.__new__(BatchingConsumer)
    consumer.app = SimpleNamespace(hold_back=lambda: {TP("feedback.actions", 1)})
    live = {TP("feedback.actions", 1), TP("feedback.responses", 1)}
    asyncio.run(consumer._getmany(live, 0.01))
    assert seen == [{TP("feedback.responses", 1)}] and seen[0] is not live
    live.clear()
    asyncio.run(consumer._getmany(live, 0.01))
    assert len(seen) == 1  # nothing fetched for an empty set
