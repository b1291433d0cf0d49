"""Kafka helpers of the tests: topics, end offsets, and reading back what a test produced.

Reading by offset range (end offsets before, end offsets after) lets a test check
exactly what it produced, and that nothing was produced, on a topic others also use.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from prefloop.kafka_admin import create_topics, delete_topics
from prefloop.kafka_client import options_for
from prefloop.settings import Settings, TopicSpec
from schemas import decode
from schemas.records import AvroRecord


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def record(self) -> AvroRecord:
        return decode(self.value)


async def create_topic(bootstrap_servers: Settings | str, name: str, partitions: int) -> None:
    """Create the topic and wait until a client sees all its partitions."""
    await create_topics(bootstrap_servers, [TopicSpec(name, partitions)])
    await _wait_for_metadata(bootstrap_servers, name, partitions)


async def delete_topic(bootstrap_servers: Settings | str, name: str) -> None:
    await delete_topics(bootstrap_servers, [name])


async def _wait_for_metadata(bootstrap_servers: Settings | str, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    consumer = AIOKafkaConsumer(**options_for(bootstrap_servers), enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(consumer.partitions_for_topic(topic) or ()) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no metadata for {partitions} partitions after {timeout_s}s")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


async def end_offsets(bootstrap_servers: Settings | str, topic: str) -> dict[int, int]:
    """Next offset per partition of `topic`."""
    consumer = AIOKafkaConsumer(**options_for(bootstrap_servers), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def read_range(
    bootstrap_servers: str, topic: str, since: dict[int, int], until: dict[int, int] | None = None, timeout_s: float = 30.0
) -> list[Consumed]:
    """Every message of `topic` from offsets `since` up to `until` (default: the end offsets now),
    in partition then offset order; read_committed, so aborted or in-flight writes do not count."""
    if until is None:
        until = await end_offsets(bootstrap_servers, topic)
    wanted = {p: (since.get(p, 0), end) for p, end in until.items() if end > since.get(p, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(**options_for(bootstrap_servers), enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    out: list[Consumed] = []
    try:
        tps = {p: TopicPartition(topic, p) for p in wanted}
        consumer.assign(list(tps.values()))
        for p, (start, _) in wanted.items():
            consumer.seek(tps[p], start)
        remaining = set(wanted)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(remaining)} did not reach their end offsets in {timeout_s}s")
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                end = wanted[tp.partition][1]
                for m in messages:
                    if m.offset < end:
                        out.append(Consumed(tp.partition, m.offset, m.key, m.value))
                if await consumer.position(tp) >= end:
                    remaining.discard(tp.partition)
            for p in list(remaining):
                if await consumer.position(tps[p]) >= wanted[p][1]:
                    remaining.discard(p)
    finally:
        await consumer.stop()
    out.sort(key=lambda c: (c.partition, c.offset))
    return out
