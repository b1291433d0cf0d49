"""Runtime's sends against the session's real Kafka broker."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from aiokafka import AIOKafkaProducer

from kafka_testing import create_topic, delete_topic, read_range
from streams.freeze import FreezeWatch
from streams.runtime import Runtime


class _FaustProducer:
    """The two members of Faust's producer that Runtime uses, over a plain aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self._producer

    async def send(self, topic, key, value, partition, timestamp, headers):
        return await self._producer.send(topic, value, key=key, partition=partition)


def runtime(producer: AIOKafkaProducer) -> Runtime:
    rt = Runtime.__new__(Runtime)
    rt.app = SimpleNamespace(producer=_FaustProducer(producer))
    rt._tracked = set()
    rt.freeze = FreezeWatch(10.0)  # not armed: no ticker runs here
    return rt


def test_a_batch_queued_before_the_producer_learns_a_new_topic_is_still_delivered(services):
    """aiokafka narrows its metadata requests to the topics added so far; a queued batch for a topic
    it only knew from an all-topics answer then had no leader, and the sender spun for good."""
    known, new = f"rt-known-{uuid.uuid4().hex[:8]}", f"rt-new-{uuid.uuid4().hex[:8]}"
    servers = services.bootstrap_servers

    async def scenario() -> tuple[list[int], list[bytes]]:
        await create_topic(servers, known, 1)
        # A long linger keeps the first batch queued while the producer learns about `new`.
        producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=1500, request_timeout_ms=25000)
        await producer.start()
        # An all-topics answer, as the worker's producer gets while Faust creates its topics:
        # `known` is then in the producer's view without having been added.
        await producer.client.force_metadata_update()
        try:
            rt = runtime(producer)
            first = await rt.send_batch(known, 0, [(b"k1", b"first"), (b"k2", b"second")])
            await create_topic(servers, new, 1)
            await (await rt.send(new, b"k", b"elsewhere", 0))
            offsets = [await asyncio.wait_for(batch.last_offset(), 20) for batch in first]
            records = await read_range(servers, known, {0: 0})
            return offsets, [r.value for r in records]
        finally:
            await producer.stop()
            await delete_topic(servers, known)
            await delete_topic(servers, new)

    offsets, values = asyncio.run(scenario())
    assert offsets == [1]  # one batch, its last record at offset 1
    assert values == [b"first", b"second"]


def test_send_batch_splits_records_over_full_batches_in_order(services):
    topic = f"rt-batches-{uuid.uuid4().hex[:8]}"
    servers = services.bootstrap_servers

    async def scenario() -> tuple[list[tuple[int, int]], list[bytes], list[bytes]]:
        await create_topic(servers, topic, 2)
        producer = AIOKafkaProducer(bootstrap_servers=servers, max_batch_size=1024, linger_ms=5)
        await producer.start()
        try:
            rt = runtime(producer)
            values = [f"record {i:03d} ".encode() * 8 for i in range(60)]  # 104 bytes each: ~9 per batch
            sent = await rt.send_batch(topic, 1, [(None, v) for v in values])
            ends = [(batch.count, await batch.last_offset()) for batch in sent]
            records = await read_range(servers, topic, {1: 0})
            return ends, [r.value for r in records], values
        finally:
            await producer.stop()
            await delete_topic(servers, topic)

    ends, got, values = asyncio.run(scenario())
    assert len(ends) > 1, "60 records of 104 bytes should not fit one 1 KiB batch"
    assert sum(count for count, _ in ends) == len(values)
    assert [last for _, last in ends] == [sum(c for c, _ in ends[:i + 1]) - 1 for i in range(len(ends))]
    assert got == values  # every record, once, in the order given
